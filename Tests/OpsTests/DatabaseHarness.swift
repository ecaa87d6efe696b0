import Engine
import Foundation
import Glibc
import Ops
import XCTest

/// One finished query, copied off the shard's thread. A cell is nil for SQL NULL.
struct DatabaseOutcome: Sendable {
    var token: UInt64
    var code: DatabaseCode
    var errorNumber: UInt32
    var message: String
    var rows: [[String?]]
    /// Milliseconds since the harness started its runner.
    var elapsed: UInt64
}

/// What a test does on the shard (run on its thread once the runner exists), and what came back.
final class DatabaseScenario: OutcomeLog<DatabaseOutcome>, @unchecked Sendable {
    let configuration: DatabaseRunner.Configuration
    let body: (DatabaseHarness) -> Void
    /// Called on the shard's thread after each delivery was recorded (to chain queries).
    let onCompletion: ((DatabaseHarness, DatabaseOutcome) -> Void)?

    init(configuration: DatabaseRunner.Configuration, body: @escaping (DatabaseHarness) -> Void,
         onCompletion: ((DatabaseHarness, DatabaseOutcome) -> Void)? = nil) {
        self.configuration = configuration
        self.body = body
        self.onCompletion = onCompletion
        super.init()
    }
}

/// A shard handler that owns a DatabaseRunner and forwards to it what the engine delivers.
final class DatabaseHarness: ShardHandler, DatabaseRunnerDelegate {
    /// A wheel timer of the harness itself (not Ops'): runs `pendingAction`.
    static let actionTimer: UInt64 = 1
    let scenario: DatabaseScenario
    var runner: DatabaseRunner!
    var startedAt: UInt64 = 0
    var pendingAction: ((DatabaseHarness) -> Void)?
    unowned var shard: Shard!

    init(scenario: DatabaseScenario) {
        self.scenario = scenario
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition { .done }

    func started(on shard: Shard) {
        self.shard = shard
        runner = DatabaseRunner(shard: shard, configuration: scenario.configuration, delegate: self)
        startedAt = shard.now
        scenario.body(self)
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        if OpsPacking.component(of: id) == .database { runner.operationCompleted(id, result: result, flags: flags) }
    }

    func timerFired(payload: UInt64, on shard: Shard) {
        if OpsPacking.component(ofTimer: payload) == .database {
            runner.timerFired(payload: payload)
        } else if payload == Self.actionTimer, let action = pendingAction {
            pendingAction = nil
            action(self)
        }
    }

    func stopping(on shard: Shard) {
        runner.shutdown()
    }

    /// Runs `action` on the shard after `milliseconds`.
    func after(_ milliseconds: UInt64, _ action: @escaping (DatabaseHarness) -> Void) {
        pendingAction = action
        _ = shard.schedule(after: milliseconds, payload: Self.actionTimer)
    }

    @discardableResult
    func submit(_ query: String, timeout: UInt64 = 5000, token: UInt64) -> DatabaseSubmission {
        let bytes = Array(query.utf8)
        return bytes.withUnsafeBytes { runner.submit(query: $0, timeoutMilliseconds: timeout, token: token) }
    }

    /// `text` escaped for a quoted SQL literal by the runner.
    func escape(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        var out = [UInt8](repeating: 0, count: 2 * bytes.count + 1)
        let length = bytes.withUnsafeBytes { b in out.withUnsafeMutableBytes { runner.escape(b, into: $0) } }
        return length.map { String(decoding: out[..<$0], as: UTF8.self) }
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        var rows: [[String?]] = []
        for row in 0..<completion.rows {
            rows.append((0..<completion.columns).map { column in
                completion.value(row: row, column: column).map { String(decoding: $0, as: UTF8.self) }
            })
        }
        let outcome = DatabaseOutcome(token: token, code: completion.code, errorNumber: completion.errorNumber,
                                      message: String(decoding: completion.message, as: UTF8.self), rows: rows,
                                      elapsed: monotonicMilliseconds() - startedAt)
        scenario.record(outcome)
        scenario.onCompletion?(self, outcome)
    }
}

extension XCTestCase {
    /// The test server `make test-deps` sets up (scripts/ensure-mariadb).
    static let testDatabaseURL = "mysql://ringsip:ringsip@127.0.0.1:3306/ringsip"

    /// Skips (fails under CI=true) when no MariaDB answers on 127.0.0.1:3306.
    func requireDatabaseServer() throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(3306).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc != 0 else { return }
        if ProcessInfo.processInfo.environment["CI"] == "true" {
            XCTFail("no MariaDB on 127.0.0.1:3306 under CI (make test-deps starts it)")
            throw XCTSkip("no server")
        }
        throw XCTSkip("no MariaDB on 127.0.0.1:3306 (make test-deps installs and starts it)")
    }

    /// A one-shard engine whose handler runs `scenario`; skipped where io_uring is unavailable (not under CI).
    func startEngine(_ scenario: DatabaseScenario) throws -> Engine {
        signal(SIGPIPE, SIG_IGN)
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            DatabaseHarness(scenario: scenario)
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
