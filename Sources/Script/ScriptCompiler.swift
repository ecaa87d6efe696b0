/// Checks a parsed script completely and compiles every route to closures: names, argument counts and
/// types, variables and regular expressions are all resolved here, once, so nothing is looked up per
/// message. One compiler run per shard (closures are not shared across threads); the first run, on the
/// main thread, is the check that fails start-up with file:line:col.
public final class ScriptCompiler {
    public typealias Evaluate = (ScriptContext) -> ScriptValue
    public typealias Execute = (ScriptContext) -> Void
    typealias Condition = (ScriptContext) -> Bool

    public let source: ScriptSource
    public let library: ScriptLibrary
    public let configuration: ScriptConfiguration
    let lines: SourceLines
    /// Warnings found while compiling (e.g. a blocking call outside async), for the start-up log.
    public private(set) var warnings: [String] = []

    /// The route being compiled: what functions may be called from it.
    public private(set) var currentRouteKind = RouteKind.request
    let routes = CompiledRoutes()
    private var routeIndexByKey: [String: Int] = [:]
    private var variableSlots: [String: Int] = [:]
    private var avpSlots: [String: Int] = [:]
    /// Writers of operation outputs that are not `$avp`s (`outputTarget`), in target order.
    private var outputWriters: [OutputWriter] = []
    private var flagBits: [String: Int] = [:]
    /// What modules report when a transaction is answered (their `prepare` adds them).
    public var answerReporters: [AnswerReporter] = []
    private var numberedFlags: [Int: SourceLocation] = [:]
    private var calls: [Int: Set<Int>] = [:]
    private var currentRouteIndex = 0

    /// How deep route(…) calls may nest; checked on the call graph at compile time.
    public static let routeDepthLimit = 64

    public init(source: ScriptSource, library: ScriptLibrary, configuration: ScriptConfiguration,
                lines: SourceLines) {
        self.source = source
        self.library = library
        self.configuration = configuration
        self.lines = lines
    }

    /// Where a module's per-shard service sits in `ScriptContext.services` (the services of loaded modules,
    /// in registration order).
    public func serviceIndex(of module: String) -> Int? {
        library.services.filter { configuration.loadedModules.contains($0.module) }.firstIndex { $0.module == module }
    }

    /// Where an operation writes an output, as a target number for `ScriptContext.writeOutput` (below
    /// `OutputTarget.writerBase`: an `$avp` slot); nil when the argument is omitted. `$avp(name)`, `$var(name)`,
    /// `$ru` or `$du`, bare or quoted as OpenSIPS 2.x scripts write them (`"$avp(body)"`). In an async()
    /// the output is written as the resume route starts, so a `$var` output is seen there (the `$var` values
    /// set before the suspension are not).
    public func outputTarget(_ argument: Expression?, what: String) throws(CompileError) -> Int? {
        guard let argument else { return nil }
        var target: PseudoVariable?
        switch argument {
        case .variable(let v): target = v
        case .string(let template, _):
            if template.parts.count == 1, case .variable(let v) = template.parts[0] { target = v }
        default: break
        }
        let expected = "\(what) must be where the result goes: $avp(name), $var(name), $ru or $du"
        guard let target, target.transformations.isEmpty else { throw error(expected, at: argument.location) }
        switch target.name {
        case "avp":
            guard let name = target.argument, !name.isEmpty, target.index == nil else {
                throw error("\(what) must be a whole $avp(name), without an index", at: target.location)
            }
            return avpSlot(name)
        case "var":
            guard let name = target.argument, !name.isEmpty else { throw error("$var needs a name: $var(name)", at: target.location) }
            let slot = variableSlot(name)
            return addOutputWriter { context, value in context.variables[slot] = value }
        case "ru", "du":
            guard RouteKinds.requestLike.contains(RouteKinds(currentRouteKind)) else {
                throw error("$\(target.name) can only be set in a route that handles a request", at: target.location)
            }
            let isRequestURI = target.name == "ru"
            return addOutputWriter { context, value in
                guard case .text(let text) = value else { return }
                if isRequestURI { context.requestURI = text } else { context.destinationURI = text }
            }
        default:
            throw error(expected, at: argument.location)
        }
    }

    private func addOutputWriter(_ writer: @escaping OutputWriter) -> Int {
        outputWriters.append(writer)
        return OutputTarget.writerBase + outputWriters.count - 1
    }

