import Engine
import Glibc
import SIP
import TM

/// How a route's execution continues after a statement.
public enum Flow: UInt8 {
    case normal
    /// `return`: the current route ends; a calling route continues.
    case returned
    /// `exit`, or a function returning 0: the script ends.
    case exit
    /// `drop`: the script ends and the message is not relayed (a reply is not forwarded).
    case drop
    /// `break` in a switch or while.
    case breakBlock
}

/// Everything a compiled route reads and writes while it handles one message. One per shard, reused for
/// every message: `begin` resets it, and all its storage is allocated once, so running a route allocates
/// nothing.
///
/// - Invariant: used only on its shard's thread.
public final class ScriptContext {
    /// The message routes read: the datagram being handled, or (in a failure route) the transaction's
    /// request, parsed into `transactionMessage` so the datagram's message stays intact underneath.
    public internal(set) var message: SIPMessage
    let datagramMessage = SIPMessage()
    let transactionMessage = SIPMessage()
    /// The shard's transactions, when the script loads tm.
    public internal(set) var transactions: TransactionManager?
    /// The transaction of the message being routed, once t_newtran/t_relay/t_reply created it.
    public var transaction: TransactionHandle?
    /// Modules' per-shard services (ScriptLibrary.serviceFactories order), made when the shard starts.
    public internal(set) var services: [any ShardService] = []
    /// Routes a request a prefetching service held, from its `fetched` (set by the handler when the shard starts).
    public internal(set) var routeHeld: ((UnsafeRawBufferPointer, SocketAddress, Int) -> Void)?
    /// Operation outputs waiting for their resume route (see `stageOutput`): values copied into one buffer,
    /// entries (avp slot, offset or -1 for NULL, length).
    static let stagedCapacity = 1024
    let stagingBuffer: UnsafeMutableRawBufferPointer = .allocate(byteCount: 256 << 10, alignment: 8)
    let stagedEntries: UnsafeMutablePointer<(Int, Int, Int)> = {
        let entries = UnsafeMutablePointer<(Int, Int, Int)>.allocate(capacity: ScriptContext.stagedCapacity)
        entries.initialize(repeating: (0, 0, 0), count: ScriptContext.stagedCapacity)
        return entries
    }()
    var stagedCount = 0
    var stagedUsed = 0
    /// Advances with every message or route start: lets per-message state kept outside the context (e.g.
    /// rest_append_hf's headers) notice it belongs to an earlier message.
    public private(set) var messageSerial: UInt64 = 0
    /// launch() parameters waiting for their report route.
    let launchParameters = MessageStore()
    /// Operations' outputs from their completion to their resume route (`OperationOutputs`); its largest
    /// class holds a full staging area.
    let operationOutputs = MessageStore(classSizes: [1024, 4096, 16384, 65536, 262144, 524288])
    /// The blocks the running route's values view, moved out of their owners for the route: the transaction's
    /// `$avp` values (`TransactionManager.takeAVPs`), the suspension's saved state (`takeSuspension`) and the
    /// operation's outputs. Nothing else can release them while the route runs; `endRoute` does, after it.
    var routeAVPs: StoredMessage?
    var routeState: StoredMessage?
    var routeOutputs: StoredMessage?
    /// Branches and responses held by async() in branch and reply routes (`HeldWork`).
    let heldWork = MessageStore()
    /// A held response, parsed again for its resume route.
    let heldReplyMessage = SIPMessage()
    /// t_relay's forced destination while its branch_route runs (an async() there keeps it for the branch).
    var branchForced: NextHop?
    /// The TCP connection `lookup()` found the callee registered over (a binding's socket): the Request-URI branch
    /// is sent on it, from whichever shard, so a phone behind NAT is reached on the connection it keeps open.
    public var sendSocket: Int?
    /// While the unnamed onreply_route runs for a transaction's response: the transaction's `t_on_reply` route
    /// that runs after it (-1 none). An async() there keeps it, so the held response still goes through it.
    var replyRouteAfter = -1
    /// While the resume route of a held branch runs: the branch is sent when it ends, so t_relay is refused.
    var resumingHeldBranch = false
    /// `$param(1)` in a report route.
    var launchParameter: UnsafeRawBufferPointer?
    /// `route(name, a, b)`: where the called route's `$param(1)`, `$param(2)` sit on the value stack.
    var routeParameters = 0..<0
    /// The shard's suspended transactions (async operations in flight).
    public let suspensions = Suspensions(capacity: 65_536)
    /// Set when this route suspended its transaction (async): nothing more happens for it until it resumes.
    public var suspendedNow = false
    /// The script's writers for operation outputs that are not `$avp`s (`OutputTarget`).
    var outputWriters: [OutputWriter] = []
    /// True while a route runs: no route may start inside another (`ScriptHandler.runRoute`).
    var routeRunning = false
    /// Scratch for the state a suspension keeps (copied into the transaction's store).
    let stateBytes: UnsafeMutableRawBufferPointer = .allocate(byteCount: 16 << 10, alignment: 8)
    /// `t_on_failure` before the transaction exists: applied when it is created.
    var pendingFailureRoute: Int?
    /// `t_on_reply` before the transaction exists: applied when it is created.
    var pendingReplyRoute: Int?
    /// `$T_fr_timeout` / `$T_fr_inv_timeout` (milliseconds) before the transaction exists.
    var pendingFinalResponseTimeout: Int?
    var pendingInviteFinalResponseTimeout: Int?
    /// `t_on_branch`: the branch_route each branch of this route's next `t_relay` runs before it is sent
    /// (OpenSIPS arms it per relay, so a failure route arms it again).
    var branchRoute: Int?
    /// The branch a branch_route or onreply_route runs for (`$T_branch_idx`); nil elsewhere.
    public internal(set) var branchIndex: Int?

