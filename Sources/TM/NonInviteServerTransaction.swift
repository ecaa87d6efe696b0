/// The non-INVITE server transaction of RFC 3261 §17.2.2 (figure 8). Created in `.trying` when the
/// request arrives; the driver passes the request to the TU.
/// ```
///   trying ──1xx from TU──▶ proceeding ──200-699 from TU──▶ completed ──Timer J──▶ terminated
///     └─────────────200-699 from TU──────────┘
///   trying, proceeding, completed ──transport error──▶ terminated
/// ```
/// - Invariant: only `.completed` arms a timer (J, unreliable only: over a reliable transport J is zero
///   and the final response ends the transaction at once).
public struct NonInviteServerTransaction: Sendable {
    public enum State: UInt8, Sendable {
        case trying, proceeding, completed, terminated
    }

    public private(set) var state = State.trying
    public private(set) var timers = TransactionTimers()
    public var settings: TimerSettings
    public let transport: TransportKind

    public init(settings: TimerSettings, transport: TransportKind) {
        self.settings = settings
        self.transport = transport
    }

    /// A retransmission of the request arrived: absorbed in `.trying`, answered with the last response
    /// after one was sent.
    public mutating func receivedRequest(now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "request delivered to a terminated transaction")
        var actions = TransactionActions()
        switch state {
        case .trying: break
        case .proceeding, .completed: actions.append(.retransmitResponse)
        case .terminated: preconditionFailure("unreachable")
        }
        return actions
    }

    /// The TU passes a response down. In `.completed` any further response is discarded (§17.2.2).
    /// - Precondition: `100 <= code <= 699`.
    public mutating func sendResponse(code: Int, now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "response passed to a terminated transaction")
        precondition(code >= 100 && code <= 699, "status code \(code) out of range")
        var actions = TransactionActions()
        switch state {
        case .trying, .proceeding:
            actions.append(.sendResponse)
            if code < 200 {
                state = .proceeding
                break
            }
            let j = settings.timerJ(transport)
            if j > 0 {
                timers.start(.J, j, &actions)
                state = .completed
            } else {
                actions.append(.terminated)
                state = .terminated
            }
        case .completed:
            break
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// - Precondition: `timer` is armed (see `TransactionTimers.fire`).
    public mutating func timerFired(_ timer: TransactionTimer, now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "timer fired on a terminated transaction")
        timers.fire(timer, in: state)
        guard state == .completed, timer == .J else { preconditionFailure("Timer \(timer) armed in \(state)") }
        state = .terminated
        var actions = TransactionActions()
        actions.append(.terminated)
        return actions
    }

    /// Sending a response failed (§17.2.4).
    public mutating func transportError(now: UInt64) -> TransactionActions {
        precondition(state != .terminated, "transport error on a terminated transaction")
        var actions = TransactionActions()
        timers.cancelAll(&actions)
        actions.append(.transportError)
        actions.append(.terminated)
        state = .terminated
        return actions
    }
}
