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
    /// `t_on_failure` before the transaction exists: applied when it is created.
    var pendingFailureRoute: Int?
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

    // $var slots (reset per message) and $avp values (per message until transactions own them).
    let variables: UnsafeMutablePointer<ScriptValue>
    let variableCount: Int
    public let avps: AVPStore
    public var flags: UInt64 = 0

    // Edits to the request, applied when it is forwarded.
    /// A new Request-URI (`$ru`, `$rU`, … assignments, strict-routing in `loose_route`).
    public var requestURI: UnsafeRawBufferPointer?
    /// `$du`: where to send, overriding Route and Request-URI.
    public var destinationURI: UnsafeRawBufferPointer?
    public var recordRoute = false
    public var forceRport = false
    public var popRoute = false
    public var maxForwardsWhenAbsent = 70
    /// A rewritten Route set (whole `Route:` line) replacing the received Route fields.
    public var routeSet: UnsafeRawBufferPointer?
    /// Header lines added by `append_hf`, in order.
    let appended: UnsafeMutableRawBufferPointer
    var appendedCount = 0
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
        appended = .allocate(byteCount: 4096, alignment: 8)
        stack = .allocate(capacity: ScriptContext.stackCapacity)
        stack.initialize(repeating: .null, count: ScriptContext.stackCapacity)
        self.log = log
    }

    deinit {
        variables.deallocate()
        appended.deallocate()
        stack.deallocate()
    }

    /// Resets per-message state before a route runs for a new message (or for a message-less route).
    func begin(shard: Shard, source: SocketAddress, socketIndex: Int, hasMessage: Bool) {
        self.shard = shard
        self.source = source
        self.socketIndex = socketIndex
        self.hasMessage = hasMessage
        flow = .normal
        returnCode = 0
        runtimeError = nil
        for i in 0..<variableCount { variables[i] = .null }
        avps.removeAll()
        flags = 0
        requestURI = nil
        destinationURI = nil
        recordRoute = false
        forceRport = false
        popRoute = false
        maxForwardsWhenAbsent = 70
        routeSet = nil
        appendedCount = 0
        handled = false
        transaction = nil
        pendingFailureRoute = nil
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

    func appendHeader(_ text: UnsafeRawBufferPointer) -> Bool {
        let needsCRLF = text.count < 2 || text[text.count - 2] != 0x0D || text[text.count - 1] != 0x0A
        let total = text.count + (needsCRLF ? 2 : 0)
        guard total <= appended.count - appendedCount else { return false }
        if text.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: appended[appendedCount..<appendedCount + text.count])
                .copyMemory(from: text)
        }
        appendedCount += text.count
        if needsCRLF {
            appended[appendedCount] = 0x0D
            appended[appendedCount + 1] = 0x0A
            appendedCount += 2
        }
        return true
    }

    var appendedHeaders: UnsafeRawBufferPointer? {
        appendedCount == 0 ? nil : UnsafeRawBufferPointer(rebasing: appended[0..<appendedCount])
    }

    /// The Request-URI as it stands: the script's replacement, else the received one.
    var currentRequestURI: UnsafeRawBufferPointer {
        if let requestURI { return requestURI }
        guard hasMessage, message.isRequest else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return message.bytes(of: message.requestURIText)
    }
}

/// `$avp` values for one message: a small stack per name (the newest value first), names resolved to
/// slots at compile time.
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
    func push(_ slot: Int, _ value: ScriptValue) -> Bool {
        guard count < capacity else { return false }
        entries[count] = Entry(slot: Int32(slot), value: value)
        count += 1
        return true
    }

    /// The `index`-th value of `slot`, newest first; a negative index counts from the oldest.
    func value(_ slot: Int, index: Int = 0) -> ScriptValue {
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

    func valueCount(_ slot: Int) -> Int {
        var n = 0
        for i in 0..<count where entries[i].slot == Int32(slot) { n += 1 }
        return n
    }

    /// Removes the newest value of `slot`, or all of them.
    func remove(_ slot: Int, all: Bool) {
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

    public init(level: Int) { self.level = level }

    public func write(level: Int, _ bytes: UnsafeRawBufferPointer) {
        guard level <= self.level, bytes.count > 0 else { return }
        _ = Glibc.write(STDERR_FILENO, bytes.baseAddress, bytes.count)
    }

    public func write(level: Int, _ text: String) {
        guard level <= self.level else { return }
        var line = text
        if !line.hasSuffix("\n") { line += "\n" }
        _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }
}
