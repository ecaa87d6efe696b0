/// Request methods of RFC 3261 and its common extensions. Method names are case-sensitive
/// (RFC 3261 §7.1), so `invite` is `.other`; compare `.other` methods by their bytes.
public enum SIPMethod: UInt8, Sendable, CaseIterable {
    case other
    case invite, ack, bye, cancel, register, options, info, update, prack
    case subscribe, notify, refer, message, publish

    public var name: StaticString {
        switch self {
        case .other: ""
        case .invite: "INVITE"
        case .ack: "ACK"
        case .bye: "BYE"
        case .cancel: "CANCEL"
        case .register: "REGISTER"
        case .options: "OPTIONS"
        case .info: "INFO"
        case .update: "UPDATE"
        case .prack: "PRACK"
        case .subscribe: "SUBSCRIBE"
        case .notify: "NOTIFY"
        case .refer: "REFER"
        case .message: "MESSAGE"
        case .publish: "PUBLISH"
        }
    }

    /// Classifies `bytes[lower..<upper]`: a switch on length and first byte, then one comparison.
    static func classify(_ bytes: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int) -> SIPMethod {
        let candidate: SIPMethod
        switch (upper - lower, bytes[lower]) {
        case (3, 0x41): candidate = .ack
        case (3, 0x42): candidate = .bye
        case (4, 0x49): candidate = .info
        case (5, 0x50): candidate = .prack
        case (5, 0x52): candidate = .refer
        case (6, 0x49): candidate = .invite
        case (6, 0x43): candidate = .cancel
        case (6, 0x55): candidate = .update
        case (6, 0x4E): candidate = .notify
        case (7, 0x4F): candidate = .options
        case (7, 0x4D): candidate = .message
        case (7, 0x50): candidate = .publish
        case (8, 0x52): candidate = .register
        case (9, 0x53): candidate = .subscribe
        default: return .other
        }
        return bytes.equals(lower, upper, candidate.name) ? candidate : .other
    }
}
