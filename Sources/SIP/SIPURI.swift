/// A URI as spans: SIP and SIPS URIs (RFC 3261 §19.1) split into their parts, tel URIs (RFC 3966)
/// into number and parameters, any other scheme kept whole (RFC 4475 §3.3.2: a proxy must not reject
/// what it cannot route by syntax alone). Escapes (`%41`) are left as received; `SIPEscaping`
/// decodes them.
public struct SIPURI: Sendable {
    public enum Scheme: UInt8, Sendable {
        case sip, sips, tel, other
    }

    public var scheme: Scheme
    /// The whole URI.
    public var span: SIPSpan
    /// sip/sips: the user part (may hold `;` and `?`, RFC 4475 §3.1.1.9); tel: the number.
    public var user: SIPSpan
    public var password: SIPSpan
    /// The host as written; an IPv6 reference keeps its brackets (`[2001:db8::10]`).
    public var host: SIPSpan
    public var port: UInt16?
    /// uri-parameters after the first `;`, without it (`transport=tcp;lr`).
    public var parameters: SIPSpan
    /// headers after `?`, without it.
    public var headers: SIPSpan
    /// Everything after `scheme:` for other schemes.
    public var opaque: SIPSpan

    public var isIPv6Reference: Bool { hostIsIPv6 }
    var hostIsIPv6: Bool

    init(scheme: Scheme, span: SIPSpan) {
        self.scheme = scheme
        self.span = span
        user = .absent
        password = .absent
        host = .absent
        port = nil
        parameters = .absent
        headers = .absent
        opaque = .absent
        hostIsIPv6 = false
    }

