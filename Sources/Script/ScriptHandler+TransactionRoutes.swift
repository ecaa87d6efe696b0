import Engine
import SIP
import TM

/// The routes TM asks for on a transaction's behalf — failure_route when every branch failed, the reply routes
/// for each response — each run from the shard's loop at the end of the turn, on the transaction's request or the
/// response, never inside TM's timer or reply handling.
extension ScriptHandler {
    /// The transaction's branches all failed and `t_on_failure` named a route: it runs at the end of this loop
    /// turn (`continuation`), not inside the timer or the response handling that settled the last branch.
    public func failureRouteDue(transaction: TransactionHandle, manager: TransactionManager, on io: any ShardIO) {
        context.shard.continueNextTurn(payload: Self.failureMarker | UInt64(transaction.generation) << 32
                                           | UInt64(transaction.slot), value: 0)
    }

    /// Continuation payloads that run a due failure route: bits 56–63 hold 2 (`Suspensions.resumeMarker` is
    /// 1), then generation 16 | slot 32 of the transaction.
    static let failureMarker: UInt64 = 2 << 56

    /// Runs the failure route due for the transaction on its request, in a message of its own so whatever
    /// the shard is handling stays intact; then TM completes what the route left undone.
    func runFailureRoute(_ payload: UInt64, on shard: Shard) {
        guard let transactions,
              let transaction = transactions.handle(slot: UInt32(truncatingIfNeeded: payload),
                                                    generation: UInt16(truncatingIfNeeded: payload >> 32)),
              let route = transactions.takeDueFailureRoute(transaction) else { return }
        defer { transactions.failureRouteEnded(transaction, on: shard) }
        let saved = context.message
        defer { context.message = saved }
        guard beginOnRequest(of: transaction, transactions, on: shard) else { return }
        context.restoreAVPs(from: transaction)
        runRoute(route)
        if context.runtimeError != nil { reportRuntimeError() }
        context.saveAVPs(to: transaction)
        context.endRoute()
    }

    /// Begins a route on the transaction's request as received, parsed again into `transactionMessage` (the
    /// caller restores `context.message` after the route); false when it no longer parses.
    func beginOnRequest(of handle: TransactionHandle, _ transactions: TransactionManager,
                                on shard: Shard) -> Bool {
        let (bytes, source, socket) = transactions.request(handle)
        context.begin(shard: shard, source: source, socketIndex: socket, hasMessage: true)
        context.message = context.transactionMessage
        guard (try? context.message.parse(bytes)) != nil, (try? context.message.validate()) != nil else { return false }
        context.transaction = handle
        return true
    }

    /// Whether a transaction's responses have reply routes to run: the unnamed onreply_route, or its
    /// `t_on_reply` route.
    public func wantsReplyRoutes(route: Int) -> Bool { replyRoute != nil || route >= 0 }

    /// A branch's response, before the manager relays it: kept (with where it came from) and its reply routes
    /// run at the end of this loop turn (`runDueReply`), not inside the response handling.
    public func replyRouteDue(_ response: SIPMessage, route: Int, transaction: TransactionHandle, branch: Int,
                              manager: TransactionManager, on io: any ShardIO) -> Bool {
        guard let held = HeldWork.keep(.reply, source: responseSource, socketIndex: responseSocket, forced: nil,
                                       thenRoute: route, state: UnsafeRawBufferPointer(start: nil, count: 0),
                                       response: UnsafeRawBufferPointer(rebasing: response.bytes[0..<response.length]),
                                       in: context.heldWork) else { return false }
        dueReplies.append(DueReply(held: held, transaction: transaction, branch: branch))
        context.shard.continueNextTurn(payload: Self.replyMarker, value: 0)
        return true
    }

    /// A response whose reply routes are due; `HeldWork.thenRoute` is its `t_on_reply` route.
    struct DueReply {
        let held: StoredMessage
        let transaction: TransactionHandle
        let branch: Int
    }

    /// Continuation payloads that run the reply routes of the oldest due response (`dueReplies` is in the order
    /// the continuations were queued): bits 56–63 hold 3.
    static let replyMarker: UInt64 = 3 << 56

    /// The unnamed onreply_route (which sees every response), then the transaction's `t_on_reply` route, on the
    /// response kept by `replyRouteDue`; either may `drop` a provisional, change it (header removals apply to
    /// what is relayed) or take it into async(). Then the response goes back to the transaction.
    func runDueReply(on shard: Shard) {
        guard dueReplyHead < dueReplies.count else { return }
        let due = dueReplies[dueReplyHead]
        dueReplyHead += 1
        if dueReplyHead == dueReplies.count {
            dueReplies.removeAll(keepingCapacity: true)
            dueReplyHead = 0
        }
        // Released last: the transaction relays the response from this block.
        defer { context.heldWork.release(due.held) }
        guard let transactions, transactions.isLive(due.transaction), let work = HeldWork(due.held) else { return }
        let handle = due.transaction
        let saved = context.message
        defer { context.message = saved }
        context.begin(shard: shard, source: work.source, socketIndex: work.socketIndex, hasMessage: true)
        context.message = context.heldReplyMessage
        guard (try? context.message.parse(work.response)) != nil else {
            context.endRoute()
            transactions.releaseHeldReply(handle, branch: due.branch, nil, relay: false, on: shard)
            return
        }
        context.transaction = handle
        context.branchIndex = due.branch
        context.restoreAVPs(from: handle)
        let route = work.thenRoute
        if let replyRoute {
            context.replyRouteAfter = route
            runRoute(replyRoute)
            context.replyRouteAfter = -1
        }
        if route >= 0 && context.flow != .drop && context.runtimeError == nil && !context.suspendedNow {
            context.flow = .normal
            runRoute(route)
        }
        let verdict: ReplyVerdict = context.suspendedNow ? .hold : context.flow == .drop ? .drop : .relay
        if context.runtimeError != nil { reportRuntimeError() }
        context.saveAVPs(to: handle)
        context.endRoute()
        // An async() took it: its own hold carries the response on (and counted it once more).
        if verdict == .hold {
            transactions.replyHeldAgain(handle)
            return
        }
        transactions.releaseHeldReply(handle, branch: due.branch, context.message, relay: verdict == .relay, on: shard)
    }
}

/// What the reply routes decided about a branch's response.
enum ReplyVerdict {
    case relay
    /// `drop`: a provisional is not relayed (a final is: the transaction needs it).
    case drop
    /// An async() in a reply route took the response (a copy) to finish later: its resume route hands it back.
    case hold
}
