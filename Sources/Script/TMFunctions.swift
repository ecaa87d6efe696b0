import Engine
import SIP
import TM

/// The tm module's script functions (OpenSIPS names): stateful relaying on the shard's TransactionManager.
/// Retransmissions, the ACK of a negative final and a CANCEL of a pending INVITE are handled before the
/// script runs (as if every route began with t_check_trans), so a script only sees new requests.
enum TMFunctions {
    static var module: ScriptModule {
        ScriptModule(name: "tm", parameters: [
            // Seconds (as OpenSIPS), up to a day; timers in ms, up to 10 minutes; transactions a shard, each a few
            // KiB preallocated.
            .init("fr_timeout", .integer, range: 1...86_400, unit: "seconds"),
            .init("fr_inv_timeout", .integer, range: 1...86_400, unit: "seconds"),
            .init("T1_timer", .integer, range: 1...600_000, unit: "ms"),
            .init("T2_timer", .integer, range: 1...600_000, unit: "ms"),
            .init("T4_timer", .integer, range: 1...600_000, unit: "ms"),
            .init("max_transactions", .integer, range: 1...1_000_000),
            .init("wt_timer", .integer, range: 0...3_600, unit: "seconds"),
            // OpenSIPS 1.x names of fr_timeout and fr_inv_timeout (seconds too).
            .init("fr_timer", .integer, range: 1...86_400, unit: "seconds"),
            .init("fr_inv_timer", .integer, range: 1...86_400, unit: "seconds"),
            .init("restart_fr_on_each_reply", .integer, range: 0...1),
            .init("auto_100trying", .integer, range: 0...1),
            .ignored("onreply_avp_mode", "reply routes always see the transaction's $avp values"),
            .ignored("pass_provisional_replies", "ringsip has no FIFO applications to pass them to"),
            .ignored("delete_timer", "a transaction is freed when its last timer ends"),
            .ignored("ruri_matching", "requests are matched by RFC 3261 §17.2.3 (and §17.2.3's RFC 2543 rules)"),
            .ignored("via1_matching", "requests are matched by RFC 3261 §17.2.3 (and §17.2.3's RFC 2543 rules)"),
            .ignored("unix_tx_timeout", "ringsip has no UNIX socket interface"),
            .ignored("tw_append", "ringsip has no t_write_* functions"),
            .ignored("syn_branch", "branches are always derived from the request (RFC 3261 §16.11)"),
            .ignored("disable_6xx_block", "6xx responses end the forking as RFC 3261 §16.7 says"),
            .ignored("enable_stats", "ringsip's counters are printed on SIGUSR1 and at exit"),
            .ignored("minor_branch_flag", "every branch counts for the best response"),
            .ignored("timer_partitions", "each shard has its own timer wheel"),
            .ignored("noisy_ctimer", "Timer C always ends an INVITE branch that stays silent"),
            .ignored("cluster_param", "ringsip has no clustering"),
            .ignored("tm_replication_cluster", "ringsip has no clustering"),
            .ignored("cancel_reason_enable", "a CANCEL carries the Reason header it was given"),
            .ignored("T4_timer_mode", "T4 is used as RFC 3261 says"),
        ], functions: [
            ScriptFunction("t_relay", module: "tm", arguments: 0...2, allowedIn: [.request, .failure], compile: relay),
            ScriptFunction("t_newtran", module: "tm", arguments: 0...0, allowedIn: [.request]) { _, _ in
                { context in transaction(context) != nil ? 1 : 0 }
            },
            ScriptFunction("t_reply", module: "tm", arguments: 2...2, allowedIn: [.request, .failure, .error],
                           compile: reply),
            ScriptFunction("t_on_failure", module: "tm", arguments: 1...1, allowedIn: [.request, .failure, .onReply, .branch],
                           compile: onFailure),
            ScriptFunction("t_on_reply", module: "tm", arguments: 1...1, allowedIn: [.request, .failure, .branch],
                           compile: onReply),
            ScriptFunction("t_on_branch", module: "tm", arguments: 1...1, allowedIn: [.request, .failure],
                           compile: onBranch),
            ScriptFunction("t_check_trans", module: "tm", arguments: 0...0, allowedIn: .requestLike) { _, _ in
                { context in context.transaction != nil ? 1 : -1 }
            },
            ScriptFunction("t_was_cancelled", module: "tm", arguments: 0...0, allowedIn: [.request, .failure]) { _, _ in
                { context in
                    guard let handle = context.transaction, let manager = context.transactions else { return -1 }
                    return manager.wasCancelled(handle) ? 1 : -1
                }
            },
            ScriptFunction("t_check_status", module: "tm", arguments: 1...1, allowedIn: [.failure, .onReply],
                           compile: checkStatus),
            ScriptFunction("t_local_replied", module: "tm", arguments: 1...1, allowedIn: [.failure, .onReply],
                           compile: localReplied),
        ])
    }