    /// An `$avp(name)` an operation reads all the values of (newest first), as a slot; nil when omitted.
    public func inputAVP(_ argument: Expression?, what: String) throws(CompileError) -> Int? {
        try bareAVP(argument, what: what, because: ": each of its values is one entry")
    }

    /// A plain `$avp(name)` (no index, no transformation) as a slot; otherwise the error says why it must be one.
    private func bareAVP(_ argument: Expression?, what: String, because reason: String) throws(CompileError) -> Int? {
        guard let argument else { return nil }
        guard case .variable(let v) = argument, v.name == "avp", let name = v.argument, !name.isEmpty,
              v.index == nil, v.transformations.isEmpty else {
            throw error("\(what) must be an $avp(name)\(reason)", at: argument.location)
        }
        return avpSlot(name)
    }

    public func error(_ message: String, at location: SourceLocation) -> CompileError {
        CompileError(message, at: location, sourceLine: lines.line(location))
    }

    public func warn(_ message: String, at location: SourceLocation) {
        warnings.append("\(location): warning: \(message)")
    }

    // MARK: - Whole script

    /// Compiles every route. Throws the first mistake found.
    public func compile() throws(CompileError) -> CompiledScript {
        var seen: [String: SourceLocation] = [:]
        for (index, route) in source.routes.enumerated() {
            let key = ScriptCompiler.key(route.kind, route.name)
            if let first = seen[key] {
                throw error("\(route.kind)\(route.name.isEmpty ? "" : "[\(route.name)]") is defined twice (first at \(first))",
                            at: route.location)
            }
            seen[key] = route.location
            routeIndexByKey[key] = index
        }
        routes.bodies = Array(repeating: { _ in }, count: source.routes.count)
        for name in configuration.loadedModules.sorted() {
            try library.modules[name]?.prepare?(self)
        }
        for (index, route) in source.routes.enumerated() {
            currentRouteKind = route.kind
            currentRouteIndex = index
            switch route.kind {
            case .local:
                warn("local_route is checked but never runs: ringsip sends no requests of its own yet (its CANCELs "
                    + "and ACKs are built by RFC 3261's rules)", at: route.location)
            case .event:
                warn("event_route[\(route.name)] is checked but never runs: ringsip raises no events yet",
                     at: route.location)
            default: break
            }
            routes.bodies[index] = try block(route.body)
        }
        try checkRouteCalls()
        return CompiledScript(routes: routes, source: source, variableCount: variableSlots.count,
                              outputWriters: outputWriters, answerReporters: answerReporters)
    }

    static func key(_ kind: RouteKind, _ name: String) -> String {
        switch kind {
        case .timer: "timer_route[\(name)]"
        default: "\(kind)[\(name)]"
        }
    }

    /// The index of a route a function refers to (`route(name)`, `t_on_failure("name")`). `nested`: the route runs
    /// inside the caller (route(…)), so it counts toward recursion and depth; a resume or report route of
    /// async()/launch() runs later on its own, so a route may resume itself.
    public func routeIndex(_ kind: RouteKind, named name: String, at location: SourceLocation,
                           nested: Bool = true) throws(CompileError) -> Int {
        guard let index = routeIndexByKey[ScriptCompiler.key(kind, name)] else {
            let known = source.routes.filter { RouteKinds($0.kind) == RouteKinds(kind) && !$0.name.isEmpty }.map(\.name)
            let hint = ScriptCompiler.suggestion(for: name, among: known).map { " (did you mean '\($0)'?)" } ?? ""
            throw error("unknown \(kind) '\(name)'\(hint)", at: location)
        }
        if kind == .request && nested { calls[currentRouteIndex, default: []].insert(index) }
        return index
    }

    /// Rejects recursion (which would have no static bound) and call chains deeper than the limit.
    private func checkRouteCalls() throws(CompileError) {
        var depth: [Int: Int] = [:]
        var visiting: [Int] = []
        func visit(_ route: Int) throws(CompileError) -> Int {
            if let known = depth[route] { return known }
            if let start = visiting.firstIndex(of: route) {
                let cycle = (visiting[start...] + [route]).map { name(ofRoute: $0) }.joined(separator: " → ")
                throw error("route recursion has no bound: \(cycle)", at: source.routes[route].location)
            }
            visiting.append(route)
            var deepest = 0
            for callee in calls[route, default: []].sorted() { deepest = max(deepest, try visit(callee)) }
            visiting.removeLast()
            depth[route] = deepest + 1
            if deepest + 1 > ScriptCompiler.routeDepthLimit {
                throw error("route calls nest \(deepest + 1) deep from here; the limit is \(ScriptCompiler.routeDepthLimit)",
                            at: source.routes[route].location)
            }
            return deepest + 1
        }
        for route in source.routes.indices { _ = try visit(route) }
    }

