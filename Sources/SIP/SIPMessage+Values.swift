/// Values parsed on first use, kept until the next `parse`.
struct ValueCache {
    var done: UInt8 = 0
    var topVia: SIPVia?
    var cseq: SIPCSeq?
    var callID: SIPSpan?
    var from: SIPNameAddr?
    var to: SIPNameAddr?
    var maxForwards: Int?
    var requestURI: SIPURI?

    static let topVia: UInt8 = 1 << 0
    static let cseq: UInt8 = 1 << 1
    static let callID: UInt8 = 1 << 2
    static let from: UInt8 = 1 << 3
    static let to: UInt8 = 1 << 4
    static let maxForwards: UInt8 = 1 << 5
    static let requestURI: UInt8 = 1 << 6
}

extension SIPMessage {
    /// The first value of the first Via: where responses go. Nil when missing or malformed.
    public var topVia: SIPVia? {
        if cache.done & ValueCache.topVia == 0 {
            cache.done |= ValueCache.topVia
            var values = values(of: .via)
            if let first = values.next() { cache.topVia = try? SIPVia.parse(bytes, first) }
        }
        return cache.topVia
    }

    public var cseq: SIPCSeq? {
        if cache.done & ValueCache.cseq == 0 {
            cache.done |= ValueCache.cseq
            if let index = firstIndex(of: .cseq) { cache.cseq = try? SIPCSeq.parse(bytes, fields[index].value) }
        }
        return cache.cseq
    }

    public var callID: SIPSpan? {
        if cache.done & ValueCache.callID == 0 {
            cache.done |= ValueCache.callID
            if let index = firstIndex(of: .callID) {
                cache.callID = try? SIPScalars.callID(bytes, fields[index].value)
            }
        }
        return cache.callID
    }

    public var from: SIPNameAddr? {
        if cache.done & ValueCache.from == 0 {
            cache.done |= ValueCache.from
            if let index = firstIndex(of: .from) { cache.from = try? SIPNameAddr.parse(bytes, fields[index].value) }
        }
        return cache.from
    }

    public var to: SIPNameAddr? {
        if cache.done & ValueCache.to == 0 {
            cache.done |= ValueCache.to
            if let index = firstIndex(of: .to) { cache.to = try? SIPNameAddr.parse(bytes, fields[index].value) }
        }
        return cache.to
    }

    /// A To header with a non-empty tag: the request is inside a dialog (RFC 3261 §12.2).
    public var hasToTag: Bool {
        guard let to else { return false }
        return to.tag.isPresent && !to.tag.isEmpty
    }

    /// Nil when absent (a proxy then inserts 70, RFC 3261 §16.6 step 3) or malformed (which
    /// `validate()` reports).
    public var maxForwards: Int? {
        if cache.done & ValueCache.maxForwards == 0 {
            cache.done |= ValueCache.maxForwards
            if let index = firstIndex(of: .maxForwards) {
                cache.maxForwards = try? SIPScalars.maxForwards(bytes, fields[index].value)
            }
        }
        return cache.maxForwards
    }

    /// The parsed Request-URI; nil for a response or a malformed URI (`lwsruri`, `ltgtruri`).
    public var requestURI: SIPURI? {
        if cache.done & ValueCache.requestURI == 0 {
            cache.done |= ValueCache.requestURI
            if isRequest { cache.requestURI = try? SIPURI.parse(bytes, requestURIText.lower, requestURIText.upper) }
        }
        return cache.requestURI
    }

    /// The first value of the first Route field (not cached: a proxy reads it once).
    public var firstRoute: SIPNameAddr? {
        var values = values(of: .route)
        guard let first = values.next() else { return nil }
        return try? SIPNameAddr.parse(bytes, first)
    }

    /// Whether a reply can be sent: a request other than ACK (RFC 3261 §17: ACK is never answered)
    /// whose start line and top Via were read. Meaningful after `parse` threw, too.
    public var isAnswerable: Bool {
        isRequest && hasStartLine && method != .ack && topVia != nil
    }

