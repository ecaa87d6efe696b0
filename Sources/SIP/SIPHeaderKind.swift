/// Header fields the parser recognises by name (full or compact form, RFC 3261 §7.3.3 and the
/// extensions that define compact forms); anything else is `.other` and is kept by its name span.
/// The raw value is the case's position in `allCases`: per-kind tables in `SIPMessage` index by it.
public enum SIPHeaderKind: UInt8, Sendable, CaseIterable {
    case other
    case via, from, to, callID, cseq, maxForwards, contentLength, contentType, contentEncoding, contact
    case route, recordRoute, subject, supported, require, proxyRequire, unsupported, allow, accept
    case acceptEncoding, acceptLanguage, acceptContact, rejectContact, requestDisposition, event, allowEvents
    case referTo, referredBy, sessionExpires, identity, identityInfo, expires, minExpires, authorization
    case proxyAuthorization, wwwAuthenticate, proxyAuthenticate, authenticationInfo, path, serviceRoute
    case server, userAgent, date, timestamp, retryAfter, warning, pAssertedIdentity, pPreferredIdentity
    case privacy, reason, rack, rseq, minSE, contentDisposition, contentLanguage, mimeVersion, callInfo
    case alertInfo, errorInfo, organization, priority, replyTo, inReplyTo, replaces, subscriptionState

    /// The canonical (full) name, as the builder writes it.
    public var name: StaticString {
        switch self {
        case .other: ""
        case .via: "Via"
        case .from: "From"
        case .to: "To"
        case .callID: "Call-ID"
        case .cseq: "CSeq"
        case .maxForwards: "Max-Forwards"
        case .contentLength: "Content-Length"
        case .contentType: "Content-Type"
        case .contentEncoding: "Content-Encoding"
        case .contact: "Contact"
        case .route: "Route"
        case .recordRoute: "Record-Route"
        case .subject: "Subject"
        case .supported: "Supported"
        case .require: "Require"
        case .proxyRequire: "Proxy-Require"
        case .unsupported: "Unsupported"
        case .allow: "Allow"
        case .accept: "Accept"
        case .acceptEncoding: "Accept-Encoding"
        case .acceptLanguage: "Accept-Language"
        case .acceptContact: "Accept-Contact"
        case .rejectContact: "Reject-Contact"
        case .requestDisposition: "Request-Disposition"
        case .event: "Event"
        case .allowEvents: "Allow-Events"
        case .referTo: "Refer-To"
        case .referredBy: "Referred-By"
        case .sessionExpires: "Session-Expires"
        case .identity: "Identity"
        case .identityInfo: "Identity-Info"
        case .expires: "Expires"
        case .minExpires: "Min-Expires"
        case .authorization: "Authorization"
        case .proxyAuthorization: "Proxy-Authorization"
        case .wwwAuthenticate: "WWW-Authenticate"
        case .proxyAuthenticate: "Proxy-Authenticate"
        case .authenticationInfo: "Authentication-Info"
        case .path: "Path"
        case .serviceRoute: "Service-Route"
        case .server: "Server"
        case .userAgent: "User-Agent"
        case .date: "Date"
        case .timestamp: "Timestamp"
        case .retryAfter: "Retry-After"
        case .warning: "Warning"
        case .pAssertedIdentity: "P-Asserted-Identity"
        case .pPreferredIdentity: "P-Preferred-Identity"
        case .privacy: "Privacy"
        case .reason: "Reason"
        case .rack: "RAck"
        case .rseq: "RSeq"
        case .minSE: "Min-SE"
        case .contentDisposition: "Content-Disposition"
        case .contentLanguage: "Content-Language"
        case .mimeVersion: "MIME-Version"
        case .callInfo: "Call-Info"
        case .alertInfo: "Alert-Info"
        case .errorInfo: "Error-Info"
        case .organization: "Organization"
        case .priority: "Priority"
        case .replyTo: "Reply-To"
        case .inReplyTo: "In-Reply-To"
        case .replaces: "Replaces"
        case .subscriptionState: "Subscription-State"
        }
    }

