import Engine
import SIP
import Script

/// OpenSIPS' dialog module: `create_dialog([flags])`, `validate_dialog()`, `match_dialog()`, profiles
/// (`set_dlg_profile`, `unset_dlg_profile`, `is_in_profile`, `get_profile_size` — the call-limit pattern),
/// `$DLG_status`, `$DLG_lifetime`, `$DLG_timeout` (read and set), `$DLG_dir`, `$DLG_id`, `$DLG_json`, `$dlg_val(name)`.
/// Where dialogs live and how requests find them: `DialogService`.
public enum DialogModule {
    /// The bit of `ScriptContext.reports` create_dialog sets, so the INVITE's answer reaches the dialog.
    static let reportBit: UInt32 = 1 << 31

    public static var module: ScriptModule {
        var module = ScriptModule(name: "dialog", parameters: [
            .init("default_timeout", .integer, range: 1...Int(Int32.max), unit: "seconds"),
            .init("profiles_with_value", .string), .init("profiles_no_value", .string),
            .init("max_dialogs", .integer, range: 1...10_000_000),
            .ignored("dlg_match_mode", "requests are matched by the did of our Route, else by Call-ID and tags"),
            .init("db_mode", .integer, range: 0...3), .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("table_name", .string),
            .ignored("db_update_period", "rows are written when a dialog changes, not on a period"),
            .ignored("dlg_flag", "1.x's flag is not read: call create_dialog()"),
            .ignored("timeout_avp", "set $DLG_timeout instead"),
            .ignored("options_ping_interval", "dialogs are not pinged"),
            .ignored("reinvite_ping_interval", "dialogs are not pinged"),
            .ignored("hash_size", "the table grows as needed"),
            .ignored("enable_stats", "the counters line has no dialog statistics yet"),
            .ignored("cluster_id", "dialogs are not replicated between nodes"),
            .ignored("dialog_replication_cluster", "dialogs are not replicated between nodes"),
            .ignored("profile_replication_cluster", "profiles are not replicated between nodes"),
        ], functions: [
            ScriptFunction("create_dialog", module: "dialog", arguments: 0...1, allowedIn: .request) { call, compiler throws(CompileError) in
                try createDialog(call, compiler)
            },
            ScriptFunction("validate_dialog", module: "dialog", arguments: 0...0, allowedIn: .request) { _, compiler throws(CompileError) in
                let index = try serviceIndex(compiler)
                return { context in
                    guard let service = context.service(index) as? DialogService, let slot = service.current() else { return -1 }
                    return service.table[slot].state == .deleted && context.message.method != .bye ? -4 : 1
                }
            },
            ScriptFunction("match_dialog", module: "dialog", arguments: 0...1, allowedIn: .request) { _, compiler throws(CompileError) in
                let index = try serviceIndex(compiler)
                return { context in (context.service(index) as? DialogService)?.current() != nil ? 1 : -1 }
            },
            ScriptFunction("set_dlg_profile", module: "dialog", arguments: 1...2) { call, compiler throws(CompileError) in
                try profileFunction(call, compiler) { service, slot, key in service.setProfile(slot, key: key); return 1 }
            },
            ScriptFunction("unset_dlg_profile", module: "dialog", arguments: 1...2) { call, compiler throws(CompileError) in
                try profileFunction(call, compiler) { service, slot, key in service.unsetProfile(slot, key: key) ? 1 : -1 }
            },
            ScriptFunction("is_in_profile", module: "dialog", arguments: 1...2) { call, compiler throws(CompileError) in
                try isInProfile(call, compiler)
            },
            ScriptFunction("get_profile_size", module: "dialog", arguments: 2...3) { call, compiler throws(CompileError) in
                try profileSize(call, compiler)
            },
        ], service: { context, shard, configuration in DialogService(context: context, shard: shard, configuration: configuration) })
        module.variables = [
            dialogVariable("DLG_status") { service, slot, _ in .integer(service.table[slot].state.rawValue) },
            dialogVariable("DLG_lifetime") { service, slot, _ in
                let started = service.table[slot].startedAt
                return .integer(started == 0 ? 0 : Int((service.shard.now &- started) / 1000))
            },
            dialogVariable("DLG_id") { service, slot, context in
                context.arena.copy(service.id(of: slot).text).map { .text($0) } ?? .null
            },
            dialogVariable("DLG_json") { service, slot, context in
                context.arena.copy(DialogJSON.text(service.table[slot], id: service.id(of: slot).text,
                                                   remaining: service.remainingTimeout(slot))).map { .text($0) } ?? .null
            },
            dialogVariable("DLG_dir") { service, slot, context in
                let message = context.message
                let fromTag = message.from.map { message.bytes(of: $0.tag) } ?? UnsafeRawBufferPointer(start: nil, count: 0)
                return .text(service.table[slot].callerTag.utf8.elementsEqual(fromTag) ? downstream : upstream)
            },
            ModuleVariable("DLG_timeout", module: "dialog", read: { variable, compiler throws(CompileError) in
                let index = try serviceIndex(compiler)
                return { context in
                    guard let service = context.service(index) as? DialogService, let slot = service.current() else { return .null }
                    return .integer(service.remainingTimeout(slot))
                }
            }, write: { _, compiler, value throws(CompileError) in
                let index = try serviceIndex(compiler)
                return { context in
                    guard let service = context.service(index) as? DialogService, let slot = service.current(),
                          let seconds = value(context).integerValue else { return }
                    service.setTimeout(slot, seconds: min(max(seconds, 0), Int(Int32.max)))
                }
            }),
            ModuleVariable("dlg_val", module: "dialog", read: { variable, compiler throws(CompileError) in
                let name = try valueName(variable, compiler)
                let index = try serviceIndex(compiler)
                return { context in
                    guard let service = context.service(index) as? DialogService, let slot = service.current(),
                          let value = service.table[slot].values[name] else { return .null }
                    return context.arena.copy(value).map { .text($0) } ?? .null
                }
            }, write: { variable, compiler, value throws(CompileError) in
                let name = try valueName(variable, compiler)
                let index = try serviceIndex(compiler)
                return { context in
                    guard let service = context.service(index) as? DialogService, let slot = service.current() else { return }
                    service.table[slot].values[name] = value(context).string
                    service.persist(slot)
                }
            }),
        ]
        module.prepare = { compiler throws(CompileError) in try prepare(compiler) }
        return module
    }

