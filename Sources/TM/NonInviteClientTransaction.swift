/// The non-INVITE client transaction of RFC 3261 §17.1.2 (figure 6), plus OpenSIPS's `fr_timeout`.
/// ```
///   start ──▶ trying ──1xx──▶ proceeding ──200-699──▶ completed ──Timer K──▶ terminated
///               └──────────200-699──────────┘
///   trying, proceeding ──Timer F / fr / transport error──▶ terminated
/// ```
/// - Invariant: trying and proceeding arm E (unreliable only), F and fr; completed arms K; terminated none.
public struct NonInviteClientTransaction: Sendable {
    public enum State: UInt8, Sendable {
        case trying, proceeding, completed, terminated
    }

    public private(set) var state = State.trying
    public private(set) var timers = TransactionTimers()
    /// This transaction's copy: `$T_fr_timeout` changes it (see `TimerSettings`).
    public var settings: TimerSettings
    public let transport: TransportKind
    /// The interval Timer E was last armed with: T1 doubling up to T2 in `.trying`, T2 in `.proceeding`.
    public private(set) var retransmitInterval: Int
    private var started = false

    public init(settings: TimerSettings, transport: TransportKind) {
        self.settings = settings
        self.transport = transport
        retransmitInterval = settings.initialRetransmitInterval
    }

    /// The TU passed the request down: send it, start E (unreliable only), F and `fr_timeout`.
    public mutating func start(now: UInt64) -> TransactionActions {
        precondition(!started, "NonInviteClientTransaction started twice")
        started = true
        var actions = TransactionActions()
        actions.append(.sendRequest)
        if transport == .unreliable { timers.start(.E, retransmitInterval, &actions) }
        timers.start(.F, settings.timerF, &actions)
        if let fr = settings.finalResponseTimeout { timers.start(.finalResponse, fr, &actions) }
        return actions
    }

    /// - Precondition: `timer` is armed (see `TransactionTimers.fire`).
    public mutating func timerFired(_ timer: TransactionTimer, now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "timer fired on a transaction that is not running")
        timers.fire(timer, in: state)
        var actions = TransactionActions()
        switch (state, timer) {
        case (.trying, .E), (.proceeding, .E):
            actions.append(.retransmitRequest)
            // §17.1.2.2: in Trying the interval doubles up to T2; once a provisional arrived it is T2.
            retransmitInterval = state == .trying ? settings.doubledUpToT2(retransmitInterval) : settings.t2
            timers.start(.E, retransmitInterval, &actions)
        case (.trying, .F), (.proceeding, .F), (.trying, .finalResponse), (.proceeding, .finalResponse):
            timers.cancelAll(&actions)
            actions.append(.timeout)
            actions.append(.terminated)
            state = .terminated
        case (.completed, .K):
            actions.append(.terminated)
            state = .terminated
        default:
            preconditionFailure("Timer \(timer) armed in \(state)")
        }
        return actions
    }

    /// A response matched this transaction (§17.1.3).
    /// - Precondition: `100 <= code <= 699`.
    public mutating func receivedResponse(code: Int, now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "response delivered to a transaction that is not running")
        precondition(code >= 100 && code <= 699, "status code \(code) out of range")
        var actions = TransactionActions()
        switch state {
        case .trying where code < 200, .proceeding where code < 200:
            // Timer E keeps its deadline; the interval becomes T2 when it next fires.
            actions.append(.passUp)
            state = .proceeding
        case .trying, .proceeding:
            timers.cancelAll(&actions)
            actions.append(.passUp)
            let k = settings.timerK(transport)
            if k > 0 {
                timers.start(.K, k, &actions)
                state = .completed
            } else {
                actions.append(.terminated)
                state = .terminated
            }
        case .completed:
            break  // retransmissions of the final response are absorbed
        case .terminated:
            preconditionFailure("unreachable")
        }
        return actions
    }

    /// Sending the request failed (§17.1.4). Nothing is sent in `.completed`, so an error there is ignored.
    public mutating func transportError(now: UInt64) -> TransactionActions {
        precondition(started && state != .terminated, "transport error on a transaction that is not running")
        var actions = TransactionActions()
        guard state != .completed else { return actions }
        timers.cancelAll(&actions)
        actions.append(.transportError)
        actions.append(.terminated)
        state = .terminated
        return actions
    }
}
