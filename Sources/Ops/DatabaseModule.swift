import CMariaDB
import Engine
import Glibc
import Script

/// `avp_db_query(query[, dest])` (avpops) and `sql_query(query[, dest])` (sqlops, OpenSIPS 3.6), inside
/// `async()`: the query runs on the shard's MariaDB pool without blocking it. `$…` values substituted into
/// the query text are escaped (mysql_real_escape_string), so a From user of `x' OR '1'='1` stays a string.
/// `dest` names the `$avp`s that receive the result's columns, `"$avp(a);$avp(b)"`; with several rows an
/// AVP gets several values, `$(avp(a)[0])` the first row's. `$rc`: 1 the query ran, -1 server error,
/// -2 timeout, -3 the shard's query queue was full.
public enum DatabaseModule {
    public static var modules: [ScriptModule] {
        ["avpops", "sqlops"].map { name in
            ScriptModule(name: name, parameters: [.init("db_url", .string, validate: DatabaseModule.resolveURL),
                                                  .init("db_timeout", .integer),
                                                  .init("db_connections", .integer)],
                         functions: [
                            // Outside async() the query runs synchronously, as in OpenSIPS: it blocks the shard
                            // while the server answers, so the check warns at every such call site.
                            ScriptFunction(name == "avpops" ? "avp_db_query" : "sql_query", module: name,
                                           arguments: 1...2) { call, compiler throws(CompileError) in
                                try compileSynchronous(call, compiler, module: name)
                            },
                         ],
                         asyncOperations: [
                            AsyncOperationDefinition(name == "avpops" ? "avp_db_query" : "sql_query", module: name,
                                                     arguments: 1...2, defaultTimeout: 5_000,
                                                     timeoutParameter: ("db_timeout", 1)) { call, compiler throws(CompileError) in
                                try compile(call, compiler, module: name)
                            },
                         ],
                         service: { context, shard, configuration in
                            DatabaseService(context: context, shard: shard, module: name, configuration: configuration)
                         })
        }
    }

    /// db_mysql: the driver behind `mysql://` URLs, which every OpenSIPS script with a database loads. Built
    /// in here, so loading it only says the script expects it; its tuning knobs belong to libmysqlclient's
    /// blocking model.
    public static var driverModule: ScriptModule {
        let reason = "queries run on each shard's own non-blocking MariaDB pool"
        return ScriptModule(name: "db_mysql", parameters: [
            .ignored("exec_query_threads", reason), .ignored("max_db_queries", reason),
            .ignored("max_db_retries", reason), .ignored("timeout_interval", "set db_timeout of the querying module"),
            .ignored("ps_max_col_size", "queries are not prepared"), .ignored("use_tls", "connections are plain TCP"),
            .ignored("connect_timeout", reason),
        ])
    }

    /// A module's `db_url`, else the script's `db_default_url`.
    static func url(of module: String, in configuration: ScriptConfiguration) -> String? {
        if case .string(let url)? = configuration.moduleParameters[module]?["db_url"] { return url }
        return configuration.databaseDefaultURL
    }

    /// A `db_url` checked and its host name resolved, once, at start: a name is never looked up on a shard.
    @Sendable static func resolveURL(_ value: GlobalValue) -> Result<GlobalValue, ParameterProblem> {
        guard case .string(let text) = value else { return .success(value) }
        switch URLHostResolution.resolved(text) {
        case .success(let url):
            do {
                _ = try DatabaseURL(url)
                return .success(.string(url))
            } catch {
                return .failure(ParameterProblem("db_url: \(error)"))
            }
        case .failure(let problem):
            return .failure(ParameterProblem("db_url: \(problem)"))
        }
    }

    enum Piece {
        case literal(UnsafeRawBufferPointer)
        case escaped(ScriptCompiler.Evaluate)
    }

    /// What a call site compiles to, for either way of running it.
    struct CallSite {
        let pieces: [Piece]
        let destinations: [Int]
        let service: Int
    }

