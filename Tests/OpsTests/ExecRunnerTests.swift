import Engine
import Foundation
import Glibc
import Ops
import XCTest

final class ExecRunnerTests: XCTestCase {
    /// Runs `body` on a fresh shard, waits for `count` deliveries (at most `seconds`), stops the engine.
    func run(_ count: Int, seconds: Double = 3, configuration: ExecRunner.Configuration = .init(),
             _ body: @escaping (ExecHarness) -> Void) throws -> (ExecScenario, [ExecOutcome]) {
        let scenario = ExecScenario(configuration: configuration, body: body)
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: count, seconds: seconds)
        engine.stop()
        return (scenario, outcomes)
    }

    func testEchoOutputAndExitStatusZeroAreReported() throws {
        let (_, outcomes) = try run(1) { $0.submit("echo hello", token: 1) }
        XCTAssertEqual(outcomes.count, 1)
        XCTAssertEqual(outcomes.first?.code, .completed)
        XCTAssertEqual(outcomes.first?.exit, .exited(status: 0))
        XCTAssertEqual(outcomes.first?.stdout, "hello\n")
        XCTAssertEqual(outcomes.first?.stderr, "")
        XCTAssertEqual(outcomes.first?.token, 1)
    }

    func testStdinIsWrittenThenClosedSoCatEchoesItBack() throws {
        let input = String(repeating: "some input line\n", count: 8000)  // 128 KB: more than a pipe holds
        var configuration = ExecRunner.Configuration()
        configuration.outputLimit = 256 * 1024
        let (_, outcomes) = try run(1, configuration: configuration) { $0.submit("cat", stdin: input, token: 2) }
        XCTAssertEqual(outcomes.first?.stdout.count, input.utf8.count)
        XCTAssertEqual(outcomes.first?.stdout, input)
        XCTAssertEqual(outcomes.first?.exit, .exited(status: 0))
    }

    func testStderrIsCapturedApartFromStdout() throws {
        let (_, outcomes) = try run(1) { $0.submit("echo out; echo oops >&2", token: 3) }
        XCTAssertEqual(outcomes.first?.stdout, "out\n")
        XCTAssertEqual(outcomes.first?.stderr, "oops\n")
    }

    func testNonZeroExitStatusIsReportedAndStillCompletes() throws {
        let (_, outcomes) = try run(1) { $0.submit("exit 3", token: 4) }
        XCTAssertEqual(outcomes.first?.code, .completed, "OpenSIPS: $rc 1 once the command ran, whatever its status")
        XCTAssertEqual(outcomes.first?.exit, .exited(status: 3))
    }

    func testEnvironmentEntriesReachTheChildAndOverrideInheritedOnes() throws {
        let (_, outcomes) = try run(1) {
            $0.submit("echo \"$OSIPS_EXEC_0 $OSIPS_EXEC_1 $HOME\"", environment: "OSIPS_EXEC_0=a b\0OSIPS_EXEC_1=c\0HOME=/nowhere\0",
                      token: 5)
        }
        XCTAssertEqual(outcomes.first?.stdout, "a b c /nowhere\n")
    }

    func testOutputBeyondTheLimitIsDrainedDroppedAndReported() throws {
        var configuration = ExecRunner.Configuration()
        configuration.outputLimit = 1024
        let (_, outcomes) = try run(1, configuration: configuration) {
            $0.submit("head -c 200000 /dev/zero; echo done >&2", token: 6)
        }
        XCTAssertEqual(outcomes.first?.stdoutCount, 1024)
        XCTAssertEqual(outcomes.first?.stdoutTruncated, true)
        XCTAssertEqual(outcomes.first?.stderrTruncated, false)
        XCTAssertEqual(outcomes.first?.stderr, "done\n")
        XCTAssertEqual(outcomes.first?.exit, .exited(status: 0), "the child was never blocked on a full pipe")
    }

    func testTimeoutKillsTheChildReapsItAndReportsTimeout() throws {
        let descriptorsBefore = openDescriptorCount()
        let (_, outcomes) = try run(1) { $0.submit("echo $$; sleep 10", timeout: 200, token: 7) }
        let outcome = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(outcome.code, .timeout)
        XCTAssertEqual(outcome.exit, .signaled(signal: SIGKILL))
        XCTAssertGreaterThanOrEqual(outcome.elapsed, 195)
        XCTAssertLessThan(outcome.elapsed, 400, "reported \(outcome.elapsed) ms after submission")
        let pid = try XCTUnwrap(Int32(outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(pid)"), "the shell was not reaped")
        XCTAssertTrue(liveMembers(ofProcessGroup: pid).isEmpty, "the shell's children outlived the timeout")
        XCTAssertEqual(openDescriptorCount(), descriptorsBefore, "every pipe and pidfd is closed")
    }

    func testChildDoesNotInheritTheEnginesBlockedSignals() throws {
        // Shard threads inherit the creating thread's mask: block SIGTERM as ringsipd does.
        var blocked = sigset_t(), previous = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let (_, outcomes) = try run(1) { $0.submit("kill -TERM $$; sleep 5", timeout: 3000, token: 8) }
        XCTAssertEqual(outcomes.first?.exit, .signaled(signal: SIGTERM))
        XCTAssertLessThan(outcomes.first?.elapsed ?? .max, 1000)
    }

    func testHundredChildrenWithALimitOfEightAllCompleteThroughTheQueue() throws {
        var configuration = ExecRunner.Configuration()
        configuration.maximumChildren = 8
        configuration.queueCapacity = 100
        let descriptorsBefore = openDescriptorCount()
        let (scenario, outcomes) = try run(100, seconds: 20, configuration: configuration) { harness in
            for token in 0..<100 { harness.submit("true", token: UInt64(token)) }
        }
        XCTAssertEqual(outcomes.count, 100)
        XCTAssertEqual(Set(outcomes.map(\.token)).count, 100)
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .completed && $0.exit == .exited(status: 0) })
        XCTAssertLessThanOrEqual(outcomes.map(\.runningAtDelivery).max() ?? 0, 8)
        XCTAssertTrue((0..<100).allSatisfy {
            if case .accepted = scenario.submission(UInt64($0)) { return true } else { return false }
        })
        XCTAssertEqual(openDescriptorCount(), descriptorsBefore, "every pipe and pidfd is closed")
    }

    func testFullQueueRefusesAtOnceAndQueuedExecsTimeOutWithoutRunning() throws {
        var configuration = ExecRunner.Configuration()
        configuration.maximumChildren = 1
        configuration.queueCapacity = 2
        let (scenario, outcomes) = try run(3, configuration: configuration) { harness in
            for token in 1...4 { harness.submit("sleep 5", timeout: 200, token: UInt64(token)) }
        }
        XCTAssertEqual(scenario.submission(4), .rejected(.queueFull, errno: nil))
        XCTAssertEqual(outcomes.count, 3)
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .timeout && $0.elapsed < 400 })
        XCTAssertEqual(outcomes.first { $0.token == 1 }?.exit, .signaled(signal: SIGKILL))
        XCTAssertNil(outcomes.first { $0.token == 2 }?.exit, "a queued exec that timed out never ran")
    }

    func testCancelledExecIsNeverReportedAndFreesItsPlace() throws {
        var configuration = ExecRunner.Configuration()
        configuration.maximumChildren = 1
        // One child at a time: "echo next" waits in the queue until the cancelled child is reaped.
        let (_, outcomes) = try run(1, configuration: configuration) { harness in
            guard case .accepted(let handle) = harness.submit("sleep 10", token: 1) else { return }
            harness.submit("echo next", token: 2)
            harness.runner.cancel(handle)
        }
        XCTAssertEqual(outcomes.count, 1)
        XCTAssertEqual(outcomes.first?.token, 2)
        XCTAssertEqual(outcomes.first?.stdout, "next\n")
    }

    func testStoppingTheShardKillsAndReapsRunningChildren() throws {
        let pidFile = NSTemporaryDirectory() + "ringsip-exec-\(getpid()).pid"
        unlink(pidFile)
        defer { unlink(pidFile) }
        let scenario = ExecScenario { $0.submit("echo $$ > \(pidFile); exec sleep 10", timeout: 0, token: 1) }
        let engine = try startEngine(scenario)
        var pid: Int32?
        let deadline = Date().addingTimeInterval(2)
        while pid == nil && Date() < deadline {
            pid = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
            if pid == nil { usleep(5000) }
        }
        engine.stop()
        let child = try XCTUnwrap(pid, "the child never started")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(child)"), "the child outlived its shard")
        XCTAssertTrue(scenario.wait(for: 1, seconds: 0).isEmpty, "shutdown reports nothing")
    }

    func openDescriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    /// Processes of a group that are still alive (zombies awaiting their new parent don't count).
    func liveMembers(ofProcessGroup group: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            return fields.count > 2 && fields[2] == "\(group)" && fields[0] != "Z"
        }
    }
}