    /// `$T_reply_code` and `t_check_status`: in a reply route, the response it runs on (its routes run at the
    /// end of the loop turn, when a later response of the same burst may already be the transaction's last);
    /// elsewhere the transaction's answer so far. Nil outside a transaction.
    var transactionReplyCode: Int? {
        guard let handle = transaction, let manager = transactions else { return nil }
        if hasMessage && !message.isRequest && message.statusCode > 0 { return message.statusCode }
        return manager.replyCode(handle)
    }
    /// The destination set (`append_branch`): the branches `t_relay` forks to besides the Request-URI.
    /// Views valid for the route run (message, literal or arena text), like every `ScriptValue`.
    let destinationSet: UnsafeMutablePointer<DestinationBranch>
    public internal(set) var destinationCount = 0
    /// Room for the serialized `$avp` values a transaction keeps (`AVPStore.serialize`).
    let avpBytes: UnsafeMutableRawBufferPointer
    /// False in startup and timer routes, which run without a message.
    public internal(set) var hasMessage = false
    public internal(set) var source = SocketAddress(ipv4: (0, 0, 0, 0), port: 0)
    public internal(set) var socketIndex = 0
    public internal(set) var shard: Shard!
    public let relay = SIPRelay()
    public let arena: Arena
    public let log: ScriptLog

    var flow = Flow.normal
    /// `$rc` / `$retcode`: the last function's or route's return code.
    public var returnCode = 0
    /// The first runtime failure (a loop bound, an arena overflow) to report and hand to error_route.
    public var runtimeError: String?
    /// In error_route: the error that brought the script there (`$err.info`).
    public var errorInfo: String?

    // $var slots (reset per message) and $avp values (per message until transactions own them).
    let variables: UnsafeMutablePointer<ScriptValue>
    let variableCount: Int
    public let avps: AVPStore
    public var flags: UInt64 = 0
    /// Branch flags of the Request-URI branch (`setbflag`).
    public var branchFlags: UInt64 = 0
    /// What a module asked to be reported of this message's transaction when it is answered (acc's
    /// `do_accounting`): opaque here, kept with the transaction like the flags.
    public var reports: UInt32 = 0

