import Engine
import Glibc
import Script

/// OpenSIPS' permissions module, address part: `check_source_address(group[, $info[, pattern]])`,
/// `check_address(group, ip, port, proto[, $info[, pattern]])`, `get_source_group($var)`. The `address` table
/// (OpenSIPS' schema: grp, ip, mask, port, proto, pattern, context_info) is read once at start-up from `db_url`
/// (or `db_default_url`), as OpenSIPS caches it, so a check never waits on the database. A port of 0 and a proto
/// of "any" match everything; an entry's pattern, when both it and the call have one, must match the call's.
public enum PermissionsModule {
    public static var module: ScriptModule {
        let ignored = "ringsip reads the address table only; allow/deny files and partitions are not provided"
        return ScriptModule(name: "permissions", parameters: [
            .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("address_table", .string), .init("grp_col", .string), .init("ip_col", .string),
            .init("mask_col", .string), .init("port_col", .string), .init("proto_col", .string),
            .init("pattern_col", .string), .init("info_col", .string),
            .ignored("default_allow_file", ignored), .ignored("default_deny_file", ignored),
            .ignored("allow_suffix", ignored), .ignored("deny_suffix", ignored), .ignored("partition", ignored),
            .ignored("db_mode", "the address table is read once at start-up"),
        ], functions: [
            ScriptFunction("check_source_address", module: "permissions", arguments: 1...4, allowedIn: .withMessage) {
                call, compiler throws(CompileError) in try checkAddress(call, compiler, fromSource: true)
            },
            ScriptFunction("check_address", module: "permissions", arguments: 4...6, allowedIn: .all) {
                call, compiler throws(CompileError) in try checkAddress(call, compiler, fromSource: false)
            },
            ScriptFunction("get_source_group", module: "permissions", arguments: 1...2, allowedIn: .withMessage,
                           compile: sourceGroup),
        ])
    }

    /// One row of the address table.
    struct Entry {
        let group: Int
        let network: SocketAddress
        let bits: Int
        let port: UInt16
        /// "udp" or "any" rows can match: the others name transports ringsip does not serve.
        let udp: Bool
        let pattern: Pattern?
        let information: UnsafeRawBufferPointer?
    }

    final class Pattern: @unchecked Sendable {
        let regex = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        init?(_ text: String) {
            guard regcomp(regex, text, REG_EXTENDED | REG_NOSUB) == 0 else {
                regex.deallocate()
                return nil
            }
        }
    }

    /// The table, read (or taken from the start-up cache) while the first call site compiles.
    static func entries(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> [Entry] {
        let (url, names) = try StartupTable.source(
            of: "permissions",
            names: [("address_table", "address"), ("grp_col", "grp"), ("ip_col", "ip"), ("mask_col", "mask"),
                    ("port_col", "port"), ("proto_col", "proto"), ("pattern_col", "pattern"),
                    ("info_col", "context_info")],
            for: call, compiler)
        let rows = try StartupTable.firstRows(of: ["SELECT " + names.dropFirst().joined(separator: ", ") + " FROM " + names[0]],
                                              url: url, table: names[0], module: "permissions", for: call, compiler)
        var entries: [Entry] = []
        for row in rows {
            guard let group = row[0].flatMap({ Int($0) }), let ip = row[1],
                  let network = SocketAddress(numericHost: ip, port: 0) else { continue }
            let proto = (row[4] ?? "any").lowercased()
            entries.append(Entry(group: group, network: network, bits: row[2].flatMap { Int($0) } ?? (network.isIPv6 ? 128 : 32),
                                 port: row[3].flatMap { UInt16($0) } ?? 0, udp: proto == "any" || proto == "udp",
                                 pattern: row[5].flatMap { $0.isEmpty ? nil : Pattern($0) },
                                 information: row[6].map { permanentBytes($0) }))
        }
        return entries
    }

    /// The first entry of `group` (nil: any group) matching the address, port and optional pattern.
    static func match(_ entries: [Entry], group: Int?, address: SocketAddress, port: UInt16, udp: Bool,
                      pattern: UnsafeRawBufferPointer?, arena: Arena) -> Entry? {
        for entry in entries where (group == nil || entry.group == group) && entry.udp && udp
            && (entry.port == 0 || entry.port == port) && address.isIn(entry.network, prefixLength: entry.bits) {
            if let regex = entry.pattern?.regex, let pattern {
                guard let text = arena.allocate(pattern.count + 1) else { return nil }
                text.copyMemory(from: pattern)
                text[pattern.count] = 0
                guard regexec(regex, text.baseAddress!.assumingMemoryBound(to: CChar.self), 0, nil, 0) == 0 else { continue }
            }
            return entry
        }
        return nil
    }

    static func checkAddress(_ call: FunctionCall, _ compiler: ScriptCompiler, fromSource: Bool) throws(CompileError)
        -> CompiledCall {
        let table = try entries(call, compiler)
        let group = try compiler.integer(call.arguments[0]!, what: "the group")
        let first = fromSource ? 1 : 4
        let ip = fromSource ? nil : try compiler.value(call.arguments[1]!)
        let port = fromSource ? nil : try compiler.integer(call.arguments[2]!, what: "the port")
        let proto = fromSource ? nil : try compiler.value(call.arguments[3]!)
        let information = try compiler.outputTarget(call.arguments.count > first ? call.arguments[first] : nil,
                                                    what: "\(call.name)'s context_info")
        let pattern = try call.arguments.count > first + 1 ? call.arguments[first + 1].map {
            (e: Expression) throws(CompileError) in try compiler.value(e)
        } : nil
        return { context in
            guard let wanted = group(context) else { return -1 }
            var address = context.source
            var udp = true
            var portNumber = context.source.port
            if let ip, let port, let proto {
                guard case .text(let text) = ip(context), let parsed = SocketAddress(numericHost: text, port: 0) else {
                    return -1
                }
                address = parsed
                portNumber = UInt16(clamping: max(0, port(context) ?? 0))
                if case .text(let name) = proto(context) {
                    udp = name.count == 0 || bytesEqualIgnoringCase(name, udpName) || bytesEqualIgnoringCase(name, anyName)
                }
            }
            var patternText: UnsafeRawBufferPointer?
            if let pattern, case .text(let text) = pattern(context) { patternText = text }
            guard let entry = match(table, group: wanted, address: address, port: portNumber, udp: udp,
                                    pattern: patternText, arena: context.arena) else { return -1 }
            if let information { context.writeOutput(information, entry.information.map { .text($0) } ?? .null) }
            return 1
        }
    }

    @Sendable static func sourceGroup(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let table = try entries(call, compiler)
        guard let target = try compiler.outputTarget(call.arguments[0], what: "get_source_group's result") else {
            throw compiler.error("get_source_group needs where the group goes: $var(name) or $avp(name)", at: call.location)
        }
        return { context in
            guard let entry = match(table, group: nil, address: context.source, port: context.source.port, udp: true,
                                    pattern: nil, arena: context.arena) else { return -1 }
            context.writeOutput(target, .integer(entry.group))
            return 1
        }
    }

    nonisolated(unsafe) static let udpName = permanentBytes("udp")
    nonisolated(unsafe) static let anyName = permanentBytes("any")
}
