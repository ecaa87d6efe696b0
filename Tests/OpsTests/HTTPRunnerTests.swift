import Engine
import Foundation
import Glibc
import Ops
import XCTest

final class HTTPRunnerTests: XCTestCase {
    var server: HTTPFixtureServer!

    override func setUpWithError() throws {
        server = try HTTPFixtureServer()
    }

    override func tearDown() {
        server = nil
    }

    /// Runs `body` on a fresh shard, waits for `count` deliveries (at most `seconds`), stops the engine.
    func run(_ count: Int, seconds: Double = 5, configuration: HTTPRunner.Configuration = .init(),
             next: ((HTTPHarness, HTTPOutcome) -> Void)? = nil,
             _ body: @escaping (HTTPHarness) -> Void) throws -> (HTTPScenario, [HTTPOutcome]) {
        let scenario = HTTPScenario(configuration: configuration, body: body, next: next)
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: count, seconds: seconds)
        engine.stop()
        return (scenario, outcomes)
    }

    func testGetReportsBodyStatusAndContentType() throws {
        let url = server.url("/hello")
        let (_, outcomes) = try run(1) { $0.submit(url, token: 1) }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .success)
        XCTAssertEqual(outcome.status, 200)
        XCTAssertEqual(outcome.contentType, "text/plain")
        XCTAssertEqual(outcome.body, "hello")
        XCTAssertEqual(outcome.token, 1)
    }

    func testPostSendsBodyAndContentTypeWhichTheServerEchoes() throws {
        let url = server.url("/echo")
        let payload = "{\"user\":\"alice\"}" + String(repeating: "x", count: 5000)
        let (_, outcomes) = try run(1) {
            $0.submit(url, method: .post, body: payload, contentType: "application/json", token: 2)
        }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .success)
        XCTAssertEqual(outcome.status, 200)
        XCTAssertEqual(outcome.contentType, "application/json")
        XCTAssertEqual(outcome.body, payload)
    }

    func testPutSendsItsBodyWithThePutMethod() throws {
        let url = server.url("/echo")
        let (_, outcomes) = try run(1) { $0.submit(url, method: .put, body: "put-body", contentType: "text/x-put", token: 3) }
        XCTAssertEqual(outcomes.first?.code, .success)
        XCTAssertEqual(outcomes.first?.body, "put-body")
        XCTAssertEqual(outcomes.first?.contentType, "text/x-put")
    }

    func testAppendedHeadersReachTheServer() throws {
        let url = server.url("/header?name=X-Account")
        let (_, outcomes) = try run(1) { $0.submit(url, headers: "X-Account: 42\0X-Other: y\0", token: 4) }
        XCTAssertEqual(outcomes.first?.body, "42")
    }

    func testErrorStatusIsASuccessWithItsStatus() throws {
        let url = server.url("/status/503")
        let (_, outcomes) = try run(1) { $0.submit(url, token: 5) }
        XCTAssertEqual(outcomes.first?.code, .success, "OpenSIPS: any HTTP status returned is $rc 1")
        XCTAssertEqual(outcomes.first?.status, 503)
        XCTAssertEqual(outcomes.first?.body, "status 503")
    }

    func testClosedPortIsReportedAsRefused() throws {
        let url = "http://127.0.0.1:\(closedPort())/hello"
        let (_, outcomes) = try run(1) { $0.submit(url, token: 6) }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .refused)
        XCTAssertEqual(outcome.status, 0)
        XCTAssertLessThan(outcome.elapsed, 1000)
    }

    func testServerThatNeverAnswersTheConnectIsAConnectTimeout() throws {
        let listener = UnansweringListener()
        var configuration = HTTPRunner.Configuration()
        configuration.connectionTimeout = 150
        let url = "http://127.0.0.1:\(listener.port)/hello"
        let (_, outcomes) = try run(1, configuration: configuration) { $0.submit(url, timeout: 2000, token: 9) }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .connectTimeout)
        XCTAssertGreaterThanOrEqual(outcome.elapsed, 145)
        XCTAssertLessThan(outcome.elapsed, 600, "reported \(outcome.elapsed) ms after submission")
        withExtendedLifetime(listener) {}
    }

    func testSlowServerPastTheTimeoutIsATransferTimeoutWithinBounds() throws {
        let url = server.url("/delay?ms=2000")
        let (scenario, outcomes) = try run(1) { $0.submit(url, timeout: 200, token: 7) }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .transferTimeout)
        XCTAssertGreaterThanOrEqual(outcome.elapsed, 195)
        XCTAssertLessThan(outcome.elapsed, 450, "reported \(outcome.elapsed) ms after submission")
        XCTAssertEqual(scenario.watchedSocketsAtStop, 0, "the aborted transfer's socket is no longer polled")
    }

    func testConfiguredCurlTimeoutAppliesWhenTheRequestGivesNone() throws {
        var configuration = HTTPRunner.Configuration()
        configuration.curlTimeout = 150
        let url = server.url("/delay?ms=2000")
        let (_, outcomes) = try run(1, configuration: configuration) { $0.submit(url, timeout: 0, token: 8) }
        XCTAssertEqual(outcomes.first?.code, .transferTimeout)
        XCTAssertLessThan(outcomes.first?.elapsed ?? .max, 400)
    }

    func testSlowRequestDoesNotDelayOthersOnTheShard() throws {
        let slow = server.url("/delay?ms=800"), hello = server.url("/hello")
        let (_, outcomes) = try run(1) { harness in
            harness.submit(slow, token: 1)
            harness.submit(hello, token: 2)
        }
        let fast = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(fast.token, 2, "the fast request finished first")
        XCTAssertLessThan(fast.elapsed, 300, "reported \(fast.elapsed) ms after submission")
    }

    func testFiftyConcurrentRequestsWithALimitOfEightAllComplete() throws {
        var configuration = HTTPRunner.Configuration()
        configuration.maximumTransfers = 8
        configuration.queueCapacity = 64
        let url = server.url("/delay?ms=40")
        let (scenario, outcomes) = try run(50, seconds: 10, configuration: configuration) { harness in
            for token in 0..<50 { harness.submit(url, token: UInt64(token)) }
        }
        XCTAssertEqual(outcomes.count, 50)
        XCTAssertEqual(Set(outcomes.map(\.token)), Set(0..<50))
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .success && $0.status == 200 && $0.body == "slept 40" })
        XCTAssertLessThanOrEqual(outcomes.map(\.runningAtDelivery).max() ?? 0, 8)
        XCTAssertLessThanOrEqual(scenario.maximumRunning, 8)
        // 50 / 8 = 7 rounds of 40 ms: they overlapped, or this would take 2 s.
        XCTAssertLessThan(outcomes.map(\.elapsed).max() ?? .max, 1500)
    }

    func testFullQueueIsRefusedAtOnce() throws {
        var configuration = HTTPRunner.Configuration()
        configuration.maximumTransfers = 1
        configuration.queueCapacity = 1
        let url = server.url("/delay?ms=20")
        let (scenario, outcomes) = try run(2, configuration: configuration) { harness in
            for token in 0..<3 { harness.submit(url, token: UInt64(token)) }
        }
        XCTAssertEqual(scenario.submission(2), .rejected(.queueFull))
        XCTAssertEqual(outcomes.count, 2)
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .success })
    }

    func testQueuedRequestTimesOutInTheQueue() throws {
        var configuration = HTTPRunner.Configuration()
        configuration.maximumTransfers = 1
        let url = server.url("/delay?ms=500")
        let (_, outcomes) = try run(2, configuration: configuration) { harness in
            harness.submit(url, timeout: 2000, token: 1)
            harness.submit(url, timeout: 100, token: 2)
        }
        let queued = try XCTUnwrap(outcomes.first { $0.token == 2 })
        XCTAssertEqual(queued.code, .transferTimeout)
        XCTAssertLessThan(queued.elapsed, 300)
        XCTAssertEqual(outcomes.first { $0.token == 1 }?.code, .success)
    }

    func testSequentialRequestsReuseOneConnection() throws {
        let hello = server.url("/hello"), connections = server.url("/connections")
        let (_, outcomes) = try run(11, next: { harness, outcome in
            if outcome.token < 9 { harness.submit(hello, token: outcome.token + 1) }
            if outcome.token == 9 { harness.submit(connections, token: 10) }
        }) { $0.submit(hello, token: 0) }
        XCTAssertEqual(outcomes.count, 11)
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .success })
        XCTAssertEqual(outcomes.last?.body, "1", "11 requests, one connection")
    }

    func testResponseBeyondMaxTransferSizeIsAbortedAndReported() throws {
        var configuration = HTTPRunner.Configuration()
        configuration.maxTransferSize = 1000
        let url = server.url("/big?n=5000")
        let small = server.url("/big?n=1000")
        let (_, outcomes) = try run(2, configuration: configuration) {
            $0.submit(url, token: 1)
            $0.submit(small, token: 2)
        }
        let big = try XCTUnwrap(outcomes.first { $0.token == 1 })
        XCTAssertEqual(big.code, .failed)
        XCTAssertTrue(big.bodyTooLarge)
        let fits = try XCTUnwrap(outcomes.first { $0.token == 2 })
        XCTAssertEqual(fits.code, .success)
        XCTAssertEqual(fits.bodyCount, 1000)
    }

    func testHTTPSWorksOnTheRing() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ringsip-tls-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        openssl.arguments = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                             "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", certificate]
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        guard openssl.terminationStatus == 0 else {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw HTTPFixtureError.didNotStart }
            throw XCTSkip("openssl could not make a certificate")
        }
        let tlsServer = try HTTPFixtureServer(tls: (certificate, key))
        var configuration = HTTPRunner.Configuration()
        configuration.verifyPeer = false  // self-signed
        configuration.verifyHost = false
        let url = tlsServer.url("/echo")
        let (_, outcomes) = try run(1, configuration: configuration) {
            $0.submit(url, method: .post, body: "over tls", contentType: "text/plain", token: 1)
        }
        XCTAssertEqual(outcomes.first?.code, .success)
        XCTAssertEqual(outcomes.first?.body, "over tls")
        withExtendedLifetime(tlsServer) {}
    }

    func testHTTPSToAPlainHTTPServerFailsTheHandshake() throws {
        let url = "https://127.0.0.1:\(server.port)/hello"
        let (_, outcomes) = try run(1) { $0.submit(url, token: 2) }
        XCTAssertEqual(outcomes.first?.code, .failed)
    }

    func testShutdownClosesEveryConnectionAndSocket() throws {
        let before = descriptorCount()
        let hello = server.url("/hello"), slow = server.url("/delay?ms=2000")
        let refused = "http://127.0.0.1:\(closedPort())/"
        let (_, outcomes) = try run(3) { harness in
            for token in 0..<3 { harness.submit(hello, token: UInt64(token)) }
            harness.submit(refused, token: 3)
            harness.submit(slow, timeout: 100, token: 4)
            harness.submit(slow, token: 5)  // still running at shutdown
        }
        XCTAssertGreaterThanOrEqual(outcomes.count, 3)
        // The engine has stopped; the runner closed its cached connections and the running transfer's.
        let deadline = Date().addingTimeInterval(1)
        while descriptorCount() > before && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(descriptorCount(), before, "no socket outlives the runner")
    }

    func descriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    func testCancelledRequestIsNotReportedAndOthersProceed() throws {
        let slow = server.url("/delay?ms=300"), hello = server.url("/hello")
        let (scenario, outcomes) = try run(1, seconds: 2) { harness in
            if case .accepted(let handle) = harness.submit(slow, token: 1) { harness.runner.cancel(handle) }
            harness.submit(hello, token: 2)
        }
        XCTAssertEqual(outcomes.map(\.token), [2])
        XCTAssertEqual(scenario.watchedSocketsAtStop, 0)
    }
}
