import Engine
import SIP
import Script

/// OpenSIPS' acc module: a record for each answered transaction the script marks, to the log and to MariaDB.
///
/// - Marking, 2.2+ style: `do_accounting("log|db", "missed|failed", table)`, undone by `drop_accounting`; 1.x–2.1
///   style: the flag modparams (`log_flag`, `db_flag`, `log_missed_flag`, `db_missed_flag`,
///   `failed_transaction_flag`) named by number or name, tested on the transaction's flags when it is answered.
/// - When: the transaction's first final response upstream (relayed or ours). A 2xx (or any final with `failed`)
///   makes an `acc` record; a final of 300 or more with `missed` makes a `missed_calls` one. What the failure
///   route sets counts: the record is made when the answer finally goes up. CANCELs only with `report_cancels`.
/// - Extra fields: 2.2+ `extra_fields` ("db: tag->column; tag2") filled by `$acc_extra(tag)`; 1.x–2.1
///   `log_extra`/`db_extra` ("name=$pv; …"), read on the request when it is answered.
/// - The record is built at the end of the loop turn in which the answer went up (`AnswerReporter`), never inside
///   TM's reply handling, and written by the shard's `AccService`: the log at once, MariaDB through a queue that
///   never blocks the shard and never loses a record (`AccWriter`).
/// Not built: `cdr` (needs dialogs), the aaa backend, multi-leg fields: each is a start-up error naming it.
public enum AccModule {
    public static var module: ScriptModule {
        var module = ScriptModule(name: "acc", parameters: [
            .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("db_table_acc", .string), .init("db_table_missed_calls", .string),
            .init("acc_method_column", .string), .init("acc_from_tag_column", .string),
            .init("acc_to_tag_column", .string), .init("acc_callid_column", .string),
            .init("acc_sip_code_column", .string), .init("acc_sip_reason_column", .string),
            .init("acc_time_column", .string),
            .init("log_level", .integer, range: -3...4), .init("report_cancels", .integer, range: 0...1),
            .init("extra_fields", .string), .init("log_extra", .string), .init("db_extra", .string),
            .init("log_flag", .flag), .init("log_missed_flag", .flag), .init("db_flag", .flag),
            .init("db_missed_flag", .flag), .init("failed_transaction_flag", .flag),
            .init("aaa_flag", .flag), .init("aaa_missed_flag", .flag), .init("aaa_extra", .string),
            .init("service_type", .integer),
            // ringsip's own: where records wait while MariaDB cannot take them, and how many wait in memory first.
            .init("spill_dir", .string), .init("queue_size", .integer, range: 1...10_000_000),
            .init("db_connections", .integer, range: 1...16),
            .ignored("log_facility", "records go to ringsipd's log (stderr), which has no syslog facility"),
            .ignored("early_media", "a provisional response is never accounted"),
            .ignored("report_ack", "ACKs are routed statelessly and not accounted"),
            .ignored("detect_direction", "From and To are taken as the request has them"),
            .ignored("acc_created_avp_name", "CDRs (the cdr flag) are not built"),
            .ignored("multi_leg_info", "multi-leg accounting is not built"),
            .ignored("multi_leg_bye_info", "multi-leg accounting is not built"),
            .ignored("leg_fields", "multi-leg accounting is not built"),
            .ignored("log_extra_bye", "CDRs (the cdr flag) are not built"),
            .ignored("db_extra_bye", "CDRs (the cdr flag) are not built"),
            .ignored("db_table_avp", "AVP accounting is not built"),
            .ignored("aaa_url", "the server and secret are aaa_radius' acct_server and secret (no radiusclient.conf)"),
        ], functions: [
            ScriptFunction("do_accounting", module: "acc", arguments: 1...3) { call, compiler throws(CompileError) in
                try doAccounting(call, compiler)
            },
            ScriptFunction("drop_accounting", module: "acc", arguments: 0...2) { call, compiler throws(CompileError) in
                try dropAccounting(call, compiler)
            },
            ScriptFunction("acc_log_request", module: "acc", arguments: 1...1, allowedIn: [.request, .failure, .branch]) {
                call, compiler throws(CompileError) in
                try accountNow(call, compiler, backend: .log)
            },
            ScriptFunction("acc_db_request", module: "acc", arguments: 2...2, allowedIn: [.request, .failure, .branch]) {
                call, compiler throws(CompileError) in
                try accountNow(call, compiler, backend: .db)
            },
            ScriptFunction("acc_aaa_request", module: "acc", arguments: 1...1, allowedIn: [.request, .failure, .branch]) {
                call, compiler throws(CompileError) in
                try accountNow(call, compiler, backend: .aaa)
            },
        ], service: { context, shard, configuration in AccService(context: context, shard: shard, configuration: configuration) })
        module.prepare = { compiler throws(CompileError) in try prepare(compiler) }
        return module
    }

