/// The two lists every Ops runner keeps over its preallocated slots: the free slots, and a FIFO queue of
/// operations waiting for a connection, a transfer or a child (a limit reached queues them inside the shard,
/// never blocks it). Links live apart from the runner's slots, so a runner may reset a slot freely.
///
/// - Invariant: a slot is in at most one list; `queued` counts the queue. Preallocated: nothing allocates
///   after `init`. Not copyable: the owner calls `deallocate()` in its `deinit`.
struct SlotLists: ~Copyable {
    let capacity: Int
    /// next, previous by slot index; -1 ends a list. The free list uses `next` only.
    private let links: UnsafeMutablePointer<(next: Int32, previous: Int32)>
    private var freeHead: Int32
    private var queueHead: Int32 = -1
    private var queueTail: Int32 = -1
    private(set) var queued = 0

    /// Every slot free, lowest index first.
    init(capacity: Int) {
        precondition(capacity > 0 && capacity < Int(Int32.max))
        self.capacity = capacity
        links = .allocate(capacity: capacity)
        for i in 0..<capacity { links[i] = (i + 1 < capacity ? Int32(i + 1) : -1, -1) }
        freeHead = 0
    }

    func deallocate() { links.deallocate() }

    var hasFree: Bool { freeHead >= 0 }

    /// A free slot, now in no list; nil when none is free.
    mutating func takeFree() -> Int? {
        guard freeHead >= 0 else { return nil }
        let index = Int(freeHead)
        freeHead = links[index].next
        links[index] = (-1, -1)
        return index
    }

    /// Gives a slot (in no list) back to the free list.
    mutating func putFree(_ index: Int) {
        links[index] = (freeHead, -1)
        freeHead = Int32(index)
    }

    /// Queues a slot (in no list) at the back, or at the front (it goes first, e.g. a retried query).
    mutating func enqueue(_ index: Int, atFront: Bool = false) {
        if atFront {
            links[index] = (queueHead, -1)
            if queueHead >= 0 { links[Int(queueHead)].previous = Int32(index) } else { queueTail = Int32(index) }
            queueHead = Int32(index)
        } else {
            links[index] = (-1, queueTail)
            if queueTail >= 0 { links[Int(queueTail)].next = Int32(index) } else { queueHead = Int32(index) }
            queueTail = Int32(index)
        }
        queued += 1
    }

    /// Takes a queued slot out of the queue, wherever it is in it.
    mutating func dequeue(_ index: Int) {
        let (next, previous) = links[index]
        // Unlinking a slot that is not queued would cut the queue off at its head.
        precondition(previous >= 0 || queueHead == Int32(index), "dequeue of a slot that is not queued")
        if previous >= 0 { links[Int(previous)].next = next } else { queueHead = next }
        if next >= 0 { links[Int(next)].previous = previous } else { queueTail = previous }
        links[index] = (-1, -1)
        queued -= 1
    }

    /// The first queued slot, left in the queue; nil when it is empty.
    var firstQueued: Int? { queueHead >= 0 ? Int(queueHead) : nil }

    /// The queued slot after `index` (which is queued), for walking the queue; nil at its end.
    func queued(after index: Int) -> Int? {
        let next = links[index].next
        return next >= 0 ? Int(next) : nil
    }

    /// The slot at the head of the queue, taken out of it; nil when the queue is empty.
    mutating func dequeueFirst() -> Int? {
        guard queueHead >= 0 else { return nil }
        let index = Int(queueHead)
        dequeue(index)
        return index
    }
}
