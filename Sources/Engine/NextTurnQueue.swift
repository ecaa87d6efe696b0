/// Continuations a shard runs at its next turn boundary: a completion (a query's rows, a curl transfer, a
/// sleep's timer) records its result and enqueues one, and the loop runs them only after every completion and
/// timer of the turn has been handled — so a continuation (a resume route) never runs inside the runner, the
/// wheel or the transaction code that delivered it, and may start new work on all of them.
/// (swift-nio's `_immediateTasks`, seastar's task queue.)
///
/// A FIFO ring of plain values: enqueueing allocates only when the queue first reaches a new high (it doubles),
/// never in steady state.
/// - Invariant: used only on its shard's thread.
public struct NextTurnQueue: ~Copyable {
    public struct Continuation: Equatable, Sendable {
        /// What the handler needs to find its work again (e.g. a suspension's ticket); opaque here.
        public var payload: UInt64
        /// The recorded result (e.g. the operation's code).
        public var value: Int

        public init(payload: UInt64, value: Int) {
            self.payload = payload
            self.value = value
        }
    }

    private var items: UnsafeMutablePointer<Continuation>
    private var capacity: Int
    private var head = 0
    public private(set) var count = 0

    public init(capacity: Int = 1024) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity is a power of two")
        self.capacity = capacity
        items = .allocate(capacity: capacity)
    }

    deinit { items.deallocate() }

    public var isEmpty: Bool { count == 0 }

    public mutating func enqueue(_ continuation: Continuation) {
        if count == capacity { grow() }
        items[(head + count) & (capacity - 1)] = continuation
        count += 1
    }

    public mutating func dequeue() -> Continuation? {
        guard count > 0 else { return nil }
        let item = items[head]
        head = (head + 1) & (capacity - 1)
        count -= 1
        return item
    }

    private mutating func grow() {
        let bigger = UnsafeMutablePointer<Continuation>.allocate(capacity: capacity * 2)
        for i in 0..<count { bigger[i] = items[(head + i) & (capacity - 1)] }
        items.deallocate()
        items = bigger
        capacity *= 2
        head = 0
    }
}
