import Engine
import Glibc
import Script
import Synchronization

/// usrloc's `db_mode` 1 and 2: the location table kept in MariaDB with OpenSIPS' `location` schema, so bindings
/// survive a restart and an existing OpenSIPS database works unchanged.
///
/// - At start-up (the first registrar call site's compile, on the main thread) each table a script names is read
///   once: the live rows become every shard's copy. Both schemas are read: 3.x keeps `expires` as a UNIX time
///   (INT), 2.x as a DATETIME; `information_schema` says which.
/// - After each change the AOR's owner shard replaces the AOR's rows (DELETE, then one INSERT of every binding)
///   through its own one-connection MariaDB pool on the ring: queued in order, never waited for, so a slow
///   database costs the shard nothing. db_mode 2 (write-back) behaves as 1: the writes are asynchronous already.
/// - Shard 0 deletes lapsed rows every `timer_interval`.
/// Not kept: reg-id and the branch flags (no OpenSIPS column holds them as ringsip does).
enum UsrlocDatabase {
    struct Table: Sendable {
        var url: String
        /// 2.x: `expires` is a DATETIME; 3.x: a UNIX time.
        var datetime: Bool
        /// username, domain, contact, received, path, expires (UNIX time), q, callid, cseq, user_agent, socket,
        /// sip_instance (nil where the table has no such column).
        var rows: [[String?]]
    }

    /// Tables read at start-up, by name. Written on the main thread before any shard starts; read by each shard's
    /// service when it starts.
    static let tables = Mutex<[String: Table]>([:])

    /// `db_mode`, or what 3.x's `working_mode_preset` says; 0 without either.
    static func mode(_ configuration: ScriptConfiguration) -> Int {
        if let mode = configuration.optionalInteger("usrloc", "db_mode") { return mode }
        guard case .string(let preset)? = configuration.moduleParameters["usrloc"]?["working_mode_preset"] else { return 0 }
        if preset.contains("write-through") { return 1 }
        if preset.contains("write-back") { return 2 }
        if preset.contains("sql-only") { return 3 }
        return 0
    }

    /// Reads `table` once (later call sites and shards reuse it). Errors name the call: a missing table or an
    /// unreachable database fails the start, as a misconfigured OpenSIPS does.
    static func load(_ table: String, for call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) {
        guard mode(compiler.configuration) != 0, tables.withLock({ $0[table] == nil }) else { return }
        guard !table.isEmpty, table.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw compiler.error("usrloc: '\(table)' is not a table name", at: call.location)
        }
        let (url, _) = try StartupTable.source(of: "usrloc", names: [], for: call, compiler)
        let kind = try StartupTable.firstRows(
            of: ["SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                 + "AND TABLE_NAME = '\(table)' AND COLUMN_NAME = 'expires'"],
            url: url, table: table, module: "usrloc", for: call, compiler)
        guard let type = kind.first?.first??.lowercased() else {
            throw compiler.error("usrloc: db_mode \(mode(compiler.configuration)) needs the '\(table)' table in the "
                + "database (OpenSIPS' usrloc-create.sql makes it)", at: call.location)
        }
        let datetime = type.contains("date") || type.contains("time")
        let expires = datetime ? "UNIX_TIMESTAMP(expires)" : "expires"
        let now = datetime ? "NOW()" : "UNIX_TIMESTAMP()"
        let columns = "username, domain, contact, received, path, \(expires), q, callid, cseq, user_agent, socket"
        let rows = try StartupTable.firstRows(
            of: ["SELECT \(columns), sip_instance FROM \(table) WHERE expires > \(now)",
                 "SELECT \(columns) FROM \(table) WHERE expires > \(now)"],
            url: url, table: table, module: "usrloc", for: call, compiler)
        tables.withLock { $0[table] = Table(url: url, datetime: datetime, rows: rows) }
    }

