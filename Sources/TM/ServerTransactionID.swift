import SIP

/// What identifies the server transaction a request belongs to (RFC 3261 §17.2.3), computed once per
/// received request, without allocation: a 64-bit hash for the table and the spans to confirm a match.
///
/// With the magic cookie (`z9hG4bK`), a transaction is the top Via's branch and sent-by plus the method,
/// an ACK matching its INVITE. Without it (RFC 2543 peers), it is the Request-URI, From tag, Call-ID,
/// CSeq number and the whole top Via, plus the To tag: the request's own, or for an ACK the To tag of
/// the response the transaction sent.
///
/// The hash leaves the method and the To tag out, so an INVITE, its ACK and its CANCEL hash alike: the
/// ACK lookup (`matches`) and the CANCEL lookup (`cancels`, §9.2) are the same probe with a different
/// confirmation. The hash is FNV-1a seeded with a per-process secret so that colliding keys cannot be
/// prepared offline against the table (the table then spreads all 64 bits, see `TransactionTable`).
///
/// Confirmation compares fields, not a second hash: a transaction keeps the request that created it
/// (to answer retransmissions and build responses), so the driver stores this value beside that buffer
/// and `matches` compares spans of both buffers. That is exact where a second hash would be a guess, and
/// costs the bytes of a few spans per transaction.
/// - Invariant: spans refer to the bytes of the request this was computed from.
public struct ServerTransactionID: Sendable {
    public enum Rule: UInt8, Sendable {
        /// The top Via branch has the magic cookie: branch, sent-by and method identify the transaction.
        case rfc3261
        /// No magic cookie: the RFC 2543 fields identify it.
        case rfc2543
    }

    public let rule: Rule
    public let hash: UInt64
    /// The request's method; an ACK keeps `.ack` (matching maps it to its INVITE).
    public let method: SIPMethod
    let methodName: SIPSpan
    let branch: SIPSpan
    let host: SIPSpan
    let port: UInt16
    let requestURI: SIPSpan
    let callID: SIPSpan
    let fromTag: SIPSpan
    let toTag: SIPSpan
    let topVia: SIPSpan
    let cseq: UInt32

    /// Nil for a response, or a request without the fields its rule needs (a Via; for RFC 2543 also
    /// CSeq, Call-ID, From and To): such a request cannot be matched and is not answered statefully.
    public init?(_ request: SIPMessage, seed: UInt64) {
        guard request.isRequest, request.hasStartLine, let via = request.topVia else { return nil }
        let bytes = request.bytes
        var hasher = FNV1a64()
        hasher.combine(seed)
        method = request.method
        methodName = request.methodName
        if via.hasRFC3261Branch(in: bytes) {
            rule = .rfc3261
            branch = via.branch
            host = via.host
            port = via.port ?? (via.transport == .tls || via.transport == .wss ? 5061 : 5060)
            hasher.combine(request.bytes(of: via.branch))
            hasher.combine(byte: 0)
            ServerTransactionID.combineLowercased(&hasher, request.bytes(of: via.host))
            hasher.combine(UInt64(port))
            requestURI = .absent
            callID = .absent
            fromTag = .absent
            toTag = .absent
            topVia = .absent
            cseq = 0
        } else {
            guard let cseq = request.cseq, let callID = request.callID, let from = request.from, let to = request.to
            else { return nil }
            rule = .rfc2543
            branch = .absent
            host = .absent
            port = 0
            requestURI = request.requestURIText
            self.callID = callID
            fromTag = from.tag
            toTag = to.tag
            topVia = via.span
            self.cseq = cseq.number
            // A 0 after each field, so that moving bytes from one field to the next changes the hash.
            hasher.combine(request.bytes(of: requestURI))
            hasher.combine(byte: 0)
            hasher.combine(request.bytes(of: from.tag))
            hasher.combine(byte: 0)
            hasher.combine(request.bytes(of: callID))
            hasher.combine(byte: 0)
            hasher.combine(request.bytes(of: via.span))
            hasher.combine(byte: 0)
            hasher.combine(UInt64(cseq.number))
        }
        hash = hasher.value
    }

