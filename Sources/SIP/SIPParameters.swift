/// One header parameter (`;tag=abc`, `;lr`, `;q = 0.33`).
public struct SIPParameter: Sendable {
    public var name: SIPSpan
    /// Absent for a flag; a quoted value keeps its quotes.
    public var value: SIPSpan
    /// From the `;` through the end of the value: what a builder cuts to drop or replace it.
    public var whole: SIPSpan
}

/// Walks `*( SEMI generic-param )` with the LWS RFC 3261 allows around `;` and `=`
/// (`SEMI = SWS ";" SWS`, `EQUAL = SWS "=" SWS`). Throws on an empty name (`;;`), a missing value
/// after `=`, an unterminated quoted string, or anything that is not a parameter.
public struct SIPParameterIterator {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let end: Int

    public init(_ bytes: UnsafeRawBufferPointer, _ span: SIPSpan) {
        self.bytes = bytes
        self.position = span.isPresent ? span.lower : 0
        self.end = span.isPresent ? span.upper : 0
    }

    public mutating func next() throws(SIPParseError) -> SIPParameter? {
        let b = bytes
        var i = b.skipLWS(position, end)
        guard i < end else {
            position = end
            return nil
        }
        guard b[i] == 0x3B else { throw SIPParseError(.badParameter, at: i) }
        let semicolon = i
        i = b.skipLWS(i + 1, end)
        let nameEnd = b.scan(i, end, .token)
        guard nameEnd > i else { throw SIPParseError(.badParameter, at: i) }
        let name = SIPSpan(i, nameEnd)
        var value = SIPSpan.absent
        var after = nameEnd
        let equals = b.skipLWS(nameEnd, end)
        if equals < end && b[equals] == 0x3D {
            let valueStart = b.skipLWS(equals + 1, end)
            let valueEnd: Int
            if valueStart < end && b[valueStart] == 0x22 {
                valueEnd = try scanQuotedString(b, valueStart, end)
            } else {
                valueEnd = b.scan(valueStart, end, .parameterValue)
            }
            guard valueEnd > valueStart else { throw SIPParseError(.badParameter, at: valueStart) }
            value = SIPSpan(valueStart, valueEnd)
            after = valueEnd
        }
        position = after
        return SIPParameter(name: name, value: value, whole: SIPSpan(semicolon, after))
    }

    /// Finds a parameter by name (ASCII case-insensitive; `name` in lower case). Stops quietly at a
    /// syntax error: validation is the parsers' job, lookups only read.
    public static func find(
        _ name: StaticString, in span: SIPSpan, of bytes: UnsafeRawBufferPointer
    ) -> SIPParameter? {
        var iterator = SIPParameterIterator(bytes, span)
        while true {
            guard let parameter = try? iterator.next() else { return nil }
            if bytes.equalsLowercase(parameter.name.lower, parameter.name.upper, name) { return parameter }
        }
    }
}

/// quoted-string = DQUOTE *(qdtext / quoted-pair) DQUOTE, starting at the opening quote; returns the
/// offset after the closing one. qdtext admits UTF-8 and folded LWS; a quoted-pair is `\` and any
/// byte but CR and LF (RFC 3261 §25.1).
func scanQuotedString(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) throws(SIPParseError) -> Int {
    var i = start + 1
    while i < end {
        switch b[i] {
        case 0x22:
            return i + 1
        case 0x5C:
            guard i + 1 < end, b[i + 1] != 0x0D, b[i + 1] != 0x0A else { throw SIPParseError(.badParameter, at: i) }
            i += 2
        default:
            i += 1
        }
    }
    throw SIPParseError(.badParameter, at: start)
}
