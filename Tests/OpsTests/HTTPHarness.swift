import Engine
import Foundation
import Glibc
import Ops
import XCTest

/// One finished request, copied off the shard's thread.
struct HTTPOutcome: Sendable {
    var token: UInt64
    var code: HTTPCode
    var status: Int
    var contentType: String
    var body: String
    var bodyCount: Int
    var bodyTooLarge: Bool
    /// Milliseconds since the request was submitted.
    var elapsed: UInt64
    /// Transfers the runner had running while delivering this one (itself included).
    var runningAtDelivery: Int
}

/// What a test gives the shard to do (run on its thread once the runner exists), and what came back.
final class HTTPScenario: OutcomeLog<HTTPOutcome>, @unchecked Sendable {
    let configuration: HTTPRunner.Configuration
    let body: (HTTPHarness) -> Void
    /// Called on the shard's thread after each delivery, e.g. to submit the next request.
    let next: ((HTTPHarness, HTTPOutcome) -> Void)?
    private var submissions: [UInt64: HTTPSubmission] = [:]
    private(set) var maximumRunning = 0
    private(set) var watchedSocketsAtStop = -1

    init(configuration: HTTPRunner.Configuration = .init(), body: @escaping (HTTPHarness) -> Void,
         next: ((HTTPHarness, HTTPOutcome) -> Void)? = nil) {
        self.configuration = configuration
        self.body = body
        self.next = next
        super.init()
    }

    func record(_ submission: HTTPSubmission, token: UInt64, running: Int) {
        condition.lock()
        submissions[token] = submission
        maximumRunning = max(maximumRunning, running)
        condition.unlock()
    }

    func recordStop(watchedSockets: Int) {
        condition.lock()
        watchedSocketsAtStop = watchedSockets
        condition.unlock()
    }

    func submission(_ token: UInt64) -> HTTPSubmission? {
        condition.lock()
        defer { condition.unlock() }
        return submissions[token]
    }
}

/// A shard handler that owns an HTTPRunner and forwards to it what the engine delivers.
final class HTTPHarness: ShardHandler, HTTPRunnerDelegate {
    let scenario: HTTPScenario
    var runner: HTTPRunner!
    var submittedAt: [UInt64: UInt64] = [:]

    init(scenario: HTTPScenario) {
        self.scenario = scenario
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition { .done }

    func started(on shard: Shard) {
        runner = HTTPRunner(shard: shard, configuration: scenario.configuration, delegate: self)
        scenario.body(self)
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        if OpsPacking.component(of: id) == .http { runner.operationCompleted(id, result: result, flags: flags) }
    }

    func timerFired(payload: UInt64, on shard: Shard) {
        if OpsPacking.component(ofTimer: payload) == .http { runner.timerFired(payload: payload) }
    }

    func stopping(on shard: Shard) {
        scenario.recordStop(watchedSockets: runner.watchedSockets)
        runner.shutdown()
    }

    @discardableResult
    func submit(_ url: String, method: HTTPMethod = .get, body: String = "", contentType: String = "",
                headers: String = "", timeout: UInt64 = 3000, token: UInt64) -> HTTPSubmission {
        let u = Array(url.utf8), b = Array(body.utf8), c = Array(contentType.utf8), h = Array(headers.utf8)
        submittedAt[token] = monotonicMilliseconds()
        let submission = u.withUnsafeBytes { u in
            b.withUnsafeBytes { b in
                c.withUnsafeBytes { c in
                    h.withUnsafeBytes { h in
                        runner.submit(method: method, url: u, body: b, contentType: c, headers: h,
                                      timeoutMilliseconds: timeout, token: token)
                    }
                }
            }
        }
        scenario.record(submission, token: token, running: runner.running)
        return submission
    }

    func httpCompleted(token: UInt64, _ completion: borrowing HTTPCompletion, on shard: Shard) {
        let outcome = HTTPOutcome(
            token: token, code: completion.code, status: completion.status,
            contentType: String(decoding: completion.contentType, as: UTF8.self),
            body: String(decoding: completion.body, as: UTF8.self), bodyCount: completion.body.count,
            bodyTooLarge: completion.bodyTooLarge,
            elapsed: monotonicMilliseconds() - (submittedAt[token] ?? 0), runningAtDelivery: runner.running)
        scenario.record(outcome)
        scenario.next?(self, outcome)
    }
}

/// The fixture HTTP server (Fixtures/http_fixture.py) on 127.0.0.1, a free port.
final class HTTPFixtureServer {
    let process = Process()
    let port: Int
    let scheme: String

    /// - Parameter tls: a certificate and key file: serve HTTPS with them.
    init(tls: (certificate: String, key: String)? = nil) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/http_fixture.py")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script.path] + (tls.map { ["--tls", $0.certificate, $0.key] } ?? [])
        scheme = tls == nil ? "http" : "https"
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // The first line is the port, printed once the server listens.
        var line = Data()
        while !line.contains(10) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            process.terminate()
            // In CI a fixture that cannot start is a failure, not a reason to skip twenty tests.
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw HTTPFixtureError.didNotStart }
            throw XCTSkip("the HTTP fixture server did not start (python3 missing?)")
        }
        self.port = port
    }

    func url(_ path: String) -> String { "\(scheme)://127.0.0.1:\(port)\(path)" }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on: bound, then closed.
func closedPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    close(fd)
    return Int(UInt16(bigEndian: address.sin_port))
}

extension XCTestCase {
    /// A one-shard engine whose handler runs `scenario`; skipped where io_uring is unavailable (not under CI).
    func startEngine(_ scenario: HTTPScenario) throws -> Engine {
        signal(SIGPIPE, SIG_IGN)
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            HTTPHarness(scenario: scenario)
        }
        do {
            try engine.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
        return engine
    }
}

/// A listening TCP socket on 127.0.0.1 that never accepts, its one-place backlog filled: a further connect
/// gets no answer to its SYN (Linux drops SYNs while the accept queue is full), so it times out.
final class UnansweringListener {
    let fd: Int32
    let fillers: [Int32]
    let port: Int

    init() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        listen(fd, 0)
        port = Int(UInt16(bigEndian: address.sin_port))
        var fillers: [Int32] = []
        // Backlog 0 holds one established connection; a second fills the SYN side. Non-blocking: the second
        // may never complete.
        for _ in 0..<2 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
            }
            fillers.append(filler)
        }
        self.fillers = fillers
        usleep(50_000)
    }

    deinit {
        for filler in fillers { close(filler) }
        close(fd)
    }
}

enum HTTPFixtureError: Error {
    case didNotStart
}
