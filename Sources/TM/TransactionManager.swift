import Engine
import Glibc
import SIP

/// What the script layer does at the points OpenSIPS runs script routes for a transaction.
public protocol TransactionUser: AnyObject {
    /// Every branch of `transaction` ended without a 2xx and it has a failure route: the route is due. It runs
    /// from the shard's loop, never inside this call (which comes from a timer or a response being handled):
    /// the user takes it with `takeDueFailureRoute`, runs it (it may add branches with `relay`, or reply) and
    /// calls `failureRouteEnded`, and the manager completes what it left undone with the best response.
    func failureRouteDue(transaction: TransactionHandle, manager: TransactionManager, on shard: any ShardIO)

    /// A branch of `transaction` passed `response` up (not a retransmission its machine absorbed, not a
    /// 100): run the script's reply routes on it before it is relayed — `route` is the transaction's
    /// `t_on_reply` route, -1 for none. `response` must be left parsed as it is (its header removals apply).
    func replyReceived(_ response: SIPMessage, route: Int, transaction: TransactionHandle, branch: Int,
                       manager: TransactionManager, on shard: any ShardIO) -> ReplyVerdict
}

/// What the reply routes decided about a branch's response.
public enum ReplyVerdict: Sendable {
    case relay
    /// `drop`: a provisional is not relayed (a final is: the transaction needs it).
    case drop
    /// An async() in a reply route took the response (a copy) to finish later: the manager does nothing more
    /// with it until `releaseHeldReply` hands it back, and keeps the transaction until then.
    case hold
}

/// One shard's transactions (RFC 3261 §16–17): creates server transactions for requests the script
/// relays, forwards branches, matches retransmissions, ACKs, CANCELs and responses, runs the machines' timers
/// on the shard's wheel, and picks the response to send upstream.
///
/// - Invariant: used only on its shard's thread; a transaction lives on the shard that created it, and a
///   response for it that arrives elsewhere is handed over by MSG_RING (its branch names the shard).
public final class TransactionManager {
    public let shardIndex: Int
    public var settings: TimerSettings
    let table: TransactionTable<ProxyTransaction>
    let store = MessageStore()
    let key: BranchKey
    let seed: UInt64
    let relay: SIPRelay
    public weak var user: (any TransactionUser)?
    /// Parses stored messages (requests to build ACK/CANCEL from, responses to forward).
    private let scratch = SIPMessage()
    /// Parses the other branches' 401/407 responses while `scratch` holds the one being forwarded.
    private let challengeScratch = SIPMessage()
    private let branchText: UnsafeMutableRawBufferPointer
    /// Responses for one of our branches that cannot be used (no CSeq, cannot be rebuilt to forward); also in
    /// the shard's counters line as `malformed_replies`. Replies that do not parse at all never get here:
    /// they are `parse_errors`.
    public private(set) var malformedReplies = 0
    public private(set) var strayReplies = 0

    public init(shardIndex: Int, capacity: Int, settings: TimerSettings, key: BranchKey, seed: UInt64, relay: SIPRelay) {
        self.shardIndex = shardIndex
        self.settings = settings
        table = TransactionTable(capacity: capacity)
        self.key = key
        self.seed = seed
        self.relay = relay
        branchText = .allocate(byteCount: 64, alignment: 8)
    }

    deinit { branchText.deallocate() }

    public var live: Int { table.live }
    /// Branches one transaction can have in all (parallel and serial forks together); stored inline.
    public static var maxBranches: Int { Branches.capacity }

    // MARK: - Requests before the script

    /// Handles what belongs to an existing transaction before any script runs: a retransmission (the last
    /// response is sent again), the ACK of a non-2xx final (absorbed), a CANCEL of a pending INVITE (200 to
    /// it, CANCEL to every branch). Returns true when the request was consumed.
    public func absorb(_ message: SIPMessage, from source: SocketAddress, arrivedOn socket: Int, on shard: any ShardIO) -> Bool {
        guard let id = ServerTransactionID(message, seed: seed) else { return false }
        let bytes = message.bytes
        if message.method == .cancel {
            guard let handle = table.lookup(id.hash, matches: { entry in
                id.cancels(entry.id, bytes: bytes, storedBytes: entry.request.bytes)
            }) else { return false }
            cancel(handle, answering: message, from: source, arrivedOn: socket, on: shard)
            return true
        }
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        guard let handle = table.lookup(id.hash, matches: { entry in
            id.matches(entry.id, bytes: bytes, storedBytes: entry.request.bytes, responseToTag: empty)
        }) else { return false }
        // The server side may have ended while a branch lives on: nothing to answer, just absorb.
        if table[handle].serverDone { return message.method != .ack || table[handle].inviteServer == nil }
        let now = shard.now
        if message.method == .ack {
            guard table[handle].inviteServer != nil else { return true }
            // An ACK on an accepted (2xx-answered) INVITE is end to end: the script routes it.
            if table[handle].inviteServer!.state == .accepted { return false }
            let actions = table[handle].inviteServer!.receivedAck(now: now)
            performServer(handle, actions, response: nil, on: shard)
            return true
        }
        let actions = table[handle].inviteServer != nil ? table[handle].inviteServer!.receivedRequest(now: now)
            : table[handle].nonInviteServer!.receivedRequest(now: now)
        performServer(handle, actions, response: nil, on: shard)
        return true
    }

    // MARK: - Creating transactions and branches (t_newtran, t_relay)

    public enum CreateResult {
        case created(TransactionHandle)
        /// The shard holds its maximum of live transactions: answer 503 with Retry-After.
        case full
        /// The request is too large to keep.
        case tooLarge
        /// ACKs never create transactions.
        case notAllowed
    }

