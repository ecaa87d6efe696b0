/// One header line of a parsed message: its kind and where its parts are. Values are parsed only
/// when asked for (`SIPMessage.topVia`, `SIPVia.parse`, ...).
public struct SIPHeaderField: Sendable {
    public var kind: SIPHeaderKind
    /// The name as written (`v`, `VIA`, `Via`).
    public var name: SIPSpan
    /// The value without surrounding LWS. A folded value keeps its CRLFs inside the span; every value
    /// parser reads CR and LF there as LWS.
    public var value: SIPSpan
    /// The whole line from the first byte of the name through the CRLF that ends it.
    public var line: SIPSpan
    /// Index of the next field of the same kind, or -1: lets `values(of:)` skip other fields.
    var next: Int16
    /// Set by `SIPMessage.removeHeader(at:)`; the builders skip removed fields.
    var isRemoved: Bool
}

/// A set of header kinds, for the builders' "remove every field of these kinds".
/// - Invariant: one bit per `SIPHeaderKind.rawValue`; the enum stays below 128 cases.
public struct SIPHeaderKindSet: Sendable, Equatable {
    var low: UInt64 = 0
    var high: UInt64 = 0

    public init() {}

    public init(_ kinds: SIPHeaderKind...) {
        for kind in kinds { insert(kind) }
    }

    public mutating func insert(_ kind: SIPHeaderKind) {
        let bit = kind.rawValue
        if bit < 64 { low |= 1 << UInt64(bit) } else { high |= 1 << UInt64(bit - 64) }
    }

    public mutating func remove(_ kind: SIPHeaderKind) {
        let bit = kind.rawValue
        if bit < 64 { low &= ~(1 << UInt64(bit)) } else { high &= ~(1 << UInt64(bit - 64)) }
    }

    @inline(__always)
    public func contains(_ kind: SIPHeaderKind) -> Bool {
        let bit = kind.rawValue
        return bit < 64 ? low & (1 << UInt64(bit)) != 0 : high & (1 << UInt64(bit &- 64)) != 0
    }

    public var isEmpty: Bool { low == 0 && high == 0 }
}
