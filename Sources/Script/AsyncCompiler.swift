import Engine
import TM

extension ScriptCompiler {
    /// The operation of an async()/launch() call site, checked.
    private func asyncOperation(_ call: FunctionCall, _ argument: Expression?) throws(CompileError)
        -> (FunctionCall, AsyncOperationDefinition) {
        guard case .call(let operationCall)? = argument else {
            throw error("\(call.name) takes an operation first, e.g. \(call.name)(exec(\"…\"), …)", at: call.location)
        }
        guard let definition = library.asyncOperations[operationCall.name] else {
            let known = library.asyncOperations.keys.sorted().joined(separator: ", ")
            throw error("'\(operationCall.name)' cannot run asynchronously; ringsip's async operations are: \(known)",
                        at: operationCall.location)
        }
        let providers = definition.module.split(separator: "|").map(String.init)
        if definition.module != "core" && !providers.contains(where: configuration.loadedModules.contains) {
            throw error("'\(operationCall.name)' comes from module '\(providers[0])', which is not loaded "
                + "(add: loadmodule \"\(providers[0]).so\")", at: operationCall.location)
        }
        let count = operationCall.arguments.count
        guard count >= definition.minimumArguments && count <= definition.maximumArguments else {
            throw error("'\(operationCall.name)' takes \(definition.minimumArguments) to \(definition.maximumArguments) "
                + "arguments, not \(count)", at: operationCall.location)
        }
        for (i, argument) in operationCall.arguments.enumerated()
            where argument == nil && i < definition.minimumArguments && !definition.omittableArguments.contains(i) {
            throw error("argument \(i + 1) of '\(operationCall.name)' is required", at: operationCall.location)
        }
        return (operationCall, definition)
    }

    /// The module's modparam for this operation's timeout, else the global `async_timeout`, else the
    /// operation's own default.
    func defaultTimeout(_ definition: AsyncOperationDefinition) -> Int {
        if let parameter = definition.timeoutParameter,
           let value = configuration.optionalInteger(definition.module, parameter.name), value > 0 {
            return value * parameter.milliseconds
        }
        return configuration.asyncTimeout ?? definition.defaultTimeout
    }

    /// `launch(operation(args…)[, report_route[, "param"]])`: fire and forget, from any route, without a
    /// transaction. The operation runs with its default timeout; `route[report_route]` (if given) runs
    /// without a message when it completes, with `$rc` and `$param(1)`.
    func launchCall(_ call: FunctionCall) throws(CompileError) -> CompiledCall {
        guard (1...3).contains(call.arguments.count) else {
            throw error("launch takes an operation, then optionally a report route and a parameter", at: call.location)
        }
        let (operationCall, definition) = try asyncOperation(call, call.arguments[0])
        var report = -1
        if call.arguments.count > 1, let argument = call.arguments[1] {
            guard let name = constantText(argument) else {
                throw error("launch's second argument is the report route's name", at: argument.location)
            }
            report = try routeIndex(.request, named: name, at: argument.location, nested: false)
        }
        let parameter = try call.arguments.count > 2 ? call.arguments[2].map { (e: Expression) throws(CompileError) in
            try value(e)
        } : nil
        let operation = try definition.compile(operationCall, self)
        let timeout = UInt64(defaultTimeout(definition))
        let reportRoute = report
        return { context in
            guard let ticket = context.suspensions.allocate(nil, resumeRoute: reportRoute, cancel: operation.cancel) else {
                return AsyncCode.cannotSuspend
            }
            if let parameter, case .text(let text) = parameter(context) {
                context.suspensions.setParameter(ticket, context.launchParameters.store(text))
            }
            Self.start(operation, ticket, timeout: timeout, context)
            return 1
        }
    }

