import Engine
import SIP

/// The ring timers a machine has armed, by kind: at most four at once (no machine arms more), stored inline.
struct TimerSlots {
    private var kinds: (UInt8, UInt8, UInt8, UInt8) = (0xFF, 0xFF, 0xFF, 0xFF)
    private var handles: (TimerHandle?, TimerHandle?, TimerHandle?, TimerHandle?) = (nil, nil, nil, nil)

    /// Records `handle` for `timer`, returning the handle it replaces (to cancel).
    mutating func set(_ timer: TransactionTimer, _ handle: TimerHandle?) -> TimerHandle? {
        let old = take(timer)
        for i in 0..<4 where kind(i) == 0xFF {
            setKind(i, timer.rawValue)
            setHandle(i, handle)
            return old
        }
        preconditionFailure("more than four timers armed on one transaction machine")
    }

    /// Forgets `timer`, returning its handle.
    mutating func take(_ timer: TransactionTimer) -> TimerHandle? {
        for i in 0..<4 where kind(i) == timer.rawValue {
            let handle = self.handle(i)
            setKind(i, 0xFF)
            setHandle(i, nil)
            return handle
        }
        return nil
    }

    /// Every armed handle, forgetting them (the transaction is being freed).
    mutating func takeAll(_ body: (TimerHandle) -> Void) {
        for i in 0..<4 where kind(i) != 0xFF {
            if let handle = handle(i) { body(handle) }
            setKind(i, 0xFF)
            setHandle(i, nil)
        }
    }

    private func kind(_ i: Int) -> UInt8 {
        switch i { case 0: kinds.0; case 1: kinds.1; case 2: kinds.2; default: kinds.3 }
    }
    private mutating func setKind(_ i: Int, _ v: UInt8) {
        switch i { case 0: kinds.0 = v; case 1: kinds.1 = v; case 2: kinds.2 = v; default: kinds.3 = v }
    }
    private func handle(_ i: Int) -> TimerHandle? {
        switch i { case 0: handles.0; case 1: handles.1; case 2: handles.2; default: handles.3 }
    }
    private mutating func setHandle(_ i: Int, _ v: TimerHandle?) {
        switch i { case 0: handles.0 = v; case 1: handles.1 = v; case 2: handles.2 = v; default: handles.3 = v }
    }
}

/// Which machine of a transaction a timer or event belongs to.
///
/// Timer payload, high to low: marker 1 | timer 7 | machine 8 | generation 16 | slot 32. The marker bit
/// tells TM's timers from the script's (timer routes) on the same shard wheel.
enum MachineID: Equatable {
    case server
    case branch(Int)
    case cancel(Int)

    var code: UInt8 {
        switch self {
        case .server: 0
        case .branch(let b): UInt8(1 + 2 * b)
        case .cancel(let b): UInt8(2 + 2 * b)
        }
    }

    init?(code: UInt8) {
        if code == 0 { self = .server } else if code % 2 == 1 { self = .branch(Int(code - 1) / 2) } else {
            self = .cancel(Int(code - 2) / 2)
        }
    }
}

enum TimerPayload {
    static let marker = TimerPayloadOwner.transactions

    static func encode(_ handle: TransactionHandle, _ machine: MachineID, _ timer: TransactionTimer) -> UInt64 {
        marker | UInt64(timer.rawValue) << 56 | UInt64(machine.code) << 48 | UInt64(handle.generation) << 32
            | UInt64(handle.slot)
    }

    static func decode(_ payload: UInt64) -> (slot: UInt32, generation: UInt16, machine: MachineID, timer: TransactionTimer)? {
        guard payload & marker != 0, let timer = TransactionTimer(rawValue: UInt8((payload >> 56) & 0x7F)),
              let machine = MachineID(code: UInt8(truncatingIfNeeded: payload >> 48)) else { return nil }
        return (UInt32(truncatingIfNeeded: payload), UInt16(truncatingIfNeeded: payload >> 32), machine, timer)
    }
}

