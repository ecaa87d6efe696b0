import CAllocCounter
import Engine
import Glibc
import Script

/// The whole receive → parse → route → send path on a real shard, driven over loopback by a ping-pong client:
/// allocations made on the shard's thread per datagram once warmed up (inside the handler, and in the loop
/// around it), and the time spent inside the handler per datagram (parse, script, building the send; the
/// ring's syscalls are outside it). Request and response alternate.
enum ShardRelayBenchmark {
    static func run(messages: Int) -> [Measurement] {
        let sink = LoopbackSocket()
        let next = sink.address
        var results = measure("shard relay", messages: messages, sink: sink, requestURI: nil) { _ in
            StatelessRelay(configuration: RelayConfiguration(forward: next))
        }
        let forwarding = try! ScriptProgram.parse(ScriptProgram.forwardingScript(to: next), file: "--forward")
        results += measure("script --forward", messages: messages, sink: sink, requestURI: nil) { _ in
            ScriptHandler(program: forwarding)
        }
        // The default config, with the server behind it moved to the sink, and requests addressed to us.
        guard let text = readFile("etc/ringsip.cfg") else { fatalError("run from the repository root") }
        let config = try! ScriptProgram.parse(text.replacing("udp:127.0.0.1:5070", with: "udp:\(next)"),
                                              file: "etc/ringsip.cfg")
        results += measure("script etc/ringsip.cfg", messages: messages, sink: sink, requestURI: "self") { _ in
            ScriptHandler(program: config)
        }
        return results
    }

    static func measure(_ name: String, messages: Int, sink: LoopbackSocket, requestURI: String?,
                        handler make: @escaping @Sendable (Int) -> any ShardHandler) -> [Measurement] {
        let registry = HandlerRegistry()
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { shard in
            let handler = CountingHandler(inner: make(shard))
            registry.add(handler)
            return handler
        }
        do { try engine.start() } catch { fatalError("engine did not start: \(error)") }
        let client = LoopbackSocket()
        let proxy = engine.boundAddresses[0]
        var request = SampleMessages.invite
        if requestURI != nil { request = request.replacing("INVITE sip:bob@127.0.0.1:5070", with: "INVITE sip:bob@\(proxy)") }
        let response = SampleMessages.ok
            .replacing("127.0.0.1:5060;branch=z9hG4bKrs", with: "\(proxy);branch=z9hG4bKrs")
            .replacing("rport=5080", with: "rport=\(client.address.port)")
        for i in 0..<messages {
            client.send(i % 2 == 0 ? request : response, to: proxy)
            // The forwarded request reaches the sink; the forwarded response comes back to the client.
            guard (i % 2 == 0 ? sink.receive() : client.receive()) != nil else {
                fatalError("\(name): message \(i) was not relayed")
            }
        }
        engine.stop()
        let handler = registry.handlers[0]
        precondition(handler.handled == messages && engine.finalCounters[0].sent == messages)
        let steady = Double(handler.handled - CountingHandler.warmUp)
        let nanoseconds = Double(handler.nanosecondsInHandler) / steady
        return [
            Measurement(name: "\(name): handler", perSecond: 1e9 / nanoseconds, nanosecondsEach: nanoseconds,
                        allocationsEach: Double(handler.allocationsInHandler) / steady),
            Measurement(name: "\(name): thread", perSecond: 0, nanosecondsEach: 0,
                        allocationsEach: Double(handler.threadAtLast - handler.threadAtWarmUp) / steady),
        ]
    }

    static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

final class CountingHandler: ShardHandler {
    static let warmUp = 200
    let inner: any ShardHandler
    var handled = 0
    var allocationsInHandler: UInt64 = 0
    var nanosecondsInHandler: UInt64 = 0
    var threadAtWarmUp: UInt64 = 0
    var threadAtLast: UInt64 = 0

    init(inner: any ShardHandler) { self.inner = inner }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        let before = CAllocCounter_thread_allocations()
        let start = nowNanoseconds()
        let disposition = inner.handle(datagram, on: shard)
        let elapsed = nowNanoseconds() - start
        let after = CAllocCounter_thread_allocations()
        handled += 1
        if handled > Self.warmUp {
            allocationsInHandler += after - before
            nanosecondsInHandler += elapsed
        }
        if handled == Self.warmUp { threadAtWarmUp = before }
        threadAtLast = before
        return disposition
    }

    func started(on shard: Shard) { inner.started(on: shard) }
    func timerFired(payload: UInt64, on shard: Shard) { inner.timerFired(payload: payload, on: shard) }
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