    /// Creates the server transaction for a request the script took on; an INVITE gets 100 Trying at once
    /// (§16.2) so the caller stops retransmitting.
    public func create(_ message: SIPMessage, from source: SocketAddress, arrivedOn socket: Int,
                       sendTrying: Bool = true, on shard: any ShardIO) -> CreateResult {
        guard message.method != .ack, let id = ServerTransactionID(message, seed: seed) else { return .notAllowed }
        guard !table.isFull else { return .full }
        guard let request = store.store(UnsafeRawBufferPointer(rebasing: message.bytes[0..<message.length])) else {
            return .tooLarge
        }
        let isInvite = message.method == .invite
        var entry = ProxyTransaction(
            id: id, request: request, source: source, socket: socket,
            responseDestination: relay.responseDestination(message, from: source), method: message.method,
            inviteServer: isInvite ? InviteServerTransaction(settings: settings, transport: .unreliable) : nil,
            nonInviteServer: isInvite ? nil : NonInviteServerTransaction(settings: settings, transport: .unreliable),
            settings: settings)
        entry.requestURIStart = message.requestURIText.start
        entry.requestURICount = Int32(message.requestURIText.count)
        guard let handle = table.insert(entry, key: id.hash) else {
            store.release(request)
            return .full
        }
        shard.counters.transactions = table.live
        if isInvite && sendTrying { reply(handle, status: 100, reason: trying, to: message, on: shard) }
        return .created(handle)
    }

    /// The request that created the transaction, as received (for a failure route to work on).
    public func request(_ handle: TransactionHandle) -> (bytes: UnsafeRawBufferPointer, source: SocketAddress, socket: Int) {
        (table[handle].request.bytes, table[handle].source, table[handle].socket)
    }

    public func setFailureRoute(_ handle: TransactionHandle, _ route: Int) {
        guard table.contains(handle) else { return }
        table[handle].failureRoute = Int32(route)
    }

    public func setReplyRoute(_ handle: TransactionHandle, _ route: Int) {
        guard table.contains(handle) else { return }
        table[handle].replyRoute = Int32(route)
    }

    /// The index the next branch_route runs for (a branch held in async() keeps its place, so it is sent under
    /// the same index).
    public func nextBranchIndex(_ handle: TransactionHandle) -> Int {
        table.contains(handle) ? table[handle].branches.count : 0
    }

    public func replyCode(_ handle: TransactionHandle) -> Int? {
        table.contains(handle) ? table[handle].replyCode : nil
    }

    /// The Request-URI of the request that created the transaction (`$T_ruri`), valid while it lives.
    public func requestURI(_ handle: TransactionHandle) -> UnsafeRawBufferPointer? {
        guard table.contains(handle) else { return nil }
        let start = Int(table[handle].requestURIStart), count = Int(table[handle].requestURICount)
        return UnsafeRawBufferPointer(rebasing: table[handle].request.bytes[start..<start + count])
    }

    /// The timer settings of this transaction (`$T_fr_timeout`, `$T_fr_inv_timeout`).
    public func settings(_ handle: TransactionHandle) -> TimerSettings? {
        table.contains(handle) ? table[handle].settings : nil
    }

    /// Changes `fr_timeout` / `fr_inv_timeout` (milliseconds; nil leaves it) for this transaction only: its
    /// branches to come, and the machines of its branches so far, where the new value applies the next time
    /// that timer is armed (a running timer keeps its deadline).
    public func setTimeouts(_ handle: TransactionHandle, finalResponse: Int?, inviteFinalResponse: Int?) {
        guard table.contains(handle) else { return }
        if let finalResponse { table[handle].settings.finalResponseTimeout = finalResponse }
        if let inviteFinalResponse { table[handle].settings.finalResponseInviteTimeout = inviteFinalResponse }
        let settings = table[handle].settings
        for i in 0..<table[handle].branches.count {
            if table[handle].branches[i].invite != nil { table[handle].branches[i].invite!.settings = settings }
            if table[handle].branches[i].nonInvite != nil { table[handle].branches[i].nonInvite!.settings = settings }
        }
    }

    /// Keeps a copy of `bytes` (the script's serialized `$avp` values) with the transaction, replacing the
    /// previous copy; empty `bytes` drops it. False when it is larger than a store block.
    ///
    /// A route never views the transaction's copy while it runs: `takeAVPs` moved it out to the route first,
    /// so replacing it here (an `async()` saving the route's values midway) cannot pull bytes from under a
    /// view.
    @discardableResult
    public func storeAVPs(_ handle: TransactionHandle, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard table.contains(handle) else { return false }
        let copy = bytes.count > 0 ? store.store(bytes) : nil
        if let old = table[handle].avps { store.release(old) }
        table[handle].avps = copy
        return copy != nil || bytes.count == 0
    }

    /// Moves the transaction's `$avp` values out to the route that is about to run for it: the caller owns
    /// the block (its views stay valid whatever the transaction does meanwhile) and gives it back with
    /// `releaseBlock` when the route has ended; the route's own values come back with `storeAVPs`.
    public func takeAVPs(_ handle: TransactionHandle) -> StoredMessage? {
        guard table.contains(handle), let kept = table[handle].avps else { return nil }
        table[handle].avps = nil
        return kept
    }

    /// Returns a block moved out by `takeAVPs` or `takeSuspension` to the store it came from.
    public func releaseBlock(_ block: StoredMessage) {
        store.release(block)
    }