    // Edits to the request, applied when it is forwarded.
    /// A new Request-URI (`$ru`, `$rU`, … assignments, strict-routing in `loose_route`).
    public var requestURI: UnsafeRawBufferPointer?
    /// `$du`: where to send, overriding Route and Request-URI.
    public var destinationURI: UnsafeRawBufferPointer?
    public var recordRoute = false
    /// Parameters the Record-Route we add carries after `;lr` (`add_rr_param`, dialog's `did`), in the arena.
    public var recordRouteParameters: UnsafeRawBufferPointer?
    public var forceRport = false
    public var popRoute = false
    public var maxForwardsWhenAbsent = 70
    /// A rewritten Route set (whole `Route:` line) replacing the received Route fields.
    public var routeSet: UnsafeRawBufferPointer?
    /// Header lines added by `append_hf`, in order.
    let appended = HeaderLines(capacity: 4096)
    var appendedCount: Int {
        get { appended.count }
        set { appended.count = newValue }
    }
    /// Header lines `append_to_reply` adds to the replies this proxy makes for the message.
    let replyHeaders = HeaderLines(capacity: 2048)
    /// Whether something was sent for this message (forwarded or answered).
    public var handled = false
    /// Scratch for values computed before they are combined (string templates); a stack, reset per message.
    let stack: UnsafeMutablePointer<ScriptValue>
    static let stackCapacity = 1024
    var stackTop = 0

    public init(variableCount: Int, avpCapacity: Int = 256, arenaBytes: Int = 64 << 10, log: ScriptLog) {
        message = datagramMessage
        self.variableCount = variableCount
        variables = .allocate(capacity: max(variableCount, 1))
        variables.initialize(repeating: .null, count: max(variableCount, 1))
        avps = AVPStore(capacity: avpCapacity)
        arena = Arena(capacity: arenaBytes)
        stack = .allocate(capacity: ScriptContext.stackCapacity)
        stack.initialize(repeating: .null, count: ScriptContext.stackCapacity)
        destinationSet = .allocate(capacity: ScriptContext.destinationCapacity)
        avpBytes = .allocate(byteCount: 16 << 10, alignment: 8)
        self.log = log
    }

    deinit {
        variables.deallocate()
        stack.deallocate()
        destinationSet.deallocate()
        avpBytes.deallocate()
        stagingBuffer.deallocate()
        stagedEntries.deallocate()
        stateBytes.deallocate()
    }

    /// Branches besides the Request-URI's: a transaction holds `TransactionManager.maxBranches` in all.
    static let destinationCapacity = TransactionManager.maxBranches - 1

    /// Adds a branch to the destination set; false when it is full.
    func appendBranch(uri: UnsafeRawBufferPointer, destination: UnsafeRawBufferPointer?) -> Bool {
        guard destinationCount < ScriptContext.destinationCapacity else { return false }
        destinationSet[destinationCount] = DestinationBranch(uri: uri, destination: destination)
        destinationCount += 1
        return true
    }

    /// Resets per-message state before a route runs for a new message (or for a message-less route).
    func begin(shard: Shard, source: SocketAddress, socketIndex: Int, hasMessage: Bool) {
        assert(routeAVPs == nil && routeState == nil && routeOutputs == nil,
               "a route began before the previous one ended (endRoute)")
        self.shard = shard
        self.source = source
        self.socketIndex = socketIndex
        self.hasMessage = hasMessage
        sendSocket = nil
        flow = .normal
        returnCode = 0
        runtimeError = nil
        errorInfo = nil
        for i in 0..<variableCount { variables[i] = .null }
        avps.removeAll()
        flags = 0
        branchFlags = 0
        reports = 0
        requestURI = nil
        destinationURI = nil
        recordRoute = false
        recordRouteParameters = nil
        forceRport = false
        popRoute = false
        maxForwardsWhenAbsent = 70
        routeSet = nil
        appendedCount = 0
        replyHeaders.count = 0
        handled = false
        transaction = nil
        pendingFailureRoute = nil
        suspendedNow = false
        launchParameter = nil
        routeParameters = 0..<0
        messageSerial &+= 1
        pendingReplyRoute = nil
        pendingFinalResponseTimeout = nil
        pendingInviteFinalResponseTimeout = nil
        branchRoute = nil
        branchIndex = nil
        branchForced = nil
        replyRouteAfter = -1
        resumingHeldBranch = false
        destinationCount = 0
        stackTop = 0
        arena.reset()
    }

