import Engine
import Glibc
import Script

/// Writes one shard's accounting rows to MariaDB without ever blocking the shard or losing a row.
///
/// - Rows wait in memory, in order, and go out as multi-row INSERTs (up to `batchRows` consecutive rows of one
///   table) on the shard's own small pool, one batch per connection at a time: the more rows wait, the larger
///   the batches, so a slow database costs round trips, not rows; fewer rows than a batch wait up to 50 ms for more.
/// - More than `queueSize` rows waiting (MariaDB down or slower than the calls): the rest are appended to the
///   shard's spill file (`AccSpill`), and so is every later row until the file has been replayed, which keeps
///   the order. The tick (every 250 ms) flushes the file and, while the database answers, replays it batch by
///   batch, each batch's end offset remembered once it is written; while it does not, one replay batch a second
///   probes it. A restart replays what the last run left.
/// - A batch that fails for the connection (lost, refused, timed out) goes back to the front of the queue. A
///   batch the server refuses (an unknown column, a bad value) is split and retried row by row; a row it refuses
///   again a second later (a server shutting down once refused a row it took after its restart) is appended to
///   `acc-<shard>.rejected` (same form as the spill file) and counted, never dropped silently.
/// - At stop, rows in memory and in flight are spilled: the next start writes them.
/// - Once: a batch whose connection died (or timed out) mid-statement may have been committed; its rows, and rows in
///   flight at a stop, are sent again one at a time in a form that writes nothing when an equal row is there
///   (`AccStatements.guarded`), as are replayed rows after a replay batch lost its connection.
final class AccWriter: DatabaseRunnerDelegate {
    struct Row {
        var head: String
        var values: String
        /// Retried alone after the server refused its batch.
        var alone = false
        /// Its batch lost its connection (or timed out) mid-statement, so it may be in the table already: it goes
        /// alone, in the form that writes nothing when an equal row is there (`AccStatements.guarded`).
        var uncertain = false
        /// The server refused it alone once: one more try a second later before it is kept as rejected (a server
        /// going down or coming up refuses statements it takes a moment later).
        var refusedOnce = false
        var goesAlone: Bool { alone || uncertain }
    }

    unowned let context: ScriptContext
    unowned let shard: Shard
    unowned var service: AccService!
    private(set) var runner: DatabaseRunner!
    let queueSize: Int
    let connections: Int
    static let batchRows = 200
    static let tickMilliseconds: UInt64 = 250
    /// Long, so a slow database is waited for rather than written twice: a batch that times out is retried.
    static let queryTimeoutMilliseconds: UInt64 = 30_000

    private var queue: [Row] = []
    private var queueHead = 0
    private var inFlight: [UInt64: [Row]] = [:]
    /// The replay batch in flight (at most one) and the file offset it ends at.
    private var replayToken: UInt64?
    private var replayEnd = 0
    private var replayRows = 0
    /// A replay batch lost its connection: the rows up to this offset may be written already, and are replayed one
    /// at a time, guarded.
    private var replayUncertainThrough = 0
    private var replayAlone = 0
    /// Rows the server refused once (from memory or replayed from the file), tried again together at
    /// `retryLaterAt`.
    private var retryLater: [Row] = []
    private var retryLaterAt: UInt64 = 0
    static let refusalRetryMilliseconds: UInt64 = 1000
    private var nextToken: UInt64 = 1
    private var backoff = ProbeBackoff()
    private var pumpScheduled = false
    private let spill: AccSpill?
    private let rejected: AccSideFile?
    private var failures = FailureCount()

