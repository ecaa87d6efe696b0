/// The INVITE server transaction of RFC 3261 §17.2.1 (figure 7) with RFC 6026's `.accepted` state.
///
/// It is created in `.proceeding` when the INVITE arrives; the driver passes the INVITE to the TU. The 100
/// Trying is the TU's (a proxy sends it at once, §16.2), passed down like any provisional.
/// ```
///   proceeding ──300-699 from TU──▶ completed ──ACK──▶ confirmed ──Timer I──▶ terminated
///       │                              └──Timer H / transport error──────────▶ terminated
///       └──2xx from TU──▶ accepted ──Timer L──▶ terminated
/// ```
/// - Invariant: proceeding arms nothing; completed arms G (unreliable only) and H; confirmed arms I;
///   accepted arms L; terminated none.
public struct InviteServerTransaction: Sendable {
    public enum State: UInt8, Sendable {
        case proceeding, completed, confirmed, accepted, terminated
    }

    public private(set) var state = State.proceeding
    public private(set) var timers = TransactionTimers()
    public var settings: TimerSettings
    public let transport: TransportKind
    /// The interval Timer G was last armed with: T1 doubling up to T2 (§17.2.1).
    public private(set) var retransmitInterval: Int
    /// Whether the TU sent a provisional response: an INVITE retransmission in `.proceeding` gets it again.
    private var sentProvisional = false

    public init(settings: TimerSettings, transport: TransportKind) {
        self.settings = settings
        self.transport = transport
        retransmitInterval = settings.initialRetransmitInterval
    }

    /// A retransmission of the INVITE arrived.
    public mutating func receivedRequest(now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "request delivered to a terminated transaction")
        var actions = TransactionActions()
        switch state {
        case .proceeding:
            if sentProvisional { actions.append(.retransmitResponse) }
        case .completed:
            actions.append(.retransmitResponse)
        case .confirmed, .accepted:
            break  // absorbed (RFC 6026 §7.1 for accepted)
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// An ACK matched this transaction: for the non-2xx final (RFC 3261 rules), or, in `.accepted`, an
    /// ACK that matches by the RFC 2543 rules or the TU's concern (RFC 6026 §6, §7.1): passed up.
    public mutating func receivedAck(now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "ACK delivered to a terminated transaction")
        var actions = TransactionActions()
        switch state {
        case .proceeding, .confirmed:
            break  // no final response to acknowledge yet / a retransmitted ACK: absorbed
        case .completed:
            timers.cancel(.G, &actions)
            timers.cancel(.H, &actions)
            let i = settings.timerI(transport)
            if i > 0 {
                timers.start(.I, i, &actions)
                state = .confirmed
            } else {
                actions.append(.terminated)
                state = .terminated
            }
        case .accepted:
            actions.append(.passUp)
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// The TU passes a response down.
    /// - Precondition: `100 <= code <= 699`.
    public mutating func sendResponse(code: Int, now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "response passed to a terminated transaction")
        precondition(code >= 100 && code <= 699, "status code \(code) out of range")
        var actions = TransactionActions()
        switch state {
        case .proceeding:
            actions.append(.sendResponse)
            if code < 200 {
                sentProvisional = true
            } else if code < 300 {
                timers.start(.L, settings.timerL, &actions)
                state = .accepted
            } else {
                if transport == .unreliable { timers.start(.G, retransmitInterval, &actions) }
                timers.start(.H, settings.timerH, &actions)
                state = .completed
            }
        case .completed, .confirmed:
            // Only a 2xx goes out after a final response (§16.7 step 10); the non-2xx stays the one that
            // Timer G and INVITE retransmissions repeat.
            if code >= 200 && code < 300 { actions.append(.sendResponseStatelessly) }
        case .accepted:
            // RFC 6026 §7.1: 2xx retransmissions (or another branch's 2xx) from the TU go out; the
            // transaction never retransmits a 2xx on its own.
            if code >= 200 && code < 300 { actions.append(.sendResponse) }
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// - Precondition: `timer` is armed (see `TransactionTimers.fire`).
    public mutating func timerFired(_ timer: TransactionTimer, now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "timer fired on a terminated transaction")
        timers.fire(timer, in: state)
        var actions = TransactionActions()
        switch (state, timer) {
        case (.completed, .G):
            actions.append(.retransmitResponse)
            retransmitInterval = settings.doubledUpToT2(retransmitInterval)
            timers.start(.G, retransmitInterval, &actions)
        case (.completed, .H):
            // No ACK: the TU hears of it (§17.2.1), e.g. to end a dialog it created.
            timers.cancelAll(&actions)
            actions.append(.timeout)
            actions.append(.terminated)
            state = .terminated
        case (.confirmed, .I), (.accepted, .L):
            actions.append(.terminated)
            state = .terminated
        default:
            preconditionFailure("Timer \(timer) armed in \(state)")
        }
        return actions
    }

    /// Sending a response failed (§17.2.4). In `.accepted` the TU is told and Timer L still ends the
    /// transaction (RFC 6026 figure 7); `.confirmed` sends nothing.
    public mutating func transportError(now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "transport error on a terminated transaction")
        var actions = TransactionActions()
        switch state {
        case .proceeding, .completed:
            timers.cancelAll(&actions)
            actions.append(.transportError)
            actions.append(.terminated)
            state = .terminated
        case .accepted:
            actions.append(.transportError)
        case .confirmed:
            break
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }
}
