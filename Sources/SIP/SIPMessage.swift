/// A SIP request or response parsed in place: a start line, a table of header fields (kind and
/// spans only) and the body span, all offsets into the caller's buffer.
///
/// One instance per shard is reused for every message: `parse(_:)` resets it, and the header table
/// is allocated once in `init`, so parsing allocates nothing. Header values are parsed on first use
/// (`topVia`, `cseq`, ... cache their result until the next `parse`).
///
/// - Safety: the message keeps the buffer's address, not its bytes. The caller keeps the buffer
///   alive and unchanged from `parse` until it stops using this message (and anything it returned:
///   spans are only meaningful against the same buffer).
/// - Invariant: after `parse` returns or throws, `headerCount` fields are valid and every span lies
///   within `bytes`.
public final class SIPMessage {
    public static let defaultHeaderCapacity = 128

    /// Most header fields a message may have; one more is `SIPParseError.Reason.tooManyHeaders`.
    public let headerCapacity: Int
    let fields: UnsafeMutablePointer<SIPHeaderField>
    /// Per kind: first and last field index (-1 when none) and the number of fields.
    let kinds: UnsafeMutablePointer<KindEntry>

    struct KindEntry {
        var first: Int16 = -1
        var last: Int16 = -1
        var count: Int16 = 0
    }

    // The mutable state below opts out of dynamic exclusivity checks: the message belongs to one
    // shard and is never accessed concurrently or re-entrantly, and the checks (a TLS lookup and an
    // access-set insert per property access) took 37% of `parse` in a release build.

    /// The buffer given to the last `parse`.
    @exclusivity(unchecked) public internal(set) var bytes = UnsafeRawBufferPointer(start: nil, count: 0)
    @exclusivity(unchecked) public internal(set) var isRequest = false
    /// True once the start line was read: method, Request-URI and version (or status) are valid.
    @exclusivity(unchecked) public internal(set) var hasStartLine = false
    @exclusivity(unchecked) public internal(set) var method = SIPMethod.other
    @exclusivity(unchecked) public internal(set) var methodName = SIPSpan.absent
    /// The Request-URI as received (unparsed; `requestURI` parses it).
    @exclusivity(unchecked) public internal(set) var requestURIText = SIPSpan.absent
    @exclusivity(unchecked) public internal(set) var version = SIPSpan.absent
    @exclusivity(unchecked) public internal(set) var statusCode = 0
    @exclusivity(unchecked) public internal(set) var reasonPhrase = SIPSpan.absent
    @exclusivity(unchecked) public internal(set) var headerCount = 0
    /// Offset of the empty line that ends the header section (or of the end of the buffer).
    @exclusivity(unchecked) public internal(set) var headersEnd = 0
    @exclusivity(unchecked) public internal(set) var body = SIPSpan.absent
    /// Bytes of the buffer that belong to this message: bytes after it in a datagram are ignored.
    @exclusivity(unchecked) public internal(set) var length = 0

    @exclusivity(unchecked) var cache = ValueCache()

    public init(headerCapacity: Int = SIPMessage.defaultHeaderCapacity) {
        precondition(headerCapacity > 0 && headerCapacity <= Int(Int16.max))
        self.headerCapacity = headerCapacity
        fields = .allocate(capacity: headerCapacity)
        kinds = .allocate(capacity: SIPHeaderKind.allCases.count)
        kinds.initialize(repeating: KindEntry(), count: SIPHeaderKind.allCases.count)
    }

    deinit {
        fields.deallocate()
        kinds.deallocate()
    }

    // MARK: - Reading the header table

    /// - Precondition: `0 <= index < headerCount`.
    public func header(at index: Int) -> SIPHeaderField {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        return fields[index]
    }

    public func count(of kind: SIPHeaderKind) -> Int { Int(kinds[Int(kind.rawValue)].count) }

    public func firstIndex(of kind: SIPHeaderKind) -> Int? {
        let first = kinds[Int(kind.rawValue)].first
        return first < 0 ? nil : Int(first)
    }

    /// The next field of the same kind as the field at `index`.
    public func nextIndex(sameKindAs index: Int) -> Int? {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        let next = fields[index].next
        return next < 0 ? nil : Int(next)
    }

    /// The first field whose name is `name`, compared case-insensitively: for `.other` headers.
    public func firstIndex(named name: StaticString) -> Int? {
        var index = 0
        while index < headerCount {
            let span = fields[index].name
            if equalsIgnoringCase(span, name) { return index }
            index += 1
        }
        return nil
    }

    /// Every comma-separated value of every field of `kind`, in message order. For kinds that are not
    /// lists (`SIPHeaderKind.isList`), each field yields its whole value.
    public func values(of kind: SIPHeaderKind) -> SIPValueIterator {
        SIPValueIterator(message: self, first: kinds[Int(kind.rawValue)].first)
    }

    /// The comma-separated values of the one field at `index`.
    public func values(ofHeaderAt index: Int) -> SIPValueIterator {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        return SIPValueIterator(message: self, single: index)
    }

    // MARK: - Editing before a build

    /// Leaves the field at `index` out of the next `write...` call (until `restoreHeaders()` or the
    /// next `parse`).
    public func removeHeader(at index: Int) {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        fields[index].isRemoved = true
    }

    public func isHeaderRemoved(at index: Int) -> Bool {
        precondition(index >= 0 && index < headerCount, "header index out of range")
        return fields[index].isRemoved
    }

    /// Undoes every `removeHeader(at:)`, e.g. before building the next branch of a fork.
    public func restoreHeaders() {
        var index = 0
        while index < headerCount {
            fields[index].isRemoved = false
            index += 1
        }
    }

    // MARK: - Bytes of a span

    /// The bytes of `span` (empty for an absent span), valid as long as the parsed buffer is.
    public func bytes(of span: SIPSpan) -> UnsafeRawBufferPointer {
        guard span.isPresent, !span.isEmpty else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: bytes[span.lower..<span.upper])
    }

    public func equals(_ span: SIPSpan, _ literal: StaticString) -> Bool {
        span.isPresent && bytes.equals(span.lower, span.upper, literal)
    }

    /// ASCII case-insensitive comparison, as for header names, schemes, transports, hosts.
    public func equalsIgnoringCase(_ span: SIPSpan, _ literal: StaticString) -> Bool {
        guard span.isPresent, span.count == literal.utf8CodeUnitCount else { return false }
        let p = literal.utf8Start
        var i = 0
        while i < span.count {
            if lowercased(bytes[span.lower + i]) != lowercased(p[i]) { return false }
            i += 1
        }
        return true
    }

    public func equals(_ a: SIPSpan, _ b: SIPSpan) -> Bool {
        guard a.count == b.count, a.isPresent == b.isPresent else { return false }
        var i = 0
        while i < a.count {
            if bytes[a.lower + i] != bytes[b.lower + i] { return false }
            i += 1
        }
        return true
    }

    /// A copy of the span's bytes as a String. It allocates: for tests, logs and errors, never the
    /// hot path.
    public func string(_ span: SIPSpan) -> String {
        String(decoding: bytes(of: span), as: UTF8.self)
    }

    /// FNV-1a 64 of the span's bytes (see `FNV1a64`).
    public func hash(_ span: SIPSpan) -> UInt64 {
        var hasher = FNV1a64()
        hasher.combine(bytes(of: span))
        return hasher.value
    }
}