    init?(context: ScriptContext, shard: Shard, url: String, spillDirectory: String, queueSize: Int, connections: Int) {
        guard var settings = try? DatabaseRunner.Configuration(url: url) else { return nil }
        settings.connections = connections
        settings.queueCapacity = connections
        settings.component = .accounting
        // A batch the server committed before the connection went would be written twice: it comes back as a
        // failure and its rows are retried guarded.
        settings.retriesLostQueries = false
        self.context = context
        self.shard = shard
        self.queueSize = queueSize
        self.connections = connections
        switch AccSpill.open(directory: spillDirectory, shard: shard.index) {
        case .success(let file): spill = file
        case .failure(let problem):
            spill = nil
            context.log.write(level: -1, "ringsipd: acc: \(problem.reason): rows MariaDB cannot take wait in memory only")
        }
        rejected = spill.map { AccSideFile(path: String($0.path.dropLast(".spill".count)) + ".rejected") }
        runner = DatabaseRunner(shard: shard, configuration: settings, delegate: self)
        queue.reserveCapacity(min(queueSize, 4096))
        if let spill, spill.hasRows {
            context.log.write(level: 2, "ringsipd: acc: replaying accounting rows left in \(spill.path)")
        }
        _ = shard.schedule(after: Self.tickMilliseconds, payload: OpsPacking.timerPayload(.accountingTick, slot: 0, generation: 0))
    }

    /// Appends `text` as a SQL string literal ('…', escaped by the connector); one that cannot be escaped (an extra
    /// field from an `$avp` longer than 64 KiB) is written as ''.
    func appendQuoted(_ text: String, to row: inout [UInt8]) {
        if !runner.appendLiteral(text, to: &row) { row.append(contentsOf: "''".utf8) }
    }

    private var waiting: Int { queue.count - queueHead }

    func append(head: String, values: String) {
        if let spill, spill.hasRows || waiting >= queueSize {
            spill.append(head: head, values: values, uncertain: false)
            shard.counters.accSpilled += 1
        } else {
            queue.append(Row(head: head, values: values))
        }
        shard.counters.accQueued = waiting
        if waiting >= Self.batchRows { schedulePump() } else { armFlush() }
    }

    /// Fewer rows than a batch wait at most this long for more, so a busy shard sends a few large INSERTs a second
    /// rather than one per answer (a round trip and a connector call each).
    static let lingerMilliseconds: UInt64 = 50
    private var flushArmed = false

    private func armFlush() {
        guard !flushArmed else { return }
        flushArmed = true
        _ = shard.schedule(after: Self.lingerMilliseconds,
                           payload: OpsPacking.timerPayload(.accountingTick, slot: 1, generation: 0))
    }

    /// The linger is over: what waits goes, full batch or not.
    func flushDue() {
        flushArmed = false
        pump(partial: true)
    }

    private func schedulePump() {
        guard !pumpScheduled else { return }
        pumpScheduled = true
        context.continueNextTurn(for: service, value: 0)
    }

    /// Sends batches while a connection is free — full ones, and with `partial` whatever waits — the memory queue
    /// first, then (once it is empty) the spill file.
    func pump(partial: Bool = false) {
        pumpScheduled = false
        while inFlight.count + (replayToken == nil ? 0 : 1) < connections && waiting > 0 && mayProbe
                && (partial || waiting >= Self.batchRows || queue[queueHead].goesAlone) {
            var rows = [queue[queueHead]]
            queueHead += 1
            while !rows[0].goesAlone && rows.count < Self.batchRows && waiting > 0 && !queue[queueHead].goesAlone
                    && queue[queueHead].head == rows[0].head {
                rows.append(queue[queueHead])
                queueHead += 1
            }
            if queueHead > 4096 && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            guard submit(rows) else { break }
        }
        shard.counters.accQueued = waiting
        if waiting > 0 { armFlush() }
        if waiting == 0 && inFlight.isEmpty && replayToken == nil { replay() }
    }

    /// Healthy: send freely. Not: one probe at a time, after the back-off.
    private var mayProbe: Bool {
        backoff.maySend(now: shard.now, idle: inFlight.isEmpty && replayToken == nil)
    }

