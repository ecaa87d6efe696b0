import SIP

/// Whether the transport retransmits for us (RFC 3261 §17: TCP, TLS, SCTP, WS) or not (UDP). It decides
/// whether timers A, E and G run at all and whether D, I, J and K wait or end the transaction at once.
public enum TransportKind: UInt8, Sendable {
    case unreliable
    case reliable

    /// UDP and anything unknown are unreliable: retransmitting over a reliable transport costs a
    /// duplicate, not retransmitting over an unreliable one loses the transaction.
    public init(_ transport: SIPTransport) {
        switch transport {
        case .tcp, .tls, .sctp, .ws, .wss: self = .reliable
        case .udp, .other: self = .unreliable
        }
    }
}

/// The timers of RFC 3261 Appendix A and RFC 6026 §8.4, plus the two tm timeouts users set.
/// The raw value is the timer's bit in `TransactionTimers`.
public enum TransactionTimer: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// INVITE request retransmit interval (unreliable only): T1, doubling without a cap.
    case A
    /// INVITE transaction timeout in `.calling`: 64*T1. Re-armed in `.proceeding` after a CANCEL
    /// (§9.1: give up on the INVITE 64*T1 after cancelling it).
    case B
    /// Proxy INVITE timeout after a provisional (§16.6 step 11): `fr_inv_timeout`, restarted by every
    /// 101-199 (§16.7 step 2).
    case C
    /// Wait for response retransmissions in `.completed` (INVITE client): ≥ 32 s unreliable, 0 reliable.
    case D
    /// Non-INVITE request retransmit interval (unreliable only): T1 doubling up to T2.
    case E
    /// Non-INVITE transaction timeout: 64*T1.
    case F
    /// INVITE final response retransmit interval (unreliable only): T1 doubling up to T2.
    case G
    /// Wait for the ACK in `.completed` (INVITE server): 64*T1.
    case H
    /// Absorb ACK retransmissions in `.confirmed`: T4 unreliable, 0 reliable.
    case I
    /// Absorb request retransmissions in `.completed` (non-INVITE server): 64*T1 unreliable, 0 reliable.
    case J
    /// Absorb response retransmissions in `.completed` (non-INVITE client): T4 unreliable, 0 reliable.
    case K
    /// RFC 6026: absorb INVITE retransmissions and pass ACKs up in `.accepted` (server): 64*T1.
    case L
    /// RFC 6026: pass 2xx retransmissions up in `.accepted` (client): 64*T1.
    case M
    /// OpenSIPS `fr_timeout`: no final response (INVITE: no response at all) within this time is a
    /// timeout, so a dead next hop fails over before Timer B or F.
    case finalResponse

    public var description: String {
        self == .finalResponse ? "fr" : String(UnicodeScalar(UInt8(ascii: "A") + rawValue))
    }
}

/// The set of armed timers of one transaction: one bit per `TransactionTimer`.
public struct TransactionTimers: Sendable, Equatable {
    public private(set) var rawValue: UInt16 = 0

    public init() {}

    public var isEmpty: Bool { rawValue == 0 }
    public func contains(_ timer: TransactionTimer) -> Bool { rawValue & 1 << timer.rawValue != 0 }
    mutating func insert(_ timer: TransactionTimer) { rawValue |= 1 << timer.rawValue }
    mutating func remove(_ timer: TransactionTimer) { rawValue &= ~(1 << timer.rawValue) }
}

/// T1, T2, T4 and the tm timeouts, in milliseconds, from which every transaction timer is derived
/// (RFC 3261 Appendix A, RFC 6026 §8.4).
///
/// A machine keeps its own copy, so `$T_fr_timeout` / `$T_fr_inv_timeout` change one transaction: the
/// driver sets `settings` on the machine and the new value applies the next time that timer is armed.
///
/// Held in 32-bit milliseconds (49 days, past any SIP timer; a larger value is clamped) with `UInt32.max` for
/// "none": every machine of every transaction keeps a copy, and in `Int`s and `Int?`s the copies were ~400 bytes
/// of a transaction's memory.
public struct TimerSettings: Sendable, Equatable {
    private var t1Milliseconds: UInt32 = 500
    private var t2Milliseconds: UInt32 = 4000
    private var t4Milliseconds: UInt32 = 5000
    private var finalResponseMilliseconds: UInt32 = 30_000
    private var finalResponseInviteMilliseconds: UInt32 = 120_000
    private var waitMilliseconds = TimerSettings.none

