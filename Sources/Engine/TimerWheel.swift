/// A hierarchical timer wheel with 1 ms resolution: six levels of 64 slots (level L slot spans 64^L ms, so
/// the wheel reaches ~2.2 years), O(1) insert and cancel, and nodes that are reused, so scheduling a timer on
/// the hot path allocates nothing in steady state. Most SIP timers are cancelled before they fire; cancel is an
/// unlink.
///
/// Nodes start at a few thousand and double, up to `capacity`, when the live timers first reach a new high
/// (nodes are named by index, so moving them is safe). A fixed 65,536 was fewer than a shard's transactions
/// hold at 4,000 calls/s (two transactions a call, each waiting out its Timer J, K, L or M): the timers that
/// did not fit were never armed, and those transactions never ended.
///
/// The wheel knows no clock: `advance(to:)` is given `now`, so tests drive it with a virtual clock and the
/// shard drives it from CLOCK_MONOTONIC with one ring timeout armed at `nextDeadline`.
/// (The layout follows tokio's `runtime/time/wheel`: a level is chosen from the highest bit in which the
/// deadline differs from `elapsed`, and a slot's timers cascade down when the slot is reached.)
public struct TimerHandle: Equatable, Sendable {
    let index: Int32
    let generation: UInt32
}

public final class TimerWheel {
    static let levels = 6
    static let slotBits = 6
    static let slotsPerLevel = 64
    static let maximumDelay: UInt64 = 1 << 36 - 1

    struct Node {
        var deadline: UInt64 = 0
        var payload: UInt64 = 0
        var next: Int32 = -1
        var prev: Int32 = -1
        var generation: UInt32 = 0
        var level: UInt8 = 0
        var slot: UInt8 = 0
        var scheduled = false
    }