    private func replay() {
        guard let spill, spill.hasRows, mayProbe else { return }
        let uncertain = spill.replayed < replayUncertainThrough
        let lines = spill.read(limit: replayAlone > 0 || uncertain ? 1 : Self.batchRows)
        guard let first = lines.first else { return }
        if first.head.isEmpty {
            spill.replayed(through: first.end)
            return
        }
        // An uncertain row (in flight at a stop, or its replay batch lost its connection) goes alone, guarded.
        let rows = first.uncertain || uncertain ? [first] : Array(lines.prefix { $0.head == first.head && !$0.uncertain })
        let token = nextToken
        nextToken += 1
        // Recorded before the submission: a query that fails as it starts is reported inside `submit`.
        replayToken = token
        replayEnd = rows.last!.end
        replayRows = rows.count
        if replayAlone > 0 { replayAlone -= 1 }
        let sent = rows.map { Row(head: $0.head, values: $0.values, uncertain: uncertain || $0.uncertain) }
        if !send(sent, token: token) { replayToken = nil }
    }

    private func submit(_ rows: [Row]) -> Bool {
        let token = nextToken
        nextToken += 1
        // Recorded before the submission: a query that fails as it starts is reported inside `submit`.
        inFlight[token] = rows
        guard send(rows, token: token) else {
            inFlight[token] = nil
            requeue(rows)
            return false
        }
        return true
    }

    /// One batch as one statement: a row that may be written already alone, in the guarded form; else every
    /// row's values after the shared head.
    private func send(_ rows: [Row], token: UInt64) -> Bool {
        var statement: String
        if rows.count == 1, rows[0].uncertain, let guarded = AccStatements.guarded(head: rows[0].head, values: rows[0].values) {
            statement = guarded
        } else {
            statement = rows[0].head
            statement.reserveCapacity(rows.reduce(statement.utf8.count) { $0 + $1.values.utf8.count + 2 })
            for (i, row) in rows.enumerated() {
                if i > 0 { statement += ", " }
                statement += row.values
            }
        }
        let outcome = statement.withUTF8 {
            runner.submit(query: UnsafeRawBufferPointer($0), timeoutMilliseconds: Self.queryTimeoutMilliseconds, token: token)
        }
        if case .rejected = outcome { return false }
        return true
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        let refused = completion.code == .failed && Self.isRefusal(completion.errorNumber)
        let reason = completion.code == .failed
            ? "error \(completion.errorNumber): " + String(decoding: completion.message, as: UTF8.self) : "\(completion.code)"
        if token == replayToken {
            replayToken = nil
            completedReplay(succeeded: completion.code == .completed, refused: refused, reason: reason)
        } else if let rows = inFlight.removeValue(forKey: token) {
            if completion.code == .completed {
                backoff.succeeded()
                shard.counters.accWritten += rows.count
            } else if refused {
                refuse(rows, reason: reason)
            } else {
                backoff.failed(now: shard.now)
                report("\(reason); the rows wait and are retried")
                requeue(rows.map { row in
                    var again = row
                    again.uncertain = true
                    return again
                })
            }
        }
        shard.counters.accQueued = waiting
        schedulePump()
    }

    /// Puts rows back at the front of the queue (over the slots already taken from it).
    private func requeue(_ rows: [Row]) {
        queue.replaceSubrange(0..<queueHead, with: rows)
        queueHead = 0
    }

    private func completedReplay(succeeded: Bool, refused: Bool, reason: String) {
        guard let spill else { return }
        if succeeded {
            backoff.succeeded()
            spill.replayed(through: replayEnd)
            // The file emptied starts again at offset 0: no earlier offset is uncertain any more.
            if !spill.hasRows { replayUncertainThrough = 0 }
            shard.counters.accReplayed += replayRows
            shard.counters.accWritten += replayRows
        } else if refused && replayRows > 1 {
            // One row of the batch is refused: go on one row at a time through this batch.
            replayAlone = replayRows
        } else if refused {
            // A single row: it leaves the file and is refused like a row from memory (tried once more, then kept
            // as rejected; spilled again if the daemon stops first).
            if let line = spill.read(limit: 1).first {
                refuse([Row(head: line.head, values: line.values,
                            uncertain: line.uncertain || spill.replayed < replayUncertainThrough)], reason: reason)
            }
            spill.replayed(through: replayEnd)
        } else {
            backoff.failed(now: shard.now)
            replayUncertainThrough = max(replayUncertainThrough, replayEnd)
            report("\(reason); the spilled rows are replayed when MariaDB answers")
        }
    }

