import Engine
import Foundation
import Glibc
@testable import Ops
import SIP
import XCTest

final class RadiusRunnerTests: XCTestCase {
    nonisolated(unsafe) static var server: FreeRadiusServer?

    override class func setUp() {
        super.setUp()
        server = FreeRadiusServer.start()
    }

    override class func tearDown() {
        server?.stop()
        server = nil
        super.tearDown()
    }

    /// The class's FreeRADIUS; skipped locally without it, a failure under CI=true (make test-deps installs it).
    func requireServer() throws -> FreeRadiusServer {
        if let server = Self.server { return server }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            XCTFail("FreeRADIUS did not start under CI (make test-deps installs freeradius)")
        }
        throw XCTSkip("no FreeRADIUS here (make test-deps installs freeradius freeradius-utils)")
    }

    func configuration(port: UInt16, secret: String = FreeRadiusServer.secret,
                       retransmit: UInt64 = 1000) -> RadiusRunner.Configuration {
        var configuration = RadiusRunner.Configuration(server: SocketAddress(numericHost: "127.0.0.1", port: port)!,
                                                       secret: secret)
        configuration.retransmitMilliseconds = retransmit
        return configuration
    }

    func run(_ count: Int, seconds: Double = 5, configuration: RadiusRunner.Configuration,
             _ body: @escaping (RadiusHarness) -> Void) throws -> (RadiusScenario, [RadiusOutcome]) {
        let scenario = RadiusScenario(configuration: configuration, body: body)
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: count, seconds: seconds)
        engine.stop()
        return (scenario, outcomes)
    }

    // MARK: - MD5, against the RFCs' own vectors

    func hex(_ digest: MD5.Digest) -> String {
        withUnsafeBytes(of: digest) { $0.map { String(format: "%02x", $0) }.joined() }
    }

    func testMD5MatchesRFC1321TestSuite() {
        let cases = [("", "d41d8cd98f00b204e9800998ecf8427e"), ("abc", "900150983cd24fb0d6963f7d28e17f72"),
                     ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
                     ("12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                      "57edf4a22be3c955ac49da2e2107b67a")]
        for (input, expected) in cases {
            XCTAssertEqual(Array(input.utf8).withUnsafeBytes { hex(MD5.digest($0)) }, expected, input)
        }
    }

    func testHMACMD5MatchesRFC2104Vectors() {
        let key = [UInt8](repeating: 0x0b, count: 16)
        let mac = key.withUnsafeBytes { key in
            var hmac = HMACMD5(key: key)
            Array("Hi There".utf8).withUnsafeBytes { hmac.update($0) }
            return hmac.finalize()
        }
        XCTAssertEqual(hex(mac), "9294727a3638bb1c13f48ef8158bfc9d")
        let jefe = Array("Jefe".utf8).withUnsafeBytes { key in
            var hmac = HMACMD5(key: key)
            Array("what do ya want for nothing?".utf8).withUnsafeBytes { hmac.update($0) }
            return hmac.finalize()
        }
        XCTAssertEqual(hex(jefe), "750c783e6ab0b503eaa86e310a5db738")
    }

    // MARK: - Against FreeRADIUS

    func testAccessAcceptCarriesTheReplyMessage() throws {
        let server = try requireServer()
        let (_, outcomes) = try run(1, configuration: configuration(port: server.authPort)) {
            $0.access("alice", "s3cret", token: 7)
        }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.token, 7)
        XCTAssertEqual(outcome.code, .accepted)
        XCTAssertEqual(outcome.responseCode, 2)
        XCTAssertEqual(outcome.string(RadiusAttributeType.replyMessage), "hello alice")
    }

    func testCancelledRequestIsNeverReportedAndFreesItsIdentifier() throws {
        let silent = FakeRadiusServer()
        let scenario = RadiusScenario(configuration: configuration(port: silent.port, retransmit: 100)) { harness in
            guard case .accepted(let handle) = harness.access("alice", "s3cret", timeout: 300, token: 1) else {
                return XCTFail("not sent")
            }
            harness.runner.cancel(handle)
            harness.runner.cancel(handle)  // a second cancel of the same handle does nothing
            harness.scenario.note("inFlight", harness.runner.inFlight)
        }
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: 1, seconds: 0.6)
        engine.stop()
        XCTAssertEqual(outcomes.count, 0, "no delivery after a cancel, not even the timeout")
        XCTAssertEqual(scenario.noted("inFlight"), 0)
    }

    func testManyRequestsInFlightAreMatchedByIdentifier() throws {
        let server = try requireServer()
        let (scenario, outcomes) = try run(100, configuration: configuration(port: server.authPort)) { harness in
            for token in 0..<100 {
                harness.access("alice", token % 2 == 0 ? "s3cret" : "bad", token: UInt64(token))
            }
        }
        XCTAssertEqual(outcomes.count, 100)
        XCTAssertEqual(Set(outcomes.map(\.token)), Set(0..<100))
        for outcome in outcomes {
            XCTAssertEqual(outcome.code, outcome.token % 2 == 0 ? .accepted : .rejected, "token \(outcome.token)")
        }
        XCTAssertEqual(scenario.noted("inFlight"), 0)
        XCTAssertEqual(scenario.noted("badResponses"), 0)
    }

    func testWrongPasswordIsRejected() throws {
        let server = try requireServer()
        let (_, outcomes) = try run(1, configuration: configuration(port: server.authPort)) {
            $0.access("alice", "wrong password", token: 1)
        }
        XCTAssertEqual(outcomes.first?.code, .rejected)
        XCTAssertEqual(outcomes.first?.responseCode, 3)
    }

    func testLongPasswordOverSeveralBlocksIsHiddenCorrectly() throws {
        let server = try requireServer()
        // A wrong secret would also reject: the accept proves the hiding, a 40-byte password takes 3 blocks.
        let (_, outcomes) = try run(2, configuration: configuration(port: server.authPort)) {
            $0.access("alice", "s3cret" + String(repeating: "x", count: 34), token: 1)
            $0.access("alice", "s3cret", token: 2)
        }
        XCTAssertEqual(outcomes.first { $0.token == 1 }?.code, .rejected)
        XCTAssertEqual(outcomes.first { $0.token == 2 }?.code, .accepted)
    }

    func testAccountingStartGetsAnAccountingResponse() throws {
        let server = try requireServer()
        let (_, outcomes) = try run(1, configuration: configuration(port: server.accountingPort)) { harness in
            var attributes = RadiusAttributes()
            attributes.append(type: RadiusAttributeType.acctStatusType, integer: RadiusAccountingStatus.start.rawValue)
            attributes.append(type: RadiusAttributeType.acctSessionID, string: "call-1@ringsip")
            attributes.append(type: RadiusAttributeType.userName, string: "alice")
            attributes.append(type: RadiusAttributeType.nasIPAddress, ipv4: (127, 0, 0, 1))
            harness.runner.submitAccounting(attributes: attributes, timeoutMilliseconds: 5000, token: 3)
        }
        XCTAssertEqual(outcomes.first?.code, .accepted)
        XCTAssertEqual(outcomes.first?.responseCode, 5)
    }

    func testWrongSecretIsNeverAcceptedAndTimesOut() throws {
        let server = try requireServer()
        // FreeRADIUS cannot verify our Message-Authenticator made with another secret and drops the request
        // silently; had it answered, our Response Authenticator check would drop the answer. Either way: timeout.
        let (_, outcomes) = try run(1, configuration: configuration(port: server.authPort, secret: "nope",
                                                                     retransmit: 200)) {
            $0.access("alice", "s3cret", timeout: 600, token: 1)
        }
        XCTAssertEqual(outcomes.first?.code, .timeout)
        // Sent at 0, 200 and 400 ms; a wheel turn that runs late on a loaded machine may skip the last one.
        XCTAssertTrue((1...2).contains(outcomes.first?.retransmissions ?? 0))
    }

    // MARK: - Against a silent or forging server

    func testSilentServerTimesOutAfterRetransmittingTheSamePacket() throws {
        let silent = FakeRadiusServer()
        let started = Date()
        let (scenario, outcomes) = try run(1, configuration: configuration(port: silent.port, retransmit: 200)) {
            $0.access("alice", "s3cret", timeout: 1000, token: 9)
        }
        let elapsed = Date().timeIntervalSince(started)
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .timeout)
        XCTAssertEqual(outcome.responseCode, 0)
        XCTAssertGreaterThanOrEqual(outcome.retransmissions, 3, "every 200 ms over 1 s")
        XCTAssertLessThanOrEqual(outcome.retransmissions, 5)
        XCTAssertEqual(scenario.noted("retransmissionsTotal"), outcome.retransmissions)
        XCTAssertEqual(scenario.noted("inFlight"), 0, "the identifier is free again")
        XCTAssertGreaterThanOrEqual(elapsed, 0.95)
        var datagrams: [[UInt8]] = []
        while let datagram = silent.receive(dontWait: true) { datagrams.append(datagram.bytes) }
        XCTAssertEqual(datagrams.count, 1 + outcome.retransmissions, "the server saw every transmission")
        XCTAssertTrue(datagrams.allSatisfy { $0 == datagrams.first }, "retransmissions are the same bytes")
    }

    func testIdentifierSpaceFullFailsFast() throws {
        let silent = FakeRadiusServer()
        let scenario = RadiusScenario(configuration: configuration(port: silent.port, retransmit: 5000)) { harness in
            var accepted = 0
            for token in 0..<256 {
                if case .accepted = harness.access("alice", "s3cret", timeout: 5000, token: UInt64(token)) {
                    accepted += 1
                }
            }
            harness.scenario.note("accepted", accepted)
            if case .rejected(let code) = harness.access("alice", "s3cret", token: 999) {
                harness.scenario.note("rejected", Int(code.rawValue))
            }
        }
        let engine = try startEngine(scenario)
        let deadline = Date().addingTimeInterval(2)
        while scenario.noted("rejected") == nil && Date() < deadline { usleep(10_000) }
        engine.stop()
        XCTAssertEqual(scenario.noted("accepted"), 256)
        XCTAssertEqual(scenario.noted("rejected"), Int(RadiusCode.identifiersFull.rawValue))
    }

    func testForgedResponseIsDroppedAndTheGenuineOneStillCounts() throws {
        let fake = FakeRadiusServer()
        let secret = Array("fake-secret".utf8)
        let answered = expectation(description: "answered")
        Thread.detachNewThread {
            defer { answered.fulfill() }
            guard let (request, client) = fake.receive() else { return }
            let identifier = request[1]
            let requestAuthenticator = Array(request[4..<20])
            // A forged Access-Accept: right identifier, authenticator not made with the secret.
            var forged: [UInt8] = [2, identifier, 0, 20] + [UInt8](repeating: 0xAB, count: 16)
            forged[3] = UInt8(forged.count)
            fake.send(forged, to: client)
            // The genuine Access-Reject, with a Message-Authenticator, then its Response Authenticator.
            var genuine: [UInt8] = [3, identifier, 0, 38] + requestAuthenticator + [80, 18]
                + [UInt8](repeating: 0, count: 16)
            let mac = secret.withUnsafeBytes { key in
                var hmac = HMACMD5(key: key)
                genuine.withUnsafeBytes { hmac.update($0) }
                return hmac.finalize()
            }
            withUnsafeBytes(of: mac) { genuine.replaceSubrange(22..<38, with: $0) }
            var md5 = MD5()
            genuine.withUnsafeBytes { md5.update($0) }
            secret.withUnsafeBytes { md5.update($0) }
            let responseAuthenticator = md5.finalize()
            withUnsafeBytes(of: responseAuthenticator) { genuine.replaceSubrange(4..<20, with: $0) }
            fake.send(genuine, to: client)
        }
        let (scenario, outcomes) = try run(1, configuration: configuration(port: fake.port, secret: "fake-secret")) {
            $0.access("alice", "s3cret", timeout: 3000, token: 5)
        }
        wait(for: [answered], timeout: 5)
        XCTAssertEqual(outcomes.first?.code, .rejected, "the forged accept was not taken")
        XCTAssertEqual(scenario.noted("badResponses"), 1)
    }

    func testForgedMessageAuthenticatorIsDropped() throws {
        let fake = FakeRadiusServer()
        let secret = Array("fake-secret".utf8)
        Thread.detachNewThread {
            guard let (request, client) = fake.receive() else { return }
            // Right Response Authenticator, wrong Message-Authenticator: still dropped.
            var reply: [UInt8] = [2, request[1], 0, 38] + Array(request[4..<20]) + [80, 18]
                + [UInt8](repeating: 0x55, count: 16)
            var md5 = MD5()
            reply.withUnsafeBytes { md5.update($0) }
            secret.withUnsafeBytes { md5.update($0) }
            let authenticator = md5.finalize()
            withUnsafeBytes(of: authenticator) { reply.replaceSubrange(4..<20, with: $0) }
            fake.send(reply, to: client)
        }
        let (scenario, outcomes) = try run(1, configuration: configuration(port: fake.port, secret: "fake-secret",
                                                                             retransmit: 5000)) {
            $0.access("alice", "s3cret", timeout: 500, token: 5)
        }
        XCTAssertEqual(outcomes.first?.code, .timeout)
        XCTAssertEqual(scenario.noted("badResponses"), 1)
    }
}