    // MARK: - Marking

    static func doAccounting(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let marks = try requests(call, compiler, backendsRequired: true)
        let tableSlot = compiler.avpSlot(named: tableAVP)
        let table = try call.arguments.count > 2 ? tableName(call.arguments[2], call, compiler) : nil
        if table != nil && marks & AccMarks.account(.db) == 0 {
            compiler.warn("do_accounting: a table is used by the db backend only", at: call.location)
        }
        return { context in
            context.reports |= marks
            if let table {
                context.avps.remove(tableSlot, all: true)
                _ = context.avps.push(tableSlot, .text(table))
            }
            return 1
        }
    }

    static func dropAccounting(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard !call.arguments.isEmpty else { return { context in context.reports &= ~AccMarks.every; return 1 } }
        var marks = try requests(call, compiler, backendsRequired: false)
        // drop_accounting("db") drops every kind of db record; with flags only those kinds.
        if call.arguments.count == 1 {
            for backend in AccBackend.allCases where marks & AccMarks.account(backend) != 0 {
                marks |= AccMarks.missed(backend) | AccMarks.failed(backend) | AccMarks.cdr(backend)
            }
        }
        let dropped = marks
        return { context in context.reports &= ~dropped; return 1 }
    }

    /// The marks `do_accounting(type, flags)` sets. Constant arguments only: the marks are checked at start-up.
    private static func requests(_ call: FunctionCall, _ compiler: ScriptCompiler, backendsRequired: Bool)
        throws(CompileError) -> UInt32 {
        guard let types = compiler.constantText(call.arguments[0]) else {
            throw compiler.error("\(call.name): the backends must be constant text (\"log|db\")", at: call.location)
        }
        var backends: [AccBackend] = []
        for name in types.split(separator: "|").map({ $0.trimming(" \t").lowercased() }) where !name.isEmpty {
            switch name {
            case "log", "db", "aaa":
                let backend: AccBackend = name == "log" ? .log : name == "db" ? .db : .aaa
                if let why = missing(backend, compiler.configuration) {
                    throw compiler.error("\(call.name): the \(name) backend \(why)", at: call.location)
                }
                backends.append(backend)
            case "evi", "diameter":
                throw compiler.error("\(call.name): the \(name) backend is not built in ringsip: account to db or log",
                                     at: call.location)
            default: throw compiler.error("\(call.name): unknown backend '\(name)' (log, db, aaa)", at: call.location)
            }
        }
        if backends.isEmpty && backendsRequired {
            throw compiler.error("\(call.name) needs a backend: \"log\", \"db\" or \"log|db\"", at: call.location)
        }
        var marks: UInt32 = 0
        for backend in backends { marks |= AccMarks.account(backend) }
        guard call.arguments.count > 1 else { return marks }
        guard let flags = compiler.constantText(call.arguments[1]) else {
            throw compiler.error("\(call.name): the flags must be constant text (\"missed|failed\")", at: call.location)
        }
        for name in flags.split(separator: "|").map({ $0.trimming(" \t").lowercased() }) where !name.isEmpty {
            for backend in backends {
                switch name {
                case "missed": marks |= AccMarks.missed(backend)
                case "failed": marks |= AccMarks.failed(backend)
                case "cdr":
                    guard compiler.configuration.loadedModules.contains("dialog") else {
                        throw compiler.error("\(call.name): 'cdr' needs loadmodule \"dialog.so\" (and create_dialog())",
                                             at: call.location)
                    }
                    marks |= AccMarks.cdr(backend)
                default:
                    throw compiler.error("\(call.name): unknown flag '\(name)' (missed, failed, cdr)", at: call.location)
                }
            }
        }
        return marks
    }

