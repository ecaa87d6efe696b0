import Engine
import Script

/// A shard's ordered writer of module state to MariaDB (usrloc's locations, dialog's dialogs): a one-connection
/// pool on the shard's ring, so statements run in the order they were submitted, never waited for. The memory copy
/// is the truth: a failed write is not retried, only logged (`FailureCount`).
final class SerialWriter: DatabaseRunnerDelegate {
    unowned let context: ScriptContext
    private(set) var runner: DatabaseRunner!
    let component: OpsComponent
    /// The log line's opening ("ringsipd: usrloc: a location write failed") and what it means for the state.
    let failure: String
    let consequence: String
    private var failures = FailureCount()

    init?(context: ScriptContext, shard: Shard, url: String, component: OpsComponent, failure: String, consequence: String) {
        guard var settings = try? DatabaseRunner.Configuration(url: url) else { return nil }
        settings.connections = 1
        settings.queueCapacity = 65_536
        settings.component = component
        self.context = context
        self.component = component
        self.failure = failure
        self.consequence = consequence
        runner = DatabaseRunner(shard: shard, configuration: settings, delegate: self)
    }

    /// `text` as a SQL string literal ('' for one that cannot be escaped: longer than any datagram).
    func quoted(_ text: String) -> String { runner.literal(text) ?? "''" }

    func submit(_ query: String) {
        var query = query
        let outcome = query.withUTF8 { runner.submit(query: UnsafeRawBufferPointer($0), timeoutMilliseconds: 10_000, token: 0) }
        if case .rejected(let code) = outcome { report("refused (\(code))") }
    }

    /// Takes the pool's completions and timers, for the service that owns the writer; false when not its own.
    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32) -> Bool {
        guard OpsPacking.component(of: id) == component else { return false }
        runner.operationCompleted(id, result: result, flags: flags)
        return true
    }

    func timerFired(payload: UInt64) -> Bool {
        guard OpsPacking.component(ofTimer: payload) == component else { return false }
        runner.timerFired(payload: payload)
        return true
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        guard completion.code != .completed else { return }
        report(completion.code == .failed ? String(decoding: completion.message, as: UTF8.self) : "\(completion.code)")
    }

    private func report(_ reason: String) {
        guard failures.add() else { return }
        context.log.write(level: -1, "\(failure) (\(failures.count) so far): \(reason); \(consequence)")
    }
}
