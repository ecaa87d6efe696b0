import Glibc
import Engine
import SIP
import Script
import TM

/// One shard's dialogs, and where every other shard's are.
///
/// Design: a dialog lives on the shard that created it (where its INVITE's transaction lives), and every request of
/// the dialog is routed there. Every shard knows which shard owns each Call-ID: the owner mails "Call-ID → shard" to
/// the others when it creates a dialog, and its removal when the dialog is freed. The `did` create_dialog adds to our
/// Record-Route (shard.slot.generation) finds the dialog on its shard without a search when the request comes back
/// with its Route, checked against the Call-ID (a did from before a restart may name another call's slot); it
/// decides the shard only for a Call-ID no shard has announced. A request that arrives elsewhere is handed to the
/// owner whole, in O(1), before any route runs (`RequestOwning`), so the dialog's state, values and profiles are
/// only ever touched by one thread. Profile sizes count every shard's dialogs: each change is mailed
/// to the others as a +1/−1, so `get_profile_size` reads a local number.
///
/// Persistence: with `db_mode` confirmed dialogs are kept in the `dialog` table and a restart takes them over
/// (`DialogDatabase`); without it they live as long as the process. A lapsed dialog created with "B" sends one BYE
/// to each end (`sendByes`), without retransmissions.
final class DialogService: ShardService, RequestOwning, MainRouteObserving {
    unowned let context: ScriptContext
    unowned let shard: Shard
    let table: DialogTable
    let defaultTimeout: Int
    /// Call-ID → shard of the dialogs other shards own.
    private var directory: [String: Int] = [:]
    /// Profile key → dialogs in it, on every shard; and profile name → dialogs in it with any value.
    private(set) var profileSizes: [String: Int] = [:]
    private(set) var profileNameSizes: [String: Int] = [:]
    /// The dialog the request being routed belongs to, and that request's `messageSerial`.
    private var matched: (serial: UInt64, slot: Int32)?
    /// How long an ended dialog stays readable (so its BYE's route and retransmissions see it) before it is freed.
    static let lingerMilliseconds: UInt64 = 5_000
    static let timerSlotBits = 32

