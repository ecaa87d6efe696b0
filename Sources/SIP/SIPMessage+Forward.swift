/// The Via a proxy puts on top of a request it forwards (RFC 3261 §16.6 step 8).
public enum SIPNewVia {
    /// A complete via-parm, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK...`.
    case raw(UnsafeRawBufferPointer)
    /// Written as `SIP/2.0/<transport> <host>[:<port>];branch=<branch>`; an IPv6 host comes with its
    /// brackets.
    /// - Precondition: `transport` is not `.other`.
    case parts(transport: SIPTransport, host: UnsafeRawBufferPointer, port: UInt16?, branch: UnsafeRawBufferPointer)
}

/// What to change while copying a message into a send buffer. Plain values and borrowed pointers:
/// building one costs nothing. The pointed-to bytes must stay valid during the `write...` call.
public struct SIPForwardingOptions {
    /// Replaces the Request-URI (requests only).
    public var requestURI: UnsafeRawBufferPointer?
    /// Inserted above the received Vias (requests only).
    public var via: SIPNewVia?
    /// Removes the first value of the first Route field (requests only; nothing happens without one).
    public var popRoute = false
    /// `received` for the received top Via (RFC 3261 §18.2.1), replacing one already there.
    public var received: UnsafeRawBufferPointer?
    /// `rport` value for the received top Via (RFC 3581), replacing the bare flag or an old value.
    public var rport: UInt16?
    /// Every field of these kinds is left out (see also `SIPMessage.removeHeader(at:)`).
    public var removedKinds = SIPHeaderKindSet()
    /// Raw header lines, each ending in CRLF, written below the received Vias and above any received
    /// Record-Route: where our Record-Route must go to be on top (RFC 3261 §16.6 step 4) without splitting the
    /// Via rows (unless the request itself put a Record-Route between them).
    public var insertedHeaders: UnsafeRawBufferPointer?
    /// Raw header lines, each ending in CRLF, written after the received fields.
    public var appendedHeaders: UnsafeRawBufferPointer?
    /// The Max-Forwards written when the request has none (RFC 3261 §16.6 step 3 suggests 70; a script's
    /// `mf_process_maxfwd_header(n)` chooses n).
    public var maxForwardsWhenAbsent = 70

    public init() {}
}

extension SIPMessage {
    /// Writes the request as a proxy forwards it (RFC 3261 §16.6): the Request-Line with single SPs,
    /// the new Via, the received fields (`insertedHeaders` after their last Via) with Max-Forwards decremented (or
    /// `Max-Forwards: 70` added when absent), the top Via extended with received/rport, the first
    /// Route value popped, removed fields left out, then `appendedHeaders`, a Content-Length equal to
    /// the body, and the body. Other fields are copied byte for byte, folds included.
    /// - Returns: the number of bytes written at the start of `buffer`.
    /// - Precondition: a parsed request (`parse` succeeded); `validate()` should have passed.
    public func writeForwardedRequest(
        into buffer: UnsafeMutableRawBufferPointer, _ options: SIPForwardingOptions
    ) throws(SIPBuildError) -> Int {
        precondition(isRequest && hasStartLine, "writeForwardedRequest needs a parsed request")
        let b = bytes
        var newMaxForwards = options.maxForwardsWhenAbsent
        if count(of: .maxForwards) > 0 {
            guard let received = maxForwards else { throw .malformedMessage }
            guard received > 0 else { throw .maxForwardsExhausted }
            newMaxForwards = received - 1
        }
        let topViaIndex = try topViaIndexToEdit(options)
        var routeIndex = -1
        var remainingRoutes = SIPSpan.absent
        if options.popRoute, let index = firstIndex(of: .route) {
            routeIndex = index
            var values = values(ofHeaderAt: index)
            _ = values.next()
            if let second = values.next() {
                remainingRoutes = SIPSpan(start: second.start, end: fields[index].value.end)
            }
        }

        var w = SIPWriter(buffer)
        w.write(b, methodName)
        w.write(byte: 0x20)
        // Headers in a Request-URI (`sip:u@h?Route=…`) are not sent on (RFC 3261 §19.1.5): what comes from the
        // '?' on is left out, whether the URI was received or set by the script.
        if let uri = options.requestURI {
            let headers = (try? SIPURI.parse(uri, 0, uri.count))?.headers ?? .absent
            w.write(headers.isPresent ? UnsafeRawBufferPointer(rebasing: uri[0..<Int(headers.start) - 1]) : uri)
        } else if let headers = requestURI?.headers, headers.isPresent {
            w.write(b, SIPSpan(start: requestURIText.start, end: headers.start - 1))
        } else {
            w.write(b, requestURIText)
        }
        w.write(" SIP/2.0\r\n")
        if let via = options.via { w.writeVia(via) }
        // Inserted lines (Record-Route, a rewritten Route set) go below the last received Via, never between
        // Via rows: legal either way, but peers keep the Vias together and simple parsers rely on it.
        // Above a received Record-Route, though, so ours stays on top (§16.6 step 4).
        var lastVia = -1, firstRecordRoute = -1
        for i in 0..<headerCount where !fields[i].isRemoved {
            if fields[i].kind == .via { lastVia = i }
            if fields[i].kind == .recordRoute && firstRecordRoute < 0 { firstRecordRoute = i }
        }
        let insertBefore = firstRecordRoute >= 0 && firstRecordRoute < lastVia ? firstRecordRoute : -1
        let insertAfter = insertBefore < 0 ? lastVia : -1
        if lastVia < 0 && insertBefore < 0, let inserted = options.insertedHeaders { w.write(inserted) }
        var wroteMaxForwards = false
        var index = 0
        while index < headerCount {
            let field = fields[index]
            if index == insertBefore, let inserted = options.insertedHeaders { w.write(inserted) }
            defer {
                if index == insertAfter, let inserted = options.insertedHeaders { w.write(inserted) }
                index += 1
            }
            if field.isRemoved || options.removedKinds.contains(field.kind) { continue }
            switch field.kind {
            case .contentLength:
                continue
            case .maxForwards:
                if !wroteMaxForwards { w.writeMaxForwards(newMaxForwards) }
                wroteMaxForwards = true
            case .via where index == topViaIndex:
                writeField(&w, field, editingTopVia: options)
            case .route where index == routeIndex:
                if remainingRoutes.isPresent {
                    w.write("Route: ")
                    w.write(b, remainingRoutes)
                    w.writeCRLF()
                }
            default:
                w.write(b, field.line)
            }
        }
        if !wroteMaxForwards { w.writeMaxForwards(newMaxForwards) }
        writeTail(&w, options)
        return try w.finish()
    }

