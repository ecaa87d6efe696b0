/// A live entry of a `TransactionTable`: its slot and the generation the slot had when the entry was
/// inserted. The generation advances when the entry is removed, so a handle kept past that (a late timer,
/// a response on a decoded branch) is stale and rejected instead of reaching the slot's next entry.
public struct TransactionHandle: Sendable, Equatable, Hashable, CustomStringConvertible {
    public let slot: UInt32
    public let generation: UInt16

    public var description: String { "\(slot)#\(generation)" }
}

/// A shard's transactions: `capacity` preallocated slots with generations, and a hash index from a 64-bit
/// key (a `ServerTransactionID.hash`) to slots. Nothing allocates after `init`: insert, remove and lookup
/// are O(1) expected, and a full table refuses the insert (the driver answers 503, not memory growth).
///
/// - Slots are reused first-in first-out from a ring of the slots used before, and a slot never used is taken
///   only while fewer than `warmReserve` (4,096) freed slots wait in that ring. The slots a shard touches are
///   then its live high-water mark plus the reserve — their memory stays resident and warm — instead of a sweep
///   through all `capacity` entries, each first touch a page the kernel must zero (at 2,000 calls/s a sweep of
///   100,000 slots took most of a minute, and zeroing pages was 30 % of the CPU). A freed slot comes back only
///   after the reserve's other slots ahead of it in the ring have ended, so its generation wraps only after
///   65,535 × 4,095 other transactions: hours at any rate a shard can carry, which keeps branches unique (see
///   `TransactionBranch`) and stale handles stale.
/// - Generations run 1...65535 and skip 0, so a zeroed or forged handle never names a live entry.
/// - The index is open addressing with linear probing at load ≤ 1/2 (its size is the power of two at
///   least twice `capacity`), and removal shifts later entries of the probe run back instead of leaving
///   tombstones, so probe runs never grow with churn. A position's home is the key multiplied by 2^64/φ,
///   top bits (Fibonacci hashing): every key bit moves the home.
/// - Several entries may share a key (an INVITE, its CANCEL): `lookup` confirms with a predicate.
///
/// Not thread-safe: a table belongs to one shard.
/// - Invariant: `entries[s]` is initialized exactly when slot `s` is live; the index holds one position
///   per live keyed slot, reachable from its key's home without crossing an empty position.
public final class TransactionTable<Entry> {
    struct Slot {
        var key: UInt64 = 0
        var generation: UInt16 = 1
        var isLive = false
        var isKeyed = false
    }

    public let capacity: Int
    public private(set) var live = 0

    private let entries: UnsafeMutablePointer<Entry>
    private let slots: UnsafeMutablePointer<Slot>
    /// Freed slot numbers, a ring: taken at `freeHead`, returned at `freeHead + freeCount`.
    private let free: UnsafeMutablePointer<UInt32>
    private var freeHead = 0
    private var freeCount = 0
    /// Slots `0..<touched` have been used; the rest have never been written.
    public private(set) var touched = 0
    /// Freed slots that must wait before one is reused while untouched slots remain.
    public let warmReserve: Int

    /// Index positions: the key, and the slot + 1 (0 marks an empty position).
    private let indexKeys: UnsafeMutablePointer<UInt64>
    private let indexSlots: UnsafeMutablePointer<UInt32>
    private let indexMask: Int
    private let indexShift: UInt64

    /// - Precondition: `0 < capacity < 2^31`, `warmReserve > 0`.
    public init(capacity: Int, warmReserve: Int = 4096) {
        precondition(capacity > 0 && capacity < 1 << 31, "capacity out of range")
        precondition(warmReserve > 0, "warmReserve must be positive")
        self.capacity = capacity
        self.warmReserve = min(warmReserve, capacity)
        entries = .allocate(capacity: capacity)
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        free = .allocate(capacity: capacity)
        var bits = 4
        while 1 << bits < 2 * capacity { bits += 1 }
        indexMask = 1 << bits - 1
        indexShift = UInt64(64 - bits)
        indexKeys = .allocate(capacity: 1 << bits)
        indexKeys.initialize(repeating: 0, count: 1 << bits)
        indexSlots = .allocate(capacity: 1 << bits)
        indexSlots.initialize(repeating: 0, count: 1 << bits)
    }

    deinit {
        for s in 0..<touched where slots[s].isLive { (entries + s).deinitialize(count: 1) }
        entries.deallocate()
        slots.deallocate()
        free.deallocate()
        indexKeys.deallocate()
        indexSlots.deallocate()
    }

    public var isFull: Bool { freeCount == 0 && touched == capacity }

    /// Stores `entry` in a free slot, indexed under `key` if given (a client-only entry is found by its
    /// branch instead). Nil when all `capacity` slots are live.
    public func insert(_ entry: Entry, key: UInt64?) -> TransactionHandle? {
        let s: Int
        if freeCount >= warmReserve || (touched == capacity && freeCount > 0) {
            s = Int(free[freeHead])
            freeHead = freeHead + 1 == capacity ? 0 : freeHead + 1
            freeCount -= 1
        } else if touched < capacity {
            s = touched
            touched += 1
        } else {
            return nil
        }
        (entries + s).initialize(to: entry)
        slots[s].isLive = true
        if let key {
            slots[s].key = key
            slots[s].isKeyed = true
            var i = home(key)
            while indexSlots[i] != 0 { i = (i + 1) & indexMask }
            indexKeys[i] = key
            indexSlots[i] = UInt32(s + 1)
        }
        live += 1
        return TransactionHandle(slot: UInt32(s), generation: slots[s].generation)
    }