    /// OpenSIPS core's destination set. Here because only `t_relay` forks to it.
    static var coreModule: ScriptModule {
        ScriptModule(name: "core", functions: [
            ScriptFunction("append_branch", module: "core", arguments: 0...1, allowedIn: [.request, .failure],
                           compile: appendBranch),
        ])
    }

    /// The transaction of the request being routed, created on first need (a full shard answers 503).
    static func transaction(_ context: ScriptContext, sendTrying: Bool = true) -> TransactionHandle? {
        if let existing = context.transaction { return existing }
        guard let manager = context.transactions, context.message.isRequest else { return nil }
        switch manager.create(context.message, from: context.source, arrivedOn: context.socketIndex,
                              sendTrying: sendTrying, forceRport: context.forceRport, on: context.shard) {
        case .created(let handle):
            context.transaction = handle
            context.handled = true
            if let route = context.pendingFailureRoute { manager.setFailureRoute(handle, route) }
            if let route = context.pendingReplyRoute { manager.setReplyRoute(handle, route) }
            if context.pendingFinalResponseTimeout != nil || context.pendingInviteFinalResponseTimeout != nil {
                manager.setTimeouts(handle, finalResponse: context.pendingFinalResponseTimeout,
                                    inviteFinalResponse: context.pendingInviteFinalResponseTimeout)
            }
            return handle
        case .full:
            // No memory growth beyond the limit: the caller retries later (RFC 3261 §21.5.4).
            context.relay.reply(to: context.message, status: 503, reason: serviceUnavailable, from: context.source,
                                arrivedOn: context.socketIndex, headers: retryAfter, forceRport: context.forceRport,
                                on: context.shard)
            context.handled = true
            return nil
        case .tooLarge:
            context.relay.reply(to: context.message, status: 513, reason: tooLarge, from: context.source,
                                arrivedOn: context.socketIndex, forceRport: context.forceRport, on: context.shard)
            context.handled = true
            return nil
        case .notAllowed:
            return nil
        }
    }