    private func name(ofRoute index: Int) -> String {
        let route = source.routes[index]
        return route.name.isEmpty ? "\(route.kind)" : "\(route.kind)[\(route.name)]"
    }

    // MARK: - Slots

    func variableSlot(_ name: String) -> Int {
        if let slot = variableSlots[name] { return slot }
        let slot = variableSlots.count
        variableSlots[name] = slot
        return slot
    }

    /// The slot of `$avp(name)`, for a module whose modparam names an AVP (registrar's `received_avp`).
    public func avpSlot(named name: String) -> Int { avpSlot(name) }

    func avpSlot(_ name: String) -> Int {
        if let slot = avpSlots[name] { return slot }
        let slot = avpSlots.count
        avpSlots[name] = slot
        return slot
    }

    /// A flag by number (0–63) or by name (OpenSIPS 3.x named flags get bits in order of first use).
    public func flagBit(_ argument: Expression?, at location: SourceLocation) throws(CompileError) -> Int {
        let name: String
        switch argument {
        case .integer(let n, let l)?:
            return try numberedFlag(n, at: l)
        case .identifier(let text, _)?: name = text
        case .string(let template, _)? where template.literal.map({ !$0.isEmpty }) ?? false: name = template.literal!
        default: throw error("expected a flag number or name", at: argument?.location ?? location)
        }
        let at = argument?.location ?? location
        if let n = Int(name) { return try numberedFlag(n, at: at) }
        if let bit = flagBits[name] { return bit }
        // Named flags (OpenSIPS 3.x) take the highest bits no numbered flag uses, in order of first use.
        var bit = 63
        while bit >= 0 && (numberedFlags[bit] != nil || flagBits.values.contains(bit)) { bit -= 1 }
        guard bit >= 0 else { throw error("more than 64 flags", at: at) }
        flagBits[name] = bit
        return bit
    }

    private func numberedFlag(_ n: Int, at location: SourceLocation) throws(CompileError) -> Int {
        guard n >= 0 && n < 64 else { throw error("flag \(n) is out of range; flags are 0 to 63", at: location) }
        if let owner = flagBits.first(where: { $0.value == n })?.key {
            throw error("flag \(n) is also used by named flag '\(owner)'", at: location)
        }
        numberedFlags[n] = location
        return n
    }

    // MARK: - Statements

    func block(_ statements: [Statement]) throws(CompileError) -> Execute {
        var compiled: [Execute] = []
        for statement in statements { compiled.append(try self.statement(statement)) }
        if compiled.isEmpty { return { _ in } }
        let steps = compiled
        return { context in
            for step in steps {
                step(context)
                if context.flow != .normal { return }
                // Text that did not fit the arena came out empty: stop rather than go on with wrong values.
                if context.arena.overflowed {
                    context.fail("values for one message exceed the \(context.arena.capacity / 1024) KiB arena")
                    return
                }
            }
        }
    }

    func statement(_ statement: Statement) throws(CompileError) -> Execute {
        switch statement {
        case .expression(let expression):
            guard case .call(let call) = expression else {
                throw error("expected a function call, an assignment or a statement", at: expression.location)
            }
            let run = try self.call(call)
            return { context in
                let code = run(context)
                context.returnCode = code
                if code == 0 && context.flow == .normal { context.flow = .exit }
            }
        case .assignment(let target, let op, let value, let location):
            return try assignment(target, op, value, location)
        case .ifElse(let condition, let then, let otherwise, _):
            let test = try self.condition(condition)
            let yes = try block(then)
            if let otherwise {
                let no = try block(otherwise)
                return { context in
                    let passed = test(context)
                    guard context.flow == .normal else { return }
                    if passed { yes(context) } else { no(context) }
                }
            }
            return { context in
                let passed = test(context)
                if passed && context.flow == .normal { yes(context) }
            }
        case .switchCase(let subject, let cases, let defaultBody, let location):
            return try switchStatement(subject, cases, defaultBody, location)
        case .whileLoop(let condition, let body, let location):
            let test = try self.condition(condition)
            let run = try block(body)
            let limit = configuration.maxWhileLoops
            let place = "\(location)"
            return { context in
                var iterations = 0
                while test(context) && context.flow == .normal {
                    iterations += 1
                    if iterations > limit {
                        context.fail("while loop at \(place) ran \(limit) times for one message; stopped the script")
                        return
                    }
                    run(context)
                    if context.flow == .breakBlock { context.flow = .normal; return }
                    if context.flow != .normal { return }
                }
            }
        case .returnStatement(let value, _):
            guard let value else {
                return { context in
                    context.returnCode = 1
                    context.flow = .returned
                }
            }
            let evaluate = try integer(value, what: "return value")
            return { context in
                let code = evaluate(context) ?? -1
                context.returnCode = code
                context.flow = code == 0 ? .exit : .returned
            }
        case .exit:
            return { context in context.flow = .exit }
        case .drop:
            return { context in context.flow = .drop }
        case .breakStatement:
            return { context in context.flow = .breakBlock }
        }
    }

