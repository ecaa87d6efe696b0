import CMariaDB
import Script
import Synchronization

/// A whole database table read once at start-up, on the main thread, for modules that keep theirs in memory as
/// OpenSIPS does (permissions' `address`): the check loads it, and every shard's compile reuses the same rows,
/// so no shard ever waits on the database for them.
enum StartupTable {
    /// Rows as text (a NULL column is nil), or why the query failed, by URL and query. Failures are kept too: a
    /// module that tries a second form after the first failed (a 1.x table without a column) must not connect
    /// again when each shard compiles, on the shard's thread.
    private static let cache = Mutex<[String: Result<[[String?]], DatabaseConfigurationError>]>([:])

    static func rows(url text: String, query: String) -> Result<[[String?]], DatabaseConfigurationError> {
        let key = text + "\u{0}" + query
        if let known = cache.withLock({ $0[key] }) { return known }
        let read = readAll(url: text, query: query)
        cache.withLock { $0[key] = read }
        return read
    }

    private static func readAll(url text: String, query: String) -> Result<[[String?]], DatabaseConfigurationError> {
        let url: DatabaseURL
        do { url = try DatabaseURL(text) } catch { return .failure(error) }
        guard let mysql = mysql_init(nil) else { return .failure(DatabaseConfigurationError(reason: "out of memory")) }
        defer { mysql_close(mysql) }
        var seconds: UInt32 = 5
        _ = mysql_options(mysql, MYSQL_OPT_CONNECT_TIMEOUT, &seconds)
        _ = mysql_options(mysql, MYSQL_OPT_READ_TIMEOUT, &seconds)
        _ = mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        guard mysql_real_connect(mysql, url.host, url.user, url.password, url.database, url.port, nil, 0) != nil,
              mysql_real_query(mysql, query, UInt(query.utf8.count)) == 0,
              let result = mysql_store_result(mysql) else {
            return .failure(DatabaseConfigurationError(reason: String(cString: mysql_error(mysql))))
        }
        defer { mysql_free_result(result) }
        let columns = Int(mysql_num_fields(result))
        var rows: [[String?]] = []
        while let row = mysql_fetch_row(result), let lengths = mysql_fetch_lengths(result) {
            rows.append((0..<columns).map { column in
                row[column].map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(lengths[column])), as: UTF8.self) }
            })
        }
        return .success(rows)
    }

    /// A module's `db_url` (or `db_default_url`) and the table and column names its modparams give (else the
    /// fallbacks), each checked to be a plain identifier, as the query is built from them. Errors name the call.
    static func source(of module: String, names: [(parameter: String, fallback: String)], for call: FunctionCall,
                       _ compiler: ScriptCompiler) throws(CompileError) -> (url: String, names: [String]) {
        let configuration = compiler.configuration
        guard let url = DatabaseModule.url(of: module, in: configuration) else {
            throw compiler.error("\(call.name) needs modparam(\"\(module)\", \"db_url\", \"mysql://…\") or db_default_url",
                                 at: call.location)
        }
        var chosen: [String] = []
        for (parameter, fallback) in names {
            var name = fallback
            if case .string(let value)? = configuration.moduleParameters[module]?[parameter] { name = value }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw compiler.error("\(module): '\(name)' is not a table or column name", at: call.location)
            }
            chosen.append(name)
        }
        return (url, chosen)
    }

    /// The rows of the first of `queries` that succeeds (a newer schema's first, then an older one's), else an
    /// error at the call naming the table and the last failure.
    static func firstRows(of queries: [String], url: String, table: String, module: String, for call: FunctionCall,
                          _ compiler: ScriptCompiler) throws(CompileError) -> [[String?]] {
        var problem = DatabaseConfigurationError(reason: "no query")
        for query in queries {
            switch rows(url: url, query: query) {
            case .success(let read): return read
            case .failure(let failure): problem = failure
            }
        }
        throw compiler.error("\(module): cannot read the \(table) table at start-up: \(problem)", at: call.location)
    }
}
