import Engine
import Script

/// One shard's accounting: log records are written at once; db records become rows for the shard's `AccWriter`.
final class AccService: ShardService, NextTurnContinuing {
    unowned let context: ScriptContext
    unowned let shard: Shard
    let logLevel: Int
    let accTable: String
    let missedTable: String
    /// method, from_tag, to_tag, callid, sip_code, sip_reason, time (the acc_*_column modparams).
    let columns: [String]
    let writer: AccWriter?
    /// The aaa backend, when aaa_radius is configured.
    let radius: AccRadius?
    private var row: [UInt8] = []
    private var head = ""
    private var headTable = ""
    private var headExtras: [String] = [""]
    private var headCDR = false

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        self.shard = shard
        logLevel = configuration.integer("acc", "log_level", default: 2)
        func name(_ parameter: String, _ fallback: String) -> String {
            if case .string(let text)? = configuration.moduleParameters["acc"]?[parameter], !text.isEmpty { return text }
            return fallback
        }
        accTable = name("db_table_acc", "acc")
        missedTable = name("db_table_missed_calls", "missed_calls")
        columns = [name("acc_method_column", "method"), name("acc_from_tag_column", "from_tag"),
                   name("acc_to_tag_column", "to_tag"), name("acc_callid_column", "callid"),
                   name("acc_sip_code_column", "sip_code"), name("acc_sip_reason_column", "sip_reason"),
                   name("acc_time_column", "time")]
        var spillDirectory = "/var/spool/ringsip/acc"
        if case .string(let text)? = configuration.moduleParameters["acc"]?["spill_dir"], !text.isEmpty { spillDirectory = text }
        let queueSize = configuration.integer("acc", "queue_size", default: 10_000)
        writer = DatabaseModule.url(of: "acc", in: configuration).flatMap { url in
            AccWriter(context: context, shard: shard, url: url, spillDirectory: spillDirectory, queueSize: queueSize,
                      connections: configuration.integer("acc", "db_connections", default: 2))
        }
        radius = AccRadius(context: context, shard: shard, configuration: configuration, queueSize: queueSize,
                           spillDirectory: spillDirectory)
        writer?.service = self
    }

    /// A record to one backend (`table`: the db table, when not acc's default).
    func write(_ record: AccRecord, to backend: AccBackend, table: String?) {
        switch backend {
        case .log: log(record)
        case .db: store(record, table: table ?? accTable)
        case .aaa: radius?.send(record)
        }
    }

    func log(_ record: AccRecord) {
        context.log.write(level: logLevel, record.logLine)
    }

    /// Queues the record's row for `table` (nothing is written when acc has no db_url: the check refuses db
    /// accounting without one). The values are escaped straight into one reused buffer, and the statement head is
    /// built again only when the table or the extra columns change.
    func store(_ record: AccRecord, table: String) {
        guard let writer else { return }
        if table != headTable || (record.cdr != nil) != headCDR
            || !record.extras.elementsEqual(headExtras, by: { $0.name == $1 }) {
            headTable = table
            headCDR = record.cdr != nil
            headExtras = record.extras.map(\.name)
            let cdrColumns = headCDR ? ["duration", "ms_duration", "setuptime", "created"] : []
            head = "INSERT INTO \(table) (\((columns + cdrColumns + headExtras).joined(separator: ", "))) VALUES "
        }
        row.removeAll(keepingCapacity: true)
        row.append(UInt8(ascii: "("))
        writer.appendQuoted(record.method, to: &row)
        row.append(UInt8(ascii: ","))
        writer.appendQuoted(record.fromTag, to: &row)
        row.append(UInt8(ascii: ","))
        writer.appendQuoted(record.toTag, to: &row)
        row.append(UInt8(ascii: ","))
        writer.appendQuoted(record.callID, to: &row)
        row.append(UInt8(ascii: ","))
        row.append(contentsOf: String(record.code).utf8)
        row.append(UInt8(ascii: ","))
        writer.appendQuoted(record.reason, to: &row)
        row.append(contentsOf: ",FROM_UNIXTIME(\(record.unixMilliseconds / 1000))".utf8)
        if let cdr = record.cdr {
            row.append(contentsOf: (",\(cdr.durationMilliseconds / 1000),\(cdr.durationMilliseconds),"
                + "\(cdr.setupMilliseconds / 1000),FROM_UNIXTIME(\(cdr.createdUnixMilliseconds / 1000))").utf8)
        }
        for (_, value) in record.extras {
            row.append(UInt8(ascii: ","))
            if let value { writer.appendQuoted(value, to: &row) } else { row.append(contentsOf: "NULL".utf8) }
        }
        row.append(UInt8(ascii: ")"))
        writer.append(head: head, values: String(decoding: row, as: UTF8.self))
    }

    func nextTurn(value: Int, on shard: Shard) { writer?.pump() }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        switch OpsPacking.component(of: id) {
        case .accounting?: writer?.runner.operationCompleted(id, result: result, flags: flags)
        case .accountingRadius?: radius?.runner.operationCompleted(id, result: result, flags: flags)
        default: return false
        }
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        switch OpsPacking.component(ofTimer: payload) {
        case .accounting?: writer?.runner.timerFired(payload: payload)
        case .accountingTick? where payload & 0xFFFF_FFFF == 1: writer?.flushDue()
        case .accountingTick?:
            writer?.tick()
            radius?.tick()
        case .accountingRadius?: radius?.runner.timerFired(payload: payload)
        default: return false
        }
        return true
    }

    func stopping(on shard: Shard) {
        writer?.stop()
        radius?.stop()
    }
}
