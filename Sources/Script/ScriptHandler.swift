import Engine
import SIP
import TM

/// Runs the script for every datagram a shard receives: requests through the main route, replies through
/// their transaction (when the script loads tm) or `onreply_route` and then statelessly on along their Via.
/// The daemon's only handler: `--forward` is a one-line script.
public final class ScriptHandler: ShardHandler, TransactionUser {
    let script: CompiledScript
    public let context: ScriptContext
    /// Nil when the script has none: requests are dropped.
    let mainRoute: Int?
    let replyRoute: Int?
    let errorRoute: Int?
    let startupRoute: Int?
    let timerRoutes: [(index: Int, milliseconds: UInt64)]
    public let transactions: TransactionManager?
    let serviceFactories: [ShardServiceFactory]
    let configuration: ScriptConfiguration
    /// Where the response being handled came from, for the reply routes the manager calls back into.
    var responseSource = SocketAddress(ipv4: (0, 0, 0, 0), port: 0)
    var responseSocket = 0
    /// Responses whose reply routes run at the end of the loop turn (`replyRouteDue`), oldest at `dueReplyHead`.
    var dueReplies: [DueReply] = []
    var dueReplyHead = 0
    /// Where `sendFailed` parses a message it is handed back.
    private let undeliveredMessage = SIPMessage()
    /// Services that fetch before a request's route (`RequestPrefetching`), made when the shard starts.
    private var prefetchers: [any RequestPrefetching] = []
    /// Services that keep requests' state on one shard (`RequestOwning`), made when the shard starts.
    private var owners: [any RequestOwning] = []
    private var routeObservers: [any MainRouteObserving] = []
    /// Answered transactions waiting for their reports at the end of the loop turn (`transactionAnswered`).
    var pendingAnswers: [PendingAnswer] = []
    /// The reason phrases and To tags of `pendingAnswers`, back to back.
    var answerBytes: [UInt8] = []
    let answerMessage = SIPMessage()
    /// The transaction flags any reporter reports on (acc's 1.x–2.1 flag modparams).
    let answerFlags: UInt64

    public init(program: ScriptProgram, shard: Int = 0) {
        configuration = program.configuration
        serviceFactories = program.library.services.filter { program.configuration.loadedModules.contains($0.module) }
            .map(\.factory)
        script = program.compile()
        answerFlags = script.answerReporters.reduce(0) { $0 | $1.flags }
        context = ScriptContext(variableCount: script.variableCount,
                                log: ScriptLog(level: program.configuration.logLevel, xlogLevel: program.configuration.xlogLevel))
        context.relay.identity = program.configuration.identity
        context.outputWriters = script.outputWriters
        mainRoute = script.index(.request)
        replyRoute = script.index(.onReply)
        errorRoute = script.index(.error)
        startupRoute = script.index(.startup)
        timerRoutes = program.source.routes.enumerated().compactMap { index, route in
            if case .timer(let seconds) = route.kind { return (index, UInt64(max(seconds, 1)) * 1000) }
            return nil
        }
        if program.configuration.loadedModules.contains("tm") {
            let c = program.configuration
            var settings = TimerSettings()
            settings.t1 = c.integer("tm", "T1_timer", default: settings.t1)
            settings.t2 = c.integer("tm", "T2_timer", default: settings.t2)
            settings.t4 = c.integer("tm", "T4_timer", default: settings.t4)
            // OpenSIPS gives these in seconds; fr_timer and fr_inv_timer are their 1.x names.
            if let s = c.optionalInteger("tm", "fr_timeout") ?? c.optionalInteger("tm", "fr_timer") {
                settings.finalResponseTimeout = s * 1000
            }
            if let s = c.optionalInteger("tm", "fr_inv_timeout") ?? c.optionalInteger("tm", "fr_inv_timer") {
                settings.finalResponseInviteTimeout = s * 1000
            }
            settings.restartsTimerCOnProvisional = c.integer("tm", "restart_fr_on_each_reply", default: 1) == 1
            // OpenSIPS' wt_timer (seconds, default 5): how long completed transactions linger; 32 or more
            // gives the RFC's Timers D/J/L/M.
            settings.waitTimeout = c.integer("tm", "wt_timer", default: 5) * 1000
            let manager = TransactionManager(
                shardIndex: shard, capacity: c.integer("tm", "max_transactions", default: 100_000), settings: settings,
                key: program.branchKey, seed: program.tableSeed, relay: context.relay)
            manager.sendsTrying = c.integer("tm", "auto_100trying", default: 1) == 1
            transactions = manager
            context.transactions = manager
        } else {
            transactions = nil
        }
        transactions?.user = self
        transactions?.reportsAnswers = !script.answerReporters.isEmpty
        dueReplies.reserveCapacity(256)
    }

