/// The routing script as written: what the parser produces and the checker/compiler consume.
/// Nothing here is evaluated per message; the compiler turns it into closures once at start-up.

/// Where something was written. `file` is the path as opened (include_file paths resolved against the
/// including file's directory), `line` and `column` count from 1; `column` counts bytes.
public struct SourceLocation: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// A whole script, includes already spliced in, in source order.
public struct ScriptSource: Sendable {
    public var globals: [GlobalSetting] = []
    public var modules: [ModuleLoad] = []
    public var parameters: [ModuleParameter] = []
    public var routes: [RouteDefinition] = []

    public init() {}
}

/// `name = value` at top level: `listen = udp:127.0.0.1:5060`, `log_level = 3`, `children = 4`,
/// `mpath = "/usr/lib"`, `socket = udp:...`.
public struct GlobalSetting: Sendable {
    public var name: String
    public var value: GlobalValue
    public var location: SourceLocation
    /// Where the value starts, for errors about the value.
    public var valueLocation: SourceLocation
}

public enum GlobalValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    /// An unquoted word such as `udp:127.0.0.1:5060`, `[::1]`, `yes`, `off`.
    case word(String)
}

/// `loadmodule "tm.so"` (a path is kept as written; the checker looks at its last component).
public struct ModuleLoad: Sendable {
    public var path: String
    public var location: SourceLocation
}

/// `modparam("tm", "fr_timeout", 5)`.
public struct ModuleParameter: Sendable {
    public var module: String
    public var name: String
    public var value: GlobalValue
    public var location: SourceLocation
    public var valueLocation: SourceLocation
}

public enum RouteKind: Sendable, Equatable, CustomStringConvertible {
    /// `route { }` (name "") and `route[name] { }`.
    case request
    case branch
    case failure
    /// `onreply_route { }` (name "") and `onreply_route[name] { }`.
    case onReply
    case startup
    /// `timer_route[name, seconds] { }`.
    case timer(seconds: Int)
    case error
    /// `local_route { }`: requests the proxy sends of itself.
    case local
    /// `event_route[E_NAME] { }`: an event, without a message.
    case event

    public var description: String {
        switch self {
        case .request: "route"
        case .branch: "branch_route"
        case .failure: "failure_route"
        case .onReply: "onreply_route"
        case .startup: "startup_route"
        case .timer: "timer_route"
        case .error: "error_route"
        case .local: "local_route"
        case .event: "event_route"
        }
    }
}

public struct RouteDefinition: Sendable {
    public var kind: RouteKind
    /// "" for the unnamed main `route`, `onreply_route`, `startup_route`, `error_route`.
    public var name: String
    public var body: [Statement]
    public var location: SourceLocation
}

public indirect enum Statement: Sendable {
    /// A function call (or any expression) used as a statement: `sl_send_reply(404, "Not Found");`.
    case expression(Expression)
    /// `$var(x) = ...;`, `:=`, `+=`.
    case assignment(target: PseudoVariable, op: AssignmentOperator, value: Expression, location: SourceLocation)
    case ifElse(condition: Expression, then: [Statement], otherwise: [Statement]?, location: SourceLocation)
    case switchCase(subject: Expression, cases: [SwitchCase], defaultBody: [Statement]?, location: SourceLocation)
    case whileLoop(condition: Expression, body: [Statement], location: SourceLocation)
    /// `return;`, `return(n);`, `return n;`.
    case returnStatement(Expression?, location: SourceLocation)
    /// `exit;` or `exit();`
    case exit(location: SourceLocation)
    /// `drop;` or `drop();`
    case drop(location: SourceLocation)
    /// `break;` inside a switch case.
    case breakStatement(location: SourceLocation)
}

public enum AssignmentOperator: Sendable, Equatable {
    /// `=`
    case assign
    /// `:=` (OpenSIPS: assign, replacing every value of an AVP)
    case assignReplacing
    /// `+=`
    case append
}

