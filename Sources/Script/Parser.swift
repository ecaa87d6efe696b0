/// Recursive descent over the token stream: the top level (globals, modules, parameters, routes) here, statements
/// and expressions in the `Parser+…` files. Stops at the first mistake, with what was expected.
///
/// Where an error points: "expected X after Y" just after Y (as C compilers do, so a missing `;` is shown on the
/// line that lacks it); everything else at the token that was not what it should have been.
struct Parser {
    private var stream: TokenStream
    /// How deep blocks and parenthesized expressions nest here: the parser and the compiler recurse once per
    /// level, so a bound keeps a hostile or generated script from overflowing the stack.
    var nesting = 0
    static let nestingLimit = 200
    /// The token being looked at; consumed by `advance()`.
    private(set) var current: Token
    /// Just after the last consumed token.
    private(set) var previousEnd: SourceLocation

    init(_ stream: TokenStream) throws(CompileError) {
        var stream = stream
        current = try stream.next()
        previousEnd = current.location
        self.stream = stream
    }

    mutating func advance() throws(CompileError) {
        previousEnd = current.end
        current = try stream.next()
    }

    func error(_ message: String, at location: SourceLocation) -> CompileError {
        stream.error(message, at: location)
    }

    /// Consumes `p` or throws `message` just after the previous token.
    mutating func expect(_ p: Punctuation, after message: String) throws(CompileError) {
        guard current.isPunctuation(p) else { throw error(message, at: previousEnd) }
        try advance()
    }

    /// Consumes `p` or throws `message` at the current token.
    mutating func expect(_ p: Punctuation, here message: String) throws(CompileError) {
        guard current.isPunctuation(p) else { throw error(message, at: current.location) }
        try advance()
    }

    /// `12:3`, or `other.cfg:12:3` when `location` is in another file than the current token.
    func place(_ location: SourceLocation) -> String {
        location.file == current.location.file ? "\(location.line):\(location.column)" : location.description
    }

    // MARK: Top level

    static let routeKinds: [String: RouteKind] = [
        "route": .request, "branch_route": .branch, "failure_route": .failure, "onreply_route": .onReply,
        "startup_route": .startup, "timer_route": .timer(seconds: 0), "error_route": .error, "local_route": .local,
        "event_route": .event,
    ]

    mutating func parseScript() throws(CompileError) -> ScriptSource {
        var script = ScriptSource()
        while !current.isEnd {
            // A stray `;` after a top-level item is harmless; some old scripts end `modparam(...)` with one.
            if current.isPunctuation(.semicolon) {
                try advance()
                continue
            }
            guard let name = current.identifier else {
                throw error("expected a global setting, loadmodule, modparam or a route block", at: current.location)
            }
            let location = current.location
            switch name {
            case "loadmodule":
                try advance()
                guard case .string(let path) = current.kind else {
                    throw error("expected a quoted module path after 'loadmodule'", at: previousEnd)
                }
                script.modules.append(ModuleLoad(path: path.plain, location: location))
                try advance()
            case "modparam":
                script.parameters.append(try parseModuleParameter())
            case _ where Parser.routeKinds[name] != nil:
                script.routes.append(try parseRoute(Parser.routeKinds[name]!))
            default:
                try advance()
                if current.isPunctuation(.assign) {
                    script.globals.append(try parseGlobal(name: name, at: location))
                } else if current.isPunctuation(.leftBracket) || current.isPunctuation(.leftBrace) {
                    throw error(
                        "unknown route type '\(name)'; expected route, branch_route, failure_route, onreply_route, "
                            + "startup_route, timer_route, error_route, local_route or event_route", at: location)
                } else if current.isPunctuation(.leftParen) {
                    throw error("a call to '\(name)' outside a route; statements belong in a route block",
                                at: location)
                } else {
                    throw error("expected '=' after '\(name)'", at: previousEnd)
                }
            }
        }
        return script
    }

    /// - Precondition: the current token is the `=`, and nothing after it has been lexed.
    private mutating func parseGlobal(name: String, at location: SourceLocation) throws(CompileError) -> GlobalSetting {
        guard let (value, valueLocation) = try stream.globalValue() else {
            throw error("expected a value after '='", at: current.end)
        }
        try advance()
        return GlobalSetting(name: name, value: value, location: location, valueLocation: valueLocation)
    }