    public func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        context.shard = shard
        let message = context.datagramMessage
        context.message = message
        guard parseAndValidate(message, datagram, relay: context.relay, on: shard) else { return .done }
        if message.isRequest {
            if let transactions, transactions.absorb(message, from: datagram.source, arrivedOn: datagram.socketIndex,
                                                     on: shard) {
                return .done
            }
            guard let mainRoute else {
                shard.counters.dropped += 1
                return .done
            }
            if shard.overloaded && Self.shedsWhenOverloaded(message) && !shard.admitsNewWork() {
                // Refused before the route, at the cost of one reply, so the calls under way keep the core.
                _ = context.relay.reply(to: message, status: 503, reason: overloadedReason, from: datagram.source,
                                        arrivedOn: datagram.socketIndex, headers: overloadedRetryAfter, on: shard)
                shard.counters.shed += 1
                return .done
            }
            for service in owners {
                if let target = service.owner(of: message, lent: datagram.lender != nil, on: shard), datagram.lender == nil {
                    return .handOff(toShard: target)
                }
            }
            for service in prefetchers where service.prefetch(message, bytes: datagram.bytes, source: datagram.source,
                                                              socketIndex: datagram.socketIndex, on: shard) {
                return .done
            }
            runMainRoute(mainRoute, source: datagram.source, socketIndex: datagram.socketIndex, on: shard)
            return .done
        } else {
            if let transactions {
                responseSource = datagram.source
                responseSocket = datagram.socketIndex
                switch transactions.handleResponse(message, on: shard) {
                case .handled: return .done
                case .handOff(let owner): return datagram.lender == nil ? .handOff(toShard: owner) : .done
                case .notOurs: break
                }
            }
            // The answer to a request a module sent itself (nathelper's keep-alive OPTIONS): nothing to route.
            if let via = message.topVia, Self.isOwnRequestBranch(message.bytes(of: via.branch)) { return .done }
            context.begin(shard: shard, source: datagram.source, socketIndex: datagram.socketIndex, hasMessage: true)
            if let replyRoute { runRoute(replyRoute) }
            if context.flow != .drop && context.runtimeError == nil {
                context.relay.forwardResponse(message, arrivedOn: datagram.socketIndex, on: shard)
            }
        }
        if context.runtimeError != nil { reportRuntimeError() }
        context.endRoute()
        return .done
    }

    /// Runs the main route on `context.message`, a new request, and settles what it leaves of its transaction.
    private func runMainRoute(_ mainRoute: Int, source: SocketAddress, socketIndex: Int, on shard: Shard) {
        context.begin(shard: shard, source: source, socketIndex: socketIndex, hasMessage: true)
        runRoute(mainRoute)
        // error_route first: it may answer, and its $avp changes belong to the transaction too.
        if context.runtimeError != nil { reportRuntimeError() }
        let handle = context.transaction
        if !routeObservers.isEmpty {
            let live = handle.flatMap { transactions?.isLive($0) == true ? $0 : nil }
            for observer in routeObservers { observer.mainRouteEnded(transaction: live, on: shard) }
        }
        // $avp values belong to the transaction from here on: its later routes see them.
        if let transactions, let handle, transactions.isLive(handle) { context.saveAVPs(to: handle) }
        context.endRoute()
        // A transaction the script created but neither relayed nor answered (a route that ended, or
        // failed, before t_relay) would wait forever.
        if let transactions, let handle { transactions.answerIfUnanswered(handle, reason: noReply, on: shard) }
    }

    /// Routes a request a prefetching service held (`RequestPrefetching`), at a turn boundary, as if it had just
    /// arrived: TM absorbs it if its transaction now exists, and it is not offered for prefetching again.
    private func routeHeldRequest(_ bytes: UnsafeRawBufferPointer, source: SocketAddress, socketIndex: Int) {
        guard let mainRoute, let shard = context.shard else { return }
        let message = context.datagramMessage
        context.message = message
        guard (try? message.parse(bytes)) != nil, (try? message.validate()) != nil, message.isRequest else { return }
        if let transactions, transactions.absorb(message, from: source, arrivedOn: socketIndex, on: shard) { return }
        // Its owner was decided when it arrived; what it means to the owning service is recorded again for this route.
        for service in owners { _ = service.owner(of: message, lent: true, on: shard) }
        runMainRoute(mainRoute, source: source, socketIndex: socketIndex, on: shard)
    }

    /// The Via branch prefix of requests modules send on their own (keep-alive pings), whose answers are dropped.
    public static let ownRequestBranchPrefix = "z9hG4bK-rsping"
    nonisolated(unsafe) private static let ownPrefixBytes = permanentBytes(ownRequestBranchPrefix)

    static func isOwnRequestBranch(_ branch: UnsafeRawBufferPointer) -> Bool {
        branch.count >= ownPrefixBytes.count
            && bytesEqual(UnsafeRawBufferPointer(rebasing: branch[0..<ownPrefixBytes.count]), ownPrefixBytes)
    }

    /// Continuation payloads for a service's own turn-boundary work (`ScriptContext.continueNextTurn(for:)`):
    /// bits 56–63 hold 4, the low 16 bits the service's index.
    static let serviceMarker: UInt64 = 4 << 56

    /// What an overloaded shard refuses: requests that start something new (a call, a registration, an
    /// out-of-dialog MESSAGE). Never ACK or CANCEL, which end what is under way, nor a request inside a dialog
    /// (a To tag), nor OPTIONS, which monitors ask to see that the proxy is alive.
    static func shedsWhenOverloaded(_ message: SIPMessage) -> Bool {
        switch message.method {
        case .ack, .cancel, .options: return false
        default: return !message.hasToTag
        }
    }

    /// An async operation's timeout: the result is -2, recorded first (so whatever the cancelled operation
    /// still reports is dropped), then the operation is stopped at its source.
    private func asyncTimedOut(_ ticket: AsyncTicket, on shard: Shard) {
        guard let cancel = context.suspensions.entry(ticket)?.cancel else { return }
        context.suspensions.setTimeout(ticket, nil)
        context.asyncCompleted(ticket, code: AsyncCode.timeout)
        cancel(context, ticket)
    }

    /// Work recorded earlier in this loop turn: a completed operation's suspension resumes, a due failure route
    /// runs, or a response's reply routes run.
    public func continuation(payload: UInt64, value: Int, on shard: Shard) {
        context.shard = shard
        if let ticket = Suspensions.resumeTicket(payload) {
            resume(ticket, code: value, on: shard)
        } else if payload >> 56 == Self.failureMarker >> 56 {
            runFailureRoute(payload, on: shard)
        } else if payload >> 56 == Self.replyMarker >> 56 {
            runDueReply(on: shard)
        } else if payload >> 56 == Self.answerMarker >> 56 {
            reportAnswers(on: shard)
        } else if payload >> 56 == Self.serviceMarker >> 56 {
            let index = Int(payload & 0xFFFF)
            guard index < context.services.count, let service = context.services[index] as? any NextTurnContinuing else {
                return
            }
            service.nextTurn(value: value, on: shard)
        }
    }

    /// Resumes a suspended transaction: its request, `$avp` values and the script's edits come back, `$rc`
    /// is the operation's code, its outputs are written, and the resume route runs. A stale ticket (the
    /// suspension already ended) or a transaction that has gone is ignored.
    ///
    /// Everything the suspension owned moves to this route here (`take`), and what the route's values view
    /// stays the route's until `endRoute`: an async() inside the route stores copies, never frees them.
    func resume(_ ticket: AsyncTicket, code: Int, on shard: Shard) {
        guard let entry = context.suspensions.take(ticket) else { return }
        shard.counters.asyncInFlight = context.suspensions.live
        if let timer = entry.timeout { shard.cancel(timer) }
        if let timer = entry.operationTimer { shard.cancel(timer) }
        guard let handle = entry.transaction else {
            reportLaunch(entry, code: code, on: shard)
            return
        }
        if let held = entry.held {
            resumeHeld(held, outputs: entry.outputs, branch: Int(entry.heldBranch), route: Int(entry.resumeRoute),
                       handle: handle, code: code, on: shard)
            return
        }
        guard let transactions, let state = transactions.takeSuspension(handle) else {
            if let outputs = entry.outputs { context.operationOutputs.release(outputs) }
            return
        }
        let saved = context.message
        defer { context.message = saved }
        let parsed = beginOnRequest(of: handle, transactions, on: shard)
        context.routeState = state
        context.routeOutputs = entry.outputs
        guard parsed else {
            context.endRoute()
            transactions.resumeEnded(handle, on: shard)
            return
        }
        context.restoreAVPs(from: handle)
        context.restoreState(state.bytes)
        // After the state: an output may be `$ru` or `$du`.
        if let outputs = entry.outputs { OperationOutputs.apply(outputs, to: context) }
        context.returnCode = code
        runRoute(Int(entry.resumeRoute))
        if context.runtimeError != nil { reportRuntimeError() }
        context.saveAVPs(to: handle)
        context.endRoute()
        guard !context.suspendedNow else { return }
        transactions.resumeEnded(handle, on: shard)
        transactions.answerIfUnanswered(handle, reason: noReply, on: shard)
    }

    /// The resume route of an async() in a branch_route or an onreply_route, on the branch's request or the
    /// held response, with the state of the moment it was held; then the branch is sent, or the response goes
    /// on to the transaction, unless the route dropped it. Another async() there holds it again.
    private func resumeHeld(_ held: StoredMessage, outputs: StoredMessage?, branch: Int, route: Int,
                            handle: TransactionHandle, code: Int, on shard: Shard) {
        // The held block outlives the route: relaying the branch or the response reads it.
        defer { context.heldWork.release(held) }
        guard let transactions, transactions.isLive(handle), let work = HeldWork(held) else {
            if let outputs { context.operationOutputs.release(outputs) }
            return
        }
        let saved = context.message
        defer { context.message = saved }
        context.begin(shard: shard, source: work.source, socketIndex: work.socketIndex, hasMessage: true)
        context.routeOutputs = outputs
        // Only after the branch is relayed: its `$ru`/`$du` may view the route's blocks (an output, an `$avp`).
        // TM queues what settling the branch makes due, so no route begins before this.
        defer { context.endRoute() }
        let parsed: Bool
        if work.kind == .reply {
            context.message = context.heldReplyMessage
            parsed = (try? context.message.parse(work.response)) != nil
        } else {
            context.message = context.transactionMessage
            parsed = (try? context.message.parse(transactions.request(handle).bytes)) != nil
                && (try? context.message.validate()) != nil
        }
        var sent = parsed
        if parsed {
            context.transaction = handle
            context.branchIndex = branch
            context.restoreAVPs(from: handle)
            context.restoreState(work.state)
            if let outputs { OperationOutputs.apply(outputs, to: context) }
            context.returnCode = code
            context.branchForced = work.forced
            context.resumingHeldBranch = work.kind == .branch
            // A hold again from here must still remember the t_on_reply route that follows.
            context.replyRouteAfter = work.thenRoute
            runRoute(route)
            context.replyRouteAfter = -1
            // Held by the unnamed onreply_route: the transaction's t_on_reply route still runs on it (and may
            // hold it again).
            if work.kind == .reply && work.thenRoute >= 0 && !context.suspendedNow && context.flow != .drop
                && context.runtimeError == nil {
                context.flow = .normal
                runRoute(work.thenRoute)
            }
            context.branchForced = nil
            context.resumingHeldBranch = false
            // Decided before error_route runs: reporting clears the error and resets the flow.
            sent = context.flow != .drop && context.runtimeError == nil
            if context.runtimeError != nil { reportRuntimeError() }
            context.saveAVPs(to: handle)
        }
        let again = context.suspendedNow
        if work.kind == .reply {
            // Held again: the new hold carries the response on (and counted it once more).
            if again {
                transactions.replyHeldAgain(handle)
                return
            }
            transactions.releaseHeldReply(handle, branch: branch, parsed ? context.message : nil, relay: sent, on: shard)
            return
        }
        // Held again: the new hold keeps the branch's place and settles it later.
        if again { return }
        if sent, let destination = work.forced ?? context.nextHop() {
            _ = transactions.relay(handle, context.message, from: context.source, arrivedOn: context.socketIndex,
                                   to: destination.address, transport: destination.transport,
                                   edits: context.edits(toward: destination.address), into: branch, on: shard)
        }
        transactions.releaseHeldBranch(handle, branch: branch, on: shard)
    }

    /// A launch()ed operation finished: its report route runs without a message, with `$rc` and `$param(1)`.
    private func reportLaunch(_ entry: Suspensions.Entry, code: Int, on shard: Shard) {
        defer { if let parameter = entry.parameter { context.launchParameters.release(parameter) } }
        guard entry.resumeRoute >= 0 else {
            if let outputs = entry.outputs { context.operationOutputs.release(outputs) }
            return
        }
        context.begin(shard: shard, source: SocketAddress(ipv4: (0, 0, 0, 0), port: 0), socketIndex: 0, hasMessage: false)
        context.routeOutputs = entry.outputs
        if let outputs = entry.outputs { OperationOutputs.apply(outputs, to: context) }
        context.launchParameter = entry.parameter?.bytes
        context.returnCode = code
        runRoute(Int(entry.resumeRoute))
        if context.runtimeError != nil { reportRuntimeError() }
        context.endRoute()
    }

    /// The shard's loop has ended: release every transaction's memory (what is still live shows in the exit
    /// counters as `transactions`).
    public func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        context.shard = shard
        for service in context.services where service.operationCompleted(id, result: result, flags: flags, on: shard) {
            return
        }
    }

    public func mailArrived(from sender: Int, channel: UInt16, _ bytes: UnsafeRawBufferPointer, on shard: Shard) {
        context.shard = shard
        guard Int(channel) < context.services.count else { return }
        context.services[Int(channel)].mailArrived(from: sender, bytes, on: shard)
    }

    /// A request of a transaction that could not be sent (a TCP next hop that refused the connection): its branch
    /// ends 503 now. Parsed into a message of its own: the one being routed is not disturbed.
    public func sendFailed(_ bytes: UnsafeRawBufferPointer, on shard: Shard) {
        guard let transactions, (try? undeliveredMessage.parse(bytes)) != nil else { return }
        transactions.transportFailed(undeliveredMessage, on: shard)
    }

    public func stopping(on shard: Shard) {
        for service in context.services { service.stopping(on: shard) }
        transactions?.removeAll(on: shard)
    }

    /// startup_route runs once, on shard 0; timer routes run on shard 0 at their interval.
    public func started(on shard: Shard) {
        context.services = serviceFactories.map { $0(context, shard, configuration) }
        prefetchers = context.services.compactMap { $0 as? any RequestPrefetching }
        owners = context.services.compactMap { $0 as? any RequestOwning }
        routeObservers = context.services.compactMap { $0 as? any MainRouteObserving }
        context.routeHeld = { [unowned self] bytes, source, socketIndex in
            self.routeHeldRequest(bytes, source: source, socketIndex: socketIndex)
        }
        guard shard.index == 0 else { return }
        if let startupRoute { runWithoutMessage(startupRoute, on: shard) }
        for (position, timer) in timerRoutes.enumerated() {
            _ = shard.schedule(after: timer.milliseconds, payload: UInt64(position))
        }
    }

    public func timerFired(payload: UInt64, on shard: Shard) {
        context.shard = shard
        if let transactions, transactions.timerFired(payload: payload, on: shard) { return }
        if SleepOperations.timerFired(payload, context) { return }
        for service in context.services where service.timerFired(payload: payload, on: shard) { return }
        if let ticket = Suspensions.timeoutTicket(payload) {
            asyncTimedOut(ticket, on: shard)
            return
        }
        let position = Int(payload)
        guard position < timerRoutes.count else { return }
        runWithoutMessage(timerRoutes[position].index, on: shard)
        _ = shard.schedule(after: timerRoutes[position].milliseconds, payload: payload)
    }

    private func runWithoutMessage(_ route: Int, on shard: Shard) {
        context.begin(shard: shard, source: SocketAddress(ipv4: (0, 0, 0, 0), port: 0), socketIndex: 0, hasMessage: false)
        runRoute(route)
        if context.runtimeError != nil { reportRuntimeError() }
        context.endRoute()
    }

    /// Runs one route of the script. Routes run one at a time from the shard's loop: a route never starts
    /// inside another (a completion only records its result; its route runs at the end of the loop turn).
    func runRoute(_ route: Int) {
        precondition(!context.routeRunning, "route \(route) started while another route was running")
        context.routeRunning = true
        defer { context.routeRunning = false }
        script.run(route, context)
    }

    /// Logs the failure and runs error_route (once: a failure inside error_route is only logged).
    func reportRuntimeError() {
        let reason = context.runtimeError ?? "unknown"
        context.log.write(level: -1, "ringsipd: script error: \(reason)")
        guard let errorRoute, context.hasMessage else { return }
        context.runtimeError = nil
        context.errorInfo = reason
        context.flow = .normal
        runRoute(errorRoute)
        if let again = context.runtimeError { context.log.write(level: -1, "ringsipd: error in error_route: \(again)") }
    }
}

nonisolated(unsafe) private let noReply = permanentBytes("No Reply From Script")

nonisolated(unsafe) private let overloadedReason = permanentBytes("Service Unavailable")
/// Long enough for a surge to pass, short enough that callers come back soon (RFC 3261 §21.5.4).
nonisolated(unsafe) private let overloadedRetryAfter = permanentBytes("Retry-After: 2\r\n")