public struct SwitchCase: Sendable {
    /// A string or integer literal.
    public var value: Expression
    public var body: [Statement]
    public var location: SourceLocation
}

public indirect enum Expression: Sendable {
    /// `"text with $ru and $var(x) substituted"`: literal parts and variables, escapes already decoded.
    case string(StringTemplate, location: SourceLocation)
    case integer(Int, location: SourceLocation)
    /// `$ru`, `$hdr(From)[1]`, `$avp(x){s.len}`.
    case variable(PseudoVariable)
    /// `NULL`.
    case null(location: SourceLocation)
    /// A bare word: `myself`, `uri`, `from_uri`, `src_ip`, a route name in `route(name)`, `L_INFO`.
    case identifier(String, location: SourceLocation)
    case call(FunctionCall)
    case not(Expression, location: SourceLocation)
    /// `-x`
    case negate(Expression, location: SourceLocation)
    case binary(BinaryOperator, Expression, Expression, location: SourceLocation)

    public var location: SourceLocation {
        switch self {
        case .string(_, let l), .integer(_, let l), .null(let l), .identifier(_, let l), .not(_, let l),
             .negate(_, let l), .binary(_, _, _, let l):
            l
        case .variable(let v): v.location
        case .call(let c): c.location
        }
    }
}

public enum BinaryOperator: String, Sendable, Equatable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    case matches = "=~", notMatches = "!~"
    case and = "&&", or = "||"
    case plus = "+", minus = "-"
    case times = "*", divide = "/", modulo = "%", bitAnd = "&", bitOr = "|", bitXor = "^"
    case shiftLeft = "<<", shiftRight = ">>"
}

public struct StringTemplate: Sendable {
    public var parts: [TemplatePart]

    public init(parts: [TemplatePart]) { self.parts = parts }

    /// The text when the template has no variables.
    public var literal: String? {
        var text = ""
        for part in parts {
            guard case .literal(let s) = part else { return nil }
            text += s
        }
        return text
    }
}

public enum TemplatePart: Sendable {
    case literal(String)
    case variable(PseudoVariable)
}

/// `$name`, `$name(argument)`, `$name(argument)[index]`, each optionally followed by `{transformation}`s.
/// Also the braced form `$(name(argument)[index]{transformation})`.
public struct PseudoVariable: Sendable {
    /// Without the `$`: `ru`, `hdr`, `avp`, `var`, `T_reply_code`.
    public var name: String
    /// The text inside `( )`, as written (`From`, `caller`, `x`); nil without parentheses.
    public var argument: String?
    public var index: PseudoVariableIndex?
    public var transformations: [Transformation]
    public var location: SourceLocation

    public init(name: String, argument: String?, index: PseudoVariableIndex?, transformations: [Transformation],
                location: SourceLocation) {
        self.name = name
        self.argument = argument
        self.index = index
        self.transformations = transformations
        self.location = location
    }
}

public enum PseudoVariableIndex: Sendable, Equatable {
    /// `[0]`, `[1]`, `[-1]` (the last).
    case position(Int)
    /// `[*]`
    case all
    /// `[$var(i)]`: the position read per message (for `$avp`).
    indirect case variable(PseudoVariable)

    public static func == (lhs: PseudoVariableIndex, rhs: PseudoVariableIndex) -> Bool {
        switch (lhs, rhs) {
        case (.position(let a), .position(let b)): a == b
        case (.all, .all): true
        case (.variable(let a), .variable(let b)): a.name == b.name && a.argument == b.argument
        default: false
        }
    }
}

/// `{s.len}`, `{param.value,name}`: the dotted name and the comma-separated arguments as written.
public struct Transformation: Sendable {
    public var name: String
    public var arguments: [String]
    public var location: SourceLocation
}

/// `name(arg, , arg)`; an empty argument (an omitted optional one) is nil.
public struct FunctionCall: Sendable {
    public var name: String
    public var arguments: [Expression?]
    public var location: SourceLocation
}
