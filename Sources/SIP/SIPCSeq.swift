/// CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16).
public struct SIPCSeq: Sendable {
    /// Below 2**31 (RFC 3261 §8.1.1.5); larger values are `.badCSeq` (RFC 4475 §3.1.2.4).
    public var number: UInt32
    public var method: SIPMethod
    public var methodName: SIPSpan

    public static func parse(_ b: UnsafeRawBufferPointer, _ span: SIPSpan) throws(SIPParseError) -> SIPCSeq {
        let end = b.trimLWS(span.lower, span.upper)
        var i = b.skipLWS(span.lower, end)
        let digitsStart = i
        var number: UInt64 = 0
        while i < end && isDigit(b[i]) {
            number = number * 10 + UInt64(b[i] - 0x30)
            guard number < 1 << 31 else { throw SIPParseError(.badCSeq, at: digitsStart) }
            i += 1
        }
        let methodStart = b.skipLWS(i, end)
        guard i > digitsStart, methodStart > i else { throw SIPParseError(.badCSeq, at: i) }
        let methodEnd = b.scan(methodStart, end, .token)
        guard methodEnd > methodStart, methodEnd == end else { throw SIPParseError(.badCSeq, at: methodEnd) }
        return SIPCSeq(
            number: UInt32(number), method: SIPMethod.classify(b, methodStart, methodEnd),
            methodName: SIPSpan(methodStart, methodEnd))
    }
}

enum SIPScalars {
    /// Max-Forwards = 1*DIGIT, 0–255 (RFC 3261 §20.22 and §25.1); leading zeros are fine (`0068`).
    static func maxForwards(_ b: UnsafeRawBufferPointer, _ span: SIPSpan) throws(SIPParseError) -> Int {
        var value = 0
        var i = span.lower
        while i < span.upper && isDigit(b[i]) {
            value = value * 10 + Int(b[i] - 0x30)
            guard value <= 255 else { throw SIPParseError(.badMaxForwards, at: span.lower) }
            i += 1
        }
        guard i > span.lower, i == span.upper else { throw SIPParseError(.badMaxForwards, at: i) }
        return value
    }

    /// Call-ID = word [ "@" word ]: checked as one run of visible characters; the exact word
    /// alphabet is wide (RFC 4475 §3.1.1.2) and a proxy only compares and hashes it.
    static func callID(_ b: UnsafeRawBufferPointer, _ span: SIPSpan) throws(SIPParseError) -> SIPSpan {
        guard !span.isEmpty else { throw SIPParseError(.badCallID, at: span.lower) }
        var i = span.lower
        while i < span.upper {
            let c = b[i]
            guard c > 0x20 && c != 0x7F else { throw SIPParseError(.badCallID, at: i) }
            i += 1
        }
        return span
    }
}
