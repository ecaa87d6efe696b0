extension SIPMessage {
    /// Writes a stateless reply to this request (RFC 3261 §8.2.6, §16.7 for a proxy's own replies):
    /// status line; every Via as received, the top one extended with `received`/`rport` when given;
    /// From, To, Call-ID and CSeq copied in message order (the first of each, whatever is present: a
    /// 400 may answer a request that lacks some); a To tag added when the code is above 100 and To has none;
    /// `headers` (whole lines, each ending in CRLF, e.g. `Retry-After: 5`) when given;
    /// `Server: <server>` when given; `Content-Length: 0`.
    ///
    /// Without `toTag`, the tag is 16 hex digits of FNV-1a over Call-ID, From tag and top Via branch:
    /// a retransmitted request gets the same tag, as a stateless element must ensure.
    /// - Precondition: a request whose start line was read, `100 <= statusCode <= 699`.
    public func writeReply(
        into buffer: UnsafeMutableRawBufferPointer, statusCode: Int, reason: UnsafeRawBufferPointer,
        toTag: UnsafeRawBufferPointer? = nil, server: UnsafeRawBufferPointer? = nil,
        received: UnsafeRawBufferPointer? = nil, rport: UInt16? = nil, headers: UnsafeRawBufferPointer? = nil
    ) throws(SIPBuildError) -> Int {
        precondition(isRequest && hasStartLine, "writeReply needs a request")
        precondition(statusCode >= 100 && statusCode <= 699, "status code out of range")
        let b = bytes
        var options = SIPForwardingOptions()
        options.received = received
        options.rport = rport
        let topViaIndex = (received != nil || rport != nil) && topVia != nil ? firstIndex(of: .via) ?? -1 : -1

        var w = SIPWriter(buffer)
        writeStatusLine(&w, statusCode, reason)
        // Message order, so that a reply reads like its request (RFC 3261 §24.2 F2).
        var copied = SIPHeaderKindSet()
        var index = 0
        while index < headerCount {
            let field = fields[index]
            defer { index += 1 }
            switch field.kind {
            case .via:
                if index == topViaIndex {
                    writeField(&w, field, editingTopVia: options)
                } else {
                    w.write(b, field.line)
                }
            case .to where !copied.contains(.to):
                copied.insert(.to)
                if statusCode > 100, let to, !to.tag.isPresent {
                    w.write(b, field.line.lower, field.value.upper)
                    w.write(";tag=")
                    if let toTag { w.write(toTag) } else { w.write(hex: derivedToTag()) }
                    w.write(b, field.value.upper, field.line.upper)
                } else {
                    w.write(b, field.line)
                }
            case .from, .callID, .cseq:
                if !copied.contains(field.kind) { w.write(b, field.line) }
                copied.insert(field.kind)
            default:
                break
            }
        }
        if let headers { w.write(headers) }
        if let server {
            w.write("Server: ")
            w.write(server)
            w.writeCRLF()
        }
        w.write("Content-Length: 0\r\n\r\n")
        return try w.finish()
    }

    /// `writeReply` with a literal reason phrase, e.g. `SIPParseError.Reason.phrase`.
    public func writeReply(
        into buffer: UnsafeMutableRawBufferPointer, statusCode: Int, reason: StaticString,
        toTag: UnsafeRawBufferPointer? = nil, server: UnsafeRawBufferPointer? = nil,
        received: UnsafeRawBufferPointer? = nil, rport: UInt16? = nil
    ) throws(SIPBuildError) -> Int {
        try writeReply(
            into: buffer, statusCode: statusCode,
            reason: UnsafeRawBufferPointer(start: reason.utf8Start, count: reason.utf8CodeUnitCount),
            toTag: toTag, server: server, received: received, rport: rport)
    }

    func derivedToTag() -> UInt64 {
        var hasher = FNV1a64()
        if let index = firstIndex(of: .callID) { hasher.combine(bytes(of: fields[index].value)) }
        hasher.combine(byte: 0)
        if let from { hasher.combine(bytes(of: from.tag)) }
        hasher.combine(byte: 0)
        if let via = topVia { hasher.combine(bytes(of: via.branch)) }
        return hasher.value
    }
}
