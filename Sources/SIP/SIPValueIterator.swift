/// Splits header values at commas that separate values: not inside a quoted string (with its
/// backslash escapes) and not inside `<...>`, so `Contact: "a, b" <sip:x;y=1,2>, <sip:z>` is two
/// values. Each value comes back without surrounding LWS; an empty element (`a,,b`) comes back empty,
/// for the caller to reject where the grammar forbids it (Via, RFC 4475 §3.1.2.1).
///
/// Walks either one field or every field of a kind (following the table's same-kind links). Fields
/// whose kind is not a list (`SIPHeaderKind.isList`) yield their whole value. A struct with no
/// references but the message: iterating allocates nothing.
public struct SIPValueIterator: IteratorProtocol, Sequence {
    let message: SIPMessage
    /// Field being split, -1 when exhausted.
    var field: Int
    var position: Int
    var fieldEnd: Int
    var split: Bool
    let followLinks: Bool
    /// Index of the field the last value returned by `next()` came from.
    public private(set) var currentHeader = -1

    init(message: SIPMessage, first: Int16) {
        self.message = message
        self.followLinks = true
        self.field = Int(first)
        self.position = 0
        self.fieldEnd = 0
        self.split = false
        if field >= 0 { load(field) }
    }

    init(message: SIPMessage, single index: Int) {
        self.message = message
        self.followLinks = false
        self.field = index
        self.position = 0
        self.fieldEnd = 0
        self.split = false
        load(index)
    }

    private mutating func load(_ index: Int) {
        let header = message.fields[index]
        position = header.value.lower
        fieldEnd = header.value.upper
        split = header.kind.isList
    }

    public mutating func next() -> SIPSpan? {
        guard field >= 0 else { return nil }
        let b = message.bytes
        let start = position
        var end = fieldEnd
        if split {
            end = SIPValueIterator.nextComma(b, start, fieldEnd)
        }
        let lower = b.skipLWS(start, end)
        let value = SIPSpan(lower, b.trimLWS(lower, end))
        currentHeader = field
        if end < fieldEnd {
            position = end + 1
        } else if followLinks, message.fields[field].next >= 0 {
            field = Int(message.fields[field].next)
            load(field)
        } else {
            field = -1
        }
        return value
    }

    /// Offset of the first separating comma in `[start, end)`, or `end`.
    static func nextComma(_ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int {
        var i = start
        var inAngle = false
        while i < end {
            switch b[i] {
            case 0x22:  // quoted-string: skip to the closing quote; an unclosed one runs to the end
                i += 1
                while i < end && b[i] != 0x22 {
                    if b[i] == 0x5C { i += 1 }
                    i += 1
                }
            case 0x3C: inAngle = true
            case 0x3E: inAngle = false
            case 0x2C where !inAngle: return i
            default: break
            }
            i += 1
        }
        return end
    }
}