    /// The loaded rows as bindings, by the key `LocationService` keeps them under.
    static func bindings(useDomain: Bool, sockets: [String], now: UInt64) -> [String: [Binding]] {
        let wallNow = Int(time(nil))
        var byKey: [String: [Binding]] = [:]
        for (name, table) in tables.withLock({ $0 }) {
            for row in table.rows {
                guard let user = row[0], !user.isEmpty, let contact = row[2], let expires = row[5].flatMap({ Int($0) }),
                      expires > wallNow else { continue }
                let domain = row[1] ?? ""
                let aor = useDomain && !domain.isEmpty ? user + "@" + domain.lowercased() : user
                let q = row[6].flatMap { Double($0) }.map { $0 < 0 ? -1 : Int(($0 * 1000).rounded()) } ?? -1
                let binding = Binding(
                    contact: contact, expires: now + UInt64(expires - wallNow) * 1000, q: min(q, 1000),
                    callID: row[7] ?? "", cseq: row[8].flatMap { UInt32($0) } ?? 0, path: row[4] ?? "",
                    received: row[3] ?? "", userAgent: row[9] ?? "", instance: row.count > 11 ? row[11] ?? "" : "",
                    socket: row[10].flatMap { sockets.firstIndex(of: $0) } ?? 0, modified: now)
                byKey[RegistrarModule.key(aor, table: name), default: []].append(binding)
            }
        }
        return byKey
    }
}

/// One shard's writer of the location tables (a `SerialWriter`, so an AOR's DELETE and INSERT run in the order
/// they were made).
final class UsrlocWriter {
    let serial: SerialWriter
    let datetime: [String: Bool]

    init?(context: ScriptContext, shard: Shard) {
        let tables = UsrlocDatabase.tables.withLock { $0 }
        guard let url = tables.first?.value.url,
              let serial = SerialWriter(context: context, shard: shard, url: url, component: .locationDatabase,
                                        failure: "ringsipd: usrloc: a location write failed",
                                        consequence: "the bindings stay in memory") else { return nil }
        self.serial = serial
        datetime = tables.mapValues(\.datetime)
    }

    /// Replaces the AOR's rows with `bindings` (none: deletes them).
    func write(table: String, username: String, domain: String?, bindings: [Binding], socketNames: [String], now: UInt64) {
        guard let datetime = datetime[table] else { return }
        // A binding that lapsed since (a request mailed from another shard, applied with its clock) is not written.
        let bindings = bindings.filter { $0.expires > now }
        let whereDomain = domain.map { "domain = \(serial.quoted($0))" } ?? "(domain IS NULL OR domain = '')"
        serial.submit("DELETE FROM \(table) WHERE username = \(serial.quoted(username)) AND \(whereDomain)")
        guard !bindings.isEmpty else { return }
        let wallNow = Int(time(nil))
        func moment(_ unix: Int) -> String { datetime ? "FROM_UNIXTIME(\(unix))" : "\(unix)" }
        let values = bindings.map { b -> String in
            let expires = wallNow + Int((b.expires &- now) / 1000)
            let q = b.q < 0 ? "-1" : String(Double(b.q) / 1000)
            let socket = b.socket < socketNames.count ? serial.quoted(socketNames[b.socket]) : "NULL"
            return "(\(serial.quoted(username)), \(domain.map(serial.quoted) ?? "NULL"), \(serial.quoted(b.contact)), "
                + "\(b.received.isEmpty ? "NULL" : serial.quoted(b.received)), \(b.path.isEmpty ? "NULL" : serial.quoted(b.path)), "
                + "\(moment(expires)), \(q), \(serial.quoted(b.callID)), \(b.cseq), FROM_UNIXTIME(\(wallNow)), 0, "
                + "\(serial.quoted(b.userAgent)), \(socket), \(b.instance.isEmpty ? "NULL" : serial.quoted(b.instance)))"
        }
        serial.submit("INSERT INTO \(table) (username, domain, contact, received, path, expires, q, callid, cseq, "
                      + "last_modified, flags, user_agent, socket, sip_instance) VALUES " + values.joined(separator: ", "))
    }

    /// Deletes the rows that have lapsed, in every table.
    func deleteLapsed() {
        for (table, datetime) in datetime {
            serial.submit("DELETE FROM \(table) WHERE expires < \(datetime ? "NOW()" : "UNIX_TIMESTAMP()")")
        }
    }
}
