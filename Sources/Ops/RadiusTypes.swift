import Engine

/// What a RADIUS request ended with; the script layer puts `rawValue` in `$rc` (aaa_radius returns 1 on
/// success and a negative value otherwise; ringsip gives each failure its own code).
public enum RadiusCode: Int32, Sendable {
    /// Access-Accept to an Access-Request, or Accounting-Response to an Accounting-Request.
    case accepted = 1
    /// Access-Reject.
    case rejected = -1
    /// No valid response before the request's total timeout (after its retransmissions).
    case timeout = -2
    /// All 256 identifiers of the shard's socket are in use: refused at once.
    case identifiersFull = -3
    /// Access-Challenge (RFC 2865 §4.4): the reply's attributes (State, Reply-Message) are delivered.
    case challenge = -4
    /// The request could not be built or sent: attributes over the 4096-byte packet limit, a password over
    /// 128 bytes, the shard's timer wheel full. Refused at once.
    case failed = -5
}

/// RFC 2865 / 2866 attribute types the runner or its callers name.
public enum RadiusAttributeType {
    public static let userName: UInt8 = 1
    public static let userPassword: UInt8 = 2
    public static let nasIPAddress: UInt8 = 4
    public static let nasPort: UInt8 = 5
    public static let serviceType: UInt8 = 6
    public static let replyMessage: UInt8 = 18
    public static let state: UInt8 = 24
    public static let `class`: UInt8 = 25
    public static let calledStationID: UInt8 = 30
    public static let callingStationID: UInt8 = 31
    public static let nasIdentifier: UInt8 = 32
    public static let acctStatusType: UInt8 = 40
    public static let acctDelayTime: UInt8 = 41
    public static let acctSessionID: UInt8 = 44
    public static let eventTimestamp: UInt8 = 55
    public static let messageAuthenticator: UInt8 = 80
}

/// Acct-Status-Type values (RFC 2866 §5.1).
public enum RadiusAccountingStatus: UInt32, Sendable {
    case start = 1
    case stop = 2
    case interimUpdate = 3
}

/// Attributes a caller adds to a request, encoded as on the wire (type, length, value). Reusable: clear it with
/// `removeAll()` and fill it again, so steady state allocates nothing.
public struct RadiusAttributes: Sendable {
    public private(set) var encoded: [UInt8] = []

    public init() {
        encoded.reserveCapacity(256)
    }

    /// - Returns: false (nothing added) when `value` is longer than 253 bytes.
    @discardableResult
    public mutating func append(type: UInt8, bytes value: UnsafeRawBufferPointer) -> Bool {
        guard value.count <= 253 else { return false }
        encoded.append(type)
        encoded.append(UInt8(2 + value.count))
        encoded.append(contentsOf: value)
        return true
    }

    @discardableResult
    public mutating func append(type: UInt8, string: String) -> Bool {
        var string = string
        return string.withUTF8 { append(type: type, bytes: UnsafeRawBufferPointer($0)) }
    }

    /// A 32-bit integer, network byte order.
    @discardableResult
    public mutating func append(type: UInt8, integer: UInt32) -> Bool {
        withUnsafeBytes(of: integer.bigEndian) { append(type: type, bytes: $0) }
    }

    @discardableResult
    public mutating func append(type: UInt8, ipv4: (UInt8, UInt8, UInt8, UInt8)) -> Bool {
        withUnsafeBytes(of: ipv4) { append(type: type, bytes: $0) }
    }

    public mutating func removeAll() {
        encoded.removeAll(keepingCapacity: true)
    }
}

/// The outcome of `RadiusRunner.submitAccess` / `submitAccounting`.
public enum RadiusSubmission: Equatable, Sendable {
    /// Sent; the delegate hears of it exactly once, unless cancelled.
    case accepted(RadiusHandle)
    /// Refused at once (`.identifiersFull`, `.failed`); no delegate call follows.
    case rejected(RadiusCode)
}

/// Names one request: its identifier and that identifier's generation, so a late cancel does nothing.
public struct RadiusHandle: Equatable, Sendable {
    public let identifier: UInt8
    public let generation: UInt16
}

/// One finished request, seen by the delegate.
///
/// - Invariant: `attributes` points into the runner's receive buffer, valid only during the delegate call.
public struct RadiusCompletion: ~Copyable {
    public let code: RadiusCode
    /// The response's RADIUS code (2 Access-Accept, 3 Access-Reject, 5 Accounting-Response, 11 Access-Challenge),
    /// 0 when none arrived.
    public let responseCode: UInt8
    /// How many times the request was sent again after the first.
    public let retransmissions: Int
    /// The response's attributes as on the wire (empty without a response).
    public let attributes: UnsafeRawBufferPointer

    /// Calls `body` with each attribute's type and value, in order (the packet was checked when it arrived).
    public func forEachAttribute(_ body: (UInt8, UnsafeRawBufferPointer) -> Void) {
        Self.forEachAttribute(in: attributes, body)
    }

    /// Each attribute of a checked response's attribute bytes, in order.
    public static func forEachAttribute(in attributes: UnsafeRawBufferPointer, _ body: (UInt8, UnsafeRawBufferPointer) -> Void) {
        var offset = 0
        while offset + 2 <= attributes.count {
            let length = Int(attributes[offset + 1])
            guard length >= 2, offset + length <= attributes.count else { return }
            body(attributes[offset], UnsafeRawBufferPointer(rebasing: attributes[offset + 2..<offset + length]))
            offset += length
        }
    }
}

/// Receives finished requests, on the shard's thread. It may submit or cancel from inside the call.
public protocol RadiusRunnerDelegate: AnyObject {
    func radiusCompleted(token: UInt64, _ completion: borrowing RadiusCompletion, on shard: Shard)
}
