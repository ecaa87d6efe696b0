/// The one error of the SIP module: where parsing or validation stopped, and why.
///
/// Whether the sender gets an answer is not decided here: after a failed `parse` or `validate`,
/// `SIPMessage.isAnswerable` says whether enough was read (a request with a readable top Via) to
/// send `reason.statusCode` back with `reason.phrase`; otherwise the message is dropped.
public struct SIPParseError: Error, Sendable, Equatable {
    /// Byte offset into the parsed buffer where the problem was found.
    public var offset: Int
    public var reason: Reason

    public init(_ reason: Reason, at offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public enum Reason: UInt8, Sendable, CaseIterable {
        // Framing (thrown by `parse`).
        /// Nothing but CRLFs: a keep-alive (RFC 5626 §3.5.1), to be ignored silently.
        case empty
        case badStartLine
        case badHeaderLine
        case missingEmptyLine
        case tooManyHeaders
        case messageTooLarge
        case badContentLength
        case multipleContentLength
        case contentLengthExceedsDatagram

        // Semantics (thrown by `validate`).
        case unsupportedVersion
        case badRequestURI
        case missingVia, badVia
        case missingFrom, badFrom, multipleFrom
        case missingTo, badTo, multipleTo
        case missingCallID, badCallID, multipleCallID
        case missingCSeq, badCSeq, multipleCSeq
        case cseqMethodMismatch
        case badMaxForwards, multipleMaxForwards

        // Lazily parsed values asked for by the layers above.
        case badURI
        case badNameAddr
        case badParameter

        /// Short enough for a reason phrase: `SIP/2.0 400 Bad Via`.
        public var phrase: StaticString {
            switch self {
            case .empty: "Empty message"
            case .badStartLine: "Bad start line"
            case .badHeaderLine: "Bad header line"
            case .missingEmptyLine: "Missing empty line after headers"
            case .tooManyHeaders: "Too many headers"
            case .messageTooLarge: "Message too large"
            case .badContentLength: "Bad Content-Length"
            case .multipleContentLength: "Multiple Content-Length"
            case .contentLengthExceedsDatagram: "Content-Length exceeds datagram"
            case .unsupportedVersion: "Version Not Supported"
            case .badRequestURI: "Bad Request-URI"
            case .missingVia: "Missing Via"
            case .badVia: "Bad Via"
            case .missingFrom: "Missing From"
            case .badFrom: "Bad From"
            case .multipleFrom: "Multiple From"
            case .missingTo: "Missing To"
            case .badTo: "Bad To"
            case .multipleTo: "Multiple To"
            case .missingCallID: "Missing Call-ID"
            case .badCallID: "Bad Call-ID"
            case .multipleCallID: "Multiple Call-ID"
            case .missingCSeq: "Missing CSeq"
            case .badCSeq: "Bad CSeq"
            case .multipleCSeq: "Multiple CSeq"
            case .cseqMethodMismatch: "CSeq method does not match"
            case .badMaxForwards: "Bad Max-Forwards"
            case .multipleMaxForwards: "Multiple Max-Forwards"
            case .badURI: "Bad URI"
            case .badNameAddr: "Bad address"
            case .badParameter: "Bad parameter"
            }
        }

        /// The status an answerable request gets: 505 for an unknown SIP version (RFC 3261 §21.5.6,
        /// RFC 4475 §3.1.2.16), 400 for everything else.
        public var statusCode: Int {
            self == .unsupportedVersion ? 505 : 400
        }
    }
}
