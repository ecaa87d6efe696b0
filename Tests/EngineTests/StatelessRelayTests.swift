import Glibc
import SIP
import XCTest
@testable import Engine

/// The relay on a real shard over loopback: a client in front, a sink behind as the next hop.
final class StatelessRelayTests: XCTestCase {
    var engine: Engine!
    var client: LoopbackClient!
    var sink: LoopbackClient!
    var proxy: SocketAddress { engine.boundAddresses[0] }

    func start(forward: Bool = true) throws {
        client = LoopbackClient(timeoutMilliseconds: 1000)
        sink = LoopbackClient(timeoutMilliseconds: 1000)
        let next = forward ? sink.address : nil
        engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            StatelessRelay(configuration: RelayConfiguration(forward: next))
        }
        do { try engine.start() } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
    }

    override func tearDown() {
        engine?.stop()
    }

    func request(method: String = "INVITE", uri: String = "sip:bob@127.0.0.1:5070", maxForwards: String? = "70",
                 via: String? = nil, extra: String = "", cseq: String? = nil) -> String {
        let via = via ?? "SIP/2.0/UDP 127.0.0.1:\(client.address.port);branch=z9hG4bK-abc-1;rport"
        return "\(method) \(uri) SIP/2.0\r\nVia: \(via)\r\n"
            + (maxForwards.map { "Max-Forwards: \($0)\r\n" } ?? "")
            + "From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: call-1@127.0.0.1\r\n"
            + "CSeq: \(cseq ?? "1 \(method)")\r\n\(extra)Content-Length: 0\r\n\r\n"
    }

    func parsed(_ text: String) throws -> (SIPMessage, [UInt8]) {
        let bytes = Array(text.utf8)
        let message = SIPMessage()
        try bytes.withUnsafeBytes { try message.parse($0) }
        return (message, bytes)
    }

    func header(_ name: String, in text: String) -> [String] {
        text.split(separator: "\r\n").filter { $0.lowercased().hasPrefix(name.lowercased() + ":") }
            .map { String($0.dropFirst(name.count + 1).drop(while: { $0 == " " })) }
    }

    func testRequestGetsOurViaOnTopDecrementedMaxForwardsAndReceivedRport() throws {
        try start()
        client.send(request(via: "SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bK-abc-1;rport"), to: proxy)
        let forwarded = try XCTUnwrap(sink.receive())
        let vias = header("Via", in: forwarded)
        XCTAssertEqual(vias.count, 2)
        XCTAssertTrue(vias[0].hasPrefix("SIP/2.0/UDP \(proxy);branch=z9hG4bKrs"), vias[0])
        XCTAssertEqual(vias[1], "SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bK-abc-1;received=127.0.0.1;rport=\(client.address.port)")
        XCTAssertEqual(header("Max-Forwards", in: forwarded), ["69"])
        XCTAssertTrue(forwarded.hasPrefix("INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n"))
    }

    func testRetransmissionAndItsCancelGetTheSameBranch() throws {
        try start()
        client.send(request(), to: proxy)
        let first = header("Via", in: try XCTUnwrap(sink.receive()))[0]
        client.send(request(), to: proxy)
        let again = header("Via", in: try XCTUnwrap(sink.receive()))[0]
        client.send(request(method: "CANCEL", cseq: "1 CANCEL"), to: proxy)
        let cancel = header("Via", in: try XCTUnwrap(sink.receive()))[0]
        client.send(request(via: "SIP/2.0/UDP 127.0.0.1:\(client.address.port);branch=z9hG4bK-other"), to: proxy)
        let other = header("Via", in: try XCTUnwrap(sink.receive()))[0]
        XCTAssertEqual(first, again)
        XCTAssertEqual(first, cancel)
        XCTAssertNotEqual(first, other)
    }

    func testMaxForwardsZeroIsAnswered483AndNotForwarded() throws {
        try start()
        client.send(request(maxForwards: "0"), to: proxy)
        let reply = try XCTUnwrap(client.receive())
        XCTAssertTrue(reply.hasPrefix("SIP/2.0 483 Too Many Hops\r\n"), reply)
        XCTAssertEqual(header("To", in: reply).first?.contains(";tag="), true)
        XCTAssertNil(sink.receive())
    }

    func testMissingMaxForwardsIsAddedAs70() throws {
        try start()
        client.send(request(maxForwards: nil), to: proxy)
        XCTAssertEqual(header("Max-Forwards", in: try XCTUnwrap(sink.receive())), ["70"])
    }

    func testBrokenRequestWithReadableViaGets400NamingTheProblem() throws {
        try start()
        client.send(request(cseq: "one INVITE"), to: proxy)
        let reply = try XCTUnwrap(client.receive())
        XCTAssertTrue(reply.hasPrefix("SIP/2.0 400 Bad CSeq\r\n"), reply)
        XCTAssertEqual(header("Call-ID", in: reply), ["call-1@127.0.0.1"])
        XCTAssertEqual(header("Server", in: reply), ["ringsip"])
    }

    func testGarbageIsDroppedAndCountedAndTheShardKeepsServing() throws {
        try start()
        for junk in ["\u{1}\u{2}garbage", "INVITE", "SIP/2.0 200\r\n\r\n", String(repeating: "x", count: 3000)] {
            client.send(junk, to: proxy)
        }
        client.send("\r\n\r\n", to: proxy)
        client.send(request(), to: proxy)
        XCTAssertNotNil(sink.receive(), "a good request after garbage must still be relayed")
        XCTAssertNil(client.receive(), "garbage must not be answered")
        engine.stop()
        let counters = engine.finalCounters[0]
        XCTAssertEqual(counters.parseErrors, 4)
        XCTAssertEqual(counters.dropped, 4)
        XCTAssertEqual(counters.sent, 1)
        engine = nil
    }

    func testResponseLosesOurViaAndGoesWhereTheNextViaSays() throws {
        try start()
        client.send(request(), to: proxy)
        let forwarded = try XCTUnwrap(sink.receive())
        let vias = header("Via", in: forwarded)
        let response = "SIP/2.0 180 Ringing\r\nVia: \(vias[0]), \(vias[1])\r\n"
            + "From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=b2\r\nCall-ID: call-1@127.0.0.1\r\n"
            + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        sink.send(response, to: proxy)
        let relayed = try XCTUnwrap(client.receive(), "the response must reach the client via received/rport")
        XCTAssertTrue(relayed.hasPrefix("SIP/2.0 180 Ringing\r\n"))
        XCTAssertEqual(header("Via", in: relayed), [vias[1]])
    }

    func testResponseWhoseTopViaIsNotOursIsDropped() throws {
        try start()
        let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            + "Via: SIP/2.0/UDP 127.0.0.1:\(client.address.port);branch=z9hG4bKy\r\n"
            + "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        sink.send(response, to: proxy)
        XCTAssertNil(client.receive())
        engine.stop()
        XCTAssertEqual(engine.finalCounters[0].dropped, 1)
        engine = nil
    }

    func testWithoutForwardOurRouteIsPoppedAndTheNextRouteIsTheNextHop() throws {
        try start(forward: false)
        let route = "Route: <sip:\(proxy);lr>, <sip:\(sink.address);lr>\r\n"
        client.send(request(uri: "sip:bob@192.0.2.7", extra: route), to: proxy)
        let forwarded = try XCTUnwrap(sink.receive(), "the second Route is the next hop")
        XCTAssertEqual(header("Route", in: forwarded), ["<sip:\(sink.address);lr>"])
        XCTAssertTrue(forwarded.hasPrefix("INVITE sip:bob@192.0.2.7 SIP/2.0\r\n"), "loose routing keeps the R-URI")
    }

    func testWithoutForwardOrRouteTheRequestURIIsTheNextHop() throws {
        try start(forward: false)
        client.send(request(uri: "sip:bob@\(sink.address)"), to: proxy)
        XCTAssertNotNil(sink.receive())
        client.send(request(uri: "sip:bob@example.com"), to: proxy)
        let reply = try XCTUnwrap(client.receive())
        XCTAssertTrue(reply.hasPrefix("SIP/2.0 503 No numeric next hop\r\n"), reply)
    }
}
