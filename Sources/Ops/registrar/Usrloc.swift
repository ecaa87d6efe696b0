/// OpenSIPS' usrloc: the location table, address-of-record → its bindings (RFC 3261 §10.3). Plain state on one
/// shard's thread: every change goes through `apply`/`remove`, which take `now` (CLOCK_MONOTONIC
/// milliseconds, the same clock on every shard, so a replicated binding lapses at the same instant
/// everywhere) and return what happened; the registrar performs the rest (the reply, replication).
public struct Binding: Equatable, Sendable {
    /// The Contact URI, as the user agent wrote it (without its `<>` and header parameters).
    public var contact: String
    /// When it lapses, in CLOCK_MONOTONIC milliseconds.
    public var expires: UInt64
    /// q × 1000 (0…1000); -1 when the Contact gave none.
    public var q: Int
    public var callID: String
    public var cseq: UInt32
    /// The Path header values (RFC 3327), comma-joined as received; empty for none.
    public var path: String
    /// Where the REGISTER came from, as a URI (`sip:IP:port`), when the script asked for it to be kept (the
    /// NAT case: `lookup` then sends there instead of to the Contact); empty otherwise.
    public var received: String
    public var userAgent: String
    /// RFC 5626 `+sip.instance` (with its quotes and angle brackets as sent) and `reg-id`; empty and 0 for none.
    public var instance: String
    public var regID: Int
    /// The listening socket the REGISTER arrived on (index into the shard's sockets).
    public var socket: Int
    /// Branch flags to set on the branch made for it (`nat_bflag`).
    public var branchFlags: UInt64
    /// When it was last written, CLOCK_MONOTONIC ms: the newest first among equal q.
    public var modified: UInt64

    public init(contact: String, expires: UInt64, q: Int = -1, callID: String = "", cseq: UInt32 = 0, path: String = "",
                received: String = "", userAgent: String = "", instance: String = "", regID: Int = 0, socket: Int = 0,
                branchFlags: UInt64 = 0, modified: UInt64 = 0) {
        self.contact = contact
        self.expires = expires
        self.q = q
        self.callID = callID
        self.cseq = cseq
        self.path = path
        self.received = received
        self.userAgent = userAgent
        self.instance = instance
        self.regID = regID
        self.socket = socket
        self.branchFlags = branchFlags
        self.modified = modified
    }

    /// Whether `other` is the same binding: the same instance and reg-id when the user agent sent an instance
    /// (RFC 5626: a rebooted phone with a new Contact replaces its old one), else the same Contact URI.
    func sameBinding(as other: Binding) -> Bool {
        if !instance.isEmpty || !other.instance.isEmpty {
            return instance == other.instance && regID == other.regID
        }
        return contact == other.contact
    }
}

/// One Contact of a REGISTER, as the registrar read it.
public struct ContactRequest: Equatable, Sendable {
    public var contact: String
    /// Seconds: the Contact's `expires` parameter, else the Expires header, else the default, already clamped
    /// to the registrar's bounds. 0 removes the binding.
    public var expiresSeconds: Int
    public var q: Int
    public var instance: String
    public var regID: Int

    public init(contact: String, expiresSeconds: Int, q: Int = -1, instance: String = "", regID: Int = 0) {
        self.contact = contact
        self.expiresSeconds = expiresSeconds
        self.q = q
        self.instance = instance
        self.regID = regID
    }
}

/// What a REGISTER asks of the table.
public struct RegisterRequest: Equatable, Sendable {
    public var aor: String
    /// Empty with `wildcard` false: a query (the reply lists the bindings, nothing changes).
    public var contacts: [ContactRequest]
    /// `Contact: *` with `Expires: 0`: remove every binding (§10.3 step 6).
    public var wildcard: Bool
    public var callID: String
    public var cseq: UInt32
    public var path: String
    public var received: String
    public var userAgent: String
    public var socket: Int
    public var branchFlags: UInt64
    /// The most bindings the AOR may have after the request (0: no limit).
    public var maxContacts: Int

    public init(aor: String, contacts: [ContactRequest], wildcard: Bool = false, callID: String, cseq: UInt32,
                path: String = "", received: String = "", userAgent: String = "", socket: Int = 0,
                branchFlags: UInt64 = 0, maxContacts: Int = 0) {
        self.aor = aor
        self.contacts = contacts
        self.wildcard = wildcard
        self.callID = callID
        self.cseq = cseq
        self.path = path
        self.received = received
        self.userAgent = userAgent
        self.socket = socket
        self.branchFlags = branchFlags
        self.maxContacts = maxContacts
    }
}

public enum RegisterOutcome: Equatable, Sendable {
    /// Applied (or a query); `changed` when the AOR's bindings differ from before (replicate them).
    case applied(changed: Bool)
    /// A binding with the same Call-ID and a lower CSeq than the stored one: the request is out of order
    /// (§10.3 step 7) and nothing changed. An equal CSeq is a retransmission, applied as a no-op: a registrar
    /// answers it as its transaction layer would have, with the same 200.
    case outOfOrder
    /// More bindings than `maxContacts` would remain; nothing changed.
    case tooManyContacts
}