    @Sendable static func relay(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        // OpenSIPS t_relay flags: 0x01 sends no 100 Trying; 0x02 (no automatic negative reply when relaying
        // fails) is what ringsip always does — t_relay returns -1 and the script answers. Others: refused.
        var noTrying = false
        if call.arguments.count > 1, let flags = call.arguments[1] {
            guard let text = compiler.constantText(flags), let value = Int(text) ?? Int(text.dropFirst(2), radix: 16) else {
                throw compiler.error("t_relay flags must be a constant number", at: flags.location)
            }
            guard value & ~0x03 == 0 else {
                throw compiler.error("t_relay flags 0x\(String(value, radix: 16)): ringsip knows 0x01 (no 100 Trying) and 0x02 "
                    + "(no automatic negative reply)", at: flags.location)
            }
            noTrying = value & 0x01 != 0
        }
        let sendTrying = !noTrying
        let target = try Destination.argument(call.arguments.first ?? nil, of: call.name, compiler)
        let routes = compiler.routes
        return { context in
            guard context.hasMessage, context.message.isRequest, let manager = context.transactions else { return -1 }
            if context.resumingHeldBranch {
                // The held branch is sent when this route ends; a t_relay here would add a second one.
                context.log.write(level: 1, "ringsipd: t_relay() in the resume route of a branch held by async() is "
                    + "ignored: the branch is sent when the route ends")
                return -1
            }
            guard let forced = target.resolve(context) else { return -1 }
            // An ACK (for a 2xx: the others never reach the script) has no transaction: it goes statelessly.
            if context.message.method == .ack {
                guard let destination = forced ?? context.nextHop() else { return -1 }
                return context.forward(to: destination) ? 1 : context.relay.lastForwardTooLarge ? 0 : -1
            }
            // A full shard or an oversized request was answered already (503 / 513): end the script, so its
            // own fallback reply does not send a second final answer.
            guard let handle = transaction(context, sendTrying: sendTrying) else { return context.handled ? 0 : -1 }
            // The Request-URI branch, then the destination set in order (OpenSIPS t_relay forks to both); the
            // set is used up. A forced destination (t_relay's argument) takes every branch.
            let uri = context.requestURI, du = context.destinationURI
            var sent = relayBranch(context, manager, handle, uri: uri, du: du, forced: forced,
                                   socket: forced == nil ? context.sendSocket : nil, routes: routes)
            for i in 0..<context.destinationCount {
                let branch = context.destinationSet[i]
                if relayBranch(context, manager, handle, uri: branch.uri, du: branch.destination, forced: forced,
                               socket: nil, routes: routes) {
                    sent = true
                }
            }
            context.destinationCount = 0
            context.requestURI = uri
            context.destinationURI = du
            // After a CANCEL nothing is relayed and the caller has its 487: 0 ends the script, so its usual
            // `if (!t_relay()) sl_send_reply(500, …)` does not answer a second time.
            if !sent && manager.wasCancelled(handle) { return 0 }
            // A request too large to send over UDP is answered 513 (RFC 3261 §18.1.1 would switch to TCP, which
            // ringsip does not have yet), never dropped at each retransmission; 0 ends the script likewise.
            if !sent && manager.lastRelayTooLarge
                && manager.reply(handle, status: 513, reason: tooLarge, to: context.message, on: context.shard) {
                context.handled = true
                return 0
            }
            return sent ? 1 : -1
        }
    }

    /// One branch: its branch_route (which may change `$ru`/`$du`, add headers, `drop` it or hold it in
    /// async()), then the client transaction. The route's changes stay with this branch.
    private static func relayBranch(_ context: ScriptContext, _ manager: TransactionManager, _ handle: TransactionHandle,
                                    uri: UnsafeRawBufferPointer?, du: UnsafeRawBufferPointer?, forced: NextHop?,
                                    socket: Int?, routes: CompiledRoutes) -> Bool {
        context.requestURI = uri
        context.destinationURI = du
        let appended = context.appendedCount
        defer { context.appendedCount = appended }
        if let route = context.branchRoute {
            context.branchIndex = manager.nextBranchIndex(handle)
            context.branchForced = forced
            routes.bodies[route](context)
            context.branchIndex = nil
            context.branchForced = nil
            if context.suspendedNow {
                // async() held the branch: its resume route sends it. The route that called t_relay goes on.
                context.suspendedNow = false
                context.flow = .normal
                return true
            }
            let dropped = context.flow == .drop
            // exit, return and drop end the branch route, not the route that called t_relay; a runtime
            // failure in it ends that one too.
            if context.runtimeError == nil { context.flow = .normal }
            if dropped || context.runtimeError != nil { return false }
        }
        guard let destination = forced ?? context.nextHop() else { return false }
        return manager.relay(handle, context.message, from: context.source, arrivedOn: context.socketIndex,
                             to: destination.address, transport: destination.transport, socket: socket,
                             edits: context.edits(toward: destination.address), on: context.shard)
    }