/// One downstream branch of a proxied request (RFC 3261 §16.6): its client transaction, the request as
/// forwarded (kept to retransmit, and to build the CANCEL and the ACK), and what it answered.
struct Branch {
    var invite: InviteClientTransaction?
    var nonInvite: NonInviteClientTransaction?
    /// The CANCEL's own non-INVITE client transaction (§9.1), once one was sent.
    var cancel: NonInviteClientTransaction?
    var request: StoredMessage
    var ack: StoredMessage?
    var cancelRequest: StoredMessage?
    var destination: SocketAddress
    var socket: Int
    var timers = TimerSlots()
    var cancelTimers = TimerSlots()
    /// The final status (0 while none); a timeout or transport error counts as 408 / 503.
    var finalCode = 0
    /// The final non-2xx response received, kept in case it is the best to forward (§16.7 step 6).
    var response: StoredMessage?
    var machineDone = false
    var cancelDone = true
    /// A final response of this branch is held by a reply route's async(): the branch is answered, and its
    /// machine may end meanwhile, but its finalCode waits for `releaseHeldReply`.
    var heldFinal = false
    /// A place kept for a branch a branch_route's async() holds before it is sent, so its index (the
    /// `$T_branch_idx` its routes see) stays the same once it is: filled by `relay(…, into:)`, or given up.
    /// It has no machines and its `request` is `Branch.nothing`.
    var reserved = false
    /// A reserved place whose branch was never sent (dropped, refused): it has no answer and never will.
    var abandoned = false

    var done: Bool { machineDone && cancelDone }

    /// A reserved place: no request (its `request` stands for none and is never released or sent).
    static func placeholder() -> Branch {
        var branch = Branch(request: nothing, destination: SocketAddress(ipv4: (0, 0, 0, 0), port: 0), socket: 0)
        branch.reserved = true
        return branch
    }

    /// Not a block of any store: a reserved branch's `request`, never read (its count is 0) nor released.
    nonisolated(unsafe) static let nothing = StoredMessage(block: UnsafeMutableRawPointer(bitPattern: 0x10)!,
                                                           sizeClass: 0, count: 0)

    /// Sent for real: neither a reserved place nor an abandoned one.
    var isSent: Bool { !reserved && !abandoned }
}

/// Up to four branches (parallel forking beyond that is refused): the first inline, since most requests have
/// one, and the second to fourth in one block of the transaction manager's `MessageStore`, taken when a second
/// branch is added (serial forking from a failure route, parallel forking to several contacts) and given back by
/// `releaseStorage` when the transaction is freed. Four inline branches were three quarters of a transaction's
/// memory, and no allocation is added: the store reuses its blocks.
///
/// A copy of a `Branches` shares the block of the other three with the original: only the entry in the table is
/// mutated, and it is released once.
struct Branches {
    static let capacity = 4
    private var first: Branch?
    private var rest: StoredMessage?
    private(set) var count = 0

    @inline(__always)
    private func restBranch(_ index: Int) -> UnsafeMutablePointer<Branch> {
        rest!.block.assumingMemoryBound(to: Branch.self) + (index - 1)
    }

    subscript(index: Int) -> Branch {
        get {
            precondition(index < count, "branch \(index) of \(count)")
            return index == 0 ? first! : restBranch(index).pointee
        }
        set {
            precondition(index < count, "branch \(index) of \(count)")
            if index == 0 { first = newValue } else { restBranch(index).pointee = newValue }
        }
        // In place: a Branch is several hundred bytes, and get/set copied it out and back for every machine
        // event (`branches[i].invite!.receivedResponse(…)`): memmove was ~8 % of the daemon's CPU.
        _modify {
            precondition(index < count, "branch \(index) of \(count)")
            if index == 0 { yield &first! } else { yield &restBranch(index).pointee }
        }
    }

    /// Adds `branch`, taking the block for branches two to four from `store` at the second. Nil when there are
    /// four already.
    mutating func append(_ branch: Branch, store: MessageStore) -> Int? {
        guard count < Branches.capacity else { return nil }
        if count == 0 {
            first = branch
        } else {
            if rest == nil {
                guard let block = store.allocate(MemoryLayout<Branch>.stride * (Branches.capacity - 1)) else { return nil }
                block.bytes.bindMemory(to: Branch.self)
                rest = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0)
            }
            restBranch(count).initialize(to: branch)
        }
        count += 1
        return count - 1
    }

    /// Gives the block of branches two to four back to `store`: the transaction is being freed.
    mutating func releaseStorage(to store: MessageStore) {
        if let rest {
            rest.block.assumingMemoryBound(to: Branch.self).deinitialize(count: count - 1)
            store.release(rest)
        }
        rest = nil
        first = nil
        count = 0
    }
}