    nonisolated(unsafe) static let downstream = permanentBytes("downstream")
    nonisolated(unsafe) static let upstream = permanentBytes("upstream")

    static func serviceIndex(_ compiler: ScriptCompiler) throws(CompileError) -> Int {
        guard let index = compiler.serviceIndex(of: "dialog") else {
            throw compiler.error("dialog is not loaded", at: SourceLocation(file: "", line: 1, column: 1))
        }
        return index
    }

    private static func dialogVariable(_ name: String,
                                       _ read: @escaping @Sendable (DialogService, Int32, ScriptContext) -> ScriptValue)
        -> ModuleVariable {
        ModuleVariable(name, module: "dialog", read: { variable, compiler throws(CompileError) in
            guard variable.argument == nil else { throw compiler.error("$\(name) takes no argument", at: variable.location) }
            let index = try serviceIndex(compiler)
            return { context in
                guard let service = context.service(index) as? DialogService, let slot = service.current() else { return .null }
                return read(service, slot, context)
            }
        })
    }

    private static func valueName(_ variable: PseudoVariable, _ compiler: ScriptCompiler) throws(CompileError) -> String {
        guard let name = variable.argument, !name.isEmpty else {
            throw compiler.error("$dlg_val needs a name: $dlg_val(name)", at: variable.location)
        }
        return name
    }

    static func createDialog(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let flags = call.arguments.isEmpty ? "" : compiler.constantText(call.arguments[0]) ?? ""
        if flags.contains("P") || flags.contains("R") {
            compiler.warn("create_dialog: the P and R flags are accepted but dialogs are not pinged", at: call.location)
        }
        let index = try serviceIndex(compiler)
        return { context in
            guard let service = context.service(index) as? DialogService else { return -1 }
            return service.create(flags: flags) != nil ? 1 : -1
        }
    }

