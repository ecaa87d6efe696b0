import Engine
import SIP
import Script

/// OpenSIPS' registrar and usrloc modules: `save()`, `lookup()`, `registered()`/`is_registered()` and
/// `remove()` over the shard's copy of the location table (`LocationService`, which says how the copies stay
/// equal across shards).
public enum RegistrarModule {
    public static var modules: [ScriptModule] {
        let defaultColumns = "ringsip reads and writes OpenSIPS' default column names"
        let usrloc = ScriptModule(name: "usrloc", parameters: [
            .init("use_domain", .integer, range: 0...1), .init("timer_interval", .integer, range: 1...86_400, unit: "seconds"),
            .init("db_mode", .integer, range: 0...3), .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("working_mode_preset", .string),
            .ignored("cluster_mode", "nodes share registrations only through the database (db_mode)"),
            .ignored("hash_size", "the table grows as it needs"),
            .ignored("nat_bflag", "the branch flags a REGISTER carries are kept with its bindings whatever they are"),
            .ignored("desc_time_order", "bindings are ordered by q, then newest first"),
            .ignored("matching_mode", "bindings match by Contact URI, or by +sip.instance and reg-id (RFC 5626)"),
        ] + ["user_column", "domain_column", "contact_column", "expires_column", "q_column", "callid_column",
             "cseq_column", "methods_column", "flags_column", "cflags_column", "user_agent_column", "received_column",
             "socket_column", "path_column", "sip_instance_column", "attr_column", "kv_store_column", "contactid_column",
             "last_modified_column"].map { .ignored($0, defaultColumns) },
            service: { context, shard, configuration in
                LocationService(context: context, shard: shard, configuration: configuration)
            })
        let registrar = ScriptModule(name: "registrar", parameters: [
            .init("default_expires", .integer, range: 1...Int(Int32.max), unit: "seconds"),
            .init("min_expires", .integer, unit: "seconds"), .init("max_expires", .integer, unit: "seconds"),
            .init("default_q", .integer, range: -1...1000), .init("max_contacts", .integer),
            .init("retry_after", .integer, unit: "seconds"), .init("append_branches", .integer, range: 0...1),
            .init("use_path", .integer, range: 0...1), .init("path_mode", .integer, range: 0...2),
            .init("case_sensitive", .integer, range: 0...1),
            .ignored("tcp_persistent_flag", "ringsip serves UDP only for now"),
            .ignored("realm_prefix", "AORs are taken as the URIs give them"),
            .init("received_avp", .string),
            .ignored("received_param", "lookup sends to the received address itself; no received parameter is written"),
            .ignored("path_use_received", "a Path's received parameter is not read"),
            .ignored("sock_hdr_name", "one listening socket set for every shard"),
            .ignored("sock_flag", "one listening socket set for every shard"),
            .ignored("mcontact_avp", "not built"), .ignored("attr_avp", "not built"),
            .ignored("gruu_secret", "GRUU (RFC 5627) is not built"), .ignored("disable_gruu", "GRUU (RFC 5627) is not built"),
            .ignored("method_filtering", "every binding takes every method"),
            .ignored("nat_flag", "the branch flags a REGISTER carries are kept with its bindings whatever they are"),
        ], functions: [
            ScriptFunction("save", module: "registrar", arguments: 1...3, allowedIn: .request, compile: save),
            ScriptFunction("lookup", module: "registrar", arguments: 1...3, allowedIn: [.request, .failure], compile: lookup),
            ScriptFunction("registered", module: "registrar", arguments: 1...3, allowedIn: .withMessage, compile: registered),
            ScriptFunction("is_registered", module: "registrar", arguments: 1...2, allowedIn: .withMessage, compile: registered),
            ScriptFunction("remove", module: "registrar", arguments: 2...3, allowedIn: .all, compile: remove),
        ])
        return [usrloc, registrar]
    }