    /// Marks the transaction as waiting for an async operation and keeps the script's state for the resume
    /// route (a copy of `state`). False when it cannot be kept, or the transaction already waits for one.
    /// - Precondition: the state of an earlier suspension was moved out (`takeSuspension`).
    public func suspend(_ handle: TransactionHandle, state: UnsafeRawBufferPointer) -> Bool {
        // One suspension at a time: a failure route running while the request route waits must not overwrite
        // the state its resume route needs.
        guard table.contains(handle), !table[handle].suspended else { return false }
        assert(table[handle].suspension == nil, "a resumed suspension's state was not moved out before suspending again")
        guard let copy = store.store(state) else { return false }
        table[handle].suspension = copy
        table[handle].suspended = true
        return true
    }

    /// Ends the suspension and moves its state (kept by `suspend`) out to the resume route, which owns it
    /// from here and gives it back with `releaseBlock`; nil when the transaction is gone or not suspended.
    public func takeSuspension(_ handle: TransactionHandle) -> StoredMessage? {
        guard table.contains(handle), table[handle].suspended, let kept = table[handle].suspension else { return nil }
        table[handle].suspended = false
        table[handle].suspension = nil
        return kept
    }

    /// The resume route has ended without suspending again: the transaction may be freed if it ended meanwhile.
    public func resumeEnded(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), !table[handle].suspended else { return }
        freeIfDone(handle, on: shard)
    }

    /// Adds a branch: `message` (the request with the script's edits) forwarded to `destination` in a new
    /// client transaction. False when the branch cannot be made (too many branches, no route to the
    /// destination's family, a request that cannot be rebuilt).
    /// `reserved`: the place `holdBranch` kept for this branch (nil: a new place at the end).
    public func relay(_ handle: TransactionHandle, _ message: SIPMessage, from source: SocketAddress,
                      arrivedOn socketIndex: Int, to destination: SocketAddress, edits: RelayEdits,
                      into reserved: Int? = nil, on shard: any ShardIO) -> Bool {
        // No new branch once a final answer went upstream, or after a 6xx (§16.7 step 5: the search is over).
        // Nor after a CANCEL (OpenSIPS refuses it too): a held branch or a resumed failure route would ring a
        // callee the caller has hung up on.
        guard table.contains(handle), table[handle].finalSent < 200, !table[handle].cancelled, !hasGlobalFailure(handle),
              reserved.map({ $0 < table[handle].branches.count && table[handle].branches[$0].reserved })
                ?? (table[handle].branches.count < Branches.capacity),
              let socket = relay.socketToward(destination, preferring: socketIndex, on: shard) else { return false }
        let index = reserved ?? table[handle].branches.count
        let branch = TransactionBranch(shard: UInt8(shardIndex), slot: handle.slot, generation: handle.generation,
                                       branchIndex: UInt8(index))
        let length = branch.encode(key: key, into: branchText)
        let needed = min(message.length + 1024, MessageStore.largest)
        guard let block = store.allocate(needed) else { return false }
        guard let written = relay.buildRequest(message, from: source, socket: socket,
                                               branch: UnsafeRawBufferPointer(rebasing: branchText[0..<length]),
                                               edits: edits, into: block.bytes) else {
            store.release(StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0))
            return false
        }
        let forwarded = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: written)
        let settings = table[handle].settings
        let isInvite = table[handle].method == .invite
        var new = Branch(request: forwarded, destination: destination, socket: socket)
        new.invite = isInvite ? InviteClientTransaction(settings: settings, transport: .unreliable) : nil
        new.nonInvite = isInvite ? nil : NonInviteClientTransaction(settings: settings, transport: .unreliable)
        if reserved != nil { table[handle].branches[index] = new } else { _ = table[handle].branches.append(new) }
        let now = shard.now
        let actions = isInvite ? table[handle].branches[index].invite!.start(now: now)
            : table[handle].branches[index].nonInvite!.start(now: now)
        performClient(handle, index, actions, response: nil, on: shard)
        return true
    }

    /// Sends our own response upstream (`t_reply`, 100 Trying, 408/487/503 when the branches give none).
    @discardableResult
    /// `parsed`: the transaction's request already parsed (the message being routed), so it is not parsed again
    /// from the stored copy; nil when the caller has none (timers, CANCEL).
    public func reply(_ handle: TransactionHandle, status: Int, reason: UnsafeRawBufferPointer,
                      to parsed: SIPMessage? = nil, on shard: any ShardIO) -> Bool {
        guard table.contains(handle) else { return false }
        // Fields, not the whole entry: a ProxyTransaction with its branches is a few KiB to copy.
        let request = table[handle].request
        let original: SIPMessage
        if let parsed {
            original = parsed
        } else {
            guard (try? scratch.parse(request.bytes)) != nil else { return false }
            original = scratch
        }
        guard let block = store.allocate(1024 + request.count),
              let length = relay.buildReply(to: original, status: status, reason: reason, from: table[handle].source,
                                            into: block.bytes) else { return false }
        let response = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: length)
        respond(handle, status: status, response: response, on: shard)
        return true
    }

    // MARK: - Responses

    public enum ResponseDisposition: Equatable {
        /// Consumed by a transaction of this shard (or dropped as stale or malformed).
        case handled
        /// The branch belongs to a transaction of another shard.
        case handOff(Int)
        /// Not a branch of ours: a stateless relay (or a stray) — the caller decides.
        case notOurs
    }

    public func handleResponse(_ message: SIPMessage, on shard: any ShardIO) -> ResponseDisposition {
        guard let via = message.topVia,
              let branch = TransactionBranch.decode(message.bytes(of: via.branch), key: key) else { return .notOurs }
        guard Int(branch.shard) == shardIndex else { return .handOff(Int(branch.shard)) }
        guard let handle = table.handle(slot: branch.slot, generation: branch.generation),
              Int(branch.branchIndex) < table[handle].branches.count,
              table[handle].branches[Int(branch.branchIndex)].isSent else {
            strayReplies += 1
            shard.counters.dropped += 1
            return .handled
        }
        guard let cseq = message.cseq else {
            malformed(on: shard)
            return .handled
        }
        let index = Int(branch.branchIndex)
        let now = shard.now
        let code = message.statusCode
        if cseq.method == .cancel {
            guard table[handle].branches[index].cancel != nil, !table[handle].branches[index].cancelDone else {
                return .handled
            }
            let actions = table[handle].branches[index].cancel!.receivedResponse(code: code, now: now)
            performCancel(handle, index, actions, on: shard)
            return .handled
        }
        guard cseq.method == table[handle].method || (cseq.method == .other && table[handle].method == .other) else {
            strayReplies += 1
            return .handled
        }
        if table[handle].branches[index].machineDone { return .handled }
        table[handle].replyCode = code
        let actions = table[handle].branches[index].invite != nil
            ? table[handle].branches[index].invite!.receivedResponse(code: code, now: now)
            : table[handle].branches[index].nonInvite!.receivedResponse(code: code, now: now)
        performClient(handle, index, actions, response: message, on: shard)
        return .handled
    }

    // MARK: - Timers

    /// A TM timer fired (its payload carries the marker bit); false when the payload is not TM's.
    public func timerFired(payload: UInt64, on shard: any ShardIO) -> Bool {
        guard let (slot, generation, machine, timer) = TimerPayload.decode(payload) else { return false }
        guard let handle = table.handle(slot: slot, generation: generation) else { return true }
        let now = shard.now
        switch machine {
        case .server:
            guard table[handle].serverTimers.take(timer) != nil else { return true }
            let actions = table[handle].inviteServer != nil ? table[handle].inviteServer!.timerFired(timer, now: now)
                : table[handle].nonInviteServer!.timerFired(timer, now: now)
            performServer(handle, actions, response: nil, on: shard)
        case .branch(let b):
            guard b < table[handle].branches.count, table[handle].branches[b].timers.take(timer) != nil else { return true }
            let actions = table[handle].branches[b].invite != nil
                ? table[handle].branches[b].invite!.timerFired(timer, now: now)
                : table[handle].branches[b].nonInvite!.timerFired(timer, now: now)
            performClient(handle, b, actions, response: nil, on: shard)
        case .cancel(let b):
            guard b < table[handle].branches.count, table[handle].branches[b].cancelTimers.take(timer) != nil else {
                return true
            }
            let actions = table[handle].branches[b].cancel!.timerFired(timer, now: now)
            performCancel(handle, b, actions, on: shard)
        }
        return true
    }

    private func schedule(_ handle: TransactionHandle, _ machine: MachineID, _ timer: TransactionTimer,
                          _ milliseconds: Int, on shard: any ShardIO) -> TimerHandle? {
        shard.schedule(after: UInt64(max(milliseconds, 0)), payload: TimerPayload.encode(handle, machine, timer))
    }

    // MARK: - Performing machine actions

    private func performServer(_ handle: TransactionHandle, _ actions: TransactionActions,
                               response: StoredMessage?, on shard: any ShardIO) {
        for action in actions {
            guard table.contains(handle) else { return }
            switch action {
            case .sendResponse:
                guard let response else { continue }
                send(response, to: table[handle].responseDestination, socket: table[handle].socket, on: shard)
                if let old = table[handle].lastResponse { store.release(old) }
                table[handle].lastResponse = response
            case .sendResponseStatelessly:
                guard let response else { continue }
                send(response, to: table[handle].responseDestination, socket: table[handle].socket, on: shard)
                store.release(response)
            case .retransmitResponse:
                if let last = table[handle].lastResponse {
                    send(last, to: table[handle].responseDestination, socket: table[handle].socket, on: shard)
                }
            case .startTimer(let timer, let ms):
                let timerHandle = schedule(handle, .server, timer, ms, on: shard)
                if let old = table[handle].serverTimers.set(timer, timerHandle) { shard.cancel(old) }
            case .cancelTimer(let timer):
                if let old = table[handle].serverTimers.take(timer) { shard.cancel(old) }
            case .terminated:
                table[handle].serverDone = true
                freeIfDone(handle, on: shard)
            case .timeout, .transportError, .passUp, .sendRequest, .retransmitRequest, .sendAck, .sendCancel:
                // Timer H or a send failure: the caller will not ACK; nothing more to do upstream.
                continue
            }
        }
    }

    /// Sends `response` upstream through the server transaction (ours or a branch's, already rebuilt).
    private func respond(_ handle: TransactionHandle, status: Int, response: StoredMessage, on shard: any ShardIO) {
        // The server transaction may have ended (Timer L/H/J) while a branch lives on (Timer M, D): a late
        // 2xx still goes upstream statelessly (RFC 6026 §8.4: the proxy forwards every 2xx), anything else
        // has no one left to go to.
        if table[handle].serverDone {
            if status >= 200 && status < 300 {
                send(response, to: table[handle].responseDestination, socket: table[handle].socket, on: shard)
            }
            store.release(response)
            return
        }
        let now = shard.now
        if status >= 200 && status > table[handle].finalSent { table[handle].finalSent = status }
        let actions = table[handle].inviteServer != nil
            ? table[handle].inviteServer!.sendResponse(code: status, now: now)
            : table[handle].nonInviteServer!.sendResponse(code: status, now: now)
        let keeps = actions.contains(.sendResponse)
        performServer(handle, actions, response: response, on: shard)
        if !keeps && !actions.contains(.sendResponseStatelessly) { store.release(response) }
    }

    private func performClient(_ handle: TransactionHandle, _ index: Int, _ actions: TransactionActions,
                               response: SIPMessage?, on shard: any ShardIO) {
        for action in actions {
            guard table.contains(handle) else { return }
            switch action {
            case .sendRequest, .retransmitRequest:
                // Fields, not the branch: a Branch with its machines is hundreds of bytes to copy, per request sent.
                send(table[handle].branches[index].request, to: table[handle].branches[index].destination,
                     socket: table[handle].branches[index].socket, on: shard)
            case .sendAck:
                sendAck(handle, index, response: response, on: shard)
            case .sendCancel:
                startCancel(handle, index, on: shard)
            case .passUp:
                if let response { branchResponded(handle, index, response, on: shard) }
            case .startTimer(let timer, let ms):
                let timerHandle = schedule(handle, .branch(index), timer, ms, on: shard)
                if let old = table[handle].branches[index].timers.set(timer, timerHandle) { shard.cancel(old) }
            case .cancelTimer(let timer):
                if let old = table[handle].branches[index].timers.take(timer) { shard.cancel(old) }
            case .timeout:
                branchFailed(handle, index, status: 408, on: shard)
            case .transportError:
                branchFailed(handle, index, status: 503, on: shard)
            case .terminated:
                table[handle].branches[index].machineDone = true
                // A held final is this branch's answer: it comes with `releaseHeldReply`, not as a 408.
                if table[handle].branches[index].finalCode == 0 && !table[handle].branches[index].heldFinal {
                    branchFailed(handle, index, status: 408, on: shard)
                }
                freeIfDone(handle, on: shard)
            case .sendResponse, .sendResponseStatelessly, .retransmitResponse:
                continue
            }
        }
    }

    private func performCancel(_ handle: TransactionHandle, _ index: Int, _ actions: TransactionActions, on shard: any ShardIO) {
        for action in actions {
            guard table.contains(handle) else { return }
            switch action {
            case .sendRequest, .retransmitRequest:
                if let cancel = table[handle].branches[index].cancelRequest {
                    send(cancel, to: table[handle].branches[index].destination,
                         socket: table[handle].branches[index].socket, on: shard)
                }
            case .startTimer(let timer, let ms):
                let timerHandle = schedule(handle, .cancel(index), timer, ms, on: shard)
                if let old = table[handle].branches[index].cancelTimers.set(timer, timerHandle) { shard.cancel(old) }
            case .cancelTimer(let timer):
                if let old = table[handle].branches[index].cancelTimers.take(timer) { shard.cancel(old) }
            case .terminated:
                table[handle].branches[index].cancelDone = true
                freeIfDone(handle, on: shard)
            default:
                continue
            }
        }
    }

    // MARK: - Proxy core (§16.7)

    /// A response passed up by a branch's client transaction.
    private func branchResponded(_ handle: TransactionHandle, _ index: Int, _ message: SIPMessage, on shard: any ShardIO) {
        let code = message.statusCode
        // 100 is hop by hop (§16.7 step 5): never relayed, so no reply route needs to see it.
        if code == 100 { return }
        // While a final of this branch is held, what else it sends (a 2xx retransmission) is dropped: the held
        // one is relayed when its resume route ends, and a UAS sends its 2xx again until it gets the ACK.
        if table[handle].branches[index].heldFinal { return }
        if let user {
            let verdict = user.replyReceived(message, route: Int(table[handle].replyRoute), transaction: handle,
                                             branch: index, manager: self, on: shard)
            guard table.contains(handle) else { return }
            switch verdict {
            case .relay: break
            case .drop: if code < 200 { return }
            case .hold:
                // Counted by `holdReply` when the route's async() took it.
                if code >= 200 { table[handle].branches[index].heldFinal = true }
                return
            }
        }
        proxyResponse(handle, index, message, on: shard)
    }

    /// A response a reply route held (`ReplyVerdict.hold`) comes back after its resume route: `relay` false
    /// drops a provisional; a final always goes on to the proxy core. `message` is the response as the
    /// route left it (parsed, its header removals marked).
    /// nil: the response could not be read back (a held final then counts as the branch failing, 500).
    public func releaseHeldReply(_ handle: TransactionHandle, branch index: Int, _ message: SIPMessage?, relay: Bool,
                                 on shard: any ShardIO) {
        guard table.contains(handle), table[handle].heldReplies > 0 else { return }
        // Still counted while it is processed: relaying it may end the server transaction, and with the branch's
        // machine over already the transaction would be freed under us.
        if index < table[handle].branches.count {
            if let message {
                let code = message.statusCode
                if code >= 200 { table[handle].branches[index].heldFinal = false }
                if relay || code >= 200 { proxyResponse(handle, index, message, on: shard) }
            } else if table[handle].branches[index].heldFinal {
                table[handle].branches[index].heldFinal = false
                branchFailed(handle, index, status: 500, on: shard)
            }
        }
        guard table.contains(handle) else { return }
        table[handle].heldReplies -= 1
        freeIfDone(handle, on: shard)
    }

    /// The resume route of a held response held it again (a chained async()): its new hold counted it, so the
    /// old count goes.
    public func replyHeldAgain(_ handle: TransactionHandle) {
        guard table.contains(handle), table[handle].heldReplies > 0 else { return }
        table[handle].heldReplies -= 1
    }

    /// The live transaction in `slot` with `generation` (a handle carried through a continuation's payload).
    public func handle(slot: UInt32, generation: UInt16) -> TransactionHandle? {
        table.handle(slot: slot, generation: generation)
    }

    /// Whether `handle` still names a live transaction.
    public func isLive(_ handle: TransactionHandle) -> Bool { table.contains(handle) }

    /// Whether a CANCEL reached the transaction.
    public func wasCancelled(_ handle: TransactionHandle) -> Bool { table.contains(handle) && table[handle].cancelled }

    /// A reply route's async() took the response being handled (it returns `ReplyVerdict.hold` next): the
    /// transaction waits for `releaseHeldReply`. Counted here, before the operation starts, so that even a
    /// completion delivered at once finds it. False when the transaction is gone or cannot hold more.
    public func holdReply(_ handle: TransactionHandle) -> Bool {
        guard canHold(handle) else { return false }
        table[handle].heldReplies += 1
        return true
    }

    /// After a route of the transaction ended (the request route, or a resume route) without suspending it:
    /// a transaction left with no answer and nothing in progress gets one now — the best of its branches when
    /// all are final (a failure route suspended), or a 500 with `reason` when none was sent at all.
    public func answerIfUnanswered(_ handle: TransactionHandle, reason: UnsafeRawBufferPointer, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].finalSent < 200, !table[handle].suspended,
              table[handle].heldBranches == 0, table[handle].failureRouteDue < 0 else { return }
        if table[handle].sentBranchCount == 0 {
            reply(handle, status: 500, reason: reason, on: shard)
        } else if table[handle].allBranchesFinal {
            sendBestResponse(handle, on: shard)
        }
    }

    /// Whether one more response (or branch) of the transaction can be held for an async() in a reply (or
    /// branch) route.
    public func canHold(_ handle: TransactionHandle) -> Bool {
        table.contains(handle) && table[handle].heldReplies < UInt8.max && table[handle].heldBranches < UInt8.max
    }

    /// A branch_route took its branch into async(): it is not sent yet, its place (index) is kept for it, and
    /// the transaction's answer waits for it until `releaseHeldBranch`. The place, or nil when the transaction is
    /// gone, answered, cancelled, or has no room for another branch.
    public func holdBranch(_ handle: TransactionHandle) -> Int? {
        guard canHold(handle), table[handle].finalSent < 200, !table[handle].cancelled,
              table[handle].branches.count < Branches.capacity else { return nil }
        let index = table[handle].branches.count
        _ = table[handle].branches.append(.placeholder())
        table[handle].heldBranches += 1
        return index
    }

    /// A held branch is settled: the script sent it into its place (`relay(…, into: index)` before this) or
    /// gave it up (its place is abandoned). When it was the last thing the transaction waited for, the answer
    /// is chosen now — a transaction with no branch sent at all gets a 500.
    public func releaseHeldBranch(_ handle: TransactionHandle, branch index: Int, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].heldBranches > 0 else { return }
        table[handle].heldBranches -= 1
        if index < table[handle].branches.count && table[handle].branches[index].reserved {
            table[handle].branches[index].reserved = false
            table[handle].branches[index].abandoned = true
            table[handle].branches[index].machineDone = true
        }
        if table[handle].heldBranches == 0 && table[handle].finalSent < 200 && !table[handle].suspended
            && table[handle].failureRouteDue < 0 {
            if table[handle].sentBranchCount == 0 {
                reply(handle, status: 500, reason: noBranchReason, on: shard)
            } else {
                branchesSettled(handle, on: shard)
            }
        }
        freeIfDone(handle, on: shard)
    }

    /// §16.7 steps 5–10 for one response the reply routes let through.
    private func proxyResponse(_ handle: TransactionHandle, _ index: Int, _ message: SIPMessage, on shard: any ShardIO) {
        let code = message.statusCode
        if code < 200 {
            forwardUpstream(handle, message, status: code, on: shard)
            return
        }
        if code < 300 {
            if table[handle].branches[index].finalCode == 0 { table[handle].branches[index].finalCode = code }
            forwardUpstream(handle, message, status: code, on: shard)
            guard table.contains(handle) else { return }
            // §16.7 step 10: a 2xx ends the others.
            for other in 0..<table[handle].branches.count where other != index {
                cancelBranch(handle, other, on: shard)
            }
            return
        }
        guard table[handle].branches[index].finalCode == 0 else { return }
        table[handle].branches[index].finalCode = code
        if let kept = store.store(UnsafeRawBufferPointer(rebasing: message.bytes[0..<message.length])) {
            table[handle].branches[index].response = kept
        }
        if code >= 600 {
            // §16.7 step 5: a 6xx decides the answer; the other branches are cancelled rather than awaited.
            for other in 0..<table[handle].branches.count where other != index {
                cancelBranch(handle, other, on: shard)
            }
        }
        branchesSettled(handle, on: shard)
    }

    /// A branch ended without a response of its own: Timer B/F/C or fr_timeout (408), a send failure (503).
    private func branchFailed(_ handle: TransactionHandle, _ index: Int, status: Int, on shard: any ShardIO) {
        guard table[handle].branches[index].finalCode == 0 else { return }
        table[handle].branches[index].finalCode = status
        branchesSettled(handle, on: shard)
    }

    /// When every branch has a final answer and none was a 2xx: run the failure route if there is one
    /// (it may add branches), else send the best response upstream (§16.7 step 6).
    private func branchesSettled(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].allBranchesFinal, table[handle].finalSent < 200,
              table[handle].failureRouteDue < 0 else { return }
        // `$T_reply_code` / `t_check_status` in failure_route see the answer that would go upstream.
        if let best = bestBranch(handle) { table[handle].replyCode = table[handle].branches[best].finalCode }
        let route = table[handle].failureRoute
        if route >= 0 && !table[handle].cancelled, let user {
            // A failure route runs once; t_on_failure inside it arms the next one.
            table[handle].failureRoute = -1
            table[handle].failureRouteDue = route
            table[handle].branchesBeforeFailureRoute = UInt8(table[handle].branches.count)
            user.failureRouteDue(transaction: handle, manager: self, on: shard)
            return
        }
        sendBestResponse(handle, on: shard)
    }

    /// The failure route that is due for `handle`, taken to run now; nil when none is (the transaction ended).
    public func takeDueFailureRoute(_ handle: TransactionHandle) -> Int? {
        guard table.contains(handle), table[handle].failureRouteDue >= 0 else { return nil }
        return Int(table[handle].failureRouteDue)
    }

    /// The failure route has run: new branches (sent or held) or a suspension answer later, a reply it sent
    /// stands; otherwise the best response goes upstream now (§16.7 step 6).
    public func failureRouteEnded(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].failureRouteDue >= 0 else { return }
        table[handle].failureRouteDue = -1
        if table[handle].branches.count > Int(table[handle].branchesBeforeFailureRoute) || table[handle].heldBranches > 0
            || table[handle].suspended || table[handle].finalSent >= 200 {
            freeIfDone(handle, on: shard)
            return
        }
        sendBestResponse(handle, on: shard)
    }

    private func hasGlobalFailure(_ handle: TransactionHandle) -> Bool {
        for i in 0..<table[handle].branches.count where table[handle].branches[i].finalCode >= 600 { return true }
        return false
    }

    private func bestBranch(_ handle: TransactionHandle) -> Int? {
        BestResponse.select(count: table[handle].branches.count, code: { table[handle].branches[$0].finalCode },
                            received: { table[handle].branches[$0].response != nil })
    }

    /// Sends the answer `BestResponse` selects: the branch's own response (a 401/407 with every branch's
    /// challenges, §16.7 step 7), or ours for a branch that had none — 487 after a CANCEL, 503 after a send
    /// failure, else 408.
    private func sendBestResponse(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard let best = bestBranch(handle) else {
            reply(handle, status: 500, reason: noBranch, on: shard)
            return
        }
        let code = table[handle].branches[best].finalCode
        if table[handle].branches[best].abandoned {
            // Only places of branches never sent are left: nothing was tried.
            reply(handle, status: table[handle].cancelled ? 487 : 500,
                  reason: table[handle].cancelled ? terminatedReason : noBranchReason, on: shard)
        } else if code == 503 && table[handle].branches[best].response != nil {
            // §16.7 step 6: a downstream 503 would tell the caller that *this* proxy is unavailable.
            reply(handle, status: 500, reason: serverError, on: shard)
        } else if let stored = table[handle].branches[best].response, (try? scratch.parse(stored.bytes)) != nil {
            let challenges = BestResponse.mergesChallenges(code) ? collectChallenges(handle, except: best) : nil
            forwardUpstream(handle, scratch, status: code, appending: challenges?.bytes, on: shard)
            if let challenges { store.release(challenges) }
        } else if table[handle].cancelled {
            reply(handle, status: 487, reason: terminatedReason, on: shard)
        } else if code == 503 {
            reply(handle, status: 503, reason: unavailable, on: shard)
        } else if code == 500 {
            reply(handle, status: 500, reason: serverError, on: shard)
        } else {
            reply(handle, status: 408, reason: timeoutReason, on: shard)
        }
    }

    /// The WWW-Authenticate and Proxy-Authenticate lines of every other branch's 401/407, in branch order, in a
    /// store block the caller releases; nil when there are none. A line that does not fit is left out.
    private func collectChallenges(_ handle: TransactionHandle, except chosen: Int) -> StoredMessage? {
        guard let block = store.allocate(4096) else { return nil }
        var used = 0
        for i in 0..<table[handle].branches.count where i != chosen {
            let branch = table[handle].branches[i]
            guard BestResponse.mergesChallenges(branch.finalCode), let response = branch.response,
                  (try? challengeScratch.parse(response.bytes)) != nil else { continue }
            for h in 0..<challengeScratch.headerCount {
                let field = challengeScratch.header(at: h)
                guard field.kind == .wwwAuthenticate || field.kind == .proxyAuthenticate else { continue }
                let line = challengeScratch.bytes(of: field.line)
                guard line.count <= block.bytes.count - used else { continue }
                UnsafeMutableRawBufferPointer(rebasing: block.bytes[used..<used + line.count]).copyMemory(from: line)
                used += line.count
            }
        }
        let collected = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: used)
        if used == 0 {
            store.release(collected)
            return nil
        }
        return collected
    }

    /// Relays a branch's response upstream: our Via removed, sent through the server transaction.
    private func forwardUpstream(_ handle: TransactionHandle, _ message: SIPMessage, status: Int,
                                 appending headers: UnsafeRawBufferPointer? = nil, on shard: any ShardIO) {
        var options = SIPForwardingOptions()
        options.appendedHeaders = headers
        guard let block = store.allocate(message.length + (headers?.count ?? 0)) else {
            malformed(on: shard)
            return
        }
        guard let length = try? message.writeForwardedResponse(into: block.bytes, options) else {
            store.release(StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0))
            malformed(on: shard)
            return
        }
        respond(handle, status: status,
                response: StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: length),
                on: shard)
    }

    // MARK: - CANCEL and ACK

    /// A CANCEL for a pending INVITE (§16.10): 200 for the CANCEL itself, a CANCEL to every branch; the
    /// INVITE is answered when its branches answer (487), or 487 by us if none can.
    private func cancel(_ handle: TransactionHandle, answering message: SIPMessage, from source: SocketAddress,
                        arrivedOn socket: Int, on shard: any ShardIO) {
        relay.reply(to: message, status: 200, reason: okReason, from: source, arrivedOn: socket, on: shard)
        guard !table[handle].cancelled, table[handle].finalSent < 200 else { return }
        table[handle].cancelled = true
        // Nothing sent yet (no branch, or only held ones, which will not be sent now): answered at once.
        if table[handle].sentBranchCount == 0 {
            reply(handle, status: 487, reason: terminatedReason, on: shard)
            return
        }
        for i in 0..<table[handle].branches.count { cancelBranch(handle, i, on: shard) }
    }

    private func cancelBranch(_ handle: TransactionHandle, _ index: Int, on shard: any ShardIO) {
        // A branch whose final answer a reply route holds has answered: nothing to cancel (its machine may
        // have ended already).
        guard table.contains(handle), table[handle].branches[index].invite != nil,
              table[handle].branches[index].finalCode == 0, !table[handle].branches[index].heldFinal,
              !table[handle].branches[index].machineDone else { return }
        let actions = table[handle].branches[index].invite!.cancel(now: shard.now)
        performClient(handle, index, actions, response: nil, on: shard)
    }

    private func startCancel(_ handle: TransactionHandle, _ index: Int, on shard: any ShardIO) {
        guard table[handle].branches[index].cancel == nil else { return }
        let branch = table[handle].branches[index]
        guard (try? scratch.parse(branch.request.bytes)) != nil, let block = store.allocate(branch.request.count),
              let length = RequestBuilders.writeCancel(request: scratch, into: block.bytes) else { return }
        table[handle].branches[index].cancelRequest = StoredMessage(block: block.bytes.baseAddress!,
                                                                    sizeClass: block.sizeClass, count: length)
        table[handle].branches[index].cancel = NonInviteClientTransaction(settings: table[handle].settings,
                                                                          transport: .unreliable)
        table[handle].branches[index].cancelDone = false
        let actions = table[handle].branches[index].cancel!.start(now: shard.now)
        performCancel(handle, index, actions, on: shard)
    }

    /// The hop-by-hop ACK for a branch's non-2xx final (§17.1.1.3): built once, resent for retransmissions.
    private func sendAck(_ handle: TransactionHandle, _ index: Int, response: SIPMessage?, on shard: any ShardIO) {
        let branch = table[handle].branches[index]
        if branch.ack == nil, let response {
            // `response` is parsed in its receive buffer; the request is parsed into the scratch message.
            guard (try? scratch.parse(branch.request.bytes)) != nil, let block = store.allocate(branch.request.count + 256),
                  let length = RequestBuilders.writeAck(request: scratch, response: response, into: block.bytes) else {
                return
            }
            table[handle].branches[index].ack = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass,
                                                              count: length)
        }
        if let ack = table[handle].branches[index].ack { send(ack, to: branch.destination, socket: branch.socket, on: shard) }
    }

    // MARK: - Plumbing

    private func malformed(on shard: any ShardIO) {
        malformedReplies += 1
        shard.counters.malformedReplies += 1
        shard.counters.dropped += 1
    }

    private func send(_ message: StoredMessage, to destination: SocketAddress, socket: Int, on shard: any ShardIO) {
        guard let out = shard.makeDatagram(), message.count <= out.buffer.count else {
            shard.counters.dropped += 1
            return
        }
        out.buffer.copyMemory(from: message.bytes)
        shard.send(out, length: message.count, to: destination, socketIndex: socket)
    }

    /// Frees the transaction once its server machine and every branch's machines have terminated.
    private func freeIfDone(_ handle: TransactionHandle, on shard: any ShardIO) {
        // A suspended transaction (or one with a held reply) waits for its resume route even when it has
        // ended (a CANCEL answered it): the route still runs, and t_was_cancelled() tells it.
        guard table.contains(handle), table[handle].serverDone, !table[handle].suspended,
              table[handle].heldReplies == 0, table[handle].heldBranches == 0,
              table[handle].failureRouteDue < 0 else { return }
        for i in 0..<table[handle].branches.count where !table[handle].branches[i].done { return }
        var entry = table.remove(handle)
        release(&entry, on: shard)
        shard.counters.transactions = table.live
    }

    private func release(_ entry: inout ProxyTransaction, on shard: (any ShardIO)?) {
        store.release(entry.request)
        if let last = entry.lastResponse { store.release(last) }
        if let avps = entry.avps { store.release(avps) }
        if let suspension = entry.suspension { store.release(suspension) }
        entry.serverTimers.takeAll { timer in shard?.cancel(timer) }
        for i in 0..<entry.branches.count {
            var branch = entry.branches[i]
            if branch.reserved || branch.abandoned { continue }  // a place, not a branch: nothing stored
            store.release(branch.request)
            if let ack = branch.ack { store.release(ack) }
            if let cancel = branch.cancelRequest { store.release(cancel) }
            if let response = branch.response { store.release(response) }
            branch.timers.takeAll { timer in shard?.cancel(timer) }
            branch.cancelTimers.takeAll { timer in shard?.cancel(timer) }
        }
    }

    /// Releases every transaction (the shard is stopping). `counters.transactions` keeps the number that
    /// were live, so the exit report still shows what a run left behind.
    public func removeAll(on shard: any ShardIO) {
        table.removeAll { _, entry in
            var entry = entry
            release(&entry, on: shard)
        }
    }

    public var storedBlocks: Int { store.blocksInUse }
    public var reservedBytes: Int { store.reservedBytes }
}

nonisolated(unsafe) private let trying = permanent("Trying")
nonisolated(unsafe) private let okReason = permanent("OK")
nonisolated(unsafe) private let terminatedReason = permanent("Request Terminated")
nonisolated(unsafe) private let timeoutReason = permanent("Request Timeout")
nonisolated(unsafe) private let unavailable = permanent("Service Unavailable")
nonisolated(unsafe) private let noBranch = permanent("No Branch Answered")
nonisolated(unsafe) private let serverError = permanent("Server Internal Error")

private func permanent(_ text: String) -> UnsafeRawBufferPointer {
    let bytes = Array(text.utf8)
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
    storage.copyBytes(from: bytes)
    return UnsafeRawBufferPointer(storage)
}
nonisolated(unsafe) private let noBranchReason = permanent("No Branch Sent")
