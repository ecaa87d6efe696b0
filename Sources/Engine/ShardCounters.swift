/// What one shard has seen. Owned and written only by its shard's thread; read by others only after the
/// thread is joined, or printed by the shard itself when asked (so no atomics on the hot path).
public struct ShardCounters: Sendable, Equatable {
    public var received = 0
    public var sent = 0
    public var parseErrors = 0
    public var dropped = 0
    public var staleCompletions = 0
    public var handoffs = 0
    public var sendErrors = 0
    public var bufferExhaustion = 0
    /// Live transactions (kept by the transaction layer above, when one is in use). At exit: those still live
    /// when the shard stopped, whose memory the stop released.
    public var transactions = 0
    /// Responses for a transaction that parsed but could not be used (no CSeq, cannot be rebuilt), dropped.
    public var malformedReplies = 0
    /// Async operations in flight: suspended transactions, held branches and responses, launch()es (kept by
    /// the script layer).
    public var asyncInFlight = 0
    /// Send buffers taken and not yet given back (queued to the kernel, or held by a handler): a number that
    /// only grows means a path that takes one and forgets it.
    public var sendSlotsInUse = 0
    /// Datagrams larger than a receive buffer, which arrived cut short (answered 513 when they could be).
    public var oversized = 0
    /// Times the shard became overloaded (`LoadMonitor`), and new requests it refused (503) while it was.
    public var overloads = 0
    public var shed = 0
    /// Client transactions that ended without an answer (408 from Timer B/C/F), and new transactions refused
    /// because the table was full (503).
    public var timeouts = 0
    public var tableFull = 0
    /// Timers refused because the shard held `timerCapacity` already.
    public var timersFull = 0
    /// Mail records that found their queue to another shard full and waited in memory (`Shard.send(mail:)`).
    public var mailBacklogged = 0
    /// Bindings in this shard's copy of the location table (kept by the registrar above, when it is loaded).
    public var registrations = 0
    /// Accounting rows (acc's db backend): written to MariaDB, waiting in memory now, spilled to the shard's file,
    /// replayed from it, and refused by the server (kept in the rejected file).
    public var accWritten = 0
    public var accQueued = 0
    public var accSpilled = 0
    public var accReplayed = 0
    public var accFailed = 0
    /// TCP: connections open now; accepted and opened (connected) since start; connects that failed or timed
    /// out; connections closed for idling, for a stream that cannot be framed or a message that took too long,
    /// and refused at the shard's cap; sends dropped because their connection's queue was full.
    public var tcpOpen = 0
    public var tcpAccepted = 0
    public var tcpConnected = 0
    public var tcpConnectFailed = 0
    public var tcpIdleClosed = 0
    public var tcpBadClosed = 0
    public var tcpRefused = 0
    public var tcpQueueFull = 0
    /// Connections closed because a write waited past `streamWriteMilliseconds` (a peer that stopped reading).
    public var tcpWriteStalled = 0

    public init() {}

    public static func + (a: ShardCounters, b: ShardCounters) -> ShardCounters {
        var sum = a
        sum.received += b.received
        sum.sent += b.sent
        sum.parseErrors += b.parseErrors
        sum.dropped += b.dropped
        sum.staleCompletions += b.staleCompletions
        sum.handoffs += b.handoffs
        sum.sendErrors += b.sendErrors
        sum.bufferExhaustion += b.bufferExhaustion
        sum.transactions += b.transactions
        sum.malformedReplies += b.malformedReplies
        sum.asyncInFlight += b.asyncInFlight
        sum.sendSlotsInUse += b.sendSlotsInUse
        sum.oversized += b.oversized
        sum.overloads += b.overloads
        sum.shed += b.shed
        sum.timeouts += b.timeouts
        sum.tableFull += b.tableFull
        sum.timersFull += b.timersFull
        sum.mailBacklogged += b.mailBacklogged
        sum.registrations = max(sum.registrations, b.registrations)
        sum.accWritten += b.accWritten
        sum.accQueued += b.accQueued
        sum.accSpilled += b.accSpilled
        sum.accReplayed += b.accReplayed
        sum.accFailed += b.accFailed
        sum.tcpOpen += b.tcpOpen
        sum.tcpAccepted += b.tcpAccepted
        sum.tcpConnected += b.tcpConnected
        sum.tcpConnectFailed += b.tcpConnectFailed
        sum.tcpIdleClosed += b.tcpIdleClosed
        sum.tcpBadClosed += b.tcpBadClosed
        sum.tcpRefused += b.tcpRefused
        sum.tcpQueueFull += b.tcpQueueFull
        sum.tcpWriteStalled += b.tcpWriteStalled
        return sum
    }

    /// One line, `key=value` pairs, stable so scripts can parse it.
    public func line(label: String) -> String {
        "\(label): received=\(received) sent=\(sent) parse_errors=\(parseErrors) dropped=\(dropped) "
            + "stale=\(staleCompletions) handoffs=\(handoffs) send_errors=\(sendErrors) enobufs=\(bufferExhaustion) "
            + "transactions=\(transactions) malformed_replies=\(malformedReplies) async=\(asyncInFlight) "
            + "send_slots=\(sendSlotsInUse) oversized=\(oversized) overloads=\(overloads) shed=\(shed) "
            + "timeouts=\(timeouts) table_full=\(tableFull) timers_full=\(timersFull) mail_backlogged=\(mailBacklogged) "
            + "registrations=\(registrations) acc_written=\(accWritten) acc_queued=\(accQueued) "
            + "acc_spilled=\(accSpilled) acc_replayed=\(accReplayed) acc_failed=\(accFailed) "
            + "tcp_open=\(tcpOpen) tcp_accepted=\(tcpAccepted) tcp_connected=\(tcpConnected) "
            + "tcp_connect_failed=\(tcpConnectFailed) tcp_idle_closed=\(tcpIdleClosed) tcp_bad_closed=\(tcpBadClosed) "
            + "tcp_refused=\(tcpRefused) tcp_queue_full=\(tcpQueueFull) tcp_write_stalled=\(tcpWriteStalled)"
    }
}
