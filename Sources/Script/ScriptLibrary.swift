/// What a script may call and configure: modules with their parameters and functions. The layers above
/// register theirs at start-up (this layer: the stateless core; later TM and the async operations), so
/// `Script` never imports them.

/// Where a function may be called. A bit per `RouteKind` case.
public struct RouteKinds: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let request = RouteKinds(rawValue: 1 << 0)
    public static let branch = RouteKinds(rawValue: 1 << 1)
    public static let failure = RouteKinds(rawValue: 1 << 2)
    public static let onReply = RouteKinds(rawValue: 1 << 3)
    public static let startup = RouteKinds(rawValue: 1 << 4)
    public static let timer = RouteKinds(rawValue: 1 << 5)
    public static let error = RouteKinds(rawValue: 1 << 6)
    public static let local = RouteKinds(rawValue: 1 << 7)
    public static let event = RouteKinds(rawValue: 1 << 8)

    public static let all = RouteKinds(rawValue: 0x1FF)
    /// Routes that handle a request.
    public static let requestLike: RouteKinds = [.request, .branch, .failure, .error]
    /// Routes that have a message at all.
    public static let withMessage: RouteKinds = [.request, .branch, .failure, .onReply, .error, .local]

    public init(_ kind: RouteKind) {
        switch kind {
        case .request: self = .request
        case .branch: self = .branch
        case .failure: self = .failure
        case .onReply: self = .onReply
        case .startup: self = .startup
        case .timer: self = .timer
        case .error: self = .error
        case .local: self = .local
        case .event: self = .event
        }
    }
}

/// A compiled function call: runs per message, returns the OpenSIPS code (positive true, negative false,
/// 0 ends the script).
public typealias CompiledCall = (ScriptContext) -> Int

public struct ScriptFunction: Sendable {
    public var name: String
    /// The module that must be loaded to use it; "core" needs none.
    public var module: String
    public var minimumArguments: Int
    public var maximumArguments: Int
    public var allowedIn: RouteKinds
    /// Checks and compiles one call site. Runs once per call site per shard at start-up.
    public var compile: @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledCall

    public init(_ name: String, module: String, arguments: ClosedRange<Int>, allowedIn: RouteKinds = .all,
                compile: @escaping @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledCall) {
        self.name = name
        self.module = module
        minimumArguments = arguments.lowerBound
        maximumArguments = arguments.upperBound
        self.allowedIn = allowedIn
        self.compile = compile
    }
}

public enum ModuleParameterType: Sendable, Equatable, CustomStringConvertible {
    case integer
    case string
    /// A flag by number or name (OpenSIPS 1.x–2.1 acc's `db_flag`, "string/integer" in its docs).
    case flag

    public var description: String {
        switch self {
        case .integer: "an integer"
        case .string: "a string"
        case .flag: "a flag number or name"
        }
    }
}

/// Why a module parameter's value cannot be used (the checker adds file:line:col).
public struct ParameterProblem: Error, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

public struct ModuleParameterDeclaration: Sendable {
    public var name: String
    public var type: ModuleParameterType
    /// The values an integer parameter may take; checked at start with file:line:col, so a value that would
    /// overflow a later computation (seconds to milliseconds) or make no sense (a T1 of 0) never starts.
    public var range: ClosedRange<Int>
    /// What one unit is, for the error message ("seconds", "ms").
    public var unit: String?
    /// Why the parameter has no effect in ringsip, when it has none: accepted, of any type, with one warning
    /// naming it (an OpenSIPS tuning knob such as tm's `restart_fr_on_each_reply` for a timer ringsip lacks).
    public var ignoredBecause: String?
    /// A check of the value beyond its type, run once at start on the main thread: the value to keep (a `db_url`
    /// with its host name resolved), or the problem (a host that does not resolve is refused at its modparam, not
    /// at the first query).
    public var validate: (@Sendable (GlobalValue) -> Result<GlobalValue, ParameterProblem>)?

    /// Integers default to 0 … 2^31-1: every ringsip integer parameter is a count, a size, a flag or a time.
    public static let defaultRange = 0...Int(Int32.max)

    public init(_ name: String, _ type: ModuleParameterType, range: ClosedRange<Int> = defaultRange,
                unit: String? = nil, validate: (@Sendable (GlobalValue) -> Result<GlobalValue, ParameterProblem>)? = nil) {
        self.name = name
        self.type = type
        self.range = range
        self.unit = unit
        self.validate = validate
    }

