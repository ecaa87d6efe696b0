import Engine
import Foundation
import Glibc
import Ops
import XCTest

/// One finished exec, copied off the shard's thread.
struct ExecOutcome: Sendable {
    var token: UInt64
    var code: ExecCode
    var exit: ChildExit?
    var stdout: String
    var stderr: String
    var stdoutCount: Int
    var stdoutTruncated: Bool
    var stderrTruncated: Bool
    /// Milliseconds since the harness started its runner.
    var elapsed: UInt64
    /// Children the runner had running while delivering this one (itself included).
    var runningAtDelivery: Int
}

/// What a test gives the shard to do (run on its thread once the runner exists), and what came back.
final class ExecScenario: OutcomeLog<ExecOutcome>, @unchecked Sendable {
    let configuration: ExecRunner.Configuration
    let body: (ExecHarness) -> Void
    private var submissions: [UInt64: ExecSubmission] = [:]

    init(configuration: ExecRunner.Configuration = .init(), body: @escaping (ExecHarness) -> Void) {
        self.configuration = configuration
        self.body = body
        super.init()
    }

    func record(_ submission: ExecSubmission, token: UInt64) {
        condition.lock()
        submissions[token] = submission
        condition.unlock()
    }

    func submission(_ token: UInt64) -> ExecSubmission? {
        condition.lock()
        defer { condition.unlock() }
        return submissions[token]
    }
}

/// A shard handler that owns an ExecRunner and forwards to it what the engine delivers, as the script
/// handler will.
final class ExecHarness: ShardHandler, ExecRunnerDelegate {
    let scenario: ExecScenario
    var runner: ExecRunner!
    var startedAt: UInt64 = 0

    init(scenario: ExecScenario) {
        self.scenario = scenario
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition { .done }

    func started(on shard: Shard) {
        runner = ExecRunner(shard: shard, configuration: scenario.configuration, delegate: self)
        startedAt = shard.now
        scenario.body(self)
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        if OpsPacking.component(of: id) == .exec { runner.operationCompleted(id, result: result, flags: flags) }
    }

    func timerFired(payload: UInt64, on shard: Shard) {
        if OpsPacking.component(ofTimer: payload) == .exec { runner.timerFired(payload: payload) }
    }

    func stopping(on shard: Shard) {
        runner.shutdown()
    }

    @discardableResult
    func submit(_ command: String, stdin: String = "", environment: String = "", timeout: UInt64 = 5000,
                token: UInt64) -> ExecSubmission {
        let c = Array(command.utf8), i = Array(stdin.utf8), e = Array(environment.utf8)
        let submission = c.withUnsafeBytes { c in
            i.withUnsafeBytes { i in
                e.withUnsafeBytes { e in
                    runner.submit(command: c, stdin: i, environment: e, timeoutMilliseconds: timeout, token: token)
                }
            }
        }
        scenario.record(submission, token: token)
        return submission
    }

    func execCompleted(token: UInt64, _ completion: borrowing ExecCompletion, on shard: Shard) {
        let now = monotonicMilliseconds()
        scenario.record(ExecOutcome(
            token: token, code: completion.code, exit: completion.exit,
            stdout: String(decoding: completion.stdout, as: UTF8.self),
            stderr: String(decoding: completion.stderr, as: UTF8.self), stdoutCount: completion.stdout.count,
            stdoutTruncated: completion.stdoutTruncated, stderrTruncated: completion.stderrTruncated,
            elapsed: now - startedAt, runningAtDelivery: runner.running))
    }
}

/// CLOCK_MONOTONIC in milliseconds, the shard's clock (`Shard.now` is only read once per loop turn).
func monotonicMilliseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

extension XCTestCase {
    /// A one-shard engine whose handler runs `scenario`; skipped where io_uring is unavailable (not under CI).
    func startEngine(_ scenario: ExecScenario) throws -> Engine {
        // A write to a child that stopped reading raises SIGPIPE on the shard's thread; ringsipd blocks it.
        signal(SIGPIPE, SIG_IGN)
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            ExecHarness(scenario: scenario)
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
