import SIP
import Script

/// OpenSIPS' domain module: `is_from_local([$attrs])`, `is_uri_host_local([$attrs])` and
/// `is_domain_local(domain[, $attrs])` against the `domain` table (columns `domain`, and `attrs` where the
/// table has it — 2.x and later), read once at start-up from `db_url` (or `db_default_url`) as OpenSIPS' caching
/// mode does, so a check never waits on the database. Domains compare without regard to case.
public enum DomainModule {
    public static var module: ScriptModule {
        ScriptModule(name: "domain", parameters: [
            .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("domain_table", .string), .init("domain_col", .string), .init("attrs_col", .string),
            .ignored("db_mode", "the domain table is read once at start-up (OpenSIPS' caching mode, db_mode 1)"),
            .ignored("subdomain_col", "ringsip matches whole domains only"),
        ], functions: [
            ScriptFunction("is_from_local", module: "domain", arguments: 0...1, allowedIn: .withMessage) {
                call, compiler throws(CompileError) in try check(call, compiler, domain: variable("fd", call), attrs: 0)
            },
            ScriptFunction("is_uri_host_local", module: "domain", arguments: 0...1, allowedIn: .withMessage) {
                call, compiler throws(CompileError) in try check(call, compiler, domain: variable("rd", call), attrs: 0)
            },
            ScriptFunction("is_domain_local", module: "domain", arguments: 1...2, allowedIn: .all) {
                call, compiler throws(CompileError) in try check(call, compiler, domain: call.arguments[0]!, attrs: 1)
            },
        ])
    }

    static func variable(_ name: String, _ call: FunctionCall) -> Expression {
        .variable(PseudoVariable(name: name, argument: nil, index: nil, transformations: [], location: call.location))
    }

    /// Domain (lower case) → its attrs (nil when the column is absent or NULL). Read while the first call site
    /// compiles; every later compile (each shard's) takes the start-up cache.
    static func table(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> [String: String?] {
        let (url, names) = try StartupTable.source(
            of: "domain", names: [("domain_table", "domain"), ("domain_col", "domain"), ("attrs_col", "attrs")],
            for: call, compiler)
        let (table, domain, attrs) = (names[0], names[1], names[2])
        // 1.x tables have no attrs column: read the domains alone then.
        let rows = try StartupTable.firstRows(
            of: ["SELECT \(domain), \(attrs) FROM \(table)", "SELECT \(domain) FROM \(table)"],
            url: url, table: table, module: "domain", for: call, compiler)
        var domains: [String: String?] = [:]
        for row in rows {
            guard let name = row[0]?.lowercased(), !name.isEmpty else { continue }
            domains[name] = row.count > 1 ? row[1] : nil
        }
        return domains
    }

    static func check(_ call: FunctionCall, _ compiler: ScriptCompiler, domain: Expression, attrs index: Int)
        throws(CompileError) -> CompiledCall {
        let domains = try table(call, compiler)
        // Kept as bytes and found by a case-folded hash, so a check builds no String and scans no list.
        let known = domains.map { (name, attrs) in (permanentBytes(name), attrs.map { permanentBytes($0) }) }
        var byHash: [UInt64: [Int]] = [:]
        for (i, entry) in known.enumerated() { byHash[foldedHash(entry.0), default: []].append(i) }
        let value = try compiler.value(domain)
        let target = try compiler.outputTarget(call.arguments.count > index ? call.arguments[index] : nil,
                                               what: "\(call.name)'s attrs")
        return { context in
            guard case .text(let text) = value(context), text.count > 0 else { return -1 }
            guard let candidates = byHash[foldedHash(text)],
                  let found = candidates.first(where: { bytesEqualIgnoringCase(known[$0].0, text) }) else { return -1 }
            let match = known[found]
            if let target { context.writeOutput(target, match.1.map { .text($0) } ?? .null) }
            return 1
        }
    }

    /// FNV-1a over the ASCII-lower-cased bytes.
    static func foldedHash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = FNV1a64()
        for byte in bytes { hasher.combine(byte: byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte) }
        return hasher.value
    }
}