    @inline(__always)
    func push(_ value: ScriptValue) {
        guard stackTop < ScriptContext.stackCapacity else {
            fail("expression too deep: more than \(ScriptContext.stackCapacity) pending values")
            return
        }
        stack[stackTop] = value
        stackTop += 1
    }

    /// Records a runtime failure and ends the script.
    func fail(_ reason: String) {
        if runtimeError == nil { runtimeError = reason }
        flow = .exit
    }

    func appendHeader(_ text: UnsafeRawBufferPointer) -> Bool { appended.append(text) }

    var appendedHeaders: UnsafeRawBufferPointer? { appended.lines }

    /// The Request-URI as it stands: the script's replacement, else the received one.
    public var currentRequestURI: UnsafeRawBufferPointer {
        if let requestURI { return requestURI }
        guard hasMessage, message.isRequest else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return message.bytes(of: message.requestURIText)
    }
}

/// One `append_branch`: the branch's Request-URI, and its `$du` when it had one.
struct DestinationBranch {
    var uri: UnsafeRawBufferPointer
    var destination: UnsafeRawBufferPointer?
}

/// `$avp` values for one message: a small stack per name (the newest value first), names resolved to
/// slots at compile time. A transaction keeps them (`serialize`) and routes that run for it later get them
/// back (`restore`).
public final class AVPStore {
    struct Entry {
        var slot: Int32
        var value: ScriptValue
    }

    let capacity: Int
    let entries: UnsafeMutablePointer<Entry>
    public private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        entries = .allocate(capacity: capacity)
    }

    deinit { entries.deallocate() }

    func removeAll() { count = 0 }

    /// Adds a value on top of `slot`'s stack. False when the store is full.
    public func push(_ slot: Int, _ value: ScriptValue) -> Bool {
        guard count < capacity else { return false }
        entries[count] = Entry(slot: Int32(slot), value: value)
        count += 1
        return true
    }

    /// The `index`-th value of `slot`, newest first; a negative index counts from the oldest.
    public func value(_ slot: Int, index: Int = 0) -> ScriptValue {
        if index < 0 {
            var seen = 0
            for i in 0..<count where entries[i].slot == Int32(slot) {
                seen += 1
                if seen == -index { return entries[i].value }
            }
            return .null
        }
        var seen = 0
        var i = count - 1
        while i >= 0 {
            if entries[i].slot == Int32(slot) {
                if seen == index { return entries[i].value }
                seen += 1
            }
            i -= 1
        }
        return .null
    }

    public func valueCount(_ slot: Int) -> Int {
        var n = 0
        for i in 0..<count where entries[i].slot == Int32(slot) { n += 1 }
        return n
    }

    /// Writes every value, oldest first, and returns the bytes written; nil when they do not fit. Per value:
    /// slot (Int32), tag (UInt8: 1 integer, 2 text), then the Int64 or a UInt32 length and the text; native
    /// byte order, unaligned — the bytes never leave the process.
    func serialize(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var at = 0
        for i in 0..<count {
            let entry = entries[i]
            switch entry.value {
            case .null:
                continue
            case .integer(let n):
                guard buffer.count - at >= 13 else { return nil }
                buffer.storeBytes(of: entry.slot, toByteOffset: at, as: Int32.self)
                buffer[at + 4] = 1
                buffer.storeBytes(of: Int64(n), toByteOffset: at + 5, as: Int64.self)
                at += 13
            case .text(let text):
                guard buffer.count - at >= 9 + text.count else { return nil }
                buffer.storeBytes(of: entry.slot, toByteOffset: at, as: Int32.self)
                buffer[at + 4] = 2
                buffer.storeBytes(of: UInt32(text.count), toByteOffset: at + 5, as: UInt32.self)
                if text.count > 0 {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[at + 9..<at + 9 + text.count]).copyMemory(from: text)
                }
                at += 9 + text.count
            }
        }
        return at
    }

    /// Replaces every value with those `serialize` wrote into `bytes`; texts are views into `bytes`, which
    /// must outlive them (a transaction's copy, kept while its route runs).
    func restore(_ bytes: UnsafeRawBufferPointer) {
        count = 0
        var at = 0
        while at + 5 <= bytes.count && count < capacity {
            let slot = bytes.loadUnaligned(fromByteOffset: at, as: Int32.self)
            if bytes[at + 4] == 1 {
                guard at + 13 <= bytes.count else { return }
                entries[count] = Entry(slot: slot, value: .integer(Int(bytes.loadUnaligned(fromByteOffset: at + 5,
                                                                                           as: Int64.self))))
                at += 13
            } else {
                guard at + 9 <= bytes.count else { return }
                let length = Int(bytes.loadUnaligned(fromByteOffset: at + 5, as: UInt32.self))
                guard at + 9 + length <= bytes.count else { return }
                entries[count] = Entry(slot: slot, value: .text(UnsafeRawBufferPointer(rebasing: bytes[at + 9..<at + 9 + length])))
                at += 9 + length
            }
            count += 1
        }
    }

    /// Removes the newest value of `slot`, or all of them.
    public func remove(_ slot: Int, all: Bool) {
        var i = count - 1
        while i >= 0 {
            if entries[i].slot == Int32(slot) {
                for j in i..<(count - 1) { entries[j] = entries[j + 1] }
                count -= 1
                if !all { return }
            }
            i -= 1
        }
    }
}

