import Engine

/// What a script's global section says: listen addresses, log level, loaded modules and their checked
/// parameters. Built before the routes are compiled, since functions need to know which modules are loaded.
public struct ScriptConfiguration: Sendable {
    public var listen: [SocketAddress] = []
    /// OpenSIPS numbering: -3 alert, -2 critical, -1 error, 1 warning, 2 notice, 3 info, 4 debug.
    public var logLevel = 3
    /// `async_timeout` (ms): the timeout of an async operation when neither the call nor its module's
    /// modparam gives one.
    public var asyncTimeout: Int?
    public var loadedModules: Set<String> = []
    public var moduleParameters: [String: [String: GlobalValue]] = [:]
    /// Every value of each module parameter, in order (some may be given more than once, e.g. aaa_radius sets).
    public var moduleParameterLists: [String: [String: [GlobalValue]]] = [:]
    public var warnings: [String] = []

    public init() {}

    /// Globals that only tune OpenSIPS internals ringsip does not have: accepted, and named in a warning.
    static let ignoredGlobals: Set<String> = [
        "mpath", "debug_mode", "fork", "log_stderror", "log_facility", "log_name", "stderror_enabled",
        "syslog_enabled", "syslog_facility", "dns", "rev_dns", "auto_aliases", "check_via", "mhomed",
        "disable_tcp", "disable_tls", "tcp_children", "open_files_limit", "server_signature", "memdump",
        "memlog", "dns_try_ipv6", "shm_hash_split_percentage", "tcp_max_connections", "enable_asserts",
        "abort_on_assert", "xlog_buf_size", "xlog_force_color", "xlog_default_level", "sip_warning",
    ]

    /// Modules that carry no functions ringsip needs but that scripts load for the transport ringsip has.
    static let transportModules: Set<String> = ["proto_udp"]

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
        for setting in source.globals {
            switch setting.name {
            case "listen", "socket":
                let text: String
                switch setting.value {
                case .word(let w): text = w
                case .string(let s): text = s
                case .integer: throw error("expected udp:IP:PORT after '\(setting.name) ='", setting.valueLocation)
                }
                switch ListenSpec.parse(text) {
                case .success(let spec): configuration.listen.append(spec.address)
                case .failure(let problem): throw error("\(problem)", setting.valueLocation)
                }
            case "log_level", "debug":
                guard case .integer(let level) = setting.value, level >= -3 && level <= 4 else {
                    throw error("log_level must be an integer from -3 (alert) to 4 (debug)", setting.valueLocation)
                }
                configuration.logLevel = level
            case "async_timeout":
                guard case .integer(let ms) = setting.value, ms > 0 else {
                    throw error("async_timeout is a positive number of milliseconds", setting.valueLocation)
                }
                configuration.asyncTimeout = ms
            case "children", "udp_workers":
                configuration.warnings.append("\(setting.location): warning: '\(setting.name)' is accepted but ignored: "
                    + "ringsip runs one shard per CPU (--shards, --cpus) instead of worker processes")
            case let name where ignoredGlobals.contains(name):
                configuration.warnings.append("\(setting.location): warning: '\(name)' is accepted but has no effect in ringsip")
            default:
                throw error("unknown global parameter '\(setting.name)'", setting.location)
            }
        }
        for load in source.modules {
            var name = String(load.path.split(separator: "/").last ?? "")
            if name.hasSuffix(".so") { name.removeLast(3) }
            guard library.modules[name] != nil || transportModules.contains(name) else {
                let provided = (library.modules.keys.filter { $0 != "core" } + transportModules).sorted()
                let hint = ScriptCompiler.suggestion(for: name, among: Array(library.modules.keys))
                    .map { " (did you mean '\($0).so'?)" } ?? "; it provides: " + provided.joined(separator: ", ")
                throw error("module '\(name)' is not provided by ringsip\(hint)", load.location)
            }
            configuration.loadedModules.insert(name)
        }
        for parameter in source.parameters {
            guard let module = library.modules[parameter.module] else {
                throw error("modparam for unknown module '\(parameter.module)'", parameter.location)
            }
            guard configuration.loadedModules.contains(parameter.module) else {
                throw error("modparam for module '\(parameter.module)', which is not loaded "
                    + "(add: loadmodule \"\(parameter.module).so\")", parameter.location)
            }
            guard let declared = module.parameters.first(where: { $0.name == parameter.name }) else {
                let known = module.parameters.map(\.name)
                let hint = ScriptCompiler.suggestion(for: parameter.name, among: known).map { " (did you mean '\($0)'?)" }
                    ?? (known.isEmpty ? "; it has none" : "; it has: " + known.joined(separator: ", "))
                throw error("module '\(parameter.module)' has no parameter '\(parameter.name)'\(hint)", parameter.location)
            }
            switch (declared.type, parameter.value) {
            case (.string, .string), (.string, .word): break
            case (.integer, .integer(let n)):
                try checkRange(n, declared, parameter)
            case (.integer, .string(let text)) where Int(text) != nil:
                try checkRange(Int(text)!, declared, parameter)
            default:
                throw error("parameter '\(parameter.name)' of module '\(parameter.module)' must be \(declared.type)",
                            parameter.valueLocation)
            }
            configuration.moduleParameters[parameter.module, default: [:]][parameter.name] = parameter.value
            configuration.moduleParameterLists[parameter.module, default: [:]][parameter.name, default: []].append(parameter.value)
        }
        return configuration
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
