/// Transport of a Via's sent-protocol (RFC 3261 §20.42, RFC 7118 for WS/WSS).
public enum SIPTransport: UInt8, Sendable {
    case udp, tcp, tls, sctp, ws, wss, other

    public var name: StaticString {
        switch self {
        case .udp: "UDP"
        case .tcp: "TCP"
        case .tls: "TLS"
        case .sctp: "SCTP"
        case .ws: "WS"
        case .wss: "WSS"
        case .other: ""
        }
    }

    /// The transport `b[lower..<upper]` names, case-insensitively (a Via's sent-protocol, a URI's `transport`).
    public static func classify(_ b: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int) -> SIPTransport {
        if b.equalsLowercase(lower, upper, "udp") { return .udp }
        if b.equalsLowercase(lower, upper, "tcp") { return .tcp }
        if b.equalsLowercase(lower, upper, "tls") { return .tls }
        if b.equalsLowercase(lower, upper, "sctp") { return .sctp }
        if b.equalsLowercase(lower, upper, "ws") { return .ws }
        if b.equalsLowercase(lower, upper, "wss") { return .wss }
        return .other
    }
}

/// One via-parm: `SIP/2.0/UDP host:port;branch=...;received=...;rport`, with the parameters a proxy
/// uses picked out in the same pass.
public struct SIPVia: Sendable {
    /// The whole via-parm (one element of a comma list).
    public var span: SIPSpan
    public var protocolName: SIPSpan
    /// Not checked here: a `SIP/7.0` Via still parses so that the 505 can be sent (RFC 4475 §3.1.2.16).
    public var protocolVersion: SIPSpan
    public var transportName: SIPSpan
    public var transport: SIPTransport
    /// sent-by host as written; an IPv6 reference keeps its brackets.
    public var host: SIPSpan
    public var port: UInt16?
    /// The via-params from the first `;` (absent when none), for `SIPParameterIterator`.
    public var parameters: SIPSpan
    public var branch: SIPSpan
    public var received: SIPSpan
    public var maddr: SIPSpan
    /// Absent without rport; present and empty for the bare flag (RFC 3581 asks to fill it in).
    public var rport: SIPSpan
    public var rportValue: UInt16?
    public var ttl: UInt8?
    /// The `;received=...` and `;rport...` parameters whole, for a builder that replaces them.
    public var receivedParameter: SIPSpan
    public var rportParameter: SIPSpan

    public var hasRport: Bool { rport.isPresent }

    /// Whether the branch carries the RFC 3261 magic cookie with something after it: `z9hG4bK` alone
    /// (RFC 4475 §3.2.1) cannot identify a transaction.
    public func hasRFC3261Branch(in bytes: UnsafeRawBufferPointer) -> Bool {
        branch.count > 7 && bytes.equals(branch.lower, branch.lower + 7, "z9hG4bK")
    }

    /// via-parm = sent-protocol LWS sent-by *( SEMI via-params ), LWS allowed around "/" and ":".
    public static func parse(_ b: UnsafeRawBufferPointer, _ span: SIPSpan) throws(SIPParseError) -> SIPVia {
        let end = b.trimLWS(span.lower, span.upper)
        var i = b.skipLWS(span.lower, end)
        let nameStart = i
        i = b.scan(i, end, .token)
        let protocolName = SIPSpan(nameStart, i)
        i = try slash(b, i, end)
        let versionStart = i
        i = b.scan(i, end, .token)
        let protocolVersion = SIPSpan(versionStart, i)
        i = try slash(b, i, end)
        let transportStart = i
        i = b.scan(i, end, .token)
        guard !protocolName.isEmpty, !protocolVersion.isEmpty, i > transportStart else {
            throw SIPParseError(.badVia, at: i)
        }
        let transportName = SIPSpan(transportStart, i)
        let hostStart = b.skipLWS(i, end)
        guard hostStart > i else { throw SIPParseError(.badVia, at: i) }
        let hostEnd: Int
        do {
            hostEnd = try SIPURI.scanHost(b, hostStart, end)
        } catch {
            throw SIPParseError(.badVia, at: error.offset)
        }
        var via = SIPVia(
            span: SIPSpan(nameStart, end), protocolName: protocolName, protocolVersion: protocolVersion,
            transportName: transportName, transport: SIPTransport.classify(b, transportStart, i),
            host: SIPSpan(hostStart, hostEnd), port: nil, parameters: .absent, branch: .absent,
            received: .absent, maddr: .absent, rport: .absent, rportValue: nil, ttl: nil,
            receivedParameter: .absent, rportParameter: .absent)
        i = b.skipLWS(hostEnd, end)
        if i < end && b[i] == 0x3A {
            let portStart = b.skipLWS(i + 1, end)
            guard let (port, next) = SIPURI.scanPort(b, portStart, end) else {
                throw SIPParseError(.badVia, at: portStart)
            }
            via.port = port
            i = b.skipLWS(next, end)
        }
        guard i < end else { return via }
        guard b[i] == 0x3B else { throw SIPParseError(.badVia, at: i) }
        via.parameters = SIPSpan(i, end)
        var parameters = SIPParameterIterator(b, via.parameters)
        while true {
            let parameter: SIPParameter
            do {
                guard let next = try parameters.next() else { break }
                parameter = next
            } catch {
                throw SIPParseError(.badVia, at: error.offset)
            }
            try via.take(parameter, b)
        }
        return via
    }

    private mutating func take(_ p: SIPParameter, _ b: UnsafeRawBufferPointer) throws(SIPParseError) {
        let name = p.name
        if b.equalsLowercase(name.lower, name.upper, "branch") {
            guard p.value.isPresent else { throw SIPParseError(.badVia, at: name.lower) }
            branch = p.value
        } else if b.equalsLowercase(name.lower, name.upper, "received") {
            guard p.value.isPresent else { throw SIPParseError(.badVia, at: name.lower) }
            received = p.value
            receivedParameter = p.whole
        } else if b.equalsLowercase(name.lower, name.upper, "rport") {
            rportParameter = p.whole
            if p.value.isPresent {
                guard let (port, next) = SIPURI.scanPort(b, p.value.lower, p.value.upper), next == p.value.upper else {
                    throw SIPParseError(.badVia, at: p.value.lower)
                }
                rport = p.value
                rportValue = port
            } else {
                rport = SIPSpan(name.upper, name.upper)
            }
        } else if b.equalsLowercase(name.lower, name.upper, "maddr") {
            guard p.value.isPresent else { throw SIPParseError(.badVia, at: name.lower) }
            maddr = p.value
        } else if b.equalsLowercase(name.lower, name.upper, "ttl") {
            var value = 0
            var i = p.value.lower
            while i < p.value.upper && isDigit(b[i]) && value <= 255 {
                value = value * 10 + Int(b[i] - 0x30)
                i += 1
            }
            guard p.value.isPresent, i == p.value.upper, i > p.value.lower, value <= 255 else {
                throw SIPParseError(.badVia, at: name.lower)
            }
            ttl = UInt8(value)
        }
    }

    private static func slash(_ b: UnsafeRawBufferPointer, _ i: Int, _ end: Int) throws(SIPParseError) -> Int {
        let j = b.skipLWS(i, end)
        guard j < end, b[j] == 0x2F else { throw SIPParseError(.badVia, at: j) }
        return b.skipLWS(j + 1, end)
    }
}