    private var nodes: UnsafeMutablePointer<Node>
    /// Nodes allocated so far (`capacity` at most).
    public private(set) var allocated: Int
    /// Head node index per (level, slot); -1 when empty.
    private let heads: UnsafeMutablePointer<Int32>
    private var occupied: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0)
    private var freeHead: Int32
    public let capacity: Int
    public private(set) var count = 0
    /// The time up to which every due timer has fired.
    public private(set) var elapsed: UInt64

    /// - Parameters:
    ///   - capacity: the most timers held at once; past it `schedule` refuses.
    ///   - initial: nodes allocated at start (at most `capacity`).
    public init(capacity: Int, initial: Int = 4096, now: UInt64) {
        precondition(capacity > 0 && capacity < Int(Int32.max) && initial > 0)
        self.capacity = capacity
        elapsed = now
        allocated = min(initial, capacity)
        nodes = .allocate(capacity: allocated)
        nodes.initialize(repeating: Node(), count: allocated)
        for i in 0..<allocated { nodes[i].next = i + 1 < allocated ? Int32(i + 1) : -1 }
        freeHead = 0
        heads = .allocate(capacity: TimerWheel.levels * TimerWheel.slotsPerLevel)
        heads.initialize(repeating: -1, count: TimerWheel.levels * TimerWheel.slotsPerLevel)
    }

    deinit {
        nodes.deallocate()
        heads.deallocate()
    }

    /// Schedules `payload` to be passed to `advance`'s handler at `deadline` (ms). A deadline not after
    /// `elapsed` fires on the next advance. Returns nil when all `capacity` nodes are in use.
    public func schedule(at deadline: UInt64, payload: UInt64) -> TimerHandle? {
        if freeHead < 0 && !grow() { return nil }
        let index = freeHead
        freeHead = nodes[Int(index)].next
        let clamped = min(max(deadline, elapsed + 1), elapsed + TimerWheel.maximumDelay)
        nodes[Int(index)].deadline = clamped
        nodes[Int(index)].payload = payload
        nodes[Int(index)].scheduled = true
        link(index)
        count += 1
        return TimerHandle(index: index, generation: nodes[Int(index)].generation)
    }

    /// Doubles the nodes (up to `capacity`), the new ones free. False at `capacity`.
    private func grow() -> Bool {
        guard allocated < capacity else { return false }
        let larger = min(allocated * 2, capacity)
        let moved = UnsafeMutablePointer<Node>.allocate(capacity: larger)
        moved.moveInitialize(from: nodes, count: allocated)
        moved.advanced(by: allocated).initialize(repeating: Node(), count: larger - allocated)
        for i in allocated..<larger { moved[i].next = i + 1 < larger ? Int32(i + 1) : -1 }
        nodes.deallocate()
        nodes = moved
        freeHead = Int32(allocated)
        allocated = larger
        return true
    }

    /// Cancels a pending timer. Returns false if it already fired or was cancelled (its node may since
    /// carry another timer: the generation tells them apart).
    @discardableResult
    public func cancel(_ handle: TimerHandle) -> Bool {
        let i = Int(handle.index)
        guard i >= 0, i < allocated, nodes[i].scheduled, nodes[i].generation == handle.generation else { return false }
        unlink(handle.index)
        release(handle.index)
        return true
    }

    /// The time at which `advance` next has work, or nil when no timer is pending. For timers on upper levels
    /// this is the moment their slot cascades, which is never later than their deadline.
    public var nextDeadline: UInt64? {
        nextExpiration().map(\.deadline)
    }

    /// Fires, in deadline order per slot, every timer whose deadline is at or before `now`.
    /// The handler may schedule and cancel timers.
    public func advance(to now: UInt64, _ fire: (UInt64) -> Void) {
        while let expiration = nextExpiration(), expiration.deadline <= now {
            elapsed = expiration.deadline
            let headIndex = expiration.level * TimerWheel.slotsPerLevel + expiration.slot
            // Pop one node at a time so a handler that cancels a node of this slot finds the list consistent.
            while heads[headIndex] >= 0 {
                let index = heads[headIndex]
                unlink(index)
                if nodes[Int(index)].deadline <= elapsed {
                    let payload = nodes[Int(index)].payload
                    release(index)
                    fire(payload)
                } else {
                    link(index)
                }
            }
        }
        if now > elapsed { elapsed = now }
    }

    // MARK: - Lists

    private func levelFor(_ deadline: UInt64) -> Int {
        let masked = (elapsed ^ deadline) | UInt64(TimerWheel.slotsPerLevel - 1)
        let significant = 63 - masked.leadingZeroBitCount
        return min(significant / TimerWheel.slotBits, TimerWheel.levels - 1)
    }

    private func link(_ index: Int32) {
        let deadline = nodes[Int(index)].deadline
        let level = levelFor(deadline)
        let slot = Int(deadline >> UInt64(level * TimerWheel.slotBits)) & (TimerWheel.slotsPerLevel - 1)
        let headIndex = level * TimerWheel.slotsPerLevel + slot
        let oldHead = heads[headIndex]
        nodes[Int(index)].level = UInt8(level)
        nodes[Int(index)].slot = UInt8(slot)
        nodes[Int(index)].prev = -1
        nodes[Int(index)].next = oldHead
        if oldHead >= 0 { nodes[Int(oldHead)].prev = index }
        heads[headIndex] = index
        setOccupied(level: level, slot: slot, true)
    }

    private func unlink(_ index: Int32) {
        let node = nodes[Int(index)]
        let headIndex = Int(node.level) * TimerWheel.slotsPerLevel + Int(node.slot)
        if node.prev >= 0 { nodes[Int(node.prev)].next = node.next } else { heads[headIndex] = node.next }
        if node.next >= 0 { nodes[Int(node.next)].prev = node.prev }
        if heads[headIndex] < 0 { setOccupied(level: Int(node.level), slot: Int(node.slot), false) }
    }

    private func release(_ index: Int32) {
        nodes[Int(index)].scheduled = false
        nodes[Int(index)].generation &+= 1
        nodes[Int(index)].next = freeHead
        freeHead = index
        count -= 1
    }

    private func occupiedBits(_ level: Int) -> UInt64 {
        withUnsafeBytes(of: occupied) { $0.load(fromByteOffset: level * 8, as: UInt64.self) }
    }

    private func setOccupied(level: Int, slot: Int, _ on: Bool) {
        withUnsafeMutableBytes(of: &occupied) { raw in
            var bits = raw.load(fromByteOffset: level * 8, as: UInt64.self)
            if on { bits |= 1 << UInt64(slot) } else { bits &= ~(1 << UInt64(slot)) }
            raw.storeBytes(of: bits, toByteOffset: level * 8, as: UInt64.self)
        }
    }

    private func nextExpiration() -> (level: Int, slot: Int, deadline: UInt64)? {
        for level in 0..<TimerWheel.levels {
            let bits = occupiedBits(level)
            guard bits != 0 else { continue }
            let shift = UInt64(level * TimerWheel.slotBits)
            let slotRange: UInt64 = 1 << shift
            let levelRange: UInt64 = slotRange << UInt64(TimerWheel.slotBits)
            let nowSlot = Int((elapsed >> shift) & UInt64(TimerWheel.slotsPerLevel - 1))
            let rotated = bits.rotatedRight(by: nowSlot)
            let slot = (rotated.trailingZeroBitCount + nowSlot) % TimerWheel.slotsPerLevel
            let levelStart = elapsed & ~(levelRange - 1)
            var deadline = levelStart + UInt64(slot) * slotRange
            // Only the top level can hold a slot "behind" the current position (a deadline beyond its range
            // wrapped around); it belongs to the next turn of that level.
            if deadline < elapsed { deadline += levelRange }
            return (level, slot, deadline)
        }
        return nil
    }
}

extension UInt64 {
    @inline(__always)
    func rotatedRight(by n: Int) -> UInt64 {
        let s = UInt64(n & 63)
        return s == 0 ? self : (self >> s) | (self << (64 - s))
    }
}
