import Engine
import Script

/// A shard's ordered writer of module state to MariaDB (usrloc's locations, dialog's dialogs): a one-connection
/// pool on the shard's ring, so statements run in the order they were submitted, never waited for. The memory copy
/// is the truth: a failed write is not retried, only logged (the first, then every 1000th, so a database that is
/// down does not flood the log).
final class SerialWriter: DatabaseRunnerDelegate {
    unowned let context: ScriptContext
    private(set) var runner: DatabaseRunner!
    /// The log line's opening ("ringsipd: usrloc: a location write failed") and what it means for the state.
    let failure: String
    let consequence: String
    private var failures = 0
    /// Room for any one field escaped (at most twice its bytes, plus a NUL): no field of a datagram is longer than
    /// 64 KiB, so escaping never fails for want of room.
    private let escapeBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * 65_536 + 1, alignment: 8)

    init?(context: ScriptContext, shard: Shard, url: String, component: OpsComponent, failure: String, consequence: String) {
        guard var settings = try? DatabaseRunner.Configuration(url: url) else { return nil }
        settings.connections = 1
        settings.queueCapacity = 65_536
        settings.component = component
        self.context = context
        self.failure = failure
        self.consequence = consequence
        runner = DatabaseRunner(shard: shard, configuration: settings, delegate: self)
    }

    deinit { escapeBuffer.deallocate() }

    /// `text` as a SQL string literal. Every field of a datagram fits the escape buffer.
    func quoted(_ text: String) -> String {
        runner.literal(text, scratch: escapeBuffer) ?? "''"
    }

    func submit(_ query: String) {
        var query = query
        let outcome = query.withUTF8 { runner.submit(query: UnsafeRawBufferPointer($0), timeoutMilliseconds: 10_000, token: 0) }
        if case .rejected(let code) = outcome { report("refused (\(code))") }
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        guard completion.code != .completed else { return }
        report(completion.code == .failed ? String(decoding: completion.message, as: UTF8.self) : "\(completion.code)")
    }

    private func report(_ reason: String) {
        failures += 1
        if failures == 1 || failures % 1000 == 0 {
            context.log.write(level: -1, "\(failure) (\(failures) so far): \(reason); \(consequence)")
        }
    }
}