    /// The checks a proxy needs before forwarding or answering, in this order: SIP version (505),
    /// Request-URI, every Via value, CSeq (single, below 2**31, method equal to the request's),
    /// Call-ID, From, To (single and well formed) and Max-Forwards when present (single, 0–255).
    ///
    /// Max-Forwards may be absent: RFC 3261 §16.6 step 3 has the proxy add one, and RFC 2543 clients
    /// (RFC 4475 §3.4.1) never sent it. Contact and the other fields are not checked: the proxy does
    /// not interpret them. Parsed values are cached for the accessors.
    /// - Precondition: `parse` succeeded.
    public func validate() throws(SIPParseError) {
        precondition(hasStartLine, "validate() after a failed parse")
        guard equalsIgnoringCase(version, "SIP/2.0") else {
            throw SIPParseError(.unsupportedVersion, at: version.lower)
        }
        if isRequest {
            do {
                cache.requestURI = try SIPURI.parse(bytes, requestURIText.lower, requestURIText.upper)
                cache.done |= ValueCache.requestURI
            } catch {
                throw SIPParseError(.badRequestURI, at: error.offset)
            }
        }
        try validateVias()
        let cseqField = try single(.cseq, missing: .missingCSeq, multiple: .multipleCSeq)
        do {
            cache.cseq = try SIPCSeq.parse(bytes, cseqField.value)
            cache.done |= ValueCache.cseq
        } catch {
            throw SIPParseError(.badCSeq, at: error.offset)
        }
        if isRequest, let cseq = cache.cseq, !equals(cseq.methodName, methodName) {
            throw SIPParseError(.cseqMethodMismatch, at: cseq.methodName.lower)
        }
        let callIDField = try single(.callID, missing: .missingCallID, multiple: .multipleCallID)
        cache.callID = try SIPScalars.callID(bytes, callIDField.value)
        cache.done |= ValueCache.callID
        cache.from = try nameAddr(.from, missing: .missingFrom, multiple: .multipleFrom, bad: .badFrom)
        cache.done |= ValueCache.from
        cache.to = try nameAddr(.to, missing: .missingTo, multiple: .multipleTo, bad: .badTo)
        cache.done |= ValueCache.to
        let entry = kinds[Int(SIPHeaderKind.maxForwards.rawValue)]
        if entry.count > 1 {
            throw SIPParseError(.multipleMaxForwards, at: fields[Int(fields[Int(entry.first)].next)].line.lower)
        }
        if entry.count == 1 {
            cache.maxForwards = try SIPScalars.maxForwards(bytes, fields[Int(entry.first)].value)
        }
        cache.done |= ValueCache.maxForwards
    }

    /// What a proxy must be able to read in a response it relays statelessly: the SIP version, the top Via
    /// (whose removal and the next Via decide where it goes), a well-formed CSeq, and exactly one Call-ID,
    /// From and To. Their values are parsed later, only if the script reads them: a response is routed by
    /// its Vias, and its endpoints judge the rest (RFC 3261 §16.7 leaves it to them).
    /// - Precondition: `parse` succeeded on a response.
    public func validateForRelay() throws(SIPParseError) {
        precondition(hasStartLine && !isRequest, "validateForRelay() is for parsed responses")
        guard equalsIgnoringCase(version, "SIP/2.0") else {
            throw SIPParseError(.unsupportedVersion, at: version.lower)
        }
        var vias = values(of: .via)
        guard let first = vias.next() else { throw SIPParseError(.missingVia, at: headersEnd) }
        cache.topVia = try SIPVia.parse(bytes, first)
        cache.done |= ValueCache.topVia
        let cseqField = try single(.cseq, missing: .missingCSeq, multiple: .multipleCSeq)
        do {
            cache.cseq = try SIPCSeq.parse(bytes, cseqField.value)
            cache.done |= ValueCache.cseq
        } catch {
            throw SIPParseError(.badCSeq, at: error.offset)
        }
        _ = try single(.callID, missing: .missingCallID, multiple: .multipleCallID)
        _ = try single(.from, missing: .missingFrom, multiple: .multipleFrom)
        _ = try single(.to, missing: .missingTo, multiple: .multipleTo)
    }

    private func validateVias() throws(SIPParseError) {
        var values = values(of: .via)
        guard let first = values.next() else { throw SIPParseError(.missingVia, at: headersEnd) }
        cache.topVia = try SIPVia.parse(bytes, first)
        cache.done |= ValueCache.topVia
        while let value = values.next() {
            _ = try SIPVia.parse(bytes, value)
        }
    }

    private func single(
        _ kind: SIPHeaderKind, missing: SIPParseError.Reason, multiple: SIPParseError.Reason
    ) throws(SIPParseError) -> SIPHeaderField {
        let entry = kinds[Int(kind.rawValue)]
        guard entry.count > 0 else { throw SIPParseError(missing, at: headersEnd) }
        guard entry.count == 1 else {
            throw SIPParseError(multiple, at: fields[Int(fields[Int(entry.first)].next)].line.lower)
        }
        return fields[Int(entry.first)]
    }

    private func nameAddr(
        _ kind: SIPHeaderKind, missing: SIPParseError.Reason, multiple: SIPParseError.Reason,
        bad: SIPParseError.Reason
    ) throws(SIPParseError) -> SIPNameAddr {
        let field = try single(kind, missing: missing, multiple: multiple)
        do {
            return try SIPNameAddr.parse(bytes, field.value)
        } catch {
            throw SIPParseError(bad, at: error.offset)
        }
    }
}