    /// db_mode: the writer of this shard's dialogs (`DialogDatabase`).
    let writer: DialogWriter?
    let socketName: String
    /// Timer slot that announces the dialogs restored at start to the other shards (mail cannot go before every
    /// shard's services exist).
    static let announceSlot = Int(Int32.max)
    private var restored: [Int32] = []
    /// acc's service on this shard (a CDR is attached only when acc is loaded), found once: the services are made
    /// after this one's init.
    private lazy var acc: AccService? = context.services.lazy.compactMap { $0 as? AccService }.first
    /// The `messageSerial` of the route that last created a dialog.
    private var createdSerial: UInt64?

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        self.shard = shard
        defaultTimeout = configuration.integer("dialog", "default_timeout", default: 43_200)
        table = DialogTable(capacity: configuration.integer("dialog", "max_dialogs", default: 1_000_000))
        writer = DialogDatabase.mode(configuration) != 0 ? DialogWriter(context: context, shard: shard) : nil
        let local = shard.localAddresses.first
        socketName = local.map { "udp:\($0)" } ?? ""
        if writer != nil { restore() }
    }

    /// The rows read at start-up whose Call-ID hashes to this shard become its dialogs.
    private func restore() {
        guard let rows = DialogDatabase.loaded.withLock({ $0?.rows }) else { return }
        let wallNow = Int64(time(nil))
        for row in rows {
            // A row another program wrote may hold anything: only times within reach are taken.
            guard row.count >= 17, let callID = row[1], let start = row[13].flatMap({ Int64($0) }),
                  let deadline = row[14].flatMap({ Int64($0) }), deadline > wallNow, deadline - wallNow <= Int64(Int32.max),
                  start >= 0, start <= wallNow else { continue }
            var hasher = FNV1a64()
            for byte in callID.utf8 { hasher.combine(byte: byte) }
            guard Int(hasher.value % UInt64(shard.shardCount)) == shard.index,
                  let slot = table.create(callID: callID, callerTag: row[3] ?? "", timeoutSeconds: Int(deadline - wallNow),
                                          now: shard.now, unixMilliseconds: start * 1000) else { continue }
            var dialog = table[slot]
            dialog.state = row[12] == "4" ? .confirmed : .confirmedUnacknowledged
            dialog.fromURI = row[2] ?? ""
            dialog.toURI = row[4] ?? ""
            dialog.calleeTag = row[5] ?? ""
            dialog.callerCSeq = row[6].flatMap { UInt32($0) } ?? 0
            dialog.calleeCSeq = row[7].flatMap { UInt32($0) } ?? 0
            dialog.callerContact = row[8] ?? ""
            dialog.calleeContact = row[9] ?? ""
            dialog.callerAddress = NatPingService.address(ofContact: dialog.callerContact)
            dialog.calleeAddress = NatPingService.address(ofContact: dialog.calleeContact)
            dialog.startedUnixMilliseconds = start * 1000
            dialog.startedAt = shard.now &- UInt64(max(0, wallNow - start)) * 1000
            dialog.createdUnixMilliseconds = start * 1000
            DialogDatabase.decodeVars(row[15] ?? "", into: &dialog)
            dialog.byeOnTimeout = true
            dialog.profiles = (row[16] ?? "").split(separator: "\n").map(String.init)
            table[slot] = dialog
            for key in dialog.profiles { changeProfile(key, by: 1, mail: false) }
            arm(slot, after: UInt64(deadline - wallNow) * 1000)
            restored.append(slot)
        }
        if !restored.isEmpty {
            context.log.write(level: 2, "ringsipd: dialog: shard \(shard.index) took over \(restored.count) dialogs from the table")
            _ = shard.schedule(after: 0, payload: OpsPacking.timerPayload(.dialog, slot: Self.announceSlot, generation: 0))
        }
    }

    /// db_mode: writes a confirmed dialog's row (an unconfirmed one is written when its INVITE is answered).
    func persist(_ slot: Int32) {
        guard let writer, table[slot].state == .confirmedUnacknowledged || table[slot].state == .confirmed else { return }
        writer.write(table[slot], socket: socketName)
    }

    // MARK: - Which shard a request belongs to

    func owner(of message: SIPMessage, lent: Bool, on shard: Shard) -> Int? {
        guard message.hasToTag, let callIDSpan = message.callID else { return nil }
        let callIDBytes = message.bytes(of: callIDSpan)
        var local: Int32?
        let routeID = routeDialogID(message)
        if let id = routeID, id.shard == shard.index {
            // A did from before a restart may name a slot another call holds now: the Call-ID must agree. Compared
            // as bytes: a request that comes back with its Route costs no String.
            local = table.slot(of: id).flatMap { table[$0].callID.utf8.elementsEqual(callIDBytes) ? $0 : nil }
        }
        if local == nil {
            let callID = message.string(callIDSpan)
            local = table.find(callID: callID, fromTag: message.fromTagText, toTag: message.toTagText)
            if local == nil {
                // The Call-ID's owner, as its mail said, is the authority (a did may be from before a restart); a did
                // alone is followed only for a Call-ID no shard has announced. A datagram lent once is routed here.
                guard !lent else { return nil }
                if let owner = directory[callID] { return owner != shard.index ? owner : nil }
                if let id = routeID, id.shard != shard.index, id.shard < shard.shardCount { return id.shard }
                return nil
            }
        }
        guard let slot = local else { return nil }
        // Routed here: the request's meaning to its dialog, before the route sees `$DLG_status`.
        matched = (context.messageSerial &+ 1, slot)
        if let cseq = message.cseq?.number, let from = message.from {
            if table[slot].callerTag.utf8.elementsEqual(message.bytes(of: from.tag)) {
                table[slot].callerCSeq = max(table[slot].callerCSeq, cseq)
            } else {
                table[slot].calleeCSeq = max(table[slot].calleeCSeq, cseq)
            }
        }
        switch message.method {
        case .ack:
            if table[slot].state == .confirmedUnacknowledged {
                table[slot].state = .confirmed
                persist(slot)
            }
        case .bye:
            end(slot, .bye)
        default:
            break
        }
        return nil
    }

    /// The `did` URI parameter of the first Route, when it is one of ours.
    private func routeDialogID(_ message: SIPMessage) -> DialogID? {
        var routes = message.values(of: .route)
        guard let first = routes.next(), let route = try? SIPNameAddr.parse(message.bytes, first),
              let did = SIPURI.parameter("did", in: route.uri.parameters, of: message.bytes), did.isPresent else { return nil }
        return DialogID(Substring(message.string(did)))
    }

    // MARK: - The request's dialog

    /// The dialog of the request being routed: matched before its route, or created by it.
    func current() -> Int32? {
        guard let matched, matched.serial == context.messageSerial, table.dialogs.indices.contains(Int(matched.slot)),
              table[matched.slot].live else { return nil }
        return matched.slot
    }

    /// create_dialog(): a dialog for the initial INVITE being routed (the same one when called again), its `did`
    /// in our Record-Route, its Call-ID mailed to the other shards. Nil when the shard holds its maximum.
    func create(flags: String) -> Int32? {
        if let slot = current() { return slot }
        let message = context.message
        guard message.isRequest, message.method == .invite, !message.hasToTag, let callIDSpan = message.callID else {
            return nil
        }
        let callID = message.string(callIDSpan)
        guard let slot = table.create(callID: callID, callerTag: message.fromTagText, timeoutSeconds: defaultTimeout,
                                      now: shard.now, unixMilliseconds: WallClock.milliseconds()) else {
            context.log.write(level: -1, "ringsipd: dialog: the shard holds \(table.capacity) dialogs; no more")
            return nil
        }
        matched = (context.messageSerial, slot)
        createdSerial = context.messageSerial
        table[slot].byeOnTimeout = flags.contains("B")
        table[slot].fromURI = message.from.map { message.string($0.uri.span) } ?? ""
        table[slot].toURI = message.to.map { message.string($0.uri.span) } ?? ""
        var contacts = message.values(of: .contact)
        if let value = contacts.next(), let address = try? SIPNameAddr.parse(message.bytes, value) {
            table[slot].callerContact = message.string(address.uri.span)
        }
        table[slot].callerAddress = context.source
        table[slot].socket = context.socketIndex
        table[slot].callerCSeq = message.cseq?.number ?? 1
        arm(slot, after: UInt64(defaultTimeout) * 1000)
        context.reports |= DialogModule.reportBit
        if let did = context.arena.copy(";did=" + id(of: slot).text) { context.addRecordRouteParameter(did) }
        broadcast(.owner(callID: callID, shard: shard.index))
        return slot
    }

    /// A dialog the route created but left without a transaction (answered statelessly, or dropped) never sees an
    /// answer: it ends now, and its profiles with it.
    func mainRouteEnded(transaction: TransactionHandle?, on shard: Shard) {
        guard let created = createdSerial, created == context.messageSerial else { return }
        createdSerial = nil
        if transaction == nil, let slot = current() { end(slot, .rejected) }
    }

    func id(of slot: Int32) -> DialogID { DialogID(shard: shard.index, slot: slot, generation: table[slot].generation) }

    // MARK: - Answers and ends

    /// The dialog an initial INVITE created (its answer and acc's CDR find it so).
    private func slot(ofInitial invite: SIPMessage) -> Int32? {
        table.find(callID: invite.callIDText, fromTag: invite.fromTagText, toTag: "")
    }

    /// The INVITE's answer: a 2xx confirms the dialog, a negative final ends it.
    func answered(_ invite: SIPMessage, _ answer: TransactionAnswer) {
        guard let slot = slot(ofInitial: invite),
              table[slot].state.rawValue < DialogState.confirmedUnacknowledged.rawValue else { return }
        if answer.status < 300 {
            table.confirm(slot, calleeTag: String(decoding: answer.toTag, as: UTF8.self), now: shard.now,
                          unixMilliseconds: answer.unixMilliseconds)
            table[slot].calleeContact = String(decoding: answer.contact, as: UTF8.self)
            table[slot].calleeAddress = answer.source.port == 0 ? nil : answer.source
            persist(slot)
        } else {
            end(slot, .rejected)
        }
    }

    /// Attaches acc's CDR to the INVITE's dialog; false when the INVITE has none.
    func attachCDR(for invite: SIPMessage, _ record: AccRecord, backends: [AccBackend]) -> Bool {
        guard let slot = slot(ofInitial: invite), table[slot].state != .deleted else {
            return false
        }
        table[slot].cdr = record
        table[slot].cdrBackends = backends
        return true
    }

    /// Ends the dialog: its CDR is written (when it was answered), its profiles released; it is freed after the
    /// linger.
    func end(_ slot: Int32, _ reason: DialogEnd) {
        let wasConfirmed = table[slot].state == .confirmedUnacknowledged || table[slot].state == .confirmed
        guard table.end(slot) else { return }
        let dialog = table[slot]
        if wasConfirmed { writer?.delete(callID: dialog.callID, callerTag: dialog.callerTag) }
        // A dialog restored at start and not announced yet never counted on the other shards.
        let announced = !restored.contains(slot)
        restored.removeAll { $0 == slot }
        for key in dialog.profiles { changeProfile(key, by: -1, mail: announced) }
        table[slot].profiles = []
        if reason != .rejected, var record = dialog.cdr, dialog.startedAt > 0, let acc {
            let now = WallClock.milliseconds()
            let lasted = max(0, now - dialog.startedUnixMilliseconds)
            record.cdr = AccRecord.CDR(durationMilliseconds: lasted,
                                       setupMilliseconds: max(0, dialog.startedUnixMilliseconds - dialog.createdUnixMilliseconds),
                                       createdUnixMilliseconds: dialog.createdUnixMilliseconds)
            record.unixMilliseconds = dialog.startedUnixMilliseconds
            for backend in dialog.cdrBackends { acc.write(record, to: backend, table: nil) }
        }
        if reason == .timeout {
            context.log.write(level: 2, "ringsipd: dialog \(dialog.callID) lapsed after \(dialog.timeoutSeconds) s; ended")
            if dialog.byeOnTimeout && dialog.startedAt > 0 { sendByes(dialog) }
        }
        arm(slot, after: Self.lingerMilliseconds)
    }

    /// create_dialog("B"): BYE to each end, as the other end would send it — to its Contact, at the address its
    /// messages came from, with the tags the other way round and a CSeq above the one it last saw from the other
    /// end. Sent once, statelessly (the Via branch marks it as ours, so the 200s are dropped before any route); a
    /// Route set beyond this proxy is not kept, so the ends must be its neighbours.
    private func sendByes(_ dialog: Dialog) {
        if let address = dialog.callerAddress, !dialog.callerContact.isEmpty {
            sendBye(to: address, uri: dialog.callerContact, from: dialog.toURI, fromTag: dialog.calleeTag,
                    to: dialog.fromURI, toTag: dialog.callerTag, cseq: dialog.calleeCSeq &+ 1, dialog)
        }
        if let address = dialog.calleeAddress, !dialog.calleeContact.isEmpty {
            sendBye(to: address, uri: dialog.calleeContact, from: dialog.fromURI, fromTag: dialog.callerTag,
                    to: dialog.toURI, toTag: dialog.calleeTag, cseq: dialog.callerCSeq &+ 1, dialog)
        }
    }

    private var byeSerial = 0

    private func sendBye(to destination: SocketAddress, uri: String, from: String, fromTag: String, to: String,
                         toTag: String, cseq: UInt32, _ dialog: Dialog) {
        guard let local = shard.localAddress(ofSocket: dialog.socket) else { return }
        byeSerial += 1
        let transport = StreamHandle.isStream(dialog.socket) ? "TCP" : "UDP"
        shard.sendOwn(Array(("BYE \(uri) SIP/2.0\r\n"
            + "Via: SIP/2.0/\(transport) \(local);branch=\(ScriptHandler.ownRequestBranchPrefix)-dlg-\(shard.index)-\(byeSerial)\r\n"
            + "From: <\(from)>;tag=\(fromTag)\r\nTo: <\(to)>;tag=\(toTag)\r\nCall-ID: \(dialog.callID)\r\n"
            + "CSeq: \(cseq) BYE\r\nMax-Forwards: 70\r\nReason: SIP;cause=408;text=\"Dialog Timeout\"\r\n"
            + "Content-Length: 0\r\n\r\n").utf8), to: destination, preferring: dialog.socket)
    }

    private func arm(_ slot: Int32, after milliseconds: UInt64) {
        if let timer = table[slot].timer { shard.cancel(timer) }
        table[slot].timer = shard.schedule(after: milliseconds, payload: OpsPacking.timerPayload(
            .dialog, slot: Int(slot), generation: table[slot].generation))
    }

    /// `$DLG_timeout = n` (0 … 2^31-1): the dialog lapses n seconds from now (`timeoutSeconds` counts from its
    /// creation, so the remaining time and the row's deadline follow).
    func setTimeout(_ slot: Int32, seconds: Int) {
        guard table[slot].state != .deleted else { return }
        let elapsed = Int((shard.now &- table[slot].createdAt) / 1000)
        table[slot].timeoutSeconds = seconds + elapsed
        arm(slot, after: UInt64(seconds) * 1000)
        persist(slot)
    }

    func remainingTimeout(_ slot: Int32) -> Int {
        let dialog = table[slot]
        let deadline = dialog.createdAt &+ UInt64(max(dialog.timeoutSeconds, 0)) &* 1000
        return deadline > shard.now ? Int((deadline - shard.now + 999) / 1000) : 0
    }

    // MARK: - Profiles

    func setProfile(_ slot: Int32, key: String) {
        guard table[slot].state != .deleted, !table[slot].profiles.contains(key) else { return }
        table[slot].profiles.append(key)
        changeProfile(key, by: 1, mail: true)
        persist(slot)
    }

    func unsetProfile(_ slot: Int32, key: String) -> Bool {
        guard let index = table[slot].profiles.firstIndex(of: key) else { return false }
        table[slot].profiles.remove(at: index)
        changeProfile(key, by: -1, mail: true)
        persist(slot)
        return true
    }

    private func changeProfile(_ key: String, by delta: Int, mail: Bool) {
        profileSizes[key, default: 0] += delta
        if profileSizes[key] == 0 { profileSizes[key] = nil }
        let name = DialogProfiles.name(of: key)
        profileNameSizes[name, default: 0] += delta
        if profileNameSizes[name] == 0 { profileNameSizes[name] = nil }
        if mail { broadcast(.profile(key: key, delta: Int32(delta))) }
    }

    // MARK: - Mail between shards

    private func broadcast(_ mail: DialogMail) {
        guard shard.shardCount > 1 else { return }
        let bytes = mail.encoded()
        guard bytes.count <= shard.largestMail else { return }
        for target in 0..<shard.shardCount where target != shard.index {
            bytes.withUnsafeBytes { context.mail($0, from: self, to: target) }
        }
    }

    func mailArrived(from sender: Int, _ bytes: UnsafeRawBufferPointer, on shard: Shard) {
        switch DialogMail.decode(bytes) {
        case .owner(let callID, let owner)?: directory[callID] = owner
        case .gone(let callID)?: if directory[callID] == sender { directory[callID] = nil }
        case .profile(let key, let delta)?: changeProfile(key, by: Int(delta), mail: false)
        case nil: context.log.write(level: -1, "ringsipd: dialog: a record from shard \(sender) did not decode; ignored")
        }
    }

    // MARK: - ShardService

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        writer?.serial.operationCompleted(id, result: result, flags: flags) ?? false
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        if writer?.serial.timerFired(payload: payload) == true { return true }
        guard OpsPacking.component(ofTimer: payload) == .dialog else { return false }
        if Int(payload & 0xFFFF_FFFF) == Self.announceSlot {
            for slot in restored where table[slot].live {
                broadcast(.owner(callID: table[slot].callID, shard: shard.index))
                for key in table[slot].profiles { broadcast(.profile(key: key, delta: 1)) }
            }
            restored = []
            return true
        }
        let slot = Int32(truncatingIfNeeded: payload & 0xFFFF_FFFF)
        let generation = UInt16(truncatingIfNeeded: payload >> 32)
        guard table.dialogs.indices.contains(Int(slot)), table[slot].live, table[slot].generation == generation else {
            return true
        }
        table[slot].timer = nil
        if table[slot].state == .deleted {
            broadcast(.gone(callID: table[slot].callID))
            table.remove(slot)
        } else {
            end(slot, .timeout)
        }
        return true
    }

    func stopping(on shard: Shard) {
        if writer == nil {
            let open = table.dialogs.filter { $0.live && $0.state != .deleted && $0.cdr != nil && $0.startedAt > 0 }.count
            if open > 0 {
                context.log.write(level: -1, "ringsipd: dialog: \(open) calls under way end with the daemon on shard "
                    + "\(shard.index); their CDRs are not written (dialog's db_mode keeps them over a restart)")
            }
        }
        writer?.serial.runner.shutdown()
    }
}