    /// Parses `bytes[lower..<upper]`, which must be exactly one URI (no LWS, no `<>`).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int
    ) throws(SIPParseError) -> SIPURI {
        let b = bytes
        guard lower < upper, ByteClass.letter.contains(b[lower]) else { throw SIPParseError(.badURI, at: lower) }
        let colon = b.scan(lower, upper, .scheme)
        guard colon < upper, b[colon] == 0x3A, colon + 1 < upper else { throw SIPParseError(.badURI, at: colon) }
        let scheme: Scheme
        if b.equalsLowercase(lower, colon, "sip") {
            scheme = .sip
        } else if b.equalsLowercase(lower, colon, "sips") {
            scheme = .sips
        } else if b.equalsLowercase(lower, colon, "tel") {
            scheme = .tel
        } else {
            scheme = .other
        }
        var uri = SIPURI(scheme: scheme, span: SIPSpan(lower, upper))
        switch scheme {
        case .sip, .sips: try uri.parseSIP(b, colon + 1, upper)
        case .tel: try uri.parseTel(b, colon + 1, upper)
        case .other:
            guard b.scan(colon + 1, upper, .opaqueURI) == upper else { throw SIPParseError(.badURI, at: colon + 1) }
            uri.opaque = SIPSpan(colon + 1, upper)
        }
        return uri
    }

    private mutating func parseSIP(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(SIPParseError) {
        // userinfo ends at the first "@": neither user, password, host nor parameters may hold one.
        var at = start
        while at < end && (ByteClass.user.contains(b[at]) || b[at] == 0x3A) { at += 1 }
        var i = start
        if at < end && b[at] == 0x40 {
            var userEnd = start
            while userEnd < at && b[userEnd] != 0x3A { userEnd += 1 }
            guard userEnd > start, SIPURI.isEscaped(b, start, userEnd, .user) else {
                throw SIPParseError(.badURI, at: start)
            }
            user = SIPSpan(start, userEnd)
            if userEnd < at {
                guard SIPURI.isEscaped(b, userEnd + 1, at, .password) else { throw SIPParseError(.badURI, at: userEnd) }
                password = SIPSpan(userEnd + 1, at)
            }
            i = at + 1
        }
        i = try parseHostPort(b, i, end)
        if i < end && b[i] == 0x3B {
            let paramsEnd = b.scan(i, end, .uriParameterOrSemicolon)
            guard SIPURI.areParameters(b, i, paramsEnd) else { throw SIPParseError(.badURI, at: i) }
            parameters = SIPSpan(i + 1, paramsEnd)
            i = paramsEnd
        }
        if i < end && b[i] == 0x3F {
            let headersEnd = b.scan(i + 1, end, .uriHeader)
            guard headersEnd == end, headersEnd > i + 1 else { throw SIPParseError(.badURI, at: headersEnd) }
            headers = SIPSpan(i + 1, end)
            i = end
        }
        guard i == end else { throw SIPParseError(.badURI, at: i) }
    }

    /// hostport = host [ ":" port ]; returns the offset after it.
    private mutating func parseHostPort(
        _ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int
    ) throws(SIPParseError) -> Int {
        let hostEnd = try SIPURI.scanHost(b, start, end)
        host = SIPSpan(start, hostEnd)
        hostIsIPv6 = b[start] == 0x5B
        var i = hostEnd
        if i < end && b[i] == 0x3A {
            guard let (value, next) = SIPURI.scanPort(b, i + 1, end) else { throw SIPParseError(.badURI, at: i + 1) }
            port = value
            i = next
        }
        return i
    }

    /// host = hostname / IPv4address / IPv6reference; returns the offset after it.
    static func scanHost(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(SIPParseError) -> Int {
        guard start < end else { throw SIPParseError(.badURI, at: start) }
        if b[start] == 0x5B {
            let close = b.scan(start + 1, end, .ipv6)
            guard close < end, b[close] == 0x5D, close > start + 2 else { throw SIPParseError(.badURI, at: close) }
            return close + 1
        }
        let hostEnd = b.scan(start, end, .hostname)
        guard hostEnd > start else { throw SIPParseError(.badURI, at: start) }
        return hostEnd
    }

    /// port = 1*DIGIT, at most 65535.
    static func scanPort(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> (UInt16, Int)? {
        var i = start
        var value = 0
        while i < end && isDigit(b[i]) {
            value = value * 10 + Int(b[i] - 0x30)
            if value > 65535 { return nil }
            i += 1
        }
        return i > start ? (UInt16(value), i) : nil
    }

    private mutating func parseTel(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(SIPParseError) {
        let numberEnd = b.scan(start, end, .uriParameter)
        guard numberEnd > start else { throw SIPParseError(.badURI, at: start) }
        user = SIPSpan(start, numberEnd)
        if numberEnd < end {
            guard b[numberEnd] == 0x3B, SIPURI.areParameters(b, numberEnd, end) else {
                throw SIPParseError(.badURI, at: numberEnd)
            }
            parameters = SIPSpan(numberEnd + 1, end)
        }
    }

    /// Every character in `cls`, and every "%" followed by two hex digits.
    static func isEscaped(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ cls: ByteClass) -> Bool {
        var i = start
        while i < end {
            let c = b[i]
            guard cls.contains(c) else { return false }
            if c == 0x25 {
                guard i + 2 < end, isHex(b[i + 1]), isHex(b[i + 2]) else { return false }
                i += 3
                continue
            }
            i += 1
        }
        return true
    }

    /// `;name[=value]` repeated: no empty names (RFC 4475 §3.1.2.1 `;;`), escapes well formed.
    static func areParameters(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        var i = start
        while i < end {
            guard b[i] == 0x3B else { return false }
            var next = i + 1
            while next < end && b[next] != 0x3B { next += 1 }
            guard next > i + 1, b[i + 1] != 0x3D, isEscaped(b, i + 1, next, .uriParameter) else { return false }
            i = next
        }
        return true
    }

    /// Finds a uri-parameter by name (ASCII case-insensitive; `name` in lower case): nil when absent;
    /// an absent value span for a flag such as `lr`.
    public static func parameter(
        _ name: StaticString, in parameters: SIPSpan, of bytes: UnsafeRawBufferPointer
    ) -> SIPSpan? {
        guard parameters.isPresent else { return nil }
        var i = parameters.lower
        let end = parameters.upper
        while i < end {
            var next = i
            while next < end && bytes[next] != 0x3B { next += 1 }
            var equals = i
            while equals < next && bytes[equals] != 0x3D { equals += 1 }
            if bytes.equalsLowercase(i, equals, name) {
                return equals < next ? SIPSpan(equals + 1, next) : .absent
            }
            i = next + 1
        }
        return nil
    }
}

@inline(__always) func isHex(_ c: UInt8) -> Bool { isDigit(c) || (c | 0x20) &- 0x61 < 6 }

extension ByteClass {
    static let letter = ByteClass(low: 0, high: 0x07FFFFFE07FFFFFE)
    /// uriParameter plus ";", to find where the parameters end.
    static let uriParameterOrSemicolon = ByteClass(low: 0x2FFFEFF200000000, high: 0x47FFFFFEAFFFFFFE)
}
