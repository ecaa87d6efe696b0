import Engine
import SIP
import TM

/// The transactions of a shard that wait for an async operation: preallocated slots with generations, so
/// suspending allocates nothing and a late completion (after a timeout freed its slot) is dropped.
///
/// A suspension's life: `allocate` → the operation runs → `complete` records the first result (and the
/// operation's outputs, moved into a block the entry owns) and the shard runs the continuation at the end of
/// its turn → `take` moves everything the entry owns out to the resume route, which releases it when it ends.
/// - Invariant: each block an entry holds (`outputs`, `parameter`, `held`) has exactly one owner: the entry
///   until `take`, the route after. A second result for the same ticket is ignored, never merged.
public final class Suspensions {
    struct Entry {
        var generation: UInt16 = 1
        var live = false
        /// Set by the first `complete`: the continuation is queued and later results are dropped.
        var completed = false
        var transaction: TransactionHandle?
        var resumeRoute: Int32 = -1
        var timeout: TimerHandle?
        var operationTimer: TimerHandle?
        var cancel: ((ScriptContext, AsyncTicket) -> Void)?
        /// What the operation needs to find itself again (e.g. to cancel it), opaque here.
        var operationData: UInt64 = 0
        /// The operation's outputs (`OperationOutputs`), written when it completed.
        var outputs: StoredMessage?
        /// launch()'s `$param(1)`, kept until its report route has run.
        var parameter: StoredMessage?
        /// A branch or a response an async() in a branch_route / onreply_route holds (`HeldWork`), and the
        /// branch index it runs for.
        var held: StoredMessage?
        var heldBranch: Int16 = -1
    }

    /// Wheel-timer payloads for suspension timeouts: bit 61 marks them, then generation 16 | slot 32.
    static let timeoutMarker: UInt64 = 1 << 61

    let capacity: Int
    private let entries: UnsafeMutablePointer<Entry>
    private let free: UnsafeMutablePointer<UInt32>
    private var freeCount: Int
    public private(set) var live = 0

    init(capacity: Int) {
        self.capacity = capacity
        entries = .allocate(capacity: capacity)
        entries.initialize(repeating: Entry(), count: capacity)
        free = .allocate(capacity: capacity)
        for i in 0..<capacity { free[i] = UInt32(capacity - 1 - i) }
        freeCount = capacity
    }

    deinit {
        entries.deinitialize(count: capacity)
        entries.deallocate()
        free.deallocate()
    }

    func allocate(_ transaction: TransactionHandle?, resumeRoute: Int,
                  cancel: @escaping (ScriptContext, AsyncTicket) -> Void) -> AsyncTicket? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        let slot = Int(free[freeCount])
        assert(!entries[slot].live && entries[slot].outputs == nil && entries[slot].parameter == nil
               && entries[slot].held == nil, "a free suspension slot still owns a block")
        entries[slot].live = true
        entries[slot].completed = false
        entries[slot].transaction = transaction
        entries[slot].resumeRoute = Int32(resumeRoute)
        entries[slot].cancel = cancel
        live += 1
        return AsyncTicket(slot: UInt32(slot), generation: entries[slot].generation)
    }

    func entry(_ ticket: AsyncTicket) -> Entry? {
        index(ticket).map { entries[$0] }
    }

    /// Whether the suspension is live and still waits for its operation's result.
    func isWaiting(_ ticket: AsyncTicket) -> Bool {
        index(ticket).map { !entries[$0].completed } ?? false
    }

    /// The live entry's slot, without copying the entry (it holds a closure: a copy retains it).
    private func index(_ ticket: AsyncTicket) -> Int? {
        let i = Int(ticket.slot)
        guard i < capacity, entries[i].live, entries[i].generation == ticket.generation else { return nil }
        return i
    }

    /// Records the operation's result: the first one wins. Returns the timers to cancel (the operation has
    /// its answer), or nil when the ticket is stale or a result was already recorded; `outputs` then stays
    /// the caller's.
    func complete(_ ticket: AsyncTicket, outputs: StoredMessage?) -> (timeout: TimerHandle?, operation: TimerHandle?)? {
        guard let i = index(ticket), !entries[i].completed else { return nil }
        entries[i].completed = true
        entries[i].outputs = outputs
        defer { entries[i].timeout = nil; entries[i].operationTimer = nil }
        return (entries[i].timeout, entries[i].operationTimer)
    }

    /// Ends the suspension and moves out what it owned (outputs, parameter, held work): the caller owns those
    /// blocks from here. Nil for a stale ticket.
    func take(_ ticket: AsyncTicket) -> Entry? {
        guard let i = index(ticket) else { return nil }
        let entry = entries[i]
        entries[i].live = false
        entries[i].completed = false
        entries[i].cancel = nil
        entries[i].timeout = nil
        entries[i].operationTimer = nil
        entries[i].outputs = nil
        entries[i].parameter = nil
        entries[i].held = nil
        entries[i].heldBranch = -1
        entries[i].generation = entries[i].generation == UInt16.max ? 1 : entries[i].generation + 1
        free[freeCount] = ticket.slot
        freeCount += 1
        live -= 1
        return entry
    }

    func setTimeout(_ ticket: AsyncTicket, _ timer: TimerHandle?) {
        guard let i = index(ticket) else { return }
        entries[i].timeout = timer
    }

    /// For operations that run on the wheel themselves (sleep).
    public func setOperationTimer(_ ticket: AsyncTicket, _ timer: TimerHandle?) {
        guard let i = index(ticket) else { return }
        entries[i].operationTimer = timer
    }

    public func operationTimer(_ ticket: AsyncTicket) -> TimerHandle? { index(ticket).flatMap { entries[$0].operationTimer } }

    func setParameter(_ ticket: AsyncTicket, _ parameter: StoredMessage?) {
        guard let i = index(ticket) else { return }
        entries[i].parameter = parameter
    }

    func setHeld(_ ticket: AsyncTicket, _ held: StoredMessage, branch: Int) {
        guard let i = index(ticket) else { return }
        entries[i].held = held
        entries[i].heldBranch = Int16(truncatingIfNeeded: branch)
    }

    public func setOperationData(_ ticket: AsyncTicket, _ data: UInt64) {
        guard let i = index(ticket) else { return }
        entries[i].operationData = data
    }

    public func operationData(_ ticket: AsyncTicket) -> UInt64? { index(ticket).map { entries[$0].operationData } }

    static func timeoutPayload(_ ticket: AsyncTicket) -> UInt64 {
        timeoutMarker | UInt64(ticket.generation) << 32 | UInt64(ticket.slot)
    }

    static func timeoutTicket(_ payload: UInt64) -> AsyncTicket? {
        guard payload & (1 << 63 | 1 << 62 | timeoutMarker) == timeoutMarker else { return nil }
        return AsyncTicket(slot: UInt32(truncatingIfNeeded: payload), generation: UInt16(truncatingIfNeeded: payload >> 32))
    }

    /// Continuation payloads (`Shard.continueNextTurn`) that resume a suspension: bit 56 marks them, then
    /// generation 16 | slot 32.
    static let resumeMarker: UInt64 = 1 << 56

    static func resumePayload(_ ticket: AsyncTicket) -> UInt64 {
        resumeMarker | UInt64(ticket.generation) << 32 | UInt64(ticket.slot)
    }

    static func resumeTicket(_ payload: UInt64) -> AsyncTicket? {
        guard payload >> 48 == resumeMarker >> 48 else { return nil }
        return AsyncTicket(slot: UInt32(truncatingIfNeeded: payload), generation: UInt16(truncatingIfNeeded: payload >> 32))
    }
}