    /// Whether the grammar allows several comma-separated values on one line (`Via: a, b`).
    /// Only these are split by `SIPValueIterator`: a Date or an Authorization value has commas
    /// that do not separate values, and an unknown header is opaque.
    public var isList: Bool {
        switch self {
        case .via, .contentEncoding, .contact, .route, .recordRoute, .supported, .require, .proxyRequire,
             .unsupported, .allow, .accept, .acceptEncoding, .acceptLanguage, .acceptContact, .rejectContact,
             .requestDisposition, .allowEvents, .path, .serviceRoute, .warning, .pAssertedIdentity,
             .pPreferredIdentity, .reason, .contentLanguage, .callInfo, .alertInfo, .errorInfo, .inReplyTo: true
        default: false
        }
    }

    /// The kind a header name (full or compact, any case) denotes; `.other` when not recognised.
    /// For the layers above, e.g. a script's `$hdr(From)` resolved once at compile time.
    public static func named(_ name: String) -> SIPHeaderKind {
        var bytes = Array(name.utf8)
        return bytes.withUnsafeMutableBytes { classify(UnsafeRawBufferPointer($0), 0, $0.count) }
    }

    /// Classifies a header name, case-insensitively: compact forms by their letter, full names by
    /// length first so that each name is compared with at most a few candidates.
    static func classify(_ b: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int) -> SIPHeaderKind {
        let length = upper - lower
        if length == 1 {
            switch lowercased(b[lower]) {
            case UInt8(ascii: "a"): return .acceptContact
            case UInt8(ascii: "b"): return .referredBy
            case UInt8(ascii: "c"): return .contentType
            case UInt8(ascii: "d"): return .requestDisposition
            case UInt8(ascii: "e"): return .contentEncoding
            case UInt8(ascii: "f"): return .from
            case UInt8(ascii: "i"): return .callID
            case UInt8(ascii: "j"): return .rejectContact
            case UInt8(ascii: "k"): return .supported
            case UInt8(ascii: "l"): return .contentLength
            case UInt8(ascii: "m"): return .contact
            case UInt8(ascii: "n"): return .identityInfo
            case UInt8(ascii: "o"): return .event
            case UInt8(ascii: "r"): return .referTo
            case UInt8(ascii: "s"): return .subject
            case UInt8(ascii: "t"): return .to
            case UInt8(ascii: "u"): return .allowEvents
            case UInt8(ascii: "v"): return .via
            case UInt8(ascii: "x"): return .sessionExpires
            case UInt8(ascii: "y"): return .identity
            default: return .other
            }
        }
        switch length {
        case 2:
            if b.equalsLowercase(lower, upper, "to") { return .to }
        case 3:
            if b.equalsLowercase(lower, upper, "via") { return .via }
        case 4:
            if b.equalsLowercase(lower, upper, "from") { return .from }
            if b.equalsLowercase(lower, upper, "cseq") { return .cseq }
            if b.equalsLowercase(lower, upper, "path") { return .path }
            if b.equalsLowercase(lower, upper, "date") { return .date }
            if b.equalsLowercase(lower, upper, "rack") { return .rack }
            if b.equalsLowercase(lower, upper, "rseq") { return .rseq }
        case 5:
            if b.equalsLowercase(lower, upper, "route") { return .route }
            if b.equalsLowercase(lower, upper, "allow") { return .allow }
            if b.equalsLowercase(lower, upper, "event") { return .event }
        case 6:
            if b.equalsLowercase(lower, upper, "accept") { return .accept }
            if b.equalsLowercase(lower, upper, "server") { return .server }
            if b.equalsLowercase(lower, upper, "reason") { return .reason }
            if b.equalsLowercase(lower, upper, "min-se") { return .minSE }
        case 7:
            if b.equalsLowercase(lower, upper, "call-id") { return .callID }
            if b.equalsLowercase(lower, upper, "contact") { return .contact }
            if b.equalsLowercase(lower, upper, "subject") { return .subject }
            if b.equalsLowercase(lower, upper, "require") { return .require }
            if b.equalsLowercase(lower, upper, "expires") { return .expires }
            if b.equalsLowercase(lower, upper, "warning") { return .warning }
            if b.equalsLowercase(lower, upper, "privacy") { return .privacy }
        case 8:
            if b.equalsLowercase(lower, upper, "refer-to") { return .referTo }
            if b.equalsLowercase(lower, upper, "identity") { return .identity }
            if b.equalsLowercase(lower, upper, "priority") { return .priority }
            if b.equalsLowercase(lower, upper, "reply-to") { return .replyTo }
            if b.equalsLowercase(lower, upper, "replaces") { return .replaces }
        case 9:
            if b.equalsLowercase(lower, upper, "supported") { return .supported }
            if b.equalsLowercase(lower, upper, "timestamp") { return .timestamp }
            if b.equalsLowercase(lower, upper, "call-info") { return .callInfo }
        case 10:
            if b.equalsLowercase(lower, upper, "user-agent") { return .userAgent }
            if b.equalsLowercase(lower, upper, "alert-info") { return .alertInfo }
            if b.equalsLowercase(lower, upper, "error-info") { return .errorInfo }
        case 11:
            if b.equalsLowercase(lower, upper, "unsupported") { return .unsupported }
            if b.equalsLowercase(lower, upper, "referred-by") { return .referredBy }
            if b.equalsLowercase(lower, upper, "min-expires") { return .minExpires }
            if b.equalsLowercase(lower, upper, "retry-after") { return .retryAfter }
            if b.equalsLowercase(lower, upper, "in-reply-to") { return .inReplyTo }
        case 12:
            if b.equalsLowercase(lower, upper, "max-forwards") { return .maxForwards }
            if b.equalsLowercase(lower, upper, "content-type") { return .contentType }
            if b.equalsLowercase(lower, upper, "record-route") { return .recordRoute }
            if b.equalsLowercase(lower, upper, "allow-events") { return .allowEvents }
            if b.equalsLowercase(lower, upper, "mime-version") { return .mimeVersion }
            if b.equalsLowercase(lower, upper, "organization") { return .organization }
        case 13:
            if b.equalsLowercase(lower, upper, "proxy-require") { return .proxyRequire }
            if b.equalsLowercase(lower, upper, "identity-info") { return .identityInfo }
            if b.equalsLowercase(lower, upper, "authorization") { return .authorization }
            if b.equalsLowercase(lower, upper, "service-route") { return .serviceRoute }
        case 14:
            if b.equalsLowercase(lower, upper, "content-length") { return .contentLength }
            if b.equalsLowercase(lower, upper, "accept-contact") { return .acceptContact }
            if b.equalsLowercase(lower, upper, "reject-contact") { return .rejectContact }
        case 15:
            if b.equalsLowercase(lower, upper, "accept-encoding") { return .acceptEncoding }
            if b.equalsLowercase(lower, upper, "accept-language") { return .acceptLanguage }
            if b.equalsLowercase(lower, upper, "session-expires") { return .sessionExpires }
        case 16:
            if b.equalsLowercase(lower, upper, "content-encoding") { return .contentEncoding }
            if b.equalsLowercase(lower, upper, "www-authenticate") { return .wwwAuthenticate }
            if b.equalsLowercase(lower, upper, "content-language") { return .contentLanguage }
        case 18:
            if b.equalsLowercase(lower, upper, "proxy-authenticate") { return .proxyAuthenticate }
            if b.equalsLowercase(lower, upper, "subscription-state") { return .subscriptionState }
        case 19:
            if b.equalsLowercase(lower, upper, "request-disposition") { return .requestDisposition }
            if b.equalsLowercase(lower, upper, "proxy-authorization") { return .proxyAuthorization }
            if b.equalsLowercase(lower, upper, "authentication-info") { return .authenticationInfo }
            if b.equalsLowercase(lower, upper, "p-asserted-identity") { return .pAssertedIdentity }
            if b.equalsLowercase(lower, upper, "content-disposition") { return .contentDisposition }
        case 20:
            if b.equalsLowercase(lower, upper, "p-preferred-identity") { return .pPreferredIdentity }
        default: break
        }
        return .other
    }
}