    @Sendable static func appendBranch(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let uri = try call.arguments.first.flatMap { $0 }.map { (e: Expression) throws(CompileError) in try compiler.value(e) }
        return { context in
            guard context.hasMessage, context.message.isRequest else { return -1 }
            // Without an argument: the Request-URI and `$du` as they stand (OpenSIPS); with one, that URI alone.
            var branchURI = context.currentRequestURI
            var destination = context.destinationURI
            if let uri {
                guard case .text(let text) = uri(context), text.count > 0 else { return -1 }
                branchURI = text
                destination = nil
            }
            return context.appendBranch(uri: branchURI, destination: destination) ? 1 : -1
        }
    }

    @Sendable static func reply(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let codeArgument = call.arguments[0]!
        let code = try compiler.integer(codeArgument, what: "reply code")
        if let constant = compiler.constantText(codeArgument), let n = Int(constant), !(100...699).contains(n) {
            throw compiler.error("reply code \(n) is not between 100 and 699", at: codeArgument.location)
        }
        let reason = try compiler.value(call.arguments[1]!)
        return { context in
            guard context.hasMessage, context.message.isRequest, let status = code(context), (100...699).contains(status),
                  case .text(let phrase) = reason(context), let manager = context.transactions,
                  let handle = transaction(context) else { return -1 }
            // The request routed here is the transaction's own, parsed already.
            return manager.reply(handle, status: status, reason: phrase, to: context.message,
                                 headers: context.replyHeaders.lines, on: context.shard) ? 1 : -1
        }
    }

    /// t_on_failure / t_on_reply / t_on_branch's argument: a route of `kind`, by constant name.
    private static func namedRoute(_ call: FunctionCall, _ compiler: ScriptCompiler, _ kind: RouteKind,
                                   what: String) throws(CompileError) -> Int {
        let argument = call.arguments[0]!
        guard let name = compiler.constantText(argument) else {
            throw compiler.error("\(call.name) takes \(what) name", at: argument.location)
        }
        return try compiler.routeIndex(kind, named: name, at: argument.location)
    }

    @Sendable static func onFailure(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let route = try namedRoute(call, compiler, .failure, what: "a failure_route")
        return { context in
            if let handle = context.transaction, let manager = context.transactions {
                manager.setFailureRoute(handle, route)
            } else {
                context.pendingFailureRoute = route
            }
            return 1
        }
    }

    @Sendable static func onReply(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let route = try namedRoute(call, compiler, .onReply, what: "an onreply_route")
        return { context in
            if let handle = context.transaction, let manager = context.transactions {
                manager.setReplyRoute(handle, route)
            } else {
                context.pendingReplyRoute = route
            }
            return 1
        }
    }

    @Sendable static func onBranch(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let route = try namedRoute(call, compiler, .branch, what: "a branch_route")
        return { context in
            context.branchRoute = route
            return 1
        }
    }

    /// `t_local_replied("all" | "branch" | "last")`: in a failure route, whether every branch's final answer
    /// ("all") or the one that would go upstream ("last", and "branch" for the branch that ended last) was made
    /// here; a reply route runs on a received response, so there it is always false.
    @Sendable static func localReplied(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let which = call.arguments[0].flatMap({ compiler.constantText($0) }), ["all", "branch", "last"].contains(which) else {
            throw compiler.error("t_local_replied takes \"all\", \"branch\" or \"last\"", at: call.location)
        }
        let all = which == "all"
        return { context in
            guard let handle = context.transaction, let manager = context.transactions,
                  !context.hasMessage || context.message.isRequest else { return -1 }
            return manager.locallyReplied(handle, all: all) ? 1 : -1
        }
    }

    @Sendable static func checkStatus(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard case .string(let template, let location)? = call.arguments[0], let pattern = template.literal else {
            throw compiler.error("t_check_status takes a literal regular expression", at: call.location)
        }
        let regex = try CompiledRegex(pattern, at: location, compiler: compiler)
        return { context in
            guard let code = context.transactionReplyCode else { return -1 }
            return regex.matches(.integer(code), arena: context.arena) ? 1 : -1
        }
    }
}