    private static let none = UInt32.max
    private static func stored(_ value: Int) -> UInt32 { UInt32(clamping: value) == none ? none - 1 : UInt32(clamping: value) }
    private static func stored(_ value: Int?) -> UInt32 { value.map { stored($0) } ?? none }
    private static func read(_ value: UInt32) -> Int? { value == none ? nil : Int(value) }

    /// RTT estimate.
    public var t1: Int {
        get { Int(t1Milliseconds) }
        set { t1Milliseconds = Self.stored(newValue) }
    }
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses.
    public var t2: Int {
        get { Int(t2Milliseconds) }
        set { t2Milliseconds = Self.stored(newValue) }
    }
    /// Maximum time a message stays in the network.
    public var t4: Int {
        get { Int(t4Milliseconds) }
        set { t4Milliseconds = Self.stored(newValue) }
    }
    /// OpenSIPS `fr_timeout` (default 30 s there too); nil leaves only Timers B and F.
    public var finalResponseTimeout: Int? {
        get { Self.read(finalResponseMilliseconds) }
        set { finalResponseMilliseconds = Self.stored(newValue) }
    }
    /// OpenSIPS `fr_inv_timeout`, which ringsip uses as Timer C. RFC 3261 §16.6 asks for more than
    /// 3 minutes; OpenSIPS users expect 120 s, and their scripts set it per call anyway. Nil: no Timer C.
    public var finalResponseInviteTimeout: Int? {
        get { Self.read(finalResponseInviteMilliseconds) }
        set { finalResponseInviteMilliseconds = Self.stored(newValue) }
    }
    /// OpenSIPS and Kamailio `wt_timer`: how long a completed transaction lingers to absorb retransmissions
    /// (Timers D, J, L and M), 5 s there by default. The RFC values (32 s over UDP) keep every completed
    /// transaction six times longer, which at 2000 calls/s is ~130,000 more live transactions a shard.
    /// Nil (here): the RFC 3261 / RFC 6026 values; the tm module sets OpenSIPS' 5 s unless told otherwise.
    public var waitTimeout: Int? {
        get { Self.read(waitMilliseconds) }
        set { waitMilliseconds = Self.stored(newValue) }
    }
    /// tm's `restart_fr_on_each_reply`: every provisional after the first restarts Timer C (RFC 3261 §16.7
    /// step 2, and OpenSIPS' default); false lets a callee ringing forever with 180s still time out.
    public var restartsTimerCOnProvisional = true

    public init() {}

    public init(t1: Int, t2: Int, t4: Int, finalResponseTimeout: Int?, finalResponseInviteTimeout: Int?) {
        precondition(t1 > 0 && t2 >= t1 && t4 > 0, "T1, T2, T4 must be positive and T2 ≥ T1")
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4
        self.finalResponseTimeout = finalResponseTimeout
        self.finalResponseInviteTimeout = finalResponseInviteTimeout
    }

    /// Initial value of Timers A, E and G.
    public var initialRetransmitInterval: Int { t1 }
    public var timerB: Int { 64 * t1 }
    public var timerF: Int { 64 * t1 }
    public var timerH: Int { 64 * t1 }
    public var timerL: Int { waited(64 * t1) }
    public var timerM: Int { waited(64 * t1) }

    /// "At least 32 seconds" over UDP (§17.1.1.2): 64*T1 when T1 was raised past the default.
    public func timerD(_ transport: TransportKind) -> Int { transport == .reliable ? 0 : waited(max(32_000, 64 * t1)) }
    public func timerI(_ transport: TransportKind) -> Int { transport == .reliable ? 0 : t4 }
    public func timerJ(_ transport: TransportKind) -> Int { transport == .reliable ? 0 : waited(64 * t1) }
    public func timerK(_ transport: TransportKind) -> Int { transport == .reliable ? 0 : t4 }

    private func waited(_ rfcValue: Int) -> Int { waitTimeout.map { min($0, rfcValue) } ?? rfcValue }

    /// The next interval of Timer E or G after one that just fired: doubled, capped at T2
    /// (§17.1.2.2, §17.2.1). Timer A is not capped (§17.1.1.2).
    func doubledUpToT2(_ interval: Int) -> Int { min(2 * interval, t2) }
}