    /// Writes the response as a proxy forwards it (RFC 3261 §16.7 step 3): the first Via value is
    /// removed (the whole field when it had one value, else only that value), removed fields are
    /// left out, `appendedHeaders` added, Content-Length set to the body. Request-only options
    /// are ignored; `insertedHeaders` go right after the status line.
    /// - Precondition: a parsed response.
    public func writeForwardedResponse(
        into buffer: UnsafeMutableRawBufferPointer, _ options: SIPForwardingOptions = SIPForwardingOptions()
    ) throws(SIPBuildError) -> Int {
        precondition(!isRequest && hasStartLine, "writeForwardedResponse needs a parsed response")
        let b = bytes
        guard let viaIndex = firstIndex(of: .via) else { throw .malformedMessage }
        var remainingVias = SIPSpan.absent
        var values = values(ofHeaderAt: viaIndex)
        _ = values.next()
        if let second = values.next() { remainingVias = SIPSpan(start: second.start, end: fields[viaIndex].value.end) }

        var w = SIPWriter(buffer)
        writeStatusLine(&w, statusCode, UnsafeRawBufferPointer(rebasing: b[reasonPhrase.lower..<reasonPhrase.upper]))
        if let inserted = options.insertedHeaders { w.write(inserted) }
        var index = 0
        while index < headerCount {
            let field = fields[index]
            defer { index += 1 }
            if field.isRemoved || options.removedKinds.contains(field.kind) || field.kind == .contentLength {
                continue
            }
            if index == viaIndex {
                if remainingVias.isPresent {
                    w.write("Via: ")
                    w.write(b, remainingVias)
                    w.writeCRLF()
                }
            } else {
                w.write(b, field.line)
            }
        }
        writeTail(&w, options)
        return try w.finish()
    }

    /// Index of the Via field whose first value gets received/rport, or -1 when nothing to edit.
    func topViaIndexToEdit(_ options: SIPForwardingOptions) throws(SIPBuildError) -> Int {
        guard options.received != nil || options.rport != nil else { return -1 }
        guard topVia != nil, let index = firstIndex(of: .via) else { throw .malformedMessage }
        return index
    }

    /// Copies a Via line with its first value's received/rport replaced by the options' values.
    func writeField(_ w: inout SIPWriter, _ field: SIPHeaderField, editingTopVia options: SIPForwardingOptions) {
        let b = bytes
        guard let via = topVia else {
            w.write(b, field.line)
            return
        }
        // Cut out the parameters being replaced, in the order they appear.
        var first = options.received != nil ? via.receivedParameter : .absent
        var second = options.rport != nil ? via.rportParameter : .absent
        if !first.isPresent || (second.isPresent && second.start < first.start) { swap(&first, &second) }
        var position = field.line.lower
        if first.isPresent {
            w.write(b, position, first.lower)
            position = first.upper
        }
        if second.isPresent {
            w.write(b, position, second.lower)
            position = second.upper
        }
        w.write(b, position, via.span.upper)
        if let received = options.received {
            w.write(";received=")
            w.write(received)
        }
        if let rport = options.rport {
            w.write(";rport=")
            w.write(decimal: Int(rport))
        }
        w.write(b, via.span.upper, field.line.upper)
    }

    func writeStatusLine(_ w: inout SIPWriter, _ code: Int, _ reason: UnsafeRawBufferPointer) {
        w.write("SIP/2.0 ")
        w.write(decimal: code)
        w.write(byte: 0x20)
        w.write(reason)
        w.writeCRLF()
    }

    /// appendedHeaders, Content-Length for the body, the empty line and the body.
    private func writeTail(_ w: inout SIPWriter, _ options: SIPForwardingOptions) {
        if let appended = options.appendedHeaders { w.write(appended) }
        w.write("Content-Length: ")
        w.write(decimal: body.count)
        w.write("\r\n\r\n")
        w.write(bytes, body)
    }
}

extension SIPWriter {
    mutating func writeVia(_ via: SIPNewVia) {
        write("Via: ")
        switch via {
        case .raw(let value):
            write(value)
        case .parts(let transport, let host, let port, let branch):
            precondition(transport != .other, "a new Via needs a known transport")
            write("SIP/2.0/")
            write(transport.name)
            write(byte: 0x20)
            write(host)
            if let port {
                write(byte: 0x3A)
                write(decimal: Int(port))
            }
            write(";branch=")
            write(branch)
        }
        writeCRLF()
    }

    mutating func writeMaxForwards(_ value: Int) {
        write("Max-Forwards: ")
        write(decimal: value)
        writeCRLF()
    }
}