    /// Whether the request this ID was computed from (in `bytes`) belongs to the transaction `stored`
    /// identifies (computed from the request that created it, in `storedBytes`): a retransmission of
    /// that request, or the ACK of that INVITE (§17.2.3). `responseToTag` is the To tag of the final
    /// response the transaction sent, which an RFC 2543 ACK carries; empty when none was sent.
    public func matches(
        _ stored: ServerTransactionID, bytes: UnsafeRawBufferPointer, storedBytes: UnsafeRawBufferPointer,
        responseToTag: UnsafeRawBufferPointer
    ) -> Bool {
        guard rule == stored.rule, hash == stored.hash else { return false }
        if method == .ack {
            guard stored.method == .invite else { return false }
        } else {
            guard method == stored.method else { return false }
            if method == .other, !equal(methodName, bytes, stored.methodName, storedBytes) { return false }
        }
        guard sameFields(stored, bytes, storedBytes) else { return false }
        if rule == .rfc2543 {
            let theirs = method == .ack ? responseToTag : span(stored.toTag, storedBytes)
            return span(toTag, bytes).elementsEqual(theirs)
        }
        return true
    }

    /// Whether this ID, computed from a CANCEL (in `bytes`), names the request `stored` identifies as the
    /// one it cancels: §9.2 matches it by §17.2.3 as if its method were that request's (any but CANCEL and
    /// ACK).
    public func cancels(
        _ stored: ServerTransactionID, bytes: UnsafeRawBufferPointer, storedBytes: UnsafeRawBufferPointer
    ) -> Bool {
        guard method == .cancel, stored.method != .cancel, stored.method != .ack else { return false }
        guard rule == stored.rule, hash == stored.hash, sameFields(stored, bytes, storedBytes) else { return false }
        return rule == .rfc3261 || span(toTag, bytes).elementsEqual(span(stored.toTag, storedBytes))
    }

    private func sameFields(
        _ stored: ServerTransactionID, _ bytes: UnsafeRawBufferPointer, _ storedBytes: UnsafeRawBufferPointer
    ) -> Bool {
        switch rule {
        case .rfc3261:
            return port == stored.port && equal(branch, bytes, stored.branch, storedBytes)
                && equalIgnoringCase(host, bytes, stored.host, storedBytes)
        case .rfc2543:
            return cseq == stored.cseq && equal(callID, bytes, stored.callID, storedBytes)
                && equal(fromTag, bytes, stored.fromTag, storedBytes)
                && equal(requestURI, bytes, stored.requestURI, storedBytes)
                && equal(topVia, bytes, stored.topVia, storedBytes)
        }
    }

    // MARK: - Bytes

    private func span(_ s: SIPSpan, _ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        guard s.isPresent, !s.isEmpty else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: bytes[Int(s.start)..<Int(s.end)])
    }

    /// Byte equality; an absent span equals only an absent one (no tag is not `;tag=`).
    private func equal(
        _ a: SIPSpan, _ aBytes: UnsafeRawBufferPointer, _ b: SIPSpan, _ bBytes: UnsafeRawBufferPointer
    ) -> Bool {
        a.isPresent == b.isPresent && span(a, aBytes).elementsEqual(span(b, bBytes))
    }

    private func equalIgnoringCase(
        _ a: SIPSpan, _ aBytes: UnsafeRawBufferPointer, _ b: SIPSpan, _ bBytes: UnsafeRawBufferPointer
    ) -> Bool {
        let x = span(a, aBytes)
        let y = span(b, bBytes)
        guard x.count == y.count else { return false }
        var i = 0
        while i < x.count {
            if ServerTransactionID.lowercased(x[i]) != ServerTransactionID.lowercased(y[i]) { return false }
            i += 1
        }
        return true
    }

    @inline(__always)
    static func lowercased(_ c: UInt8) -> UInt8 { c &- 0x41 < 26 ? c | 0x20 : c }

    /// Hosts compare case-insensitively (RFC 3261 §19.1.4), so they hash lower-cased.
    static func combineLowercased(_ hasher: inout FNV1a64, _ bytes: UnsafeRawBufferPointer) {
        for c in bytes { hasher.combine(byte: lowercased(c)) }
    }
}

extension TransactionBranch {
    /// The client transaction a response belongs to (§17.1.3), when its top Via carries a branch this
    /// process issued. The driver then confirms the rest of §17.1.3: the CSeq method equals the client
    /// transaction's (an INVITE and its CANCEL share the branch). Nil for anything else: such a response
    /// matches no client transaction and a proxy forwards it statelessly (§16.7 step 1).
    public static func owner(of response: SIPMessage, key: BranchKey) -> TransactionBranch? {
        guard !response.isRequest, let via = response.topVia, via.branch.isPresent else { return nil }
        return decode(response.bytes(of: via.branch), key: key)
    }
}
