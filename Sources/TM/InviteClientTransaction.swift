/// The INVITE client transaction of RFC 3261 §17.1.1 (figure 5) with RFC 6026's `.accepted` state, plus
/// the proxy timers a branch of a stateful proxy needs: `fr_timeout` before any response and Timer C
/// (`fr_inv_timeout`) after a provisional (§16.6 step 11, §16.8), and the CANCEL it owes (§9.1).
///
/// A pure value: the driver hands it events with the time and performs the actions it returns.
/// ```
///   start ──▶ calling ──1xx──▶ proceeding ──300-699──▶ completed ──Timer D──▶ terminated
///               │  └──────────2xx──────────┴──2xx──▶ accepted ──Timer M──▶ terminated
///               └──Timer B / transport error──────────────────────────────▶ terminated
/// ```
/// - Invariant: only the timers of the current state are armed (calling: A, B, fr; proceeding: C or,
///   after a CANCEL, B; completed: D; accepted: M; terminated: none), so every timer that fires has a
///   transition.
public struct InviteClientTransaction: Sendable {
    public enum State: UInt8, Sendable {
        case calling, proceeding, completed, accepted, terminated
    }

    public private(set) var state = State.calling
    public private(set) var timers = TransactionTimers()
    /// This transaction's copy: `$T_fr_timeout` and `$T_fr_inv_timeout` change it (see `TimerSettings`).
    public var settings: TimerSettings
    public let transport: TransportKind
    /// The interval Timer A was last armed with; doubles on every fire, with no cap (§17.1.1.2).
    public private(set) var retransmitInterval: Int
    private var started = false
    /// The TU wants this branch cancelled, or it timed out: a CANCEL is owed once a provisional arrives
    /// (§9.1: never before).
    private var cancelRequested = false
    private var cancelSent = false
    /// `.timeout` was reported; the TU hears it once.
    private var timedOut = false

    public init(settings: TimerSettings, transport: TransportKind) {
        self.settings = settings
        self.transport = transport
        retransmitInterval = settings.initialRetransmitInterval
    }

    /// The TU passed the INVITE down: send it, start A (unreliable only), B and `fr_timeout`.
    public mutating func start(now: UInt64) -> TransactionActions {
        precondition(!started, "InviteClientTransaction started twice")
        started = true
        var actions = TransactionActions()
        actions.append(.sendRequest)
        if transport == .unreliable { timers.start(.A, retransmitInterval, &actions) }
        timers.start(.B, settings.timerB, &actions)
        if let fr = settings.finalResponseTimeout { timers.start(.finalResponse, fr, &actions) }
        return actions
    }

