import Engine

/// What a script's global section says: listen addresses, log level, loaded modules and their checked
/// parameters. Built before the routes are compiled, since functions need to know which modules are loaded.
public struct ScriptConfiguration: Sendable {
    public var listen: [SocketAddress] = []
    /// `listen = tcp:…` addresses.
    public var streamListen: [SocketAddress] = []
    /// TCP globals: `tcp_connection_lifetime` (s), `tcp_max_connections` (the process's, shared out between the
    /// shards), `tcp_connect_timeout` (ms), `tcp_max_msg_time` (s); nil: the engine's default.
    public var tcpConnectionLifetime: Int?
    public var tcpMaxConnections: Int?
    public var tcpConnectTimeout: Int?
    public var tcpMaxMessageTime: Int?
    /// OpenSIPS numbering: -3 alert, -2 critical, -1 error, 1 warning, 2 notice, 3 info, 4 debug.
    public var logLevel = 3
    /// `xlog_level`: xlog()'s own threshold; nil: `logLevel`.
    public var xlogLevel: Int?
    /// `async_timeout` (ms): the timeout of an async operation when neither the call nor its module's
    /// modparam gives one.
    public var asyncTimeout: Int?
    /// `max_while_loops`: how many times a while loop may run for one message before the script is failed.
    public var maxWhileLoops = 10_000
    /// `overload_threshold`: the share of a core (percent) a shard may want before new INVITEs are answered
    /// 503 with Retry-After instead of routed; 0 never sheds.
    public var overloadPercent = 90
    /// Advertised addresses, aliases and the Server header (`advertised_*`, `alias`, `server_header`).
    public var identity = RelayIdentity()
    /// `user_agent_header`, without the header name.
    public var userAgent: String?
    /// `db_default_url`: the database of every module that is given no `db_url` of its own.
    public var databaseDefaultURL: String?
    public var loadedModules: Set<String> = []
    public var moduleParameters: [String: [String: GlobalValue]] = [:]
    /// Every value of each module parameter, in order (some may be given more than once, e.g. aaa_radius sets).
    public var moduleParameterLists: [String: [String: [GlobalValue]]] = [:]
    public var warnings: [String] = []

    public init() {}

    public static func build(_ source: ScriptSource, library: ScriptLibrary,
                             lines: SourceLines) throws(CompileError) -> ScriptConfiguration {
        func error(_ message: String, _ location: SourceLocation) -> CompileError {
            CompileError(message, at: location, sourceLine: lines.line(location))
        }
        func checkRange(_ value: Int, _ declared: ModuleParameterDeclaration,
                        _ parameter: ModuleParameter) throws(CompileError) {
            guard !declared.range.contains(value) else { return }
            let unit = declared.unit.map { " \($0)" } ?? ""
            throw error("parameter '\(parameter.name)' of module '\(parameter.module)' must be from "
                + "\(declared.range.lowerBound) to \(declared.range.upperBound)\(unit), not \(value)", parameter.valueLocation)
        }
        var configuration = ScriptConfiguration()
        try configuration.applyGlobals(source.globals, lines: lines)
        for load in source.modules {
            var name = String(load.path.split(separator: "/").last ?? "")
            if name.hasSuffix(".so") { name.removeLast(3) }
            guard let module = library.modules[name] else {
                throw error(missingModuleMessage(name, library: library), load.location)
            }
            if let reason = module.acceptedOnly {
                configuration.warnings.append("\(load.location): warning: module '\(name)' is accepted but has no effect: \(reason)")
            }
            configuration.loadedModules.insert(name)
        }
        for parameter in source.parameters {
            // OpenSIPS takes the module name as a regular expression; scripts use alternation to set one value in
            // several modules: modparam("usrloc|auth_db", "db_url", …). Each loaded module named gets it.
            let names = parameter.module.split(separator: "|").map(String.init)
            let targets = names.count > 1 ? names.filter(configuration.loadedModules.contains) : names
            guard !targets.isEmpty else {
                throw error("modparam for modules '\(parameter.module)', none of which is loaded", parameter.location)
            }
            for target in targets {
                guard let module = library.modules[target] else {
                    throw error("modparam for unknown module '\(target)'", parameter.location)
                }
                guard configuration.loadedModules.contains(target) else {
                    throw error("modparam for module '\(target)', which is not loaded "
                        + "(add: loadmodule \"\(target).so\")", parameter.location)
                }
                if let reason = module.acceptedOnly {
                    configuration.warnings.append("\(parameter.location): warning: parameter '\(parameter.name)' of module "
                        + "'\(target)' is accepted but has no effect: \(reason)")
                    continue
                }
                guard let declared = module.parameters.first(where: { $0.name == parameter.name }) else {
                    let known = module.parameters.map(\.name)
                    let hint = ScriptCompiler.suggestion(for: parameter.name, among: known).map { " (did you mean '\($0)'?)" }
                        ?? (known.isEmpty ? "; it has none" : "; it has: " + known.sorted().joined(separator: ", "))
                    throw error("module '\(target)' has no parameter '\(parameter.name)'\(hint)", parameter.location)
                }
                if let reason = declared.ignoredBecause {
                    configuration.warnings.append("\(parameter.location): warning: parameter '\(parameter.name)' of module "
                        + "'\(target)' is accepted but has no effect: \(reason)")
                    continue
                }
                var checked = parameter
                checked.module = target
                if declared.type == .integer, case .word = parameter.value, let flag = GlobalValue.boolean(parameter.value) {
                    checked.value = .integer(flag ? 1 : 0)
                }
                switch (declared.type, checked.value) {
                case (.string, .string), (.string, .word), (.flag, .string), (.flag, .word): break
                case (.flag, .integer(let n)) where (0..<64).contains(n): break
                case (.integer, .integer(let n)):
                    try checkRange(n, declared, checked)
                case (.integer, .string(let text)) where Int(text) != nil:
                    try checkRange(Int(text)!, declared, checked)
                default:
                    throw error("parameter '\(parameter.name)' of module '\(target)' must be \(declared.type)",
                                parameter.valueLocation)
                }
                var value = checked.value
                if let validate = declared.validate {
                    switch validate(value) {
                    case .success(let checked): value = checked
                    case .failure(let problem): throw error(problem.message, parameter.valueLocation)
                    }
                }
                configuration.moduleParameters[target, default: [:]][parameter.name] = value
                configuration.moduleParameterLists[target, default: [:]][parameter.name, default: []].append(value)
            }
        }
        return configuration
    }