    /// A refused batch of several rows is retried row by row; a single row refused twice (a second apart) goes
    /// to the rejected file. Logged like every failure (the first, then every 1000th): a table that refuses
    /// every row must not flood the log.
    private func refuse(_ rows: [Row], reason: String) {
        if rows.count > 1 {
            requeue(rows.map { row in
                var alone = row
                alone.alone = true
                return alone
            })
            return
        }
        if !rows[0].refusedOnce {
            var again = rows[0]
            again.refusedOnce = true
            if retryLater.isEmpty { retryLaterAt = shard.now + Self.refusalRetryMilliseconds }
            retryLater.append(again)
            report("\(reason); the refused row is tried once more in a second")
            return
        }
        shard.counters.accFailed += 1
        keepRejected(rows[0].head, rows[0].values)
        report("\(reason); refused twice, the row is kept in \(rejected?.path ?? "no file")")
    }

    /// Whether the server refused the statement itself (an unknown column or table, a bad value, a batch over
    /// `max_allowed_packet`): retrying it whole cannot mend it (it is split, then kept row by row). Transient, and
    /// retried: every client-side error (2000–2999: the connection), a server shutting down or out of connections,
    /// lock waits and deadlocks, a read-only node (a Galera fail-over), a killed query.
    static func isRefusal(_ number: UInt32) -> Bool {
        guard number > 0 && number < 2000 else { return false }
        return ![1040, 1042, 1043, 1053, 1077, 1078, 1079, 1080, 1152, 1154, 1155, 1156, 1157, 1158, 1159,
                 1160, 1161, 1203, 1205, 1213, 1290, 1317, 1836, 1927, 4031].contains(number)
    }

    private func keepRejected(_ head: String, _ values: String) {
        if rejected?.append(head + "\t" + values) != true {
            context.log.write(level: -1, "ringsipd: acc: a refused row cannot be kept in a file: \(head)\(values)")
        }
    }

    func tick() {
        if !retryLater.isEmpty && shard.now >= retryLaterAt {
            requeue(retryLater)
            retryLater.removeAll()
        }
        if let failure = spill?.flush() { report("the spill file cannot be written (\(failure)); its rows stay in memory") }
        if waiting == 0 && inFlight.isEmpty && replayToken == nil { replay() } else if waiting > 0 { pump(partial: true) }
        _ = shard.schedule(after: Self.tickMilliseconds, payload: OpsPacking.timerPayload(.accountingTick, slot: 0, generation: 0))
    }

    /// Spills what is in memory or in flight, so the next start writes it.
    func stop() {
        if let spill {
            var held: [Row] = []
            // In flight: the server may have committed them; the next start writes them guarded.
            for token in inFlight.keys.sorted() { held += inFlight[token]!.map { var row = $0; row.uncertain = true; return row } }
            held += queue[queueHead...]
            held += retryLater
            for row in held { spill.append(head: row.head, values: row.values, uncertain: row.uncertain) }
            shard.counters.accSpilled += held.count
            spill.flush()
        } else {
            let lost = waiting + retryLater.count + inFlight.values.reduce(0) { $0 + $1.count }
            if lost > 0 { context.log.write(level: -1, "ringsipd: acc: \(lost) accounting rows were not written (no spill file)") }
        }
        inFlight.removeAll()
        retryLater.removeAll()
        queue.removeAll()
        queueHead = 0
        runner.shutdown()
    }

    private func report(_ reason: String) {
        guard failures.add() else { return }
        context.log.write(level: -1, "ringsipd: acc: a write to MariaDB failed (\(failures.count) so far): \(reason)")
    }
}