    /// - Precondition: `timer` is armed (see `TransactionTimers.fire`).
    public mutating func timerFired(_ timer: TransactionTimer, now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "timer fired on a transaction that is not running")
        timers.fire(timer, in: state)
        var actions = TransactionActions()
        switch (state, timer) {
        case (.calling, .A):
            actions.append(.retransmitRequest)
            retransmitInterval *= 2
            timers.start(.A, retransmitInterval, &actions)
        case (.calling, .finalResponse):
            // The branch is given up (the TU answers 408) but the transaction waits out Timer B: a late
            // provisional still gets its CANCEL and a late 2xx is still passed up (§16.7 step 10).
            // Retransmitting an INVITE that was already given up would only load the next hop.
            timers.cancel(.A, &actions)
            reportTimeout(&actions)
            cancelRequested = true
        case (.proceeding, .C):
            // §16.8: a provisional was received, so the proxy cancels the branch; the transaction stays to
            // ACK the 487 and gives up 64*T1 later.
            reportTimeout(&actions)
            sendCancel(&actions)
        case (.calling, .B), (.proceeding, .B):
            terminate(timingOut: true, &actions)
        case (.completed, .D), (.accepted, .M):
            terminate(timingOut: false, &actions)
        default:
            preconditionFailure("Timer \(timer) armed in \(state)")
        }
        return actions
    }

    /// A response matched this transaction (§17.1.3).
    /// - Precondition: `100 <= code <= 699` (the parser guarantees it).
    public mutating func receivedResponse(code: Int, now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "response delivered to a transaction that is not running")
        precondition(code >= 100 && code <= 699, "status code \(code) out of range")
        var actions = TransactionActions()
        switch state {
        case .calling where code < 200:
            timers.cancel(.A, &actions)
            timers.cancel(.finalResponse, &actions)
            if cancelRequested {
                actions.append(.passUp)
                sendCancel(&actions)
            } else {
                timers.cancel(.B, &actions)
                actions.append(.passUp)
                if let c = settings.finalResponseInviteTimeout { timers.start(.C, c, &actions) }
            }
            state = .proceeding
        case .proceeding where code < 200:
            actions.append(.passUp)
            // §16.7 step 2: every provisional but 100 restarts Timer C.
            if code > 100, settings.restartsTimerCOnProvisional, timers.contains(.C),
               let c = settings.finalResponseInviteTimeout {
                timers.start(.C, c, &actions)
            }
        case .calling, .proceeding:
            timers.cancelAll(&actions)
            if code < 300 {
                // RFC 6026 §8.4: stay to pass 2xx retransmissions and other branches' 2xx up; the TU ACKs.
                actions.append(.passUp)
                timers.start(.M, settings.timerM, &actions)
                state = .accepted
            } else {
                actions.append(.sendAck)
                actions.append(.passUp)
                completed(&actions)
            }
        case .completed:
            // A retransmitted final response: ACK it again, do not pass it up (§17.1.1.2).
            if code >= 300 { actions.append(.sendAck) }
        case .accepted:
            if code >= 200 && code < 300 { actions.append(.passUp) }
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// The TU cancels this branch: the caller sent CANCEL, or another branch answered 2xx or 6xx
    /// (§16.7 step 10, §16.10). Before a provisional the CANCEL waits (§9.1); after a final response there
    /// is nothing to cancel.
    public mutating func cancel(now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "cancel on a transaction that is not running")
        var actions = TransactionActions()
        switch state {
        case .calling: cancelRequested = true
        case .proceeding: sendCancel(&actions)
        case .completed, .accepted, .terminated: break
        }
        return actions
    }

    /// Sending the INVITE or the ACK failed (§17.1.4). In `.accepted` this machine sends nothing, so an
    /// error there belongs to the TU's own ACK and is ignored here.
    public mutating func transportError(now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "transport error on a transaction that is not running")
        var actions = TransactionActions()
        guard state != .accepted else { return actions }
        timers.cancelAll(&actions)
        actions.append(.transportError)
        actions.append(.terminated)
        state = .terminated
        return actions
    }

    // MARK: - Steps shared by several transitions

    private mutating func completed(_ actions: inout TransactionActions) {
        let d = settings.timerD(transport)
        if d > 0 {
            timers.start(.D, d, &actions)
            state = .completed
        } else {
            actions.append(.terminated)
            state = .terminated
        }
    }

    /// Once per transaction, only in `.proceeding`: the CANCEL, and Timer B re-armed as the §9.1 limit on
    /// waiting for the INVITE's final response. Timer C has done its job.
    private mutating func sendCancel(_ actions: inout TransactionActions) {
        guard !cancelSent else { return }
        cancelSent = true
        timers.cancel(.C, &actions)
        actions.append(.sendCancel)
        timers.start(.B, settings.timerB, &actions)
    }

    private mutating func reportTimeout(_ actions: inout TransactionActions) {
        guard !timedOut else { return }
        timedOut = true
        actions.append(.timeout)
    }

    private mutating func terminate(timingOut: Bool, _ actions: inout TransactionActions) {
        timers.cancelAll(&actions)
        if timingOut { reportTimeout(&actions) }
        actions.append(.terminated)
        state = .terminated
    }
}
