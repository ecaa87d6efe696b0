import Engine

/// OpenSIPS' dialog states, as `$DLG_status` reads them.
enum DialogState: Int {
    case unconfirmed = 1
    case early = 2
    /// A 2xx answered the INVITE; its ACK has not been seen.
    case confirmedUnacknowledged = 3
    case confirmed = 4
    case deleted = 5
}

/// Why a dialog ended: its BYE, a negative answer to its INVITE, its timeout.
enum DialogEnd: Equatable {
    case bye
    case rejected
    case timeout
}

/// One call's dialog (RFC 3261 §12) as the proxy keeps it: who the two ends are, when it began and was answered,
/// the script's values and profiles, and what acc writes when it ends.
struct Dialog {
    var generation: UInt16 = 0
    var live = false
    var state = DialogState.unconfirmed
    var callID = ""
    /// The From tag of the INVITE (the caller's) and the To tag of its 2xx (the callee's).
    var callerTag = ""
    var calleeTag = ""
    /// Monotonic milliseconds and wall-clock milliseconds since the epoch.
    var createdAt: UInt64 = 0
    var createdUnixMilliseconds: Int64 = 0
    var startedAt: UInt64 = 0
    var startedUnixMilliseconds: Int64 = 0
    var timeoutSeconds = 0
    var timer: TimerHandle?
    var values: [String: String] = [:]
    /// Profile keys (`DialogProfiles.key`) the dialog counts in.
    var profiles: [String] = []
    /// acc's CDR, filled in from the INVITE when it was answered; written when the dialog ends.
    var cdr: AccRecord?
    var cdrBackends: [AccBackend] = []
    /// create_dialog's "B": a lapsed dialog sends BYE to both ends. What the BYEs need: each end's Contact and
    /// address, the From and To URIs, and the highest CSeq each end has used.
    var byeOnTimeout = false
    var fromURI = ""
    var toURI = ""
    var callerContact = ""
    var callerAddress: SocketAddress?
    var socket = 0
    var calleeContact = ""
    var calleeAddress: SocketAddress?
    var callerCSeq: UInt32 = 0
    var calleeCSeq: UInt32 = 0
}

/// A dialog's name outside its shard: shard, slot, generation. As the `did` parameter of the Record-Route we add,
/// hex `shard.slot.generation`, so an in-dialog request that comes back with its Route names the shard to hand it to.
struct DialogID: Equatable {
    var shard: Int
    var slot: Int32
    var generation: UInt16

    var text: String { "\(String(shard, radix: 16)).\(String(slot, radix: 16)).\(String(generation, radix: 16))" }

    init(shard: Int, slot: Int32, generation: UInt16) {
        self.shard = shard
        self.slot = slot
        self.generation = generation
    }

    init?(_ text: Substring) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let shard = Int(parts[0], radix: 16), let slot = Int32(parts[1], radix: 16),
              let generation = UInt16(parts[2], radix: 16), shard >= 0, slot >= 0 else { return nil }
        self.init(shard: shard, slot: slot, generation: generation)
    }
}

/// One shard's dialogs: slots reused with a generation, found by Call-ID (and tags, either way round).
/// - Invariant: used only on its shard's thread.
final class DialogTable {
    private(set) var dialogs: [Dialog] = []
    private var free: [Int32] = []
    private var byCallID: [String: [Int32]] = [:]
    let capacity: Int
    private(set) var live = 0

    init(capacity: Int) { self.capacity = capacity }

    /// A new unconfirmed dialog for an initial INVITE; nil when the shard holds `capacity` dialogs.
    func create(callID: String, callerTag: String, timeoutSeconds: Int, now: UInt64, unixMilliseconds: Int64) -> Int32? {
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
        } else {
            guard dialogs.count < capacity else { return nil }
            slot = Int32(dialogs.count)
            // A new slot's generations start anywhere, so a did from an earlier run of the daemon rarely names a
            // live dialog (and the Call-ID is checked when it does).
            dialogs.append(Dialog(generation: UInt16.random(in: 0...UInt16.max)))
        }
        let generation = dialogs[Int(slot)].generation &+ 1
        dialogs[Int(slot)] = Dialog(generation: generation, live: true, callID: callID, callerTag: callerTag,
                                    createdAt: now, createdUnixMilliseconds: unixMilliseconds,
                                    timeoutSeconds: timeoutSeconds)
        byCallID[callID, default: []].append(slot)
        live += 1
        return slot
    }

    subscript(slot: Int32) -> Dialog {
        get { dialogs[Int(slot)] }
        set { dialogs[Int(slot)] = newValue }
    }

    /// The live dialog `id` names (its generation still current).
    func slot(of id: DialogID) -> Int32? {
        guard id.slot < dialogs.count, dialogs[Int(id.slot)].live, dialogs[Int(id.slot)].generation == id.generation
        else { return nil }
        return id.slot
    }

    /// The dialog of a request with this Call-ID and tags, from either end: the caller's requests carry its tag
    /// in From, the callee's in To. An initial INVITE (no To tag) finds the dialog it created.
    func find(callID: String, fromTag: String, toTag: String) -> Int32? {
        guard let slots = byCallID[callID] else { return nil }
        for slot in slots {
            let d = dialogs[Int(slot)]
            if d.callerTag == fromTag && (toTag.isEmpty || d.calleeTag.isEmpty || d.calleeTag == toTag) { return slot }
            if d.callerTag == toTag && (d.calleeTag.isEmpty || d.calleeTag == fromTag) { return slot }
        }
        return nil
    }

    /// A 2xx answered the INVITE.
    func confirm(_ slot: Int32, calleeTag: String, now: UInt64, unixMilliseconds: Int64) {
        guard dialogs[Int(slot)].state.rawValue < DialogState.confirmedUnacknowledged.rawValue else { return }
        dialogs[Int(slot)].state = .confirmedUnacknowledged
        dialogs[Int(slot)].calleeTag = calleeTag
        dialogs[Int(slot)].startedAt = now
        dialogs[Int(slot)].startedUnixMilliseconds = unixMilliseconds
    }

    /// The dialog's state is deleted (it stays readable until `remove`); false when it had ended already.
    func end(_ slot: Int32) -> Bool {
        guard dialogs[Int(slot)].live, dialogs[Int(slot)].state != .deleted else { return false }
        dialogs[Int(slot)].state = .deleted
        return true
    }

    func remove(_ slot: Int32) {
        guard dialogs[Int(slot)].live else { return }
        let callID = dialogs[Int(slot)].callID
        byCallID[callID]?.removeAll { $0 == slot }
        if byCallID[callID]?.isEmpty == true { byCallID[callID] = nil }
        dialogs[Int(slot)] = Dialog(generation: dialogs[Int(slot)].generation)
        free.append(slot)
        live -= 1
    }
}