    private static func tableName(_ argument: Expression?, _ call: FunctionCall, _ compiler: ScriptCompiler)
        throws(CompileError) -> UnsafeRawBufferPointer? {
        guard let text = compiler.constantText(argument), !text.isEmpty else {
            throw compiler.error("\(call.name): the table must be a constant name", at: call.location)
        }
        guard text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw compiler.error("\(call.name): '\(text)' is not a table name", at: call.location)
        }
        return permanentBytes(text)
    }

    /// `acc_log_request(comment)`, `acc_db_request(comment, table)`: a record of the request now, its code and
    /// reason from the comment ("403 Forbidden"; a comment without a code is accounted as 0).
    static func accountNow(_ call: FunctionCall, _ compiler: ScriptCompiler, backend: AccBackend) throws(CompileError)
        -> CompiledCall {
        let comment = try compiler.value(call.arguments[0]!)
        let table = backend == .db ? try tableName(call.arguments[1], call, compiler).map { String(decoding: $0, as: UTF8.self) } : nil
        if let why = missing(backend, compiler.configuration) {
            throw compiler.error("\(call.name) \(why)", at: call.location)
        }
        guard let index = compiler.serviceIndex(of: "acc") else { return { _ in -1 } }
        let extras = try AccExtras.compile(compiler)
        return { context in
            guard let service = context.service(index) as? AccService else { return -1 }
            let text = comment(context).string ?? ""
            let digits = text.prefix(3)
            let code = digits.count == 3 ? Int(digits) ?? 0 : 0
            let reason = code == 0 ? text : String(text.dropFirst(3).drop(while: { $0 == " " }))
            let message = context.message
            let toTag = message.toTagText
            var record = AccRecord.of(message, kind: .request, code: code, reason: reason, toTag: toTag,
                                      unixMilliseconds: WallClock.milliseconds())
            record.extras = extras.values(for: backend, context)
            service.write(record, to: backend, table: table)
            return 1
        }
    }

    /// Why `backend` cannot be used with this configuration (no database or RADIUS server set); nil when it can.
    static func missing(_ backend: AccBackend, _ configuration: ScriptConfiguration) -> String? {
        switch backend {
        case .log: nil
        case .db: DatabaseModule.url(of: "acc", in: configuration) == nil
            ? "needs modparam(\"acc\", \"db_url\", \"mysql://…\")" : nil
        case .aaa: configuration.moduleParameters["aaa_radius"]?["secret"] == nil
            ? "needs loadmodule \"aaa_radius.so\" with its \"acct_server\" and \"secret\"" : nil
        }
    }

    // MARK: - Reporting answers

    /// The hidden `$avp` that carries do_accounting's table to the report.
    static let tableAVP = "\u{1}acc_table"

    /// Resolves the flag modparams and extra fields once, and adds the reporter that turns an answered transaction
    /// into records.
    static func prepare(_ compiler: ScriptCompiler) throws(CompileError) {
        let configuration = compiler.configuration
        var flagMarks: [(bit: UInt64, marks: UInt32)] = []
        let flagParameters: [(String, UInt32, AccBackend?)] = [
            ("log_flag", AccMarks.account(.log), .log), ("log_missed_flag", AccMarks.missed(.log), .log),
            ("db_flag", AccMarks.account(.db), .db), ("db_missed_flag", AccMarks.missed(.db), .db),
            ("aaa_flag", AccMarks.account(.aaa), .aaa), ("aaa_missed_flag", AccMarks.missed(.aaa), .aaa),
            ("failed_transaction_flag", AccMarks.failed(.log) | AccMarks.failed(.db) | AccMarks.failed(.aaa), nil),
        ]
        for (name, marks, backend) in flagParameters {
            guard let parameter = compiler.source.parameters.last(where: { $0.module == "acc" && $0.name == name }) else {
                continue
            }
            if let backend, let why = missing(backend, configuration) {
                throw compiler.error("acc: \(name) \(why)", at: parameter.location)
            }
            let expression: Expression
            switch parameter.value {
            case .integer(let n): expression = .integer(n, location: parameter.valueLocation)
            case .string(let text), .word(let text): expression = .identifier(text, location: parameter.valueLocation)
            }
            flagMarks.append((1 << UInt64(try compiler.flagBit(expression, at: parameter.valueLocation)), marks))
        }
        let extras = try AccExtras.compile(compiler)
        let tableSlot = compiler.avpSlot(named: tableAVP)
        let reportCancels = configuration.integer("acc", "report_cancels", default: 0) == 1
        guard let index = compiler.serviceIndex(of: "acc") else { return }
        let dialogIndex = compiler.serviceIndex(of: "dialog")
        var anyFlag: UInt64 = 0
        for entry in flagMarks { anyFlag |= entry.bit }
        let marksOfFlags = flagMarks
        compiler.answerReporters.append(AnswerReporter(flags: anyFlag) { context, answer in
            var marks = context.reports
            for entry in marksOfFlags where context.flags & entry.bit != 0 { marks |= entry.marks }
            guard marks != 0, let service = context.service(index) as? AccService else { return }
            let message = context.message
            if message.method == .cancel && !reportCancels { return }
            let toTag = answer.toTag.count > 0 ? String(decoding: answer.toTag, as: UTF8.self)
                : message.toTagText
            let reason = String(decoding: answer.reason, as: UTF8.self)
            let table = context.avps.value(tableSlot).string
            var cdrBackends: [AccBackend] = []
            if message.method == .invite && answer.status < 300 && !message.hasToTag {
                cdrBackends = AccBackend.allCases.filter { marks & AccMarks.cdr($0) != 0 }
            }
            if !cdrBackends.isEmpty, let dialogs = dialogIndex.flatMap({ context.service($0) as? DialogService }) {
                var record = AccRecord.of(message, kind: .transaction, code: answer.status, reason: reason, toTag: toTag,
                                          unixMilliseconds: answer.unixMilliseconds)
                // One CDR a dialog: its extras are the INVITE's, for the first backend that keeps a CDR.
                record.extras = extras.values(for: cdrBackends[0], context)
                if dialogs.attachCDR(for: message, record, backends: cdrBackends) {
                    for backend in cdrBackends { marks &= ~AccMarks.account(backend) }
                }
            }
            for backend in AccBackend.allCases {
                var kinds: [AccRecord.Kind] = []
                if marks & AccMarks.account(backend) != 0
                    && (answer.status < 300 || marks & AccMarks.failed(backend) != 0) { kinds.append(.transaction) }
                if answer.status >= 300 && marks & AccMarks.missed(backend) != 0 { kinds.append(.missed) }
                for kind in kinds {
                    var record = AccRecord.of(message, kind: kind, code: answer.status, reason: reason, toTag: toTag,
                                              unixMilliseconds: answer.unixMilliseconds)
                    record.extras = extras.values(for: backend, context)
                    service.write(record, to: backend, table: kind == .missed ? service.missedTable : table)
                }
            }
        })
    }
}

enum AccBackend: Int, CaseIterable {
    case log = 0
    case db = 1
    /// RADIUS accounting through aaa_radius' acct_server (`AccRadius`).
    case aaa = 2
}

/// What acc reports of a transaction, as bits of `ScriptContext.reports`: per backend b, bit b accounts it,
/// bit 4+b its missed call, bit 8+b its failure.
enum AccMarks {
    static func account(_ backend: AccBackend) -> UInt32 { 1 << UInt32(backend.rawValue) }
    static func missed(_ backend: AccBackend) -> UInt32 { 1 << UInt32(4 + backend.rawValue) }
    static func failed(_ backend: AccBackend) -> UInt32 { 1 << UInt32(8 + backend.rawValue) }
    /// The INVITE's record waits for its dialog's end, as a CDR with the call's duration.
    static func cdr(_ backend: AccBackend) -> UInt32 { 1 << UInt32(12 + backend.rawValue) }
    /// Every bit acc uses (the others belong to other modules: dialog's is bit 31).
    static let every: UInt32 = 0xFFFF
}