    /// The call site's table name and its shard service.
    static func site(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> (table: String, service: Int) {
        guard let table = compiler.constantText(call.arguments[0]), !table.isEmpty else {
            throw compiler.error("\(call.name)'s first argument is the table, a constant such as \"location\"",
                                 at: call.arguments[0]?.location ?? call.location)
        }
        guard let service = compiler.serviceIndex(of: "usrloc") else {
            throw compiler.error("\(call.name) needs the location service: loadmodule \"usrloc.so\"", at: call.location)
        }
        try UsrlocDatabase.load(table, for: call, compiler)
        return (table, service)
    }

    /// The key a binding list is kept under: the AOR, prefixed by its table when that is not "location" (a script
    /// may keep several tables; ringsip keeps them in one map).
    static func key(_ aor: String, table: String) -> String { table == "location" ? aor : table + "\u{1}" + aor }

    static func locationService(_ context: ScriptContext, _ index: Int) -> LocationService? {
        context.service(index) as? LocationService
    }

    /// An optional AOR argument (a SIP URI), evaluated per call.
    static func aorArgument(_ call: FunctionCall, at index: Int, _ compiler: ScriptCompiler) throws(CompileError) -> ScriptCompiler.Evaluate? {
        guard call.arguments.count > index, let argument = call.arguments[index] else { return nil }
        return try compiler.value(argument)
    }

    static func aor(from argument: ScriptCompiler.Evaluate?, default fallback: (ScriptContext) -> UnsafeRawBufferPointer,
                    table: String, _ service: LocationService, _ context: ScriptContext) -> String? {
        var uri = fallback(context)
        if let argument {
            guard case .text(let text) = argument(context) else { return nil }
            uri = text
        }
        return service.aor(ofURI: uri).map { key($0, table: table) }
    }

    /// The To URI of the message (a REGISTER's AOR), as text.
    static func toURI(_ context: ScriptContext) -> UnsafeRawBufferPointer {
        guard context.hasMessage, let to = context.message.to else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return context.message.bytes(of: to.uri.span)
    }

    // MARK: - lookup

    @Sendable static func lookup(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (table, index) = try site(call, compiler)
        let flagText = call.arguments.count > 1 ? call.arguments[1].flatMap { compiler.constantText($0) } ?? "" : ""
        let appendBranches = compiler.configuration.integer("registrar", "append_branches", default: 1) == 1
            && !flagText.contains("b")
        let argument = try aorArgument(call, at: 2, compiler)
        return { context in
            guard context.hasMessage, context.message.isRequest, let service = locationService(context, index) else { return -3 }
            guard let aor = aor(from: argument, default: { $0.currentRequestURI }, table: table, service, context) else {
                return -3
            }
            let bindings = service.table.live(of: aor, now: context.shard.now)
            guard let first = bindings.first else { return -1 }
            guard route(context, to: first) else { return -3 }
            if appendBranches {
                // The Route set belongs to the whole request, not to a branch: only bindings reached through the
                // same Path as the first are forked to.
                for binding in bindings.dropFirst() where binding.path == first.path {
                    guard let uri = context.arena.copy(binding.contact) else { return -3 }
                    let destination = binding.received.isEmpty ? firstPathURI(binding.path, context) : context.arena.copy(binding.received)
                    if !context.appendDestination(uri: uri, destination: destination) { break }
                }
            }
            return 1
        }
    }

    /// Points the Request-URI branch at a binding: its Contact as the Request-URI, `$du` at where it registered
    /// from (NAT) or at its first Path hop, its Path as the Route set, its branch flags.
    static func route(_ context: ScriptContext, to binding: Binding) -> Bool {
        guard let uri = context.arena.copy(binding.contact) else { return false }
        context.requestURI = uri
        context.branchFlags = binding.branchFlags
        context.sendSocket = StreamHandle.isStream(binding.socket) ? binding.socket : nil
        if !binding.received.isEmpty {
            context.destinationURI = context.arena.copy(binding.received)
        }
        if !binding.path.isEmpty {
            // RFC 3327 §5: the Path becomes the Route set, ahead of any Route the request still carries.
            context.destinationURI = firstPathURI(binding.path, context)
            let arena = context.arena
            var line = arena.begin()
            arena.append(&line, pathRoutePrefix)
            var path = binding.path
            path.withUTF8 { arena.append(&line, UnsafeRawBufferPointer($0)) }
            if let set = context.routeSet, set.count > pathRoutePrefix.count + 2 {
                arena.append(&line, pathSeparator)
                arena.append(&line, UnsafeRawBufferPointer(rebasing: set[pathRoutePrefix.count..<set.count - 2]))
            } else if context.routeSet == nil {
                var values = context.message.values(of: .route)
                var first = true
                while let value = values.next() {
                    defer { first = false }
                    if first && context.popRoute { continue }
                    arena.append(&line, pathSeparator)
                    arena.append(&line, context.message.bytes(of: value))
                }
            }
            arena.append(&line, lineEnd)
            guard !arena.overflowed else { return false }
            context.routeSet = arena.end(line)
        }
        return true
    }

    /// The first URI of a Path value (`<sip:p1;lr>, <sip:p2;lr>` → `sip:p1;lr`), in the arena.
    static func firstPathURI(_ path: String, _ context: ScriptContext) -> UnsafeRawBufferPointer? {
        guard !path.isEmpty else { return nil }
        var first = path.split(separator: ",", maxSplits: 1).first.map(String.init) ?? path
        first = String(first.drop { $0 == " " || $0 == "\t" })
        if let open = first.firstIndex(of: "<"), let close = first.firstIndex(of: ">"), open < close {
            first = String(first[first.index(after: open)..<close])
        }
        return context.arena.copy(first)
    }

    // MARK: - registered, remove

    @Sendable static func registered(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (table, index) = try site(call, compiler)
        let argument = try aorArgument(call, at: 1, compiler)
        return { context in
            guard let service = locationService(context, index) else { return -1 }
            // Without an AOR: a REGISTER's To, any other request's Request-URI (OpenSIPS).
            let fallback: (ScriptContext) -> UnsafeRawBufferPointer = { context in
                context.hasMessage && context.message.method == .register ? toURI(context) : context.currentRequestURI
            }
            guard let aor = aor(from: argument, default: fallback, table: table, service, context) else { return -1 }
            return service.table.live(of: aor, now: context.shard.now).isEmpty ? -1 : 1
        }
    }

    @Sendable static func remove(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (table, index) = try site(call, compiler)
        let argument = try aorArgument(call, at: 1, compiler)
        let contact = try aorArgument(call, at: 2, compiler)
        return { context in
            guard let service = locationService(context, index),
                  let aor = aor(from: argument, default: toURI, table: table, service, context) else { return -1 }
            var only: String?
            if let contact {
                guard case .text(let text) = contact(context), text.count > 0 else { return -1 }
                only = String(decoding: text, as: UTF8.self)
            }
            return service.remove(aor, contact: only) ? 1 : -1
        }
    }
}

nonisolated(unsafe) let pathRoutePrefix = permanentBytes("Route: ")
nonisolated(unsafe) let pathSeparator = permanentBytes(", ")
nonisolated(unsafe) let lineEnd = permanentBytes("\r\n")
