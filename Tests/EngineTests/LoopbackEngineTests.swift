import Glibc
import XCTest
@testable import Engine

/// Echoes each datagram back prefixed with the shard that handled it. With `lendTo`, datagrams received on
/// any other shard are handed to that shard first (as replies for another shard's transactions will be).
final class EchoHandler: ShardHandler {
    let lendTo: Int?
    let stallFirstMilliseconds: UInt32
    let timerEchoMilliseconds: UInt64?
    var stalled = false
    var pendingTimerReply: (SocketAddress, Int, String)?

    init(lendTo: Int? = nil, stallFirstMilliseconds: UInt32 = 0, timerEchoMilliseconds: UInt64? = nil) {
        self.lendTo = lendTo
        self.stallFirstMilliseconds = stallFirstMilliseconds
        self.timerEchoMilliseconds = timerEchoMilliseconds
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        if let lendTo, lendTo != shard.index, datagram.lender == nil { return .handOff(toShard: lendTo) }
        if !stalled && stallFirstMilliseconds > 0 {
            // Holding the shard lets the kernel fill every provided buffer and end the multishot receive.
            stalled = true
            usleep(stallFirstMilliseconds * 1000)
        }
        let text = String(decoding: datagram.bytes, as: UTF8.self)
        let lender = datagram.lender.map { " lent-by \($0)" } ?? ""
        let reply = "shard \(shard.index)\(lender): \(text)"
        if let delay = timerEchoMilliseconds {
            pendingTimerReply = (datagram.source, datagram.socketIndex, reply)
            _ = shard.schedule(after: delay, payload: 99)
            return .done
        }
        send(reply, to: datagram.source, socket: datagram.socketIndex, on: shard)
        return .done
    }

    func timerFired(payload: UInt64, on shard: Shard) {
        guard payload == 99, let (source, socket, reply) = pendingTimerReply else { return }
        send("timer " + reply, to: source, socket: socket, on: shard)
    }

    private func send(_ text: String, to destination: SocketAddress, socket: Int, on shard: Shard) {
        guard let out = shard.makeDatagram() else { return }
        let bytes = Array(text.utf8)
        out.buffer.copyBytes(from: bytes)
        shard.send(out, length: bytes.count, to: destination, socketIndex: socket)
    }
}

final class LoopbackEngineTests: XCTestCase {
    func startEngine(shards: Int, configuration: ShardConfiguration = .init(),
                     handler: @escaping @Sendable (Int) -> any ShardHandler) throws -> Engine {
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: shards, cpus: nil,
                            configuration: configuration, makeHandler: handler)
        do {
            try engine.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
        return engine
    }

    func testDatagramsAreReceivedAndAnsweredThroughTheRing() throws {
        let engine = try startEngine(shards: 1) { _ in EchoHandler() }
        let client = LoopbackClient()
        for i in 0..<50 {
            client.send("ping \(i)", to: engine.boundAddresses[0])
            XCTAssertEqual(client.receive(), "shard 0: ping \(i)")
        }
        engine.stop()
        XCTAssertEqual(engine.finalCounters[0].received, 50)
        XCTAssertEqual(engine.finalCounters[0].sent, 50)
        XCTAssertEqual(engine.finalCounters[0].staleCompletions, 0)
    }

    func testDatagramLentToAnotherShardIsHandledThereAndItsBufferReturned() throws {
        var configuration = ShardConfiguration()
        configuration.receiveBuffers = 8
        let engine = try startEngine(shards: 2, configuration: configuration) { _ in EchoHandler(lendTo: 1) }
        // Many sources, so SO_REUSEPORT's flow hash lands some on shard 0, which must lend them to shard 1.
        // More datagrams than shard 0 has buffers: they only keep flowing if shard 1 releases each one.
        let clients = (0..<8).map { _ in LoopbackClient() }
        for round in 0..<10 {
            for (i, client) in clients.enumerated() {
                client.send("hello \(round).\(i)", to: engine.boundAddresses[0])
                let reply = client.receive()
                XCTAssertNotNil(reply)
                XCTAssertTrue(reply?.hasPrefix("shard 1") ?? false, "reply \(reply ?? "nil") not from shard 1")
            }
        }
        engine.stop()
        let handoffs = engine.finalCounters[0].handoffs
        XCTAssertEqual(engine.finalCounters[0].received + engine.finalCounters[1].received, 80)
        XCTAssertEqual(engine.finalCounters[0].received, handoffs, "every datagram shard 0 received is lent")
        XCTAssertGreaterThan(handoffs, 8, "flow hashing put too few sources on shard 0 to exercise recycling")
    }

