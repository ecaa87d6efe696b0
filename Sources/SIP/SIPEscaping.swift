/// `%HH` escapes of URIs (RFC 3261 §19.1.2, §25.1 escaped).
public enum SIPEscaping {
    /// Decodes `source` into `destination`; returns the decoded length, or nil when `destination` is
    /// too short or an escape is malformed (`%Z4`). A decoded NUL is kept (RFC 4475 §3.1.1.4).
    public static func unescape(
        _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
    ) -> Int? {
        var i = 0
        var n = 0
        while i < source.count {
            guard n < destination.count else { return nil }
            var c = source[i]
            if c == 0x25 {
                guard i + 2 < source.count, isHex(source[i + 1]), isHex(source[i + 2]) else { return nil }
                c = hexValue(source[i + 1]) << 4 | hexValue(source[i + 2])
                i += 2
            }
            destination[n] = c
            n += 1
            i += 1
        }
        return n
    }

    /// Whether `source`, unescaped, equals `literal` (case-sensitive, as URI user parts compare).
    public static func unescapedEquals(_ source: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        let p = literal.utf8Start
        let n = literal.utf8CodeUnitCount
        var i = 0
        var k = 0
        while i < source.count {
            var c = source[i]
            if c == 0x25 {
                guard i + 2 < source.count, isHex(source[i + 1]), isHex(source[i + 2]) else { return false }
                c = hexValue(source[i + 1]) << 4 | hexValue(source[i + 2])
                i += 2
            }
            guard k < n, p[k] == c else { return false }
            k += 1
            i += 1
        }
        return k == n
    }

    @inline(__always)
    static func hexValue(_ c: UInt8) -> UInt8 {
        isDigit(c) ? c &- 0x30 : (c | 0x20) &- 0x61 &+ 10
    }
}
