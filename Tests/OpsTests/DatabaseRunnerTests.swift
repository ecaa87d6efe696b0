import Engine
import Foundation
import Glibc
@testable import Ops
import XCTest

final class DatabaseRunnerTests: XCTestCase {
    func configuration(connections: Int = 4, queueCapacity: Int = 1024) throws -> DatabaseRunner.Configuration {
        var configuration = try DatabaseRunner.Configuration(url: Self.testDatabaseURL)
        configuration.connections = connections
        configuration.queueCapacity = queueCapacity
        return configuration
    }

    /// Runs `body` on a fresh shard against the test server, waits for `count` deliveries (at most `seconds`).
    func run(_ count: Int, seconds: Double = 5, configuration: DatabaseRunner.Configuration? = nil,
             onCompletion: ((DatabaseHarness, DatabaseOutcome) -> Void)? = nil,
             _ body: @escaping (DatabaseHarness) -> Void) throws -> (DatabaseScenario, [DatabaseOutcome]) {
        try requireDatabaseServer()
        let scenario = DatabaseScenario(configuration: try configuration ?? self.configuration(), body: body,
                                        onCompletion: onCompletion)
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: count, seconds: seconds)
        engine.stop()
        return (scenario, outcomes)
    }

    func testSelectOneReturnsOneRowOfOneColumn() throws {
        let (_, outcomes) = try run(1) { $0.submit("SELECT 1", token: 7) }
        XCTAssertEqual(outcomes.count, 1)
        XCTAssertEqual(outcomes.first?.code, .completed)
        XCTAssertEqual(outcomes.first?.token, 7)
        XCTAssertEqual(outcomes.first?.rows, [["1"]])
    }

    func testRowsAndColumnsKeepNullApartFromTheEmptyString() throws {
        let (_, outcomes) = try run(1) {
            $0.submit("SELECT 1 AS a, NULL AS b, 'x' AS c UNION ALL SELECT 2, 'y', ''", token: 1)
        }
        XCTAssertEqual(outcomes.first?.code, .completed)
        XCTAssertEqual(outcomes.first?.rows, [["1", nil, "x"], ["2", "y", ""]])
    }

    func testStatementWithoutResultSetCompletesWithNoRows() throws {
        let (_, outcomes) = try run(1) { $0.submit("DO 1", token: 1) }
        XCTAssertEqual(outcomes.first?.code, .completed)
        XCTAssertEqual(outcomes.first?.rows, [])
    }

    func testEscapedInjectionAttemptRoundTripsLiterallyAndMatchesNothing() throws {
        let attack = "x' OR '1'='1"
        let (_, outcomes) = try run(2) { harness in
            // The pool connects first, so the escape runs through mysql_real_escape_string on a connection.
            harness.after(300) { harness in
                guard let escaped = harness.escape(attack) else { return XCTFail("escape failed") }
                harness.submit("SELECT '\(escaped)'", token: 1)
                harness.submit("SELECT COUNT(*) FROM (SELECT 'alice' AS name) AS users WHERE name = '\(escaped)'",
                               token: 2)
            }
        }
        XCTAssertEqual(outcomes.count, 2)
        XCTAssertEqual(outcomes.first { $0.token == 1 }?.rows, [[attack]], "the value came back literally")
        XCTAssertEqual(outcomes.first { $0.token == 2 }?.rows, [["0"]], "the OR clause was not SQL")
    }

    func testEscapeWithoutAnOpenConnectionStillEscapesQuotes() throws {
        var configuration = try configuration(connections: 1)
        configuration.url.port = 1  // nothing listens: the pool never connects
        let scenario = DatabaseScenario(configuration: configuration, body: { harness in
            harness.scenario.note("escaped", harness.escape("a'b\\c") == "a\\'b\\\\c" ? 1 : 0)
            harness.scenario.record(DatabaseOutcome(token: 0, code: .completed, errorNumber: 0, message: "", rows: [],
                                                    elapsed: 0))
        })
        let engine = try startEngine(scenario)
        _ = scenario.wait(for: 1, seconds: 2)
        engine.stop()
        XCTAssertEqual(scenario.noted("escaped"), 1)
    }

    func testSlowQueryTimesOutAndItsConnectionIsReplaced() throws {
        let configuration = try configuration(connections: 1)
        let descriptorsBefore = databaseTestDescriptorCount()
        let (scenario, outcomes) = try run(2, configuration: configuration, onCompletion: { harness, outcome in
            if outcome.token == 1 {
                // As a script does: the next query starts after the delegate returned, never inside it.
                harness.after(0) { harness in
                    harness.scenario.note("submittedAt", Int(monotonicMilliseconds() - harness.startedAt))
                    harness.submit("SELECT 2", token: 2)
                }
            } else {
                harness.scenario.note("connects", harness.runner.connectsSucceeded)
            }
        }) { harness in
            harness.scenario.note("start", Int(monotonicMilliseconds() - harness.startedAt))
            harness.submit("SELECT SLEEP(2)", timeout: 300, token: 1)
        }
        XCTAssertEqual(outcomes.count, 2)
        let timedOut = try XCTUnwrap(outcomes.first)
        XCTAssertEqual(timedOut.code, .timeout)
        let start = UInt64(scenario.noted("start") ?? 0)
        // The deadline counts from the shard's clock, read once per loop turn (it can be a turn behind the
        // wall-clock note above), and the wheel's resolution is 1 ms: some slack below 300.
        XCTAssertGreaterThanOrEqual(timedOut.elapsed - start, 280)
        XCTAssertLessThan(timedOut.elapsed - start, 600, "reported \(timedOut.elapsed - start) ms after submission")
        XCTAssertEqual(outcomes.last?.code, .completed, "the pool's only connection was replaced")
        XCTAssertEqual(outcomes.last?.rows, [["2"]])
        XCTAssertEqual(scenario.noted("connects"), 2, "a fresh connection was opened after the timeout")
        XCTAssertEqual(databaseTestDescriptorCount(), descriptorsBefore, "every socket (and the ring) is closed")
    }

    func testFourSleepsOnFourConnectionsRunTogether() throws {
        let configuration = try configuration(connections: 4)
        let (scenario, outcomes) = try run(4, configuration: configuration) { harness in
            // Once the pool is open, so the figure measures the queries, not the connects.
            harness.after(300) { harness in
                harness.scenario.note("connected", harness.runner.connected)
                harness.scenario.note("start", Int(monotonicMilliseconds() - harness.startedAt))
                for token in 1...4 { harness.submit("SELECT SLEEP(0.3)", token: UInt64(token)) }
            }
        }
        XCTAssertEqual(scenario.noted("connected"), 4)
        XCTAssertEqual(outcomes.count, 4)
        XCTAssertEqual(outcomes.map(\.code), Array(repeating: .completed, count: 4))
        let start = UInt64(scenario.noted("start") ?? 0)
        let last = outcomes.map(\.elapsed).max() ?? 0
        XCTAssertGreaterThanOrEqual(last - start, 295)
        XCTAssertLessThan(last - start, 700, "4 × SLEEP(0.3) took \(last - start) ms: they did not overlap")
    }

    func testManyQueriesQueueBehindTheirPoolAndAllComplete() throws {
        let configuration = try configuration(connections: 4, queueCapacity: 300)
        let (_, outcomes) = try run(300, seconds: 10, configuration: configuration) { harness in
            for token in 1...300 { harness.submit("SELECT \(token), REPEAT('a', \(token * 50))", token: UInt64(token)) }
        }
        XCTAssertEqual(outcomes.count, 300)
        XCTAssertTrue(outcomes.allSatisfy { $0.code == .completed })
        XCTAssertTrue(outcomes.allSatisfy {
            $0.rows == [["\($0.token)", String(repeating: "a", count: Int($0.token) * 50)]]
        }, "every result belongs to its own token, large ones included")
    }

    func testBadQueryReportsTheServersError() throws {
        let (_, outcomes) = try run(1) { $0.submit("SELEC 1", token: 3) }
        XCTAssertEqual(outcomes.first?.code, .failed)
        XCTAssertEqual(outcomes.first?.errorNumber, 1064)  // ER_PARSE_ERROR
        XCTAssertTrue(outcomes.first?.message.contains("SQL syntax") ?? false, outcomes.first?.message ?? "")
    }

    func testFullQueueRefusesAtOnce() throws {
        let configuration = try configuration(connections: 1, queueCapacity: 1)
        let (scenario, outcomes) = try run(2, configuration: configuration) { harness in
            harness.submit("SELECT SLEEP(0.1)", token: 1)
            harness.submit("SELECT SLEEP(0.1)", token: 2)
            let third = harness.submit("SELECT 3", token: 3)
            harness.scenario.note("third", third == .rejected(.queueFull) ? 1 : 0)
        }
        XCTAssertEqual(scenario.noted("third"), 1, "the third query was refused at submission")
        XCTAssertEqual(outcomes.map(\.token), [1, 2])
        XCTAssertEqual(outcomes.map(\.code), [.completed, .completed])
    }

    func testQueryOnAConnectionTheServerDroppedIsRetriedOnAFreshOne() throws {
        let configuration = try configuration(connections: 1)
        let (scenario, outcomes) = try run(2, seconds: 6, configuration: configuration, onCompletion: { harness, outcome in
            guard outcome.token == 1 else {
                harness.scenario.note("connects", harness.runner.connectsSucceeded)
                return
            }
            // The server closes the idle connection after 1 s, as after a restart or wait_timeout.
            harness.after(1500) { $0.submit("SELECT 42", token: 2) }
        }) { harness in
            harness.submit("SET SESSION wait_timeout = 1", token: 1)
        }
        XCTAssertEqual(outcomes.count, 2)
        XCTAssertEqual(outcomes.last?.code, .completed, outcomes.last?.message ?? "")
        XCTAssertEqual(outcomes.last?.rows, [["42"]])
        XCTAssertEqual(scenario.noted("connects"), 2)
    }

    func testAWriterThatMustNotWriteTwiceGetsTheLostConnectionInsteadOfARetry() throws {
        var configuration = try configuration(connections: 1)
        configuration.retriesLostQueries = false
        let (_, outcomes) = try run(2, seconds: 6, configuration: configuration, onCompletion: { harness, outcome in
            guard outcome.token == 1 else { return }
            harness.after(1500) { $0.submit("SELECT 42", token: 2) }
        }) { harness in
            harness.submit("SET SESSION wait_timeout = 1", token: 1)
        }
        XCTAssertEqual(outcomes.count, 2)
        XCTAssertEqual(outcomes.last?.code, .failed)
        XCTAssertTrue(DatabaseRunner.isConnectionLost(outcomes.last?.errorNumber ?? 0), "\(outcomes.last?.errorNumber ?? 0)")
    }

    func testQueueWaitsWhileTheServerIsDownThenTimesOut() throws {
        var configuration = try configuration(connections: 1)
        configuration.url.port = 1
        let scenario = DatabaseScenario(configuration: configuration, body: { $0.submit("SELECT 1", timeout: 200, token: 9) })
        let engine = try startEngine(scenario)
        let outcomes = scenario.wait(for: 1, seconds: 2)
        engine.stop()
        XCTAssertEqual(outcomes.first?.code, .timeout)
        XCTAssertLessThan(outcomes.first?.elapsed ?? 10_000, 500)
    }

    func testCancelledRunningQueryIsNotReportedAndItsConnectionIsReplaced() throws {
        let configuration = try configuration(connections: 1)
        let (scenario, outcomes) = try run(1, configuration: configuration) { harness in
            guard case .accepted(let handle) = harness.submit("SELECT SLEEP(2)", token: 1) else {
                return XCTFail("refused")
            }
            harness.after(200) { harness in
                harness.runner.cancel(handle)
                harness.scenario.note("running", harness.runner.running)
                harness.submit("SELECT 5", token: 2)
            }
        }
        XCTAssertEqual(scenario.noted("running"), 0)
        XCTAssertEqual(outcomes.map(\.token), [2], "the cancelled query was never reported")
        XCTAssertEqual(outcomes.first?.rows, [["5"]])
        XCTAssertLessThan(outcomes.first?.elapsed ?? 10_000, 1000, "it did not wait for the cancelled SLEEP")
    }

    func testUnreachableServerIsRetriedWithBackoffNotInALoop() throws {
        var configuration = try configuration(connections: 1)
        configuration.url.port = 1
        let scenario = DatabaseScenario(configuration: configuration, body: { harness in
            harness.after(1000) { harness in
                harness.scenario.note("failed", harness.runner.connectsFailed)
                harness.scenario.record(DatabaseOutcome(token: 0, code: .completed, errorNumber: 0, message: "",
                                                        rows: [], elapsed: 0))
            }
        })
        let engine = try startEngine(scenario)
        _ = scenario.wait(for: 1, seconds: 3)
        engine.stop()
        // Attempts at 0, 100, 300, 700 ms (back-off 100 ms doubling): 4 in the first second.
        let failed = try XCTUnwrap(scenario.noted("failed"))
        XCTAssertTrue((3...5).contains(failed), "\(failed) connect attempts in 1 s")
    }

    // MARK: - db_url

    func testURLIsParsedWithPortAndPercentEscapes() throws {
        let url = try DatabaseURL("mysql://op%40s:p%3Ass@10.0.0.7:3307/sip")
        XCTAssertEqual(url, DatabaseURL.testValue(user: "op@s", password: "p:ss", host: "10.0.0.7", port: 3307,
                                                  database: "sip"))
        XCTAssertEqual(try DatabaseURL("mysql://u@[::1]/db").host, "::1")
        XCTAssertEqual(try DatabaseURL("mysql://u:p@127.0.0.1/db").port, 3306)
    }

    func testHostNameIsRefusedAtConfigurationTime() {
        XCTAssertThrowsError(try DatabaseURL("mysql://u:p@localhost:3306/db")) { error in
            XCTAssertTrue("\(error)".contains("must be an IP address"), "\(error)")
        }
        XCTAssertThrowsError(try DatabaseURL("postgres://u:p@127.0.0.1/db"))
        XCTAssertThrowsError(try DatabaseURL("mysql://u:p@127.0.0.1:99999/db"))
        XCTAssertThrowsError(try DatabaseURL("mysql://u:p@127.0.0.1"))
    }
}

/// Open descriptors of this process.
func databaseTestDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

extension DatabaseURL {
    static func testValue(user: String, password: String, host: String, port: UInt32, database: String) -> DatabaseURL {
        var url = try! DatabaseURL("mysql://x@127.0.0.1/x")
        url.user = user
        url.password = password
        url.host = host
        url.port = port
        url.database = database
        return url
    }
}
