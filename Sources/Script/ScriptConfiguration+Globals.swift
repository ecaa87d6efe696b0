import Engine

/// The global section: `name = value` lines before and between the modules. Those with a meaning in ringsip
/// are applied; OpenSIPS tuning knobs for what ringsip does not have (worker processes, memory pools, TCP
/// before it exists) are accepted with one warning each naming them; anything else is an error.
extension ScriptConfiguration {
    /// Globals with no effect here, and why; the prefix and suffix rules below cover their families.
    static let ignoredGlobals: [String: String] = [
        "mpath": "modules are built in", "fork": "ringsipd stays in the foreground (run it under systemd)",
        "debug_mode": "ringsipd stays in the foreground (run it under systemd)", "auto_aliases": "aliases are given with 'alias'",
        "dns": "ringsip does no reverse lookups", "rev_dns": "ringsip does no reverse lookups",
        "check_via": "ringsip checks every Via it parses", "mhomed": "the socket toward a destination is chosen per family",
        "open_files_limit": "set LimitNOFILE in the service unit", "memdump": "memory is not pooled",
        "memlog": "memory is not pooled", "shm_hash_split_percentage": "memory is not pooled",
        "shm_secondary_hash_size": "memory is not pooled", "enable_asserts": "ringsip has no assert()",
        "abort_on_assert": "ringsip has no assert()", "xlog_buf_size": "xlog lines are not buffered",
        "xlog_force_color": "xlog lines are plain text", "xlog_print_level": "xlog lines are plain text",
        "sip_warning": "ringsip adds no Warning header", "disable_dns_blacklist": "ringsip resolves no names yet",
        "disable_dns_failover": "ringsip resolves no names yet",
        "disable_503_translation": "ringsip relays a 503 as it is", "disable_core_dump": "set LimitCORE in the service unit",
        "disable_stateless_fwd": "forward() is always available", "poll_method": "every shard runs on io_uring",
        "maxbuffer": "receive buffers are sized by ringsip", "query_buffer_size": "queries are not buffered",
        "query_flush_time": "queries are not buffered", "event_pkg_threshold": "events are not queued",
        "event_shm_threshold": "events are not queued", "exec_dns_threshold": "ringsip resolves no names yet",
        "exec_msg_threshold": "slow routes are not timed", "db_version_table": "ringsip reads no version table",
        "db_max_async_connections": "each shard keeps its own pool (db_connections)", "tos": "sockets keep the default TOS",
        "user": "run ringsipd as that user (User= in the service unit)", "group": "run ringsipd as that group",
        "uid": "run ringsipd as that user", "gid": "run ringsipd as that group",
        "chroot": "run ringsipd in the root you want", "wdir": "ringsipd keeps its working directory",
        "reply_to_via": "replies go where RFC 3261 §18.2.2 says", "dst_blacklist": "ringsip keeps no destination blacklists", "server_signature_level": "see server_header",
        "bin_listen": "ringsip has no BIN interface", "bin_children": "ringsip has no BIN interface",
    ]

    static func ignoredReason(for name: String) -> String? {
        if let reason = ignoredGlobals[name] { return reason }
        if name == "children" || name.hasSuffix("_workers") || name.hasSuffix("_children") || name.hasPrefix("auto_scaling_") {
            return "ringsip runs one shard per CPU (--shards, --cpus) instead of worker processes"
        }
        if name.hasPrefix("tls_") || name == "disable_tls" { return "ringsip serves UDP and TCP for now" }
        if name.hasPrefix("tcp_") || name == "disable_tcp" {
            return "ringsip's TCP is on each shard's ring (tcp_connection_lifetime, tcp_max_connections, "
                + "tcp_connect_timeout and tcp_max_msg_time are its knobs)"
        }
        if name.hasPrefix("dns_") { return "ringsip resolves no names yet" }
        if name.hasPrefix("mem_") || name.hasPrefix("shm_") || name.hasPrefix("pkg_") { return "memory is not pooled" }
        if name.hasPrefix("log_") || name.hasPrefix("syslog_") || name.hasPrefix("stderror_") || name == "stderror_enabled" {
            return "ringsipd logs to standard error"
        }
        return nil
    }

    /// Every global with a meaning here, for "did you mean".
    static let meaningfulGlobals = [
        "listen", "socket", "log_level", "debug", "xlog_level", "async_timeout", "alias", "advertised_address",
        "advertised_port", "server_header", "user_agent_header", "server_signature", "max_while_loops", "port",
        "db_default_url", "overload_threshold", "tcp_connection_lifetime", "tcp_max_connections", "tcp_connect_timeout",
        "tcp_max_msg_time",
    ]

