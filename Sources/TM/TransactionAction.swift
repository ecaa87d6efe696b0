/// One thing a transaction machine asks its driver to do. The machines own no bytes: "the request", "the
/// response" and "the ACK" are the buffers the driver keeps for the transaction.
public enum TransactionAction: Sendable, Equatable, CustomStringConvertible {
    /// Client: pass the request to the transport for the first time.
    case sendRequest
    /// Client: pass the same request to the transport again (Timer A or E).
    case retransmitRequest
    /// INVITE client: send the ACK for the 300-699 that was just received (§17.1.1.3). The ACK is
    /// built once, from the request and that response; later calls resend the same bytes.
    case sendAck
    /// INVITE client, as a proxy branch: build a CANCEL for the request and send it in its own non-INVITE
    /// client transaction (§9.1, §16.8). Emitted once, only after a provisional response arrived.
    case sendCancel
    /// Server: send the response the TU just passed down; the driver keeps it as the last response.
    case sendResponse
    /// Server: send the last response again (a request retransmission, or Timer G).
    case retransmitResponse
    /// INVITE server: send the TU's 2xx but keep the earlier non-2xx final as the last response. A proxy
    /// forwards every 2xx upstream even after it answered the INVITE itself, e.g. a 200 that crossed a
    /// CANCEL's 487 (§16.7 step 10), so the caller can ACK and hang up that session.
    case sendResponseStatelessly
    /// Hand the message that caused this event to the TU (a response to a client transaction, an ACK to
    /// an `.accepted` INVITE server transaction).
    case passUp
    /// Arm `timer` to fire `milliseconds` from now; if it is armed already, re-arm it (Timer C restarts).
    case startTimer(TransactionTimer, milliseconds: Int)
    /// Disarm `timer`; it was armed.
    case cancelTimer(TransactionTimer)
    /// Tell the TU the transaction timed out: a client got no (final) response in time, an INVITE server
    /// got no ACK (Timer H). A proxy branch treats it as a 408 (§16.7 step 2, §16.8).
    case timeout
    /// Tell the TU the transport failed to send (§17.1.4, §17.2.4); a proxy branch then tries the next
    /// destination or answers 503 (RFC 3263 §4.3).
    case transportError
    /// The machine reached `.terminated`: free the slot. Every timer was cancelled by an earlier action of
    /// the same event, and nothing is delivered to the machine again.
    case terminated

    public var description: String {
        switch self {
        case .sendRequest: "sendRequest"
        case .retransmitRequest: "retransmitRequest"
        case .sendAck: "sendAck"
        case .sendCancel: "sendCancel"
        case .sendResponse: "sendResponse"
        case .retransmitResponse: "retransmitResponse"
        case .sendResponseStatelessly: "sendResponseStatelessly"
        case .passUp: "passUp"
        case .startTimer(let timer, let ms): "start(\(timer), \(ms))"
        case .cancelTimer(let timer): "cancel(\(timer))"
        case .timeout: "timeout"
        case .transportError: "transportError"
        case .terminated: "terminated"
        }
    }
}

/// The actions of one event, in the order the driver performs them, stored inline: handing an event to a
/// machine allocates nothing. No event of any machine produces more than `capacity` actions.
public struct TransactionActions: Sendable, Equatable, Sequence, CustomStringConvertible {
    /// The most any event produces is 6: a 486 in `.calling` cancels A, B and fr, ACKs, passes up, starts D.
    public static let capacity = 8

    // Inline storage, not an array: fixed size, no heap.
    private var storage = InlineArray<8, TransactionAction>(repeating: .terminated)
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    public subscript(index: Int) -> TransactionAction {
        precondition(index >= 0 && index < count, "action index out of range")
        return storage[index]
    }

    public func contains(_ action: TransactionAction) -> Bool {
        var i = 0
        while i < count {
            if self[i] == action { return true }
            i += 1
        }
        return false
    }

    mutating func append(_ action: TransactionAction) {
        precondition(count < TransactionActions.capacity, "more actions for one event than `capacity`")
        storage[count] = action
        count += 1
    }

    public struct Iterator: IteratorProtocol {
        let actions: TransactionActions
        var index = 0

        public mutating func next() -> TransactionAction? {
            guard index < actions.count else { return nil }
            defer { index += 1 }
            return actions[index]
        }
    }

    public func makeIterator() -> Iterator { Iterator(actions: self) }

    public static func == (a: TransactionActions, b: TransactionActions) -> Bool {
        guard a.count == b.count else { return false }
        var i = 0
        while i < a.count {
            if a[i] != b[i] { return false }
            i += 1
        }
        return true
    }

    public var description: String { "[" + map(\.description).joined(separator: ", ") + "]" }
}

extension TransactionActions: ExpressibleByArrayLiteral {
    /// For tests and tables only: a variadic parameter is an array, so the machines append instead.
    public init(arrayLiteral elements: TransactionAction...) {
        self.init()
        for element in elements { append(element) }
    }
}

extension TransactionTimers {
    /// Arms (or re-arms) `timer` and records the action.
    mutating func start(_ timer: TransactionTimer, _ milliseconds: Int, _ actions: inout TransactionActions) {
        insert(timer)
        actions.append(.startTimer(timer, milliseconds: milliseconds))
    }

    /// Disarms `timer` if it is armed.
    mutating func cancel(_ timer: TransactionTimer, _ actions: inout TransactionActions) {
        guard contains(timer) else { return }
        remove(timer)
        actions.append(.cancelTimer(timer))
    }

    /// Disarms every armed timer, in `TransactionTimer` order: the step before `.terminated`.
    mutating func cancelAll(_ actions: inout TransactionActions) {
        // Walks the bits, not `allCases`: that is an array built on each access.
        var bits = rawValue
        while bits != 0 {
            let timer = TransactionTimer(rawValue: UInt8(bits.trailingZeroBitCount))!
            bits &= bits - 1
            remove(timer)
            actions.append(.cancelTimer(timer))
        }
    }

    /// Records that `timer` fired, so it is no longer armed.
    /// - Precondition: it was armed. A timer firing after it was cancelled, or one the machine never
    ///   armed, is a driver bug (a wheel cancels in O(1), so it never races with its own fire).
    mutating func fire(_ timer: TransactionTimer, in state: some Any) {
        precondition(contains(timer), "Timer \(timer) fired in \(state) but was not armed")
        remove(timer)
    }
}