nonisolated(unsafe) private let serviceUnavailable = permanentBytes("Service Unavailable")
nonisolated(unsafe) private let tooLarge = permanentBytes("Message Too Large")
/// Seconds a caller refused for a full transaction table waits: long enough for Timer J/L (64*T1) to free slots.
nonisolated(unsafe) private let retryAfter = permanentBytes("Retry-After: 5\r\n")

extension ScriptContext {
    /// Gives `transaction` this route's `$avp` values (after a route that ran for it, or at an async() inside
    /// it), so every later route of the transaction sees them. Copies into a new store block of the
    /// transaction: the route's values may view the block it moved out (`restoreAVPs`), which stays the
    /// route's until `endRoute`.
    func saveAVPs(to handle: TransactionHandle) {
        // The flags travel with the $avp values: every later route of the transaction sees both.
        transactions?.storeFlags(handle, flags: flags, branchFlags: branchFlags, reports: reports)
        // Nothing to give: no values, none taken from the transaction that the route might have removed, and none
        // kept midway (an async() in a branch_route saves before the route that called t_relay ends).
        guard let manager = transactions, avps.count > 0 || routeAVPs != nil || manager.hasAVPs(handle) else { return }
        guard let length = avps.serialize(into: avpBytes),
              manager.storeAVPs(handle, UnsafeRawBufferPointer(rebasing: avpBytes[0..<length])) else {
            log.write(level: -1, "ringsipd: $avp values too large to keep with the transaction; dropped")
            return
        }
    }

    /// The transaction's `$avp` values, as a route that runs for it starts: their block moves out of the
    /// transaction to the route (`routeAVPs`), so nothing the route does to the transaction can free what its
    /// values view.
    func restoreAVPs(from handle: TransactionHandle) {
        assert(routeAVPs == nil, "a route took a transaction's $avp values while another route's were out")
        if let kept = transactions?.flags(handle) {
            flags = kept.flags
            branchFlags = kept.branchFlags
            reports = kept.reports
        }
        guard let block = transactions?.takeAVPs(handle) else { return }
        routeAVPs = block
        avps.restore(block.bytes)
    }

    /// A route of the shard has ended (its `$avp` values saved where they belong): the blocks its values viewed
    /// go back to their stores, and the values that viewed them are forgotten.
    func endRoute() {
        avps.removeAll()
        if let block = routeAVPs { transactions?.releaseBlock(block); routeAVPs = nil }
        if let block = routeState { transactions?.releaseBlock(block); routeState = nil }
        if let block = routeOutputs { operationOutputs.release(block); routeOutputs = nil }
    }
}

extension ScriptContext {
    /// The script's edits to the request, as the relay applies them toward `destination`.
    func edits(toward destination: SocketAddress) -> RelayEdits {
        var edits = RelayEdits()
        edits.requestURI = requestURI
        edits.popRoute = popRoute && routeSet == nil
        edits.forceRport = forceRport
        edits.maxForwardsWhenAbsent = maxForwardsWhenAbsent
        edits.appendedHeaders = appendedHeaders
        if routeSet != nil { edits.removedKinds.insert(.route) }
        var recordRouteLine = recordRoute
            ? relay.recordRouteLine(toward: destination, arrivedOn: socketIndex, on: shard) : nil
        if let line = recordRouteLine, let parameters = recordRouteParameters, line.count > 3 {
            // The line ends ">\r\n": the parameters go inside the brackets, after ";lr".
            var with = arena.begin()
            arena.append(&with, UnsafeRawBufferPointer(rebasing: line[0..<(line.count - 3)]))
            arena.append(&with, parameters)
            arena.append(&with, UnsafeRawBufferPointer(rebasing: line[(line.count - 3)...]))
            recordRouteLine = arena.end(with)
        }
        switch (recordRouteLine, routeSet) {
        case (nil, nil): break
        case (let line?, nil): edits.insertedHeaders = line
        case (nil, let routes?): edits.insertedHeaders = routes
        case (let line?, let routes?):
            var both = arena.begin()
            arena.append(&both, line)
            arena.append(&both, routes)
            edits.insertedHeaders = arena.end(both)
        }
        return edits
    }
}