    static func compileSynchronous(_ call: FunctionCall, _ compiler: ScriptCompiler, module: String)
        throws(CompileError) -> CompiledCall {
        compiler.warn("\(call.name)() outside async() blocks the whole shard until the database answers; "
            + "async(\(call.name)(…), resume_route) does not", at: call.location)
        let site = try callSite(call, compiler, module: module)
        return { context in
            guard let database = context.service(site.service) as? DatabaseService else { return -1 }
            return database.runSynchronously(site, context: context)
        }
    }

    static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler, module: String) throws(CompileError)
        -> CompiledAsyncOperation {
        let site = try callSite(call, compiler, module: module)
        let query = site.pieces
        let columns = site.destinations
        let service = site.service
        return CompiledAsyncOperation(
            start: { context, ticket in
                guard let database = context.service(service) as? DatabaseService else {
                    return Int(DatabaseCode.failed.rawValue)
                }
                return database.start(query, destinations: columns, ticket: ticket, context: context)
            },
            cancel: { context, ticket in
                guard let database = context.service(service) as? DatabaseService,
                      let data = context.suspensions.operationData(ticket) else { return }
                database.cancel(data)
            })
    }

    static func callSite(_ call: FunctionCall, _ compiler: ScriptCompiler, module: String) throws(CompileError) -> CallSite {
        guard let url = DatabaseModule.url(of: module, in: compiler.configuration) else {
            throw compiler.error("\(call.name) needs modparam(\"\(module)\", \"db_url\", \"mysql://user:pass@IP:port/db\")",
                                 at: call.location)
        }
        do {
            _ = try DatabaseURL(url)
        } catch {
            throw compiler.error("\(module) db_url: \(error)", at: call.location)
        }
        guard case .string(let template, _)? = call.arguments[0] else {
            throw compiler.error("\(call.name)'s query must be a string (variables in it are escaped)",
                                 at: call.arguments[0]?.location ?? call.location)
        }
        var pieces: [Piece] = []
        for part in template.parts {
            switch part {
            case .literal(let text): pieces.append(.literal(Array(text.utf8).withUnsafeBytes { copy($0) }))
            case .variable(let variable): pieces.append(.escaped(try compiler.read(variable)))
            }
        }
        var destinations: [Int] = []
        if call.arguments.count > 1, let dest = call.arguments[1] {
            guard case .string(let list, _) = dest else {
                throw compiler.error("\(call.name)'s destination is a list of $avp(name), e.g. \"$avp(a);$avp(b)\"",
                                     at: dest.location)
            }
            for part in list.parts {
                switch part {
                case .variable(let v):
                    guard let slot = try compiler.outputTarget(.variable(v), what: "\(call.name)'s destination") else { continue }
                    destinations.append(slot)
                case .literal(let text) where text.allSatisfy({ $0 == ";" || $0 == " " }):
                    continue
                case .literal:
                    throw compiler.error("\(call.name)'s destination is a list of $avp(name) separated by ';'",
                                         at: dest.location)
                }
            }
        }
        guard let service = compiler.serviceIndex(of: module) else {
            throw compiler.error("\(call.name) needs its module: loadmodule \"\(module).so\"", at: call.location)
        }
        return CallSite(pieces: pieces, destinations: destinations, service: service)
    }

    /// Bytes kept for the life of the compiled script.
    static func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        if bytes.count > 0 { storage.copyMemory(from: bytes) }
        return UnsafeRawBufferPointer(rebasing: storage[0..<bytes.count])
    }
}

