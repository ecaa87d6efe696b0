import Engine
import SIP
import Script

/// One shard's location service (usrloc): its full copy of the location table, and the rules that keep the
/// copies equal without a lock.
///
/// Design (a REGISTER and a later INVITE for the same AOR may land on different shards):
/// - Every shard keeps a full copy of the table. `lookup()` reads the copy of the shard it runs on: no hop, no
///   suspension, no lock.
/// - Every AOR has one owner shard, `FNV-1a(aor) mod shards`, whose copy is the reference. A change made on the
///   owner is mailed (`LocationMail`, the AOR's whole binding list) to every other shard. A change made on
///   another shard (the REGISTER arrived there) is applied to its own copy at once — the 200 lists it — mailed
///   as a request to the owner, which applies it in its own order and mails its result to everyone, and mailed
///   as the local result to the shards that are neither (so they need not wait for the owner).
/// - Every shard reads its mail before it handles its next datagram (`Shard.pollMail`), and the mail is written
///   before the 200 is sent, so a request sent after a REGISTER's 200 finds the binding on every shard.
/// - Two changes to one AOR on two shards within the same instant may leave a copy briefly showing the older
///   list, until the owner's result arrives; the owner answers every request it is mailed with its list, so
///   with two shards the owner's order is the one that stays. (With three or more, a third shard reads the
///   queues in shard order and may take a non-owner's older list after the owner's: the AOR's next change
///   mends it. A per-AOR version from the owner would close that.) (Handing each REGISTER to
///   its owner before its route would avoid that, at a MSG_RING hand-off and wake-up per REGISTER: ~20 % more
///   CPU per registered call at 2000 calls/s, perf/RESULTS.md.)
/// - Bindings lapse by their expiry time, on the same monotonic clock on every shard: each copy drops them on
///   its own sweep (`timer_interval`), and reads skip them before that.
final class LocationService: ShardService {
    unowned let context: ScriptContext
    unowned let shard: Shard
    let table = LocationTable()
    let useDomain: Bool
    let sweepInterval: UInt64
    /// db_mode 1–3: the MariaDB writer of the AORs this shard owns (`UsrlocDatabase`).
    let writer: UsrlocWriter?
    /// Each listening socket as the `socket` column writes it (`udp:IP:port`).
    let socketNames: [String]

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        self.shard = shard
        useDomain = configuration.integer("usrloc", "use_domain", default: 0) != 0
        sweepInterval = UInt64(max(configuration.integer("usrloc", "timer_interval", default: 60), 1)) * 1000
        socketNames = shard.localAddresses.map { address in
            "udp:\(address)"
        }
        writer = UsrlocDatabase.mode(configuration) != 0 ? UsrlocWriter(context: context, shard: shard) : nil
        for (key, bindings) in UsrlocDatabase.bindings(useDomain: useDomain, sockets: socketNames, now: shard.now) {
            table.restore(key, bindings)
        }
        shard.counters.registrations = table.bindingCount
        _ = shard.schedule(after: sweepInterval, payload: OpsPacking.timerPayload(.location, slot: 0, generation: 0))
    }

    // MARK: - Where an AOR lives

    /// The AOR of a URI as usrloc keys it: `user@host` (host in lower case) with `use_domain`, else `user`.
    /// Nil when the URI has no user (nothing to register or look up).
    func aor(user: UnsafeRawBufferPointer, host: UnsafeRawBufferPointer) -> String? {
        guard user.count > 0 else { return nil }
        var text = String(decoding: user, as: UTF8.self)
        if useDomain {
            text += "@"
            text += String(decoding: host, as: UTF8.self).lowercased()
        }
        return text
    }

    /// The AOR of a SIP URI given as text (a Request-URI, the AOR argument of save or lookup).
    func aor(ofURI text: UnsafeRawBufferPointer) -> String? {
        guard let uri = try? SIPURI.parse(text, 0, text.count) else { return nil }
        return aor(user: slice(text, uri.user), host: slice(text, uri.host))
    }

    private func slice(_ text: UnsafeRawBufferPointer, _ span: SIPSpan) -> UnsafeRawBufferPointer {
        guard span.isPresent else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(rebasing: text[Int(span.start)..<Int(span.end)])
    }

    func owner(ofAOR aor: String) -> Int {
        var hasher = FNV1a64()
        for byte in aor.utf8 { hasher.combine(byte: byte) }
        return Int(hasher.value % UInt64(shard.shardCount))
    }

    // MARK: - Changes

    /// Applies a REGISTER to this shard's copy and sends the change where it must go.
    func register(_ request: RegisterRequest) -> RegisterOutcome {
        let now = shard.now
        let outcome = table.apply(request, now: now)
        guard case .applied(let changed) = outcome else { return outcome }
        let owner = owner(ofAOR: request.aor)
        if owner != shard.index && (!request.contacts.isEmpty || request.wildcard) {
            send(LocationMail.register(request, now: now), to: owner)
        }
        if changed {
            replicate(request.aor, skipping: owner)
            if owner == shard.index { persist(request.aor) }
        }
        shard.counters.registrations = table.bindingCount
        return outcome
    }

    /// Removes an AOR's bindings (or one Contact's); true when any was removed here.
    func remove(_ aor: String, contact: String?) -> Bool {
        let removed = table.remove(aor, contact: contact)
        let owner = owner(ofAOR: aor)
        if owner != shard.index { send(LocationMail.remove(aor: aor, contact: contact), to: owner) }
        if removed {
            replicate(aor, skipping: owner)
            if owner == shard.index { persist(aor) }
        }
        shard.counters.registrations = table.bindingCount
        return removed
    }

    /// The owner writes the AOR's bindings to the database (db_mode 1–3).
    private func persist(_ key: String) {
        guard let writer else { return }
        var table = "location", aor = key
        if let mark = key.firstIndex(of: "\u{1}") {
            table = String(key[..<mark])
            aor = String(key[key.index(after: mark)...])
        }
        var username = aor, domain: String?
        if useDomain, let at = aor.lastIndex(of: "@") {
            username = String(aor[..<at])
            domain = String(aor[aor.index(after: at)...])
        }
        writer.write(table: table, username: username, domain: domain, bindings: self.table.records[key] ?? [],
                     socketNames: socketNames, now: shard.now)
    }

    /// Mails this shard's list for the AOR to every other shard but `owner` (the owner's copy changes only by
    /// its own hand; when this shard is the owner, everyone else gets it).
    private func replicate(_ aor: String, skipping owner: Int) {
        let mail = LocationMail.bindings(aor: aor, table.records[aor] ?? []).encoded()
        for target in 0..<shard.shardCount where target != shard.index && target != owner { post(mail, to: target) }
    }

    private func send(_ mail: LocationMail, to target: Int) { post(mail.encoded(), to: target) }

    private func post(_ bytes: [UInt8], to target: Int) {
        guard bytes.count <= shard.largestMail else {
            context.log.write(level: -1, "ringsipd: usrloc: a binding list of \(bytes.count) bytes is too large to "
                + "share with the other shards; they keep their previous copy")
            return
        }
        bytes.withUnsafeBytes { context.mail($0, from: self, to: target) }
    }

    func mailArrived(from sender: Int, _ bytes: UnsafeRawBufferPointer, on shard: Shard) {
        switch LocationMail.decode(bytes) {
        case .bindings(let aor, let bindings)?:
            table.replace(aor, with: bindings)
        case .register(let request, let then)?:
            // The asking shard's clock reading, so expiry times match the reply it already sent.
            let outcome = table.apply(request, now: then)
            // Whatever the outcome, every copy (the asker's too) gets the owner's list: the asker already mailed
            // its own result, which must not stay where the owner decided otherwise.
            replicate(request.aor, skipping: shard.index)
            if case .applied(true) = outcome { persist(request.aor) }
        case .remove(let aor, let contact)?:
            let removed = table.remove(aor, contact: contact)
            replicate(aor, skipping: shard.index)
            if removed { persist(aor) }
        case nil:
            context.log.write(level: -1, "ringsipd: usrloc: a record from shard \(sender) did not decode; ignored")
        }
        shard.counters.registrations = table.bindingCount
    }

    // MARK: - ShardService

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        writer?.serial.operationCompleted(id, result: result, flags: flags) ?? false
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        if writer?.serial.timerFired(payload: payload) == true { return true }
        guard OpsPacking.component(ofTimer: payload) == .location else { return false }
        table.sweep(now: shard.now)
        if shard.index == 0 { writer?.deleteLapsed() }
        shard.counters.registrations = table.bindingCount
        _ = shard.schedule(after: sweepInterval, payload: payload)
        return true
    }

    func stopping(on shard: Shard) {
        writer?.serial.runner.shutdown()
    }
}