    /// Profiles the modparams declare: name → whether it takes values.
    static func profiles(_ configuration: ScriptConfiguration) -> [String: Bool] {
        var known: [String: Bool] = [:]
        for (parameter, withValue) in [("profiles_no_value", false), ("profiles_with_value", true)] {
            for value in configuration.moduleParameterLists["dialog"]?[parameter] ?? [] {
                guard case .string(let text) = value else { continue }
                for name in text.split(separator: ";") {
                    // 3.x marks a shared profile "name/s": the mark is dropped (profiles are not shared between nodes).
                    let trimmed = name.trimming(" \t")
                    let bare = String(trimmed.prefix { $0 != "/" })
                    if !bare.isEmpty { known[bare] = withValue }
                }
            }
        }
        return known
    }

    /// The profile a call names, checked against the declared profiles, and its value (nil without one).
    private static func profileArguments(_ call: FunctionCall, _ compiler: ScriptCompiler, valueArgument: Int?)
        throws(CompileError) -> (name: String, value: ScriptCompiler.Evaluate?) {
        guard let name = compiler.constantText(call.arguments[0]), !name.isEmpty else {
            throw compiler.error("\(call.name): the profile must be a constant name", at: call.location)
        }
        guard let withValue = profiles(compiler.configuration)[name] else {
            throw compiler.error("\(call.name): no profile '\(name)' (declare it with modparam(\"dialog\", "
                + "\"profiles_with_value\", …) or \"profiles_no_value\")", at: call.location)
        }
        var value: ScriptCompiler.Evaluate?
        if let position = valueArgument, call.arguments.count > position, let argument = call.arguments[position] {
            guard withValue else {
                throw compiler.error("\(call.name): profile '\(name)' has no values", at: call.location)
            }
            value = try compiler.value(argument)
        } else if withValue && call.name == "set_dlg_profile" {
            throw compiler.error("set_dlg_profile: profile '\(name)' needs a value", at: call.location)
        }
        return (name, value)
    }

    private static func profileFunction(_ call: FunctionCall, _ compiler: ScriptCompiler,
                                        _ body: @escaping (DialogService, Int32, String) -> Int) throws(CompileError)
        -> CompiledCall {
        let (name, value) = try profileArguments(call, compiler, valueArgument: 1)
        let index = try serviceIndex(compiler)
        return { context in
            guard let service = context.service(index) as? DialogService, let slot = service.current() else { return -1 }
            return body(service, slot, DialogProfiles.key(name, value.map { $0(context).string ?? "" }))
        }
    }

    private static func isInProfile(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (name, value) = try profileArguments(call, compiler, valueArgument: 1)
        let index = try serviceIndex(compiler)
        return { context in
            guard let service = context.service(index) as? DialogService, let slot = service.current() else { return -1 }
            let keys = service.table[slot].profiles
            if let value {
                return keys.contains(DialogProfiles.key(name, value(context).string ?? "")) ? 1 : -1
            }
            return keys.contains { DialogProfiles.name(of: $0) == name } ? 1 : -1
        }
    }

    /// get_profile_size(name, [value,] $out): dialogs in the profile on every shard (with a value, those with it).
    private static func profileSize(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let hasValue = call.arguments.count == 3
        let (name, value) = try profileArguments(call, compiler, valueArgument: hasValue ? 1 : nil)
        guard let target = try compiler.outputTarget(call.arguments.last!, what: "get_profile_size's last argument") else {
            throw compiler.error("get_profile_size needs where the size goes", at: call.location)
        }
        let index = try serviceIndex(compiler)
        return { context in
            guard let service = context.service(index) as? DialogService else { return -1 }
            let size = value.map { service.profileSizes[DialogProfiles.key(name, $0(context).string ?? ""), default: 0] }
                ?? service.profileNameSizes[name, default: 0]
            context.writeOutput(target, .integer(size))
            return 1
        }
    }

    /// The INVITE's answer reaches its dialog (reporters run at the end of the loop turn, on the request).
    static func prepare(_ compiler: ScriptCompiler) throws(CompileError) {
        try DialogDatabase.load(compiler)
        let index = try serviceIndex(compiler)
        compiler.answerReporters.append(AnswerReporter(flags: 0) { context, answer in
            guard context.reports & reportBit != 0, context.message.method == .invite,
                  let service = context.service(index) as? DialogService else { return }
            service.answered(context.message, answer)
        })
    }
}
