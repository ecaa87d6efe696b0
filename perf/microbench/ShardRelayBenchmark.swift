import CAllocCounter
import Engine
import Glibc

/// The whole receive → parse → relay → send path on a real shard, driven over loopback: allocations made on
/// the shard's thread per datagram once warmed up, inside the relay and in the loop around it.
/// (Its rate is bounded by the blocking ping-pong client, so only allocations are reported.)
enum ShardRelayBenchmark {
    static func run(messages: Int) -> [Measurement] {
        let sink = LoopbackSocket()
        let registry = HandlerRegistry()
        let next = sink.address
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            let handler = CountingHandler(inner: StatelessRelay(configuration: RelayConfiguration(forward: next)))
            registry.add(handler)
            return handler
        }
        do { try engine.start() } catch { fatalError("engine did not start: \(error)") }
        let client = LoopbackSocket()
        let proxy = engine.boundAddresses[0]
        let response = SampleMessages.ok
            .replacing("127.0.0.1:5060;branch=z9hG4bKrs", with: "\(proxy);branch=z9hG4bKrs")
            .replacing("rport=5080", with: "rport=\(client.address.port)")
        for i in 0..<messages {
            client.send(i % 2 == 0 ? SampleMessages.invite : response, to: proxy)
            // The forwarded request reaches the sink; the forwarded response comes back to the client.
            guard (i % 2 == 0 ? sink.receive() : client.receive()) != nil else {
                fatalError("message \(i) was not relayed")
            }
        }
        engine.stop()
        let handler = registry.handlers[0]
        precondition(handler.handled == messages && engine.finalCounters[0].sent == messages)
        let steady = Double(handler.handled - CountingHandler.warmUp)
        return [
            Measurement(name: "shard relay: handler", perSecond: 0, nanosecondsEach: 0,
                        allocationsEach: Double(handler.allocationsInHandler) / steady),
            Measurement(name: "shard relay: thread", perSecond: 0, nanosecondsEach: 0,
                        allocationsEach: Double(handler.threadAtLast - handler.threadAtWarmUp) / steady),
        ]
    }
}

final class CountingHandler: ShardHandler {
    static let warmUp = 200
    let inner: StatelessRelay
    var handled = 0
    var allocationsInHandler: UInt64 = 0
    var threadAtWarmUp: UInt64 = 0
    var threadAtLast: UInt64 = 0

    init(inner: StatelessRelay) { self.inner = inner }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        let before = CAllocCounter_thread_allocations()
        let disposition = inner.handle(datagram, on: shard)
        let after = CAllocCounter_thread_allocations()
        handled += 1
        if handled > Self.warmUp { allocationsInHandler += after - before }
        if handled == Self.warmUp { threadAtWarmUp = before }
        threadAtLast = before
        return disposition
    }
}

/// Handlers are created on shard threads; the benchmark reads them after the threads are joined.
final class HandlerRegistry: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private(set) var handlers: [CountingHandler] = []
    init() { pthread_mutex_init(&lock, nil) }
    func add(_ handler: CountingHandler) {
        pthread_mutex_lock(&lock)
        handlers.append(handler)
        pthread_mutex_unlock(&lock)
    }
}