    private func switchStatement(_ subject: Expression, _ cases: [SwitchCase], _ defaultBody: [Statement]?,
                                 _ location: SourceLocation) throws(CompileError) -> Execute {
        let value = try self.value(subject)
        var labels: [ScriptValue] = []
        var bodies: [Execute] = []
        for item in cases {
            switch item.value {
            case .integer(let n, _): labels.append(.integer(n))
            case .string(let template, let l):
                guard let text = template.literal else { throw error("a case label must be a constant", at: l) }
                labels.append(.text(permanentBytes(text)))
            case .negate(.integer(let n, _), _): labels.append(.integer(-n))
            default: throw error("a case label must be a string or integer constant", at: item.location)
            }
            bodies.append(try block(item.body))
        }
        let fallback = try defaultBody.map { (body: [Statement]) throws(CompileError) -> Execute in try block(body) }
        let count = labels.count
        return { context in
            let subject = value(context)
            var start = count
            for i in 0..<count where compareValues(subject, labels[i]) == 0 {
                start = i
                break
            }
            // Cases fall through until a break, as in OpenSIPS; default runs last.
            var i = start
            while i < count {
                bodies[i](context)
                if context.flow == .breakBlock { context.flow = .normal; return }
                if context.flow != .normal { return }
                i += 1
            }
            if let fallback {
                fallback(context)
                if context.flow == .breakBlock { context.flow = .normal }
            }
        }
    }

    // MARK: - Calls

    /// Compiles a function call: resolution, module check, route kind, argument count, then the
    /// function's own checks.
    public func call(_ call: FunctionCall) throws(CompileError) -> CompiledCall {
        if call.name == "route" {
            return try routeCall(call)
        }
        if call.name == "async" {
            return try asyncCall(call)
        }
        if call.name == "launch" {
            return try launchCall(call)
        }
        guard let function = library.functions[call.name] else {
            let hint = ScriptCompiler.suggestion(for: call.name, among: Array(library.functions.keys) + ["route"])
                .map { " (did you mean '\($0)'?)" } ?? ": ringsip does not provide it"
            throw error("unknown function '\(call.name)'\(hint)", at: call.location)
        }
        // A function may live in either of two modules across OpenSIPS versions ("sipmsgops|textops").
        let providers = function.module.split(separator: "|").map(String.init)
        if function.module != "core" && !providers.contains(where: configuration.loadedModules.contains) {
            throw error("function '\(call.name)' comes from module '\(providers[0])', which is not loaded "
                + "(add: loadmodule \"\(providers[0]).so\")", at: call.location)
        }
        guard function.allowedIn.contains(RouteKinds(currentRouteKind)) else {
            throw error("function '\(call.name)' cannot be used in \(currentRouteKind)", at: call.location)
        }
        let count = call.arguments.count
        guard count >= function.minimumArguments && count <= function.maximumArguments else {
            let expected = function.minimumArguments == function.maximumArguments
                ? "\(function.minimumArguments)"
                : "\(function.minimumArguments) to \(function.maximumArguments)"
            throw error("function '\(call.name)' takes \(expected) argument\(function.maximumArguments == 1 ? "" : "s"), "
                + "not \(count)", at: call.location)
        }
        for (i, argument) in call.arguments.enumerated() where argument == nil && i < function.minimumArguments {
            throw error("argument \(i + 1) of '\(call.name)' is required", at: call.location)
        }
        return try function.compile(call, self)
    }