    /// `modparam("module", "name", "value" | integer)`.
    private mutating func parseModuleParameter() throws(CompileError) -> ModuleParameter {
        let location = current.location
        try advance()
        try expect(.leftParen, after: "expected '(' after 'modparam'")
        guard case .string(let module) = current.kind else {
            throw error("expected the module name as a quoted string", at: current.location)
        }
        try advance()
        try expect(.comma, after: "expected ',' after the module name")
        guard case .string(let name) = current.kind else {
            throw error("expected the parameter name as a quoted string", at: current.location)
        }
        try advance()
        try expect(.comma, after: "expected ',' after the parameter name")
        let valueLocation = current.location
        let value: GlobalValue
        let negative = current.isPunctuation(.minus)
        if negative { try advance() }
        switch current.kind {
        case .string(let s) where !negative: value = .string(s.plain)
        case .integer(let n): value = .integer(negative ? -n : n)
        // yes/no, on/off, true/false unquoted, as OpenSIPS allows for flags.
        case .identifier(let word) where !negative && GlobalValue.boolean(.word(word)) != nil: value = .word(word)
        default: throw error("expected a string, an integer or yes/no as the parameter value", at: current.location)
        }
        try advance()
        try expect(.rightParen, after: "expected ')' to close modparam")
        return ModuleParameter(module: module.plain, name: name.plain, value: value, location: location,
                               valueLocation: valueLocation)
    }

    /// `route { }`, `route[name] { }`, `timer_route[name, seconds] { }`, … A name is a word, a quoted string or an
    /// integer (`route[1]` in 1.x/2.x scripts), kept as text.
    private mutating func parseRoute(_ proposedKind: RouteKind) throws(CompileError) -> RouteDefinition {
        var kind = proposedKind
        let keyword = current.identifier!
        let location = current.location
        try advance()
        var name = ""
        let usage: String? = switch kind {
        case .branch, .failure: "expected a name: \(keyword)[name]"
        case .event: "expected the event's name: event_route[E_NAME]"
        case .timer: "expected a seconds interval: timer_route[name, seconds]"
        default: nil
        }
        if current.isPunctuation(.leftBracket) {
            if kind == .startup || kind == .error || kind == .local {
                throw error("'\(keyword)' takes no name", at: current.location)
            }
            try advance()
            switch current.kind {
            case .identifier(let word): name = word
            case .string(let text): name = text.plain
            case .integer(let number): name = String(number)
            default: throw error("expected a route name after '['", at: current.location)
            }
            try advance()
            // event_route[E_NAME, async] (OpenSIPS 3.x): how the event runs, which ringsip decides itself.
            if kind == .event, current.isPunctuation(.comma) {
                try advance()
                guard current.isIdentifier("sync") || current.isIdentifier("async") else {
                    throw error("expected sync or async after the event's name", at: current.location)
                }
                try advance()
            }
            if case .timer = kind {
                guard current.isPunctuation(.comma) else { throw error(usage!, at: current.location) }
                try advance()
                guard case .integer(let seconds) = current.kind else { throw error(usage!, at: current.location) }
                kind = .timer(seconds: seconds)
                try advance()
            }
            try expect(.rightBracket, here: "expected ']' after the route name")
        } else if let usage {
            throw error(usage, at: current.location)
        }
        guard current.isPunctuation(.leftBrace) else {
            throw error("expected '{' to open the route body", at: current.location)
        }
        let body = try parseBlock()
        return RouteDefinition(kind: kind, name: name, body: body, location: location)
    }

    /// `{ statements }`.
    /// - Precondition: the current token is the `{`.
    mutating func parseBlock() throws(CompileError) -> [Statement] {
        let open = current.location
        try enterNesting(at: open)
        defer { nesting -= 1 }
        try advance()
        var body: [Statement] = []
        while !current.isPunctuation(.rightBrace) {
            if current.isEnd {
                throw error("unexpected end of file: expected '}' to close the block opened at \(place(open))",
                            at: current.location)
            }
            body += try parseStatement()
        }
        try advance()
        return body
    }

    /// One level deeper; refused past `nestingLimit`.
    mutating func enterNesting(at location: SourceLocation) throws(CompileError) {
        guard nesting < Parser.nestingLimit else {
            throw error("nested more than \(Parser.nestingLimit) levels deep (blocks and parentheses): simplify the script",
                        at: location)
        }
        nesting += 1
    }
}
