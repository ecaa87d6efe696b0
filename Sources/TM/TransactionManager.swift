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

    /// Whether a branch's responses have reply routes to run (`route`: the transaction's `t_on_reply` route, -1
    /// for none). When they do, each response waits for them, held like a response an async() took.
    func wantsReplyRoutes(route: Int) -> Bool

    /// A branch of `transaction` passed `response` up (not a retransmission its machine absorbed, not a 100)
    /// and the reply routes are due: the user keeps a copy and runs them from the shard's loop, never inside
    /// this call (which comes from the response being handled); then it gives the response back with
    /// `releaseHeldReply` (relayed or dropped, as the routes decided) or `replyHeldAgain` (an async() in them
    /// took it). False when it could not keep it: the response is relayed without its routes.
    func replyRouteDue(_ response: SIPMessage, route: Int, transaction: TransactionHandle, branch: Int,
                       manager: TransactionManager, on shard: any ShardIO) -> Bool

    /// `transaction` sent its first final response upstream (`response`: as sent, relayed or our own), when
    /// `reportsAnswers` is set. The user copies what it needs and acts from the shard's loop, never inside this
    /// call; the transaction is still live then (a final starts Timer G/J/L, which outlive the loop turn).
    func transactionAnswered(_ transaction: TransactionHandle, status: Int, response: UnsafeRawBufferPointer,
                             manager: TransactionManager, on shard: any ShardIO)
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
    /// tm's `auto_100trying`: whether a new INVITE transaction answers 100 Trying by itself (RFC 3261 §16.2).
    public var sendsTrying = true
    /// Whether `TransactionUser.transactionAnswered` is called (a module that reports answers, acc, is loaded).
    public var reportsAnswers = false
    public weak var user: (any TransactionUser)?
    /// Parses stored messages (requests to build ACK/CANCEL from, responses to forward).
    let scratch = SIPMessage()
    /// Parses the other branches' 401/407 responses while `scratch` holds the one being forwarded.
    let challengeScratch = SIPMessage()
    let branchText: UnsafeMutableRawBufferPointer
    /// Responses for one of our branches that cannot be used (no CSeq, cannot be rebuilt to forward); also in
    /// the shard's counters line as `malformed_replies`. Replies that do not parse at all never get here:
    /// they are `parse_errors`.
    public private(set) var malformedReplies = 0
    public private(set) var strayReplies = 0
    /// Whether the last `relay` was refused because the forwarded request is larger than a datagram the shard
    /// can send: `t_relay` answers 513 Message Too Large.
    public private(set) var lastRelayTooLarge = false

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
    /// `forceRport`: the script called force_rport() — answers go to the source port (RFC 3581 §4), ours and
    /// relayed, as if the Via had asked.
    public func create(_ message: SIPMessage, from source: SocketAddress, arrivedOn socket: Int,
                       sendTrying: Bool = true, forceRport: Bool = false, on shard: any ShardIO) -> CreateResult {
        guard message.method != .ack, let id = ServerTransactionID(message, seed: seed) else { return .notAllowed }
        guard !table.isFull else {
            shard.counters.tableFull += 1
            return .full
        }
        guard let request = store.store(UnsafeRawBufferPointer(rebasing: message.bytes[0..<message.length])) else {
            return .tooLarge
        }
        let isInvite = message.method == .invite
        var entry = ProxyTransaction(
            id: id, request: request, source: source, socket: socket,
            responseDestination: relay.responseDestination(message, from: source, forceRport: forceRport),
            method: message.method,
            inviteServer: isInvite ? InviteServerTransaction(settings: settings, transport: transportKind(socket)) : nil,
            nonInviteServer: isInvite ? nil : NonInviteServerTransaction(settings: settings, transport: transportKind(socket)),
            settings: settings)
        entry.forceRport = forceRport
        entry.requestURIStart = message.requestURIText.start
        entry.requestURICount = Int32(message.requestURIText.count)
        guard let handle = table.insert(entry, key: id.hash) else {
            store.release(request)
            shard.counters.tableFull += 1
            return .full
        }
        shard.counters.transactions = table.live
        if isInvite && sendTrying && sendsTrying { reply(handle, status: 100, reason: trying, to: message, on: shard) }
        return .created(handle)
    }

    /// Adds a branch: `message` (the request with the script's edits) forwarded to `destination` in a new
    /// client transaction. False when the branch cannot be made (too many branches, no route to the
    /// destination's family, a request that cannot be rebuilt).
    /// `reserved`: the place `holdBranch` kept for this branch (nil: a new place at the end). `chosen`: the socket to
    /// send from, when the caller knows it (a TCP connection a callee registered over).
    public func relay(_ handle: TransactionHandle, _ message: SIPMessage, from source: SocketAddress,
                      arrivedOn socketIndex: Int, to destination: SocketAddress, transport: SIPTransport = .udp,
                      socket chosen: Int? = nil, edits: RelayEdits, into reserved: Int? = nil,
                      on shard: any ShardIO) -> Bool {
        lastRelayTooLarge = false
        // No new branch once a final answer went upstream, or after a 6xx (§16.7 step 5: the search is over).
        // Nor after a CANCEL (OpenSIPS refuses it too): a held branch or a resumed failure route would ring a
        // callee the caller has hung up on.
        guard table.contains(handle), table[handle].finalSent < 200, !table[handle].cancelled, !hasGlobalFailure(handle),
              reserved.map({ $0 < table[handle].branches.count && table[handle].branches[$0].reserved })
                ?? (table[handle].branches.count < Branches.capacity),
              let toward = relay.socketToward(destination, transport: transport, preferring: socketIndex, on: shard)
        else { return false }
        let socket = chosen ?? toward
        let index = reserved ?? table[handle].branches.count
        let branch = TransactionBranch(shard: UInt8(shardIndex), slot: handle.slot, generation: handle.generation,
                                       branchIndex: UInt8(index))
        let length = branch.encode(key: key, into: branchText)
        let needed = min(message.length + 1024, MessageStore.largest)
        guard let block = store.allocate(needed) else { return false }
        guard let written = relay.buildRequest(message, from: source, socket: socket, toward: destination,
                                               branch: UnsafeRawBufferPointer(rebasing: branchText[0..<length]),
                                               edits: edits, into: block.bytes) else {
            store.release(StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0))
            return false
        }
        // Larger than a datagram the shard can send (UDP; TCP does not exist yet): refused, and the caller answers
        // 513 (`lastRelayTooLarge`) instead of the branch being dropped at every retransmission.
        guard written <= shard.datagramCapacity else {
            store.release(StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0))
            lastRelayTooLarge = true
            return false
        }
        let forwarded = store.commit(block, count: written)
        let settings = table[handle].settings
        let isInvite = table[handle].method == .invite
        var new = Branch(request: forwarded, destination: destination, socket: socket)
        new.invite = isInvite ? InviteClientTransaction(settings: settings, transport: transportKind(socket)) : nil
        new.nonInvite = isInvite ? nil : NonInviteClientTransaction(settings: settings, transport: transportKind(socket))
        if reserved != nil { table[handle].branches[index] = new } else { _ = table[handle].branches.append(new, store: store) }
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
    /// `headers`: whole lines to add (the script's `append_to_reply`).
    public func reply(_ handle: TransactionHandle, status: Int, reason: UnsafeRawBufferPointer,
                      to parsed: SIPMessage? = nil, headers: UnsafeRawBufferPointer? = nil, on shard: any ShardIO) -> Bool {
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
        guard let block = store.allocate(1024 + request.count + (headers?.count ?? 0)),
              let length = relay.buildReply(to: original, status: status, reason: reason, from: table[handle].source,
                                            headers: headers, forceRport: table[handle].forceRport,
                                            into: block.bytes) else {
            return false
        }
        respond(handle, status: status, response: store.commit(block, count: length), on: shard)
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

    /// A request this shard sent could not be delivered (a TCP connect refused or timed out, a connection lost
    /// with the request unsent): its branch ends as if it had answered 503 (RFC 3261 §8.1.3.1, §17.1.4), at once
    /// rather than at Timer B or F. The request is recognised by our branch in its top Via; anything else
    /// (a response, an ACK, a CANCEL, a stateless relay's request) is ignored.
    public func transportFailed(_ message: SIPMessage, on shard: any ShardIO) {
        guard message.isRequest, message.method != .ack, message.method != .cancel, let via = message.topVia,
              let branch = TransactionBranch.decode(message.bytes(of: via.branch), key: key),
              Int(branch.shard) == shardIndex,
              let handle = table.handle(slot: branch.slot, generation: branch.generation),
              Int(branch.branchIndex) < table[handle].branches.count else { return }
        let index = Int(branch.branchIndex)
        guard table[handle].branches[index].isSent, !table[handle].branches[index].machineDone else { return }
        let now = shard.now
        let actions = table[handle].branches[index].invite != nil
            ? table[handle].branches[index].invite!.transportError(now: now)
            : table[handle].branches[index].nonInvite!.transportError(now: now)
        performClient(handle, index, actions, response: nil, on: shard)
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

    func schedule(_ handle: TransactionHandle, _ machine: MachineID, _ timer: TransactionTimer,
                          _ milliseconds: Int, on shard: any ShardIO) -> TimerHandle? {
        shard.schedule(after: UInt64(max(milliseconds, 0)), payload: TimerPayload.encode(handle, machine, timer))
    }

    // MARK: - Performing machine actions

    func performServer(_ handle: TransactionHandle, _ actions: TransactionActions,
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
    func respond(_ handle: TransactionHandle, status: Int, response: StoredMessage, on shard: any ShardIO) {
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
        if reportsAnswers && status >= 200 && table[handle].finalSent == 0 {
            user?.transactionAnswered(handle, status: status, response: response.bytes, manager: self, on: shard)
        }
        if status >= 200 && status > table[handle].finalSent { table[handle].finalSent = status }
        let actions = table[handle].inviteServer != nil
            ? table[handle].inviteServer!.sendResponse(code: status, now: now)
            : table[handle].nonInviteServer!.sendResponse(code: status, now: now)
        let keeps = actions.contains(.sendResponse)
        performServer(handle, actions, response: response, on: shard)
        if !keeps && !actions.contains(.sendResponseStatelessly) { store.release(response) }
    }

    func performClient(_ handle: TransactionHandle, _ index: Int, _ actions: TransactionActions,
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
                shard.counters.timeouts += 1
                branchFailed(handle, index, status: 408, on: shard)
            case .transportError:
                branchFailed(handle, index, status: 503, on: shard)
            case .terminated:
                table[handle].branches[index].machineDone = true
                // A held final is this branch's answer: it comes with `releaseHeldReply`, not as a 408.
                if table[handle].branches[index].finalCode == 0 && !table[handle].branches[index].heldFinal {
                    shard.counters.timeouts += 1
                    branchFailed(handle, index, status: 408, on: shard)
                }
                freeIfDone(handle, on: shard)
            case .sendResponse, .sendResponseStatelessly, .retransmitResponse:
                continue
            }
        }
    }

    func performCancel(_ handle: TransactionHandle, _ index: Int, _ actions: TransactionActions, on shard: any ShardIO) {
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

    // MARK: - Plumbing

    func malformed(on shard: any ShardIO) {
        malformedReplies += 1
        shard.counters.malformedReplies += 1
        shard.counters.dropped += 1
    }

    /// Over TCP the transport retransmits: no Timer A, E or G, and the completed states end at once.
    private func transportKind(_ socket: Int) -> TransportKind {
        StreamHandle.isStream(socket) ? .reliable : .unreliable
    }

    func send(_ message: StoredMessage, to destination: SocketAddress, socket: Int, on shard: any ShardIO) {
        guard let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return
        }
        // Given back, not kept: a slot taken and never sent would be lost for good, and a retransmitted
        // oversized message would lose another each time until the shard could send nothing.
        guard message.count <= out.buffer.count else {
            shard.discard(out)
            shard.counters.dropped += 1
            return
        }
        out.buffer.copyMemory(from: message.bytes)
        shard.send(out, length: message.count, to: destination, socketIndex: socket)
    }

    /// Frees the transaction once its server machine and every branch's machines have terminated.
    func freeIfDone(_ handle: TransactionHandle, on shard: any ShardIO) {
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

    func release(_ entry: inout ProxyTransaction, on shard: (any ShardIO)?) {
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
        entry.branches.releaseStorage(to: store)
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

nonisolated(unsafe) let trying = permanent("Trying")
nonisolated(unsafe) let okReason = permanent("OK")
nonisolated(unsafe) let terminatedReason = permanent("Request Terminated")
nonisolated(unsafe) let timeoutReason = permanent("Request Timeout")
nonisolated(unsafe) let unavailable = permanent("Service Unavailable")
nonisolated(unsafe) let noBranch = permanent("No Branch Answered")
nonisolated(unsafe) let serverError = permanent("Server Internal Error")

func permanent(_ text: String) -> UnsafeRawBufferPointer {
    let bytes = Array(text.utf8)
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
    storage.copyBytes(from: bytes)
    return UnsafeRawBufferPointer(storage)
}
nonisolated(unsafe) let noBranchReason = permanent("No Branch Sent")