    /// A parameter accepted with a warning saying why it has no effect.
    public static func ignored(_ name: String, _ reason: String) -> ModuleParameterDeclaration {
        var declaration = ModuleParameterDeclaration(name, .string)
        declaration.ignoredBecause = reason
        return declaration
    }
}

public struct ScriptModule: Sendable {
    /// As in `loadmodule "name.so"`.
    public var name: String
    public var parameters: [ModuleParameterDeclaration]
    public var functions: [ScriptFunction]
    /// Operations `async()` and `launch()` can start (an operation may also be a plain function, run
    /// synchronously outside async).
    public var asyncOperations: [AsyncOperationDefinition]
    /// The module's per-shard service, if it has one (what its async operations run on).
    public var service: ShardServiceFactory?
    /// Set for a module ringsip accepts but does not implement (an MI transport before MI exists): why. Loading
    /// it and every modparam of it is a warning naming it, never an error.
    public var acceptedOnly: String?
    /// Runs once per compile, before any route, when the module is loaded: what the module compiles without a
    /// call site (acc's flag modparams and extra fields, `ScriptCompiler.answerReporters`).
    public var prepare: (@Sendable (ScriptCompiler) throws(CompileError) -> Void)?
    /// Pseudo-variables the module provides (`$DLG_status`, `$dlg_val(name)`): usable when it is loaded.
    public var variables: [ModuleVariable] = []

    public init(name: String, parameters: [ModuleParameterDeclaration] = [], functions: [ScriptFunction] = [],
                asyncOperations: [AsyncOperationDefinition] = [], service: ShardServiceFactory? = nil) {
        self.name = name
        self.parameters = parameters
        self.functions = functions
        self.asyncOperations = asyncOperations
        self.service = service
    }

    /// A module loaded by real scripts for a service ringsip does not have (yet): accepted with a warning.
    public static func acceptedOnly(_ name: String, _ reason: String) -> ScriptModule {
        var module = ScriptModule(name: name)
        module.acceptedOnly = reason
        return module
    }
}

/// A pseudo-variable a module provides: how to read it, and (when it may be assigned) how to write it.
public struct ModuleVariable: Sendable {
    public typealias Read = @Sendable (PseudoVariable, ScriptCompiler) throws(CompileError) -> ScriptCompiler.Evaluate
    public typealias Write = @Sendable (PseudoVariable, ScriptCompiler, @escaping ScriptCompiler.Evaluate)
        throws(CompileError) -> ScriptCompiler.Execute
    public var name: String
    public var module: String
    public var read: Read
    public var write: Write?

    public init(_ name: String, module: String, read: @escaping Read, write: Write? = nil) {
        self.name = name
        self.module = module
        self.read = read
        self.write = write
    }
}

/// Every module this build of ringsip provides.
public struct ScriptLibrary: Sendable {
    public private(set) var modules: [String: ScriptModule] = [:]
    public private(set) var functions: [String: ScriptFunction] = [:]
    public private(set) var asyncOperations: [String: AsyncOperationDefinition] = [:]
    public private(set) var variables: [String: ModuleVariable] = [:]
    /// Per-shard services by module, in registration order: a call site finds its module's by index.
    public private(set) var services: [(module: String, factory: ShardServiceFactory)] = []

    public func serviceIndex(of module: String) -> Int? { services.firstIndex { $0.module == module } }

    public init() {}

    public mutating func register(_ module: ScriptModule) {
        if let existing = modules[module.name] {
            var merged = existing
            merged.parameters += module.parameters
            merged.functions += module.functions
            merged.asyncOperations += module.asyncOperations
            merged.variables += module.variables
            modules[module.name] = merged
        } else {
            modules[module.name] = module
        }
        for function in module.functions { functions[function.name] = function }
        for operation in module.asyncOperations { asyncOperations[operation.name] = operation }
        for variable in module.variables { variables[variable.name] = variable }
        if let factory = module.service, serviceIndex(of: module.name) == nil { services.append((module.name, factory)) }
    }

    /// The library with the stateless core and tm: what this layer provides on its own.
    public static var core: ScriptLibrary {
        var library = ScriptLibrary()
        for module in CoreFunctions.modules { library.register(module) }
        library.register(TMFunctions.module)
        library.register(SleepOperations.module)
        library.register(TMFunctions.coreModule)
        for module in AcceptedModules.modules { library.register(module) }
        for module in OpenSIPSCoreFunctions.modules { library.register(module) }
        return library
    }
}