    mutating func applyGlobals(_ globals: [GlobalSetting], lines: SourceLines) throws(CompileError) {
        func error(_ message: String, _ location: SourceLocation) -> CompileError {
            CompileError(message, at: location, sourceLine: lines.line(location))
        }
        func text(_ setting: GlobalSetting) -> String {
            switch setting.value {
            case .word(let w): w
            case .string(let s): s
            case .integer(let n): String(n)
            }
        }
        func integer(_ setting: GlobalSetting, _ range: ClosedRange<Int>, _ what: String) throws(CompileError) -> Int {
            guard case .integer(let n) = setting.value, range.contains(n) else {
                throw error("\(setting.name) must be \(what)", setting.valueLocation)
            }
            return n
        }
        func boolean(_ setting: GlobalSetting) throws(CompileError) -> Bool {
            guard let value = GlobalValue.boolean(setting.value) else {
                throw error("\(setting.name) must be yes or no (also on/off, true/false, 1/0)", setting.valueLocation)
            }
            return value
        }
        var sockets: [GlobalSetting] = []
        var defaultPort: UInt16 = 5060
        for setting in globals {
            switch setting.name {
            case "listen", "socket":
                sockets.append(setting)
            case "port":
                defaultPort = UInt16(try integer(setting, 1...65535, "a port from 1 to 65535"))
            case "log_level", "debug":
                // OpenSIPS 1.x scripts go up to 9 for more debugging; 4 is all of it here.
                logLevel = min(4, try integer(setting, -3...9, "an integer from -3 (alert) to 4 (debug)"))
            case "xlog_level":
                xlogLevel = try integer(setting, -3...4, "an integer from -3 (alert) to 4 (debug)")
            case "async_timeout":
                asyncTimeout = try integer(setting, 1...3_600_000, "a number of milliseconds from 1 to 3600000")
            case "max_while_loops":
                maxWhileLoops = try integer(setting, 1...10_000_000, "a number of iterations from 1 to 10000000")
            case "tcp_connection_lifetime":
                tcpConnectionLifetime = try integer(setting, 1...86_400, "a number of seconds from 1 to 86400")
            case "tcp_max_connections":
                tcpMaxConnections = try integer(setting, 1...10_000_000, "a number of connections from 1 to 10000000")
            case "tcp_connect_timeout":
                tcpConnectTimeout = try integer(setting, 1...600_000, "a number of milliseconds from 1 to 600000")
            case "tcp_max_msg_time":
                tcpMaxMessageTime = try integer(setting, 1...3_600, "a number of seconds from 1 to 3600")
            case "overload_threshold":
                overloadPercent = try integer(setting, 0...1000, "a percentage of a core from 1 (0: never shed)")
            case "alias":
                guard case .success(let alias) = AdvertisedAddress.parse(text(setting)), let host = alias.host else {
                    throw error("expected HOST[:PORT] after 'alias ='", setting.valueLocation)
                }
                identity.aliases.append((host, alias.port))
            case "advertised_address":
                let host = text(setting)
                guard !host.isEmpty, !host.contains(" ") else {
                    throw error("expected a host name or an IP after 'advertised_address ='", setting.valueLocation)
                }
                identity.advertised = AdvertisedAddress(host: host, port: identity.advertised?.port)
            case "advertised_port":
                let port = UInt16(try integer(setting, 1...65535, "a port from 1 to 65535"))
                identity.advertised = AdvertisedAddress(host: identity.advertised?.host, port: port)
            case "server_header":
                // OpenSIPS takes the whole header ("Server: name"); the name alone is accepted too.
                var value = text(setting)
                if value.lowercased().hasPrefix("server:") { value = String(value.dropFirst(7)) }
                value = String(value.drop { $0 == " " })
                guard !value.isEmpty, !value.contains("\r"), !value.contains("\n") else {
                    throw error("server_header must be one line: \"Server: name\"", setting.valueLocation)
                }
                identity.server = value
            case "server_signature":
                if !(try boolean(setting)) { identity.server = nil }
            case "user_agent_header":
                var value = text(setting)
                if value.lowercased().hasPrefix("user-agent:") { value = String(value.dropFirst(11)) }
                userAgent = String(value.drop { $0 == " " })
                warnings.append("\(setting.location): warning: 'user_agent_header' is accepted; ringsip sends no "
                    + "requests of its own that carry one yet")
            case "db_default_url":
                switch URLHostResolution.resolved(text(setting)) {
                case .success(let url): databaseDefaultURL = url
                case .failure(let problem): throw error("db_default_url: \(problem)", setting.valueLocation)
                }
            case let name where ScriptConfiguration.ignoredReason(for: name) != nil:
                warnings.append("\(setting.location): warning: '\(name)' is accepted but has no effect in ringsip: "
                    + ScriptConfiguration.ignoredReason(for: name)!)
            default:
                let hint = ScriptCompiler.suggestion(for: setting.name, among: ScriptConfiguration.meaningfulGlobals)
                    .map { " (did you mean '\($0)'?)" } ?? ""
                throw error("unknown global parameter '\(setting.name)'\(hint)", setting.location)
            }
        }
        for setting in sockets {
            switch SocketSpec.parse(text(setting), defaultPort: defaultPort) {
            case .success(let spec):
                for address in spec.addresses where !(spec.tcp ? streamListen : listen).contains(address) {
                    if spec.tcp { streamListen.append(address) } else { listen.append(address) }
                    if let advertised = spec.advertised { identity.advertisedBySocket.append((address, advertised)) }
                }
                for option in spec.ignoredOptions {
                    warnings.append("\(setting.valueLocation): warning: '\(option)' on a socket is accepted but has "
                        + "no effect: ringsip runs one shard per CPU")
                }
            case .failure(let problem):
                throw error("\(problem)", setting.valueLocation)
            }
        }
    }
}

extension GlobalValue {
    /// yes/no, on/off, true/false, 1/0 (OpenSIPS accepts each), or nil.
    static func boolean(_ value: GlobalValue) -> Bool? {
        switch value {
        case .integer(let n) where n == 0 || n == 1: return n == 1
        case .word(let w), .string(let w):
            switch w.lowercased() {
            case "yes", "on", "true", "1": return true
            case "no", "off", "false", "0": return false
            default: return nil
            }
        default: return nil
        }
    }
}