    /// Removes the entry and returns it; the slot's generation advances, so `handle` is stale from now on.
    /// - Precondition: `handle` is live.
    @discardableResult
    public func remove(_ handle: TransactionHandle) -> Entry {
        precondition(contains(handle), "remove of a stale handle \(handle)")
        let s = Int(handle.slot)
        if slots[s].isKeyed { unindex(s) }
        slots[s].isLive = false
        slots[s].isKeyed = false
        slots[s].generation = slots[s].generation == .max ? 1 : slots[s].generation + 1
        let entry = (entries + s).move()
        free[(freeHead + freeCount) % capacity] = UInt32(s)
        freeCount += 1
        live -= 1
        return entry
    }

    public func contains(_ handle: TransactionHandle) -> Bool {
        let s = Int(handle.slot)
        return s < capacity && slots[s].isLive && slots[s].generation == handle.generation
    }

    /// The handle for a slot and generation from outside (a decoded branch), if that entry is still live.
    public func handle(slot: UInt32, generation: UInt16) -> TransactionHandle? {
        let handle = TransactionHandle(slot: slot, generation: generation)
        return contains(handle) ? handle : nil
    }

    /// The entry, read or mutated in place (`table[h].server.receivedAck(now:)` copies nothing).
    /// - Precondition: `handle` is live.
    public subscript(handle: TransactionHandle) -> Entry {
        get {
            precondition(contains(handle), "stale handle \(handle)")
            return entries[Int(handle.slot)]
        }
        _modify {
            precondition(contains(handle), "stale handle \(handle)")
            yield &entries[Int(handle.slot)]
        }
    }

    /// The key the entry was inserted under.
    public func key(of handle: TransactionHandle) -> UInt64? {
        precondition(contains(handle), "stale handle \(handle)")
        return slots[Int(handle.slot)].isKeyed ? slots[Int(handle.slot)].key : nil
    }

    /// The first live entry under `key` that `matches` accepts (entries under one key in insertion order,
    /// unless removals reordered their probe run).
    public func lookup(_ key: UInt64, matches: (borrowing Entry) -> Bool) -> TransactionHandle? {
        var i = home(key)
        while indexSlots[i] != 0 {
            if indexKeys[i] == key {
                let s = Int(indexSlots[i] - 1)
                if matches(entries[s]) { return TransactionHandle(slot: UInt32(s), generation: slots[s].generation) }
            }
            i = (i + 1) & indexMask
        }
        return nil
    }

    /// Removes every entry, handing each to `body` (a shard stopping releases its transactions' buffers).
    public func removeAll(_ body: (TransactionHandle, Entry) -> Void) {
        for s in 0..<touched where slots[s].isLive {
            let handle = TransactionHandle(slot: UInt32(s), generation: slots[s].generation)
            body(handle, remove(handle))
        }
    }

    // MARK: - Index

    @inline(__always)
    func home(_ key: UInt64) -> Int { Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> indexShift) }

    /// Removes slot `s`'s position and shifts later positions of the run back into the gap (backward-shift
    /// deletion): a position may move to the gap unless its home lies cyclically in (gap, position].
    private func unindex(_ s: Int) {
        var gap = home(slots[s].key)
        while indexSlots[gap] != UInt32(s + 1) {
            precondition(indexSlots[gap] != 0, "index lost slot \(s)")
            gap = (gap + 1) & indexMask
        }
        var i = (gap + 1) & indexMask
        while indexSlots[i] != 0 {
            let distanceFromHome = (i - home(indexKeys[i])) & indexMask
            if distanceFromHome >= (i - gap) & indexMask {
                indexKeys[gap] = indexKeys[i]
                indexSlots[gap] = indexSlots[i]
                gap = i
            }
            i = (i + 1) & indexMask
        }
        indexSlots[gap] = 0
        indexKeys[gap] = 0
    }

    /// Test support: checks the invariant and returns the longest probe distance.
    func checkIndex() -> Int {
        var positions = 0
        var longest = 0
        for i in 0...indexMask where indexSlots[i] != 0 {
            positions += 1
            let s = Int(indexSlots[i] - 1)
            precondition(slots[s].isLive && slots[s].isKeyed && slots[s].key == indexKeys[i], "index position \(i)")
            var j = home(indexKeys[i])
            var distance = 0
            while j != i {
                precondition(indexSlots[j] != 0, "position \(i) unreachable from its home")
                j = (j + 1) & indexMask
                distance += 1
            }
            longest = max(longest, distance)
        }
        var keyed = 0
        for s in 0..<touched where slots[s].isKeyed { keyed += 1 }
        precondition(positions == keyed, "index holds \(positions) positions for \(keyed) keyed slots")
        return longest
    }
}