public final class LocationTable {
    /// Bindings per AOR, highest q first, the newest first among equal q. An AOR with none is removed.
    public private(set) var records: [String: [Binding]] = [:]
    public private(set) var bindingCount = 0

    public init() {}

    /// The AOR's bindings that have not lapsed at `now`, in the order `lookup` forks to them.
    public func bindings(of aor: String, now: UInt64) -> [Binding] {
        guard let all = records[aor] else { return [] }
        return all.filter { $0.expires > now }
    }

    /// The same, as a view that copies nothing: what `lookup` reads for every call.
    public func live(of aor: String, now: UInt64) -> LazyFilterSequence<[Binding]> {
        (records[aor] ?? []).lazy.filter { $0.expires > now }
    }

    /// Applies a REGISTER as RFC 3261 §10.3 steps 6–8 say. All or nothing: a request refused changes nothing.
    public func apply(_ request: RegisterRequest, now: UInt64) -> RegisterOutcome {
        let before = records[request.aor] ?? []
        var bindings = before.filter { $0.expires > now }
        let liveBefore = bindings.count
        if request.wildcard {
            // Step 6: a `*` from the same Call-ID must be newer than every binding it removes.
            for binding in bindings where binding.callID == request.callID && request.cseq < binding.cseq {
                return .outOfOrder
            }
            bindings.removeAll()
        } else {
            for contact in request.contacts {
                let new = Binding(contact: contact.contact, expires: now &+ UInt64(contact.expiresSeconds) * 1000,
                                  q: contact.q, callID: request.callID, cseq: request.cseq, path: request.path,
                                  received: request.received, userAgent: request.userAgent, instance: contact.instance,
                                  regID: contact.regID, socket: request.socket, branchFlags: request.branchFlags,
                                  modified: now)
                if let existing = bindings.firstIndex(where: { $0.sameBinding(as: new) }) {
                    let old = bindings[existing]
                    if old.callID == request.callID {
                        if request.cseq < old.cseq { return .outOfOrder }
                        // The same CSeq again is the request retransmitted (its 200 was lost): it changes nothing
                        // and gets the bindings as they are.
                        if request.cseq == old.cseq { continue }
                    }
                    bindings.remove(at: existing)
                }
                if contact.expiresSeconds > 0 { bindings.append(new) }
            }
            if request.maxContacts > 0 && bindings.count > request.maxContacts && bindings.count > liveBefore {
                return .tooManyContacts
            }
        }
        let changed = bindings != before
        if changed { store(bindings, for: request.aor) }
        return .applied(changed: changed)
    }

    /// Removes the AOR's bindings, or only those whose Contact is `contact`; true when any was removed.
    @discardableResult
    public func remove(_ aor: String, contact: String? = nil) -> Bool {
        guard let bindings = records[aor] else { return false }
        let kept = contact.map { c in bindings.filter { $0.contact != c } } ?? []
        guard kept.count != bindings.count else { return false }
        store(kept, for: aor)
        return true
    }

    /// Replaces the AOR's bindings with a list mailed by another shard, already in order.
    public func replace(_ aor: String, with bindings: [Binding]) {
        bindingCount += bindings.count - (records[aor]?.count ?? 0)
        records[aor] = bindings.isEmpty ? nil : bindings
    }

    /// Sets the AOR's bindings, put in forking order: bindings read from the database at start-up.
    public func restore(_ aor: String, _ bindings: [Binding]) {
        store(bindings, for: aor)
    }

    /// Drops every binding that has lapsed at `now`; returns how many.
    @discardableResult
    public func sweep(now: UInt64) -> Int {
        var removed = 0
        for (aor, bindings) in records {
            let live = bindings.filter { $0.expires > now }
            if live.count != bindings.count {
                removed += bindings.count - live.count
                store(live, for: aor)
            }
        }
        return removed
    }

    private func store(_ bindings: [Binding], for aor: String) {
        bindingCount -= records[aor]?.count ?? 0
        if bindings.isEmpty {
            records[aor] = nil
            return
        }
        // q unspecified counts as the highest preference the default gives it (OpenSIPS' default_q 0 = 0.0
        // would sort it last; a phone that states no q expects to ring): treated as 1.0 for the order.
        // Ties keep the order given (the Contacts of one REGISTER in the order written).
        records[aor] = bindings.enumerated().sorted { x, y in
            let (a, b) = (x.element, y.element)
            let qa = a.q < 0 ? 1000 : a.q, qb = b.q < 0 ? 1000 : b.q
            if qa != qb { return qa > qb }
            return a.modified != b.modified ? a.modified > b.modified : x.offset < y.offset
        }.map(\.element)
        bindingCount += bindings.count
    }
}