    func testExhaustedBufferRingRecoversWithoutLosingDatagrams() throws {
        var configuration = ShardConfiguration()
        configuration.receiveBuffers = 4
        let engine = try startEngine(shards: 1, configuration: configuration) { _ in
            EchoHandler(stallFirstMilliseconds: 200)
        }
        let client = LoopbackClient(timeoutMilliseconds: 3000)
        for i in 0..<40 { client.send("burst \(i)", to: engine.boundAddresses[0]) }
        var replies = Set<String>()
        for _ in 0..<40 { if let r = client.receive() { replies.insert(r) } }
        engine.stop()
        XCTAssertEqual(replies.count, 40, "lost datagrams after ENOBUFS")
        XCTAssertGreaterThan(engine.finalCounters[0].bufferExhaustion, 0, "the test never exhausted the ring")
    }

    func testTimerArmedFromAHandlerFiresThroughTheRingTimeout() throws {
        let engine = try startEngine(shards: 1) { _ in EchoHandler(timerEchoMilliseconds: 40) }
        let client = LoopbackClient()
        let start = Syscalls.monotonicMilliseconds()
        client.send("later", to: engine.boundAddresses[0])
        XCTAssertEqual(client.receive(), "timer shard 0: later")
        let elapsed = Syscalls.monotonicMilliseconds() - start
        engine.stop()
        XCTAssertGreaterThanOrEqual(elapsed, 39)
    }

    func testForgedCompletionWithStaleGenerationIsCountedAndDropped() throws {
        let engine = try startEngine(shards: 1) { _ in EchoHandler() }
        let client = LoopbackClient()
        client.send("one", to: engine.boundAddresses[0])
        XCTAssertEqual(client.receive(), "shard 0: one")
        // Slot 0's first use completed with generation 1; a late duplicate of that completion arrives now.
        engine.post(Tag(kind: .send, shard: 0, generation: 1, slot: 0), result: 3, toShard: 0)
        client.send("two", to: engine.boundAddresses[0])
        XCTAssertEqual(client.receive(), "shard 0: two")
        engine.stop()
        XCTAssertEqual(engine.finalCounters[0].staleCompletions, 1)
        XCTAssertEqual(engine.finalCounters[0].sent, 2)
    }

    func testUnusableListenAddressFailsStartWithOneClearLine() {
        let engine = Engine(listen: [SocketAddress(numericHost: "192.0.2.1", port: 5060)!], shards: 1, cpus: nil) { _ in
            EchoHandler()
        }
        XCTAssertThrowsError(try engine.start()) { error in
            XCTAssertEqual("\(error)", "cannot listen on udp:192.0.2.1:5060: Cannot assign requested address (errno 99)")
        }
    }
}

final class IPv6LoopbackTests: XCTestCase {
    func testIPv6ListenAddressReceivesAndAnswers() throws {
        let engine = Engine(listen: [SocketAddress(numericHost: "::1", port: 0)!], shards: 1, cpus: nil) { _ in
            EchoHandler()
        }
        do { try engine.start() } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring or IPv6 unavailable here: \(error)")
        }
        defer { engine.stop() }
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var destination = engine.boundAddresses[0].storage
        let text = Array("over v6".utf8)
        _ = withUnsafePointer(to: &destination) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, text, text.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = recv(fd, &buffer, buffer.count, 0)
        XCTAssertEqual(n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : nil, "shard 0: over v6")
        XCTAssertEqual(engine.boundAddresses[0].description.hasPrefix("[::1]:"), true)
    }
}
