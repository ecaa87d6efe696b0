/// The value of From, To, Contact, Route, Record-Route and the like: `name-addr / addr-spec`
/// followed by header parameters (RFC 3261 §20.10, §25.1).
public struct SIPNameAddr: Sendable {
    /// Absent when there is none. For a quoted name, the text between the quotes with its escapes
    /// (`\"`) as received; for a token name, the tokens with the LWS between them.
    public var displayName: SIPSpan
    public var isDisplayNameQuoted: Bool
    public var uri: SIPURI
    /// Whether the URI was enclosed in `<>` (name-addr) rather than bare (addr-spec).
    public var isNameAddr: Bool
    /// The header parameters from the first `;` (absent when none), for `SIPParameterIterator`.
    public var parameters: SIPSpan
    public var tag: SIPSpan
    /// The whole value.
    public var span: SIPSpan

    /// Parses one value (one element of a comma list). An addr-spec ends at LWS, `;` or `,`:
    /// RFC 3261 §20.10 requires `<>` around a URI holding those, so parameters after a bare URI are
    /// header parameters (RFC 4475 §3.3.12). A bare URI with `?headers` is taken as it comes
    /// (§3.1.2.13 allows that liberty).
    public static func parse(_ b: UnsafeRawBufferPointer, _ span: SIPSpan) throws(SIPParseError) -> SIPNameAddr {
        let lower = span.lower
        let end = b.trimLWS(lower, span.upper)
        var i = b.skipLWS(lower, end)
        guard i < end else { throw SIPParseError(.badNameAddr, at: i) }
        var displayName = SIPSpan.absent
        var quoted = false
        var laquot = -1
        if b[i] == 0x22 {
            let close: Int
            do {
                close = try scanQuotedString(b, i, end)
            } catch {
                throw SIPParseError(.badNameAddr, at: i)
            }
            displayName = SIPSpan(i + 1, close - 1)
            quoted = true
            laquot = b.skipLWS(close, end)
            guard laquot < end, b[laquot] == 0x3C else { throw SIPParseError(.badNameAddr, at: laquot) }
        } else if b[i] == 0x3C {
            laquot = i
        } else {
            // display-name = *(token LWS): if only tokens and LWS come before a "<", they are a name;
            // anything else (the ":" of a scheme) means this is an addr-spec.
            var j = i
            while j < end && (ByteClass.token.contains(b[j]) || isLWS(b[j])) { j += 1 }
            if j < end && b[j] == 0x3C {
                displayName = SIPSpan(i, b.trimLWS(i, j))
                laquot = j
            }
        }
        let uri: SIPURI
        if laquot >= 0 {
            var raquot = laquot + 1
            while raquot < end && b[raquot] != 0x3E { raquot += 1 }
            guard raquot < end else { throw SIPParseError(.badNameAddr, at: laquot) }
            uri = try parseURI(b, laquot + 1, raquot)
            i = raquot + 1
        } else {
            var uriEnd = i
            while uriEnd < end && !isLWS(b[uriEnd]) && b[uriEnd] != 0x3B && b[uriEnd] != 0x2C { uriEnd += 1 }
            uri = try parseURI(b, i, uriEnd)
            i = uriEnd
        }
        var result = SIPNameAddr(
            displayName: displayName, isDisplayNameQuoted: quoted, uri: uri, isNameAddr: laquot >= 0,
            parameters: .absent, tag: .absent, span: SIPSpan(b.skipLWS(lower, end), end))
        let paramsStart = b.skipLWS(i, end)
        guard paramsStart < end else { return result }
        guard b[paramsStart] == 0x3B else { throw SIPParseError(.badNameAddr, at: paramsStart) }
        result.parameters = SIPSpan(paramsStart, end)
        var parameters = SIPParameterIterator(b, result.parameters)
        while let parameter = try parameters.next() {
            if b.equalsLowercase(parameter.name.lower, parameter.name.upper, "tag") {
                guard parameter.value.isPresent else { throw SIPParseError(.badParameter, at: parameter.name.lower) }
                result.tag = parameter.value
            }
        }
        return result
    }

    private static func parseURI(
        _ b: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int
    ) throws(SIPParseError) -> SIPURI {
        do {
            return try SIPURI.parse(b, lower, upper)
        } catch {
            throw SIPParseError(.badNameAddr, at: error.offset)
        }
    }
}