/// Profile keys: the name, and the value after a separator no script value holds.
enum DialogProfiles {
    static func key(_ name: String, _ value: String?) -> String { name + "\u{1}" + (value ?? "") }
    static func name(of key: String) -> String { String(key.prefix { $0 != "\u{1}" }) }
}

/// What a dialog service mails the other shards.
enum DialogMail: Equatable {
    /// This shard owns the dialog with this Call-ID.
    case owner(callID: String, shard: Int)
    /// The dialog with this Call-ID was freed.
    case gone(callID: String)
    /// A profile key gained or lost a dialog.
    case profile(key: String, delta: Int32)

    /// Kind u8, then each string as length u16 + bytes, integers little-endian.
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func text(_ s: String) {
            let bytes = Array(s.utf8.prefix(65_535))
            out += [UInt8(bytes.count & 0xFF), UInt8(bytes.count >> 8)] + bytes
        }
        switch self {
        case .owner(let callID, let shard): out.append(1); text(callID); out.append(UInt8(truncatingIfNeeded: shard))
        case .gone(let callID): out.append(2); text(callID)
        case .profile(let key, let delta):
            out.append(3); text(key)
            withUnsafeBytes(of: delta.littleEndian) { out += $0 }
        }
        return out
    }

    static func decode(_ bytes: UnsafeRawBufferPointer) -> DialogMail? {
        var at = 1
        func text() -> String? {
            guard at + 2 <= bytes.count else { return nil }
            let count = Int(bytes[at]) | Int(bytes[at + 1]) << 8
            at += 2
            guard at + count <= bytes.count else { return nil }
            defer { at += count }
            return String(decoding: bytes[at..<(at + count)], as: UTF8.self)
        }
        guard let kind = bytes.first else { return nil }
        switch kind {
        case 1:
            guard let callID = text(), at < bytes.count else { return nil }
            return .owner(callID: callID, shard: Int(bytes[at]))
        case 2:
            return text().map { .gone(callID: $0) }
        case 3:
            guard let key = text(), at + 4 <= bytes.count else { return nil }
            var delta: Int32 = 0
            withUnsafeMutableBytes(of: &delta) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + 4)])) }
            return .profile(key: key, delta: Int32(littleEndian: delta))
        default:
            return nil
        }
    }
}