/// The script's edits to the request, kept with a suspended transaction so its resume route continues from
/// them: flags, `$ru`, `$du`, the Route set, Record-Route, force_rport, Max-Forwards, added and removed
/// headers. (`$avp` values travel separately, as in every route of a transaction; `$var` values do not.)
///
/// Layout: flags u64 | branch flags u64 | recordRoute u8 | forceRport u8 | popRoute u8 | 0 u8 | maxForwards i32 |
/// 4 × (length u32 or 0xFFFFFFFF for none, bytes): Request-URI, $du, Route set, appended headers |
/// removed-header count u16 | indexes u16…
extension ScriptContext {
    func captureState(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var w = StateWriter(buffer: buffer)
        w.put(flags)
        w.put(branchFlags)
        w.put(UInt8(recordRoute ? 1 : 0)); w.put(UInt8(forceRport ? 1 : 0)); w.put(UInt8(popRoute ? 1 : 0)); w.put(UInt8(0))
        w.put(Int32(maxForwardsWhenAbsent))
        w.put(requestURI); w.put(destinationURI); w.put(routeSet); w.put(appendedHeaders)
        var removed: UInt16 = 0
        for i in 0..<message.headerCount where message.isHeaderRemoved(at: i) { removed += 1 }
        w.put(removed)
        for i in 0..<message.headerCount where message.isHeaderRemoved(at: i) { w.put(UInt16(i)) }
        return w.overflowed ? nil : w.count
    }

    /// Restores what `captureState` kept. Views point into `state`, which stays valid through the route.
    func restoreState(_ state: UnsafeRawBufferPointer) {
        var r = StateReader(bytes: state)
        flags = r.get(UInt64.self)
        branchFlags = r.get(UInt64.self)
        recordRoute = r.get(UInt8.self) != 0
        forceRport = r.get(UInt8.self) != 0
        popRoute = r.get(UInt8.self) != 0
        _ = r.get(UInt8.self)
        maxForwardsWhenAbsent = Int(r.get(Int32.self))
        requestURI = r.getBytes()
        destinationURI = r.getBytes()
        routeSet = r.getBytes()
        if let appended = r.getBytes() { _ = appendHeader(appended) }
        let removed = Int(r.get(UInt16.self))
        for _ in 0..<removed {
            let index = Int(r.get(UInt16.self))
            if index < message.headerCount { message.removeHeader(at: index) }
        }
    }
}

struct StateWriter {
    let buffer: UnsafeMutableRawBufferPointer
    var count = 0
    var overflowed = false

    mutating func put<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        guard count + size <= buffer.count else { overflowed = true; return }
        buffer.storeBytes(of: value, toByteOffset: count, as: T.self)
        count += size
    }

    mutating func put(_ bytes: UnsafeRawBufferPointer?) {
        guard let bytes else { put(UInt32.max); return }
        put(UInt32(bytes.count))
        guard count + bytes.count <= buffer.count else { overflowed = true; return }
        if bytes.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: buffer[count..<count + bytes.count]).copyMemory(from: bytes)
        }
        count += bytes.count
    }
}

struct StateReader {
    let bytes: UnsafeRawBufferPointer
    var at = 0

    mutating func get<T: FixedWidthInteger>(_ type: T.Type) -> T {
        let size = MemoryLayout<T>.size
        guard at + size <= bytes.count else { return 0 }
        defer { at += size }
        return bytes.loadUnaligned(fromByteOffset: at, as: T.self)
    }

    mutating func getBytes() -> UnsafeRawBufferPointer? {
        let length = get(UInt32.self)
        guard length != UInt32.max, at + Int(length) <= bytes.count else { return nil }
        defer { at += Int(length) }
        return UnsafeRawBufferPointer(rebasing: bytes[at..<at + Int(length)])
    }
}