    /// Modules scripts load that ringsip does not have, and what to do instead.
    static let missingModuleAdvice: [String: String] = [
        "rtpproxy": "ringsip does not drive media relays yet", "rtpengine": "ringsip does not drive media relays yet",
        "uac": "ringsip has no uac functions (uac_replace_from, uac_auth) yet",
        "dispatcher": "ringsip has no dispatcher yet: use t_relay to a fixed next hop, append_branch to fork",
        "drouting": "ringsip has no dynamic routing yet: use t_relay to a fixed next hop",
        "load_balancer": "ringsip has no load balancer yet: use t_relay to a fixed next hop",
        "proto_tls": "ringsip serves UDP and TCP for now", "proto_ws": "ringsip serves UDP and TCP for now",
        "proto_wss": "ringsip serves UDP and TCP for now", "tls_mgm": "ringsip serves UDP and TCP for now",
        "db_postgres": "ringsip's database driver is db_mysql (MariaDB and MySQL)",
        "db_text": "ringsip's database driver is db_mysql (MariaDB and MySQL)",
        "db_sqlite": "ringsip's database driver is db_mysql (MariaDB and MySQL)",
    ]

    static func missingModuleMessage(_ name: String, library: ScriptLibrary) -> String {
        if let advice = missingModuleAdvice[name] { return "module '\(name)' is not provided by ringsip: \(advice)" }
        let provided = library.modules.filter { $0.key != "core" && $0.value.acceptedOnly == nil }.keys.sorted()
        let hint = ScriptCompiler.suggestion(for: name, among: provided).map { " (did you mean '\($0).so'?)" }
            ?? "; it provides: " + provided.joined(separator: ", ")
        return "module '\(name)' is not provided by ringsip\(hint)"
    }

    /// A module parameter's integer value, or nil when not set.
    public func optionalInteger(_ module: String, _ name: String) -> Int? {
        switch moduleParameters[module]?[name] {
        case .integer(let n)?: return n
        case .string(let s)?: return Int(s)
        default: return nil
        }
    }

    /// A module parameter's integer value, or `fallback` when not set.
    public func integer(_ module: String, _ name: String, default fallback: Int) -> Int {
        switch moduleParameters[module]?[name] {
        case .integer(let n)?: return n
        case .string(let s)?: return Int(s) ?? fallback
        default: return fallback
        }
    }
}