/// A server transaction and its branches: the proxy's response context (RFC 3261 §16), one table entry.
public struct ProxyTransaction {
    var id: ServerTransactionID
    /// The request as received; the ID's spans point into it.
    var request: StoredMessage
    var source: SocketAddress
    var socket: Int
    var responseDestination: SocketAddress
    /// The script called force_rport() for the request: our own answers carry `rport` too (the relayed ones
    /// have it from the Via we forwarded).
    var forceRport = false
    var method: SIPMethod
    var inviteServer: InviteServerTransaction?
    var nonInviteServer: NonInviteServerTransaction?
    var serverTimers = TimerSlots()
    var serverDone = false
    var lastResponse: StoredMessage?
    var branches = Branches()
    /// The script's failure_route for this transaction (`t_on_failure`), -1 for none.
    public var failureRoute: Int32 = -1
    /// The script's onreply_route for this transaction's branches (`t_on_reply`), -1 for none.
    public var replyRoute: Int32 = -1
    /// The Request-URI of `request` (`$T_ruri`), as offsets into it.
    var requestURIStart: Int32 = 0
    var requestURICount: Int32 = 0
    /// The script's `$avp` values, serialized by the script layer when the transaction was created and after
    /// each of its routes; nil while there are none. TM only keeps the bytes.
    var avps: StoredMessage?
    /// The script's message flags and branch flags for this transaction (`setflag`, `setbflag`): every route that
    /// runs for it sees them, as in OpenSIPS.
    var scriptFlags: UInt64 = 0
    var scriptBranchFlags: UInt64 = 0
    /// What the script asked to be reported of this transaction (acc's `do_accounting`): opaque to TM, kept and
    /// given back with the flags.
    var scriptReports: UInt32 = 0
    /// The script's state while the transaction waits for an async operation (its edits to the request),
    /// restored when the resume route runs. Set while suspended.
    var suspension: StoredMessage?
    public internal(set) var suspended = false
    /// The failure route asked for when every branch had failed (`TransactionUser.failureRouteDue`), waiting to
    /// run from the shard's loop; -1 when none is due. Until `failureRouteEnded` the answer waits.
    var failureRouteDue: Int32 = -1
    var branchesBeforeFailureRoute: UInt8 = 0
    /// Responses waiting for their reply routes, or taken into async() by them, not handed back yet: the
    /// transaction lives until every one is released.
    public internal(set) var heldReplies: UInt8 = 0
    /// Branches a branch_route took into async() before they were sent (`holdBranch`): each is sent, or
    /// given up, by `releaseHeldBranch`. Until then the transaction's answer waits for them.
    public internal(set) var heldBranches: UInt8 = 0
    /// The highest final status sent upstream (0 while none).
    public internal(set) var finalSent = 0
    public internal(set) var cancelled = false
    /// The status of the response being handled (`$T_reply_code`, `t_check_status`): in onreply_route the
    /// response's, in failure_route the one §16.7 selected to send upstream.
    public internal(set) var replyCode = 0
    var settings: TimerSettings

    public var branchCount: Int { branches.count }

    /// Branches sent for real (not reserved for a held one, not abandoned).
    var sentBranchCount: Int {
        var n = 0
        for i in 0..<branches.count where branches[i].isSent { n += 1 }
        return n
    }

    /// Every branch has its final answer. A held branch counts as pending until it is sent or given up —
    /// except after a CANCEL or a 6xx, when it will not be sent (`relay` refuses) and the answer need not wait
    /// for its operation to end.
    var allBranchesFinal: Bool {
        var searchOver = cancelled
        for i in 0..<branches.count where branches[i].finalCode >= 600 { searchOver = true }
        if heldBranches > 0 && !searchOver { return false }
        for i in 0..<branches.count where branches[i].finalCode == 0 && !branches[i].abandoned {
            if branches[i].reserved && searchOver { continue }
            return false
        }
        return true
    }
}