    /// `async(operation(args…), resume_route[, timeout_ms])`: creates the transaction if there is none,
    /// suspends it with the script's edits, starts the operation and ends the current route; the operation's
    /// completion (or its timeout, after it is cancelled at its source) runs `route[resume_route]` on this
    /// shard with `$rc` set. If the transaction cannot be suspended (the shard's table of suspensions is
    /// full), async returns `AsyncCode.cannotSuspend` and the route goes on: never a silent blocking call.
    func asyncCall(_ call: FunctionCall) throws(CompileError) -> CompiledCall {
        guard RouteKinds([.request, .failure, .branch, .onReply]).contains(RouteKinds(currentRouteKind)) else {
            throw error("async() suspends a transaction: it belongs in a request, branch, failure or onreply route",
                        at: call.location)
        }
        guard call.arguments.count == 2 || call.arguments.count == 3, case .call = call.arguments[0] else {
            throw error("async takes an operation and a resume route: async(op(…), resume_route[, timeout_ms])",
                        at: call.location)
        }
        let (operationCall, definition) = try asyncOperation(call, call.arguments[0])
        guard configuration.loadedModules.contains("tm") else {
            throw error("async() suspends a transaction: load the tm module (loadmodule \"tm.so\")", at: call.location)
        }
        guard let routeArgument = call.arguments[1], let routeName = constantText(routeArgument) else {
            throw error("async's second argument is the resume route's name", at: call.arguments[1]?.location ?? call.location)
        }
        let resume = try routeIndex(.request, named: routeName, at: routeArgument.location, nested: false)
        var timeout = defaultTimeout(definition)
        if call.arguments.count == 3, let argument = call.arguments[2] {
            guard let text = constantText(argument), let ms = Int(text), ms > 0 else {
                throw error("async's timeout is a constant number of milliseconds", at: argument.location)
            }
            timeout = ms
        }
        let operation = try definition.compile(operationCall, self)
        let timeoutMilliseconds = UInt64(timeout)
        return { context in
            guard context.hasMessage else { return -1 }
            // A branch_route (before its branch is sent) or an onreply_route of a transaction's branch.
            if context.branchIndex != nil {
                return Self.hold(context, operation, resume: resume, timeout: timeoutMilliseconds)
            }
            guard context.message.isRequest else { return -1 }
            guard let manager = context.transactions, let handle = TMFunctions.transaction(context) else {
                return context.handled ? 0 : -1
            }
            guard let ticket = context.suspensions.allocate(handle, resumeRoute: resume, cancel: operation.cancel) else {
                return AsyncCode.cannotSuspend
            }
            context.saveAVPs(to: handle)
            guard let length = context.captureState(into: context.stateBytes),
                  manager.suspend(handle, state: UnsafeRawBufferPointer(rebasing: context.stateBytes[0..<length])) else {
                _ = context.suspensions.take(ticket)
                return AsyncCode.cannotSuspend
            }
            Self.start(operation, ticket, timeout: timeoutMilliseconds, context)
            context.suspendedNow = true
            context.flow = .exit
            return 0
        }
    }

    /// Starts the operation of a suspension and arms its timeout. An operation that cannot start completes at
    /// once with its code: recorded like any completion, its route resumes at the end of the loop turn, after
    /// the current route has ended.
    private static func start(_ operation: CompiledAsyncOperation, _ ticket: AsyncTicket, timeout: UInt64,
                              _ context: ScriptContext) {
        context.shard.counters.asyncInFlight = context.suspensions.live
        // Armed first: a completion delivered inside `start` finds the timer to cancel.
        context.suspensions.setTimeout(ticket, context.shard.schedule(after: timeout,
                                                                      payload: Suspensions.timeoutPayload(ticket)))
        if let code = operation.start(context, ticket) {
            context.asyncCompleted(ticket, code: code)
        }
    }

    /// async() in a branch_route or an onreply_route: the branch (not sent yet) or the response (not relayed
    /// yet) is held with the script's state, the route ends, and the resume route continues it — then the
    /// branch is sent and the response relayed, unless that route drops them. The transaction waits for
    /// what it holds (`TransactionManager.holdBranch`, `ReplyVerdict.hold`).
    private static func hold(_ context: ScriptContext, _ operation: CompiledAsyncOperation, resume: Int,
                             timeout: UInt64) -> Int {
        guard let manager = context.transactions, let handle = context.transaction, let branch = context.branchIndex,
              manager.canHold(handle) else { return AsyncCode.cannotSuspend }
        let isReply = !context.message.isRequest
        guard let ticket = context.suspensions.allocate(handle, resumeRoute: resume, cancel: operation.cancel) else {
            return AsyncCode.cannotSuspend
        }
        context.saveAVPs(to: handle)
        let message = context.message
        let response = isReply ? UnsafeRawBufferPointer(rebasing: message.bytes[0..<message.length])
            : UnsafeRawBufferPointer(start: nil, count: 0)
        guard let length = context.captureState(into: context.stateBytes),
              let held = HeldWork.keep(isReply ? .reply : .branch, source: context.source, socketIndex: context.socketIndex,
                                       forced: isReply ? nil : context.branchForced,
                                       thenRoute: isReply ? context.replyRouteAfter : -1,
                                       state: UnsafeRawBufferPointer(rebasing: context.stateBytes[0..<length]),
                                       response: response, in: context.heldWork) else {
            _ = context.suspensions.take(ticket)
            return AsyncCode.cannotSuspend
        }
        // Counted before the operation starts, so even a completion delivered at once finds it. A branch gets
        // its place now (its index); one held again from its own resume route keeps the place it has.
        var place: Int? = branch
        if isReply {
            if !manager.holdReply(handle) { place = nil }
        } else if !context.resumingHeldBranch {
            place = manager.holdBranch(handle)
        }
        guard let place else {
            context.heldWork.release(held)
            _ = context.suspensions.take(ticket)
            return AsyncCode.cannotSuspend
        }
        context.suspensions.setHeld(ticket, held, branch: place)
        start(operation, ticket, timeout: timeout, context)
        context.suspendedNow = true
        context.flow = .exit
        return 0
    }
}