/// Where `xlog` and runtime errors go: stderr, one write per line, filtered by the script's log_level
/// (OpenSIPS numbering: -3 alert … 4 debug).
public final class ScriptLog: @unchecked Sendable {
    public let level: Int
    /// xlog()'s threshold: `xlog_level` when the script sets it, else `level`.
    public let xlogLevel: Int

    public init(level: Int, xlogLevel: Int? = nil) {
        self.level = level
        self.xlogLevel = xlogLevel ?? level
    }

    public func write(level: Int, threshold: Int? = nil, _ bytes: UnsafeRawBufferPointer) {
        guard level <= threshold ?? self.level, bytes.count > 0 else { return }
        _ = Glibc.write(STDERR_FILENO, bytes.baseAddress, bytes.count)
    }

    public func write(level: Int, threshold: Int? = nil, _ text: String) {
        guard level <= threshold ?? self.level else { return }
        var line = text
        if !line.hasSuffix("\n") { line += "\n" }
        _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }
}

/// Whole header lines, each ending in CRLF (added when missing), in a buffer allocated once.
final class HeaderLines {
    private let buffer: UnsafeMutableRawBufferPointer
    var count = 0

    init(capacity: Int) { buffer = .allocate(byteCount: capacity, alignment: 8) }

    deinit { buffer.deallocate() }

    /// False (and nothing added) when the line does not fit.
    func append(_ text: UnsafeRawBufferPointer) -> Bool {
        let needsCRLF = text.count < 2 || text[text.count - 2] != 0x0D || text[text.count - 1] != 0x0A
        let total = text.count + (needsCRLF ? 2 : 0)
        guard total <= buffer.count - count else { return false }
        if text.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: buffer[count..<count + text.count]).copyMemory(from: text)
        }
        count += text.count
        if needsCRLF {
            buffer[count] = 0x0D
            buffer[count + 1] = 0x0A
            count += 2
        }
        return true
    }

    /// The lines, or nil when there are none.
    var lines: UnsafeRawBufferPointer? {
        count == 0 ? nil : UnsafeRawBufferPointer(rebasing: buffer[0..<count])
    }
}