/// One shard's MariaDB pool for one module's db_url, seen from the script layer.
final class DatabaseService: ShardService, DatabaseRunnerDelegate {
    unowned let context: ScriptContext
    var runner: DatabaseRunner?
    /// Where a query is assembled (literal text and escaped values) before submission.
    private let queryBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 8)
    private let escapeBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 << 10, alignment: 8)
    /// Per in-flight query: its destination slots (up to 16 columns), by the token's low 16 bits.
    private let destinationSlots: UnsafeMutablePointer<Int32>
    private static let maximumColumns = 16
    private static let tracked = 65_536

    init(context: ScriptContext, shard: Shard, module: String, configuration: ScriptConfiguration) {
        self.context = context
        destinationSlots = .allocate(capacity: DatabaseService.tracked * DatabaseService.maximumColumns)
        if let url = DatabaseModule.url(of: module, in: configuration),
           var settings = try? DatabaseRunner.Configuration(url: url) {
            self.url = settings.url
            settings.connections = configuration.integer(module, "db_connections", default: settings.connections)
            // avpops and sqlops may both be loaded, each with its own pool: each must claim only its own.
            settings.component = module == "sqlops" ? .secondDatabase : .database
            runner = DatabaseRunner(shard: shard, configuration: settings, delegate: self)
        }
    }

    deinit {
        queryBuffer.deallocate()
        escapeBuffer.deallocate()
        destinationSlots.deallocate()
    }

    /// The query text with every substituted value escaped, in `queryBuffer`; nil when it does not fit.
    private func assemble(_ pieces: [DatabaseModule.Piece], context: ScriptContext) -> UnsafeRawBufferPointer? {
        guard let runner else { return nil }
        var length = 0
        for piece in pieces {
            let bytes: UnsafeRawBufferPointer
            switch piece {
            case .literal(let literal):
                bytes = literal
            case .escaped(let evaluate):
                let text: UnsafeRawBufferPointer
                switch evaluate(context) {
                case .text(let t): text = t
                case .integer(let n):
                    // Digits need no escaping; written through the arena.
                    var number = context.arena.begin()
                    context.arena.appendDecimal(&number, n)
                    text = context.arena.end(number)
                case .null: text = UnsafeRawBufferPointer(start: nil, count: 0)
                }
                guard let escaped = runner.escape(text, into: escapeBuffer) else { return nil }
                bytes = UnsafeRawBufferPointer(rebasing: escapeBuffer[0..<escaped])
            }
            guard length + bytes.count <= queryBuffer.count else { return nil }
            if bytes.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: queryBuffer[length..<length + bytes.count]).copyMemory(from: bytes)
            }
            length += bytes.count
        }
        return UnsafeRawBufferPointer(rebasing: queryBuffer[0..<length])
    }

    /// Token, high to low: generation 16 | suspension slot 16 | column count 16 | 0 16.
    func start(_ pieces: [DatabaseModule.Piece], destinations: [Int], ticket: AsyncTicket,
               context: ScriptContext) -> Int? {
        guard let runner, ticket.slot < UInt32(DatabaseService.tracked),
              let query = assemble(pieces, context: context) else { return Int(DatabaseCode.failed.rawValue) }
        let columns = min(destinations.count, DatabaseService.maximumColumns)
        for (i, slot) in destinations.prefix(columns).enumerated() {
            destinationSlots[Int(ticket.slot) * DatabaseService.maximumColumns + i] = Int32(slot)
        }
        let token = OpsPacking.token(ticket, low: UInt32(columns) << 16)
        let timeout = UInt64(0)  // the suspension's timeout cancels the query
        switch runner.submit(query: query, timeoutMilliseconds: timeout, token: token) {
        case .accepted(let handle):
            context.suspensions.setOperationData(ticket, UInt64(UInt32(bitPattern: handle.slot)) << 16
                | UInt64(handle.generation))
            return nil
        case .rejected(let code):
            return Int(code.rawValue)
        }
    }

    /// A blocking connection for synchronous queries, opened on first use (and again after an error).
    private var blocking: UnsafeMutablePointer<MYSQL>?
    private var url: DatabaseURL?

    /// The query, waited for on the shard's thread: its rows go to the destination `$avp`s (copied into the
    /// message's arena), `[0]` the first row's. 1 ran, -1 failed (connection or server error).
    func runSynchronously(_ site: DatabaseModule.CallSite, context: ScriptContext) -> Int {
        guard let query = assemble(site.pieces, context: context), let url else { return -1 }
        if blocking == nil { blocking = openBlocking(url) }
        guard let mysql = blocking else { return -1 }
        var status = query.count == 0 ? 1 : mysql_real_query(mysql, query.baseAddress!.assumingMemoryBound(to: CChar.self),
                                                            UInt(query.count))
        if status != 0 {
            // A connection the server dropped is replaced, and the query run again, once (as the pool does); a
            // query the server refused (syntax, a key) fails as it is, on a connection that is fine.
            guard DatabaseRunner.isConnectionLost(mysql_errno(mysql)) else { return -1 }
            mysql_close(mysql)
            blocking = openBlocking(url)
            guard let fresh = blocking else { return -1 }
            status = mysql_real_query(fresh, query.baseAddress!.assumingMemoryBound(to: CChar.self), UInt(query.count))
            guard status == 0 else { return -1 }
        }
        guard let result = mysql_store_result(blocking!) else { return mysql_field_count(blocking!) == 0 ? 1 : -1 }
        defer { mysql_free_result(result) }
        let columns = min(Int(mysql_num_fields(result)), site.destinations.count)
        for target in site.destinations where target < OutputTarget.writerBase { context.avps.remove(target, all: true) }
        // Pushed last row first, so each $avp's newest value — its [0] — is the first row's.
        let rows = Int(mysql_num_rows(result))
        var row = rows - 1
        while row >= 0 {
            mysql_data_seek(result, UInt64(row))
            if let values = mysql_fetch_row(result), let lengths = mysql_fetch_lengths(result) {
                for column in 0..<columns {
                    guard let value = values[column] else {
                        context.appendOutput(site.destinations[column], .null)
                        continue
                    }
                    let bytes = UnsafeRawBufferPointer(start: value, count: Int(lengths[column]))
                    guard let copy = context.arena.copy(bytes) else { return -1 }
                    context.appendOutput(site.destinations[column], .text(copy))
                }
            }
            row -= 1
        }
        return 1
    }

    private func openBlocking(_ url: DatabaseURL) -> UnsafeMutablePointer<MYSQL>? {
        guard let mysql = mysql_init(nil) else { return nil }
        // The pool's character set: values are escaped with a pool connection's rules.
        _ = mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        var seconds: UInt32 = 3
        _ = mysql_options(mysql, MYSQL_OPT_CONNECT_TIMEOUT, &seconds)
        _ = mysql_options(mysql, MYSQL_OPT_READ_TIMEOUT, &seconds)
        _ = mysql_options(mysql, MYSQL_OPT_WRITE_TIMEOUT, &seconds)
        guard mysql_real_connect(mysql, url.host, url.user, url.password, url.database, url.port, nil, 0) != nil else {
            mysql_close(mysql)
            return nil
        }
        return mysql
    }

    func cancel(_ data: UInt64) {
        runner?.cancel(DatabaseHandle(slot: Int32(bitPattern: UInt32(truncatingIfNeeded: data >> 16)),
                                      generation: UInt16(truncatingIfNeeded: data)))
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        let ticket = OpsPacking.ticket(ofToken: token)
        let columns = Int((token >> 16) & 0xFFFF)
        if completion.code == .completed {
            // Staged last row first, so each $avp's newest value — its [0] — is the first row's.
            var row = completion.rows - 1
            while row >= 0 {
                for column in 0..<min(columns, completion.columns) {
                    let slot = Int(destinationSlots[Int(ticket.slot) * DatabaseService.maximumColumns + column])
                    context.stageOutput(avp: slot, completion.value(row: row, column: column))
                }
                row -= 1
            }
        }
        context.asyncCompleted(ticket, code: Int(completion.code.rawValue))
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        guard let runner, OpsPacking.component(of: id) == runner.configuration.component else { return false }
        runner.operationCompleted(id, result: result, flags: flags)
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        guard let runner, OpsPacking.component(ofTimer: payload) == runner.configuration.component else { return false }
        runner.timerFired(payload: payload)
        return true
    }

    func stopping(on shard: Shard) {
        runner?.shutdown()
        if let blocking { mysql_close(blocking) }
        blocking = nil
    }
}