    /// `route(name)`, or `route(name, a, b, …)` (OpenSIPS 2.2 and later), whose values the called route reads as
    /// `$param(1)`, `$param(2)`, … They are evaluated before the call and kept on the value stack while it runs.
    private func routeCall(_ call: FunctionCall) throws(CompileError) -> CompiledCall {
        guard let argument = call.arguments.first ?? nil else {
            throw error("route() takes a route name, then optionally its parameters", at: call.location)
        }
        let name: String
        switch argument {
        case .identifier(let n, _): name = n
        case .integer(let n, _): name = String(n)
        case .string(let template, _) where template.literal != nil: name = template.literal!
        default: throw error("route() takes a route name, not an expression", at: argument.location)
        }
        guard call.arguments.count <= 17 else { throw error("route() passes at most 16 parameters", at: call.location) }
        var parameters: [Evaluate] = []
        for (i, parameter) in call.arguments.dropFirst().enumerated() {
            guard let parameter else { throw error("parameter \(i + 1) of route(\(name), …) is empty", at: call.location) }
            parameters.append(try value(parameter))
        }
        let index = try routeIndex(.request, named: name, at: argument.location)
        let routes = self.routes
        let passed = parameters
        return { context in
            let saved = context.routeParameters
            let base = context.stackTop
            if !passed.isEmpty {
                // Each value is computed before the next is pushed: a template uses the stack above stackTop.
                for evaluate in passed { context.push(evaluate(context)) }
                context.routeParameters = base..<context.stackTop
            }
            routes.bodies[index](context)
            context.routeParameters = saved
            context.stackTop = base
            switch context.flow {
            case .returned, .breakBlock:
                context.flow = .normal
                return context.returnCode
            case .normal:
                context.returnCode = 1
                return 1
            case .exit, .drop:
                return 0
            }
        }
    }

    /// The closest known name, for "did you mean": one edit away (a swap of two neighbours is one), or two in a
    /// name that starts the same way (a different first letter and another slip is more often a different name:
    /// `fr_timer` is not `T1_timer`, `uri` is not `rr`). Ties go to the alphabetically first, so the hint is the
    /// same on every run.
    static func suggestion(for name: String, among candidates: [String]) -> String? {
        let typed = Array(name.lowercased().utf8)
        guard typed.count >= 2 else { return nil }
        var best: (candidate: String, distance: Int)?
        for candidate in candidates.sorted() where candidate != name {
            let known = Array(candidate.lowercased().utf8)
            let distance = editDistance(typed, known)
            // Two slips in a short name are a different name ('uac' is not 'uri'), unless they are letters left out.
            let close = distance <= 1 || (distance == 2 && typed.first == known.first
                && (typed.count >= 5 || isSubsequence(typed, of: known)))
            if close && distance < (best?.distance ?? Int.max) { best = (candidate, distance) }
        }
        return best?.candidate
    }

    static func isSubsequence(_ a: [UInt8], of b: [UInt8]) -> Bool {
        var rest = b[...]
        for byte in a {
            guard let i = rest.firstIndex(of: byte) else { return false }
            rest = rest[(i + 1)...]
        }
        return true
    }

    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var beforePrevious = previous
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                // Two neighbours swapped ("relya") is one slip.
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], beforePrevious[j - 2] + 1)
                }
            }
            beforePrevious = previous
            previous = current
        }
        return previous[b.count]
    }
}

/// Route bodies by index; calls between routes go through it, so a route can call one compiled after it.
final class CompiledRoutes {
    var bodies: [ScriptCompiler.Execute] = []
}

/// One shard's compiled script.
public struct CompiledScript {
    let routes: CompiledRoutes
    public let source: ScriptSource
    public let variableCount: Int
    let outputWriters: [OutputWriter]
    let answerReporters: [AnswerReporter]

    /// The index of the route of this kind and name, if the script defines it.
    public func index(_ kind: RouteKind, _ name: String = "") -> Int? {
        source.routes.firstIndex { RouteKinds($0.kind) == RouteKinds(kind) && $0.name == name }
    }

    public func run(_ index: Int, _ context: ScriptContext) {
        routes.bodies[index](context)
    }
}

/// Writes an operation's output into a pseudo-variable that is not an `$avp` (`ScriptCompiler.outputAVP`).
typealias OutputWriter = (ScriptContext, ScriptValue) -> Void

/// Output target numbers: `$avp` slots below `writerBase`, the script's output writers from it. Module tokens
/// keep a target (plus one) in 16 bits, so both stay below 0xFFFF.
public enum OutputTarget {
    public static let writerBase = 0x4000
}
