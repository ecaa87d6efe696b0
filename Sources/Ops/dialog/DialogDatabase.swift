import Engine
import Glibc
import SIP
import Script
import Synchronization

/// dialog's `db_mode` 1 (and 2, 3, which behave as 1): confirmed dialogs kept in OpenSIPS' `dialog` table, so a
/// restarted daemon takes over the calls under way — their BYEs find them, their CDRs and profiles survive.
///
/// - Written: a dialog's row (REPLACE, every column) when its INVITE is answered 2xx, when its ACK confirms it, and
///   when a route changed its `$dlg_val`s, profiles or timeout; DELETE when it ends. Through the owner shard's own
///   one-connection MariaDB pool, in order, never waited for (a failed write is logged; the dialog stays in memory).
/// - Read: once at start-up (the check, on the main thread): the rows in state 3 or 4 whose timeout lies ahead. Each
///   shard takes the rows whose Call-ID hashes to it and tells the others it owns them.
/// - `dlg_id` is a hash of the Call-ID and the caller's tag. `vars` holds ringsip's own encoding of the `$dlg_val`s
///   and of acc's pending CDR; `profiles` the profile keys — a table shared with OpenSIPS nodes can be read by both
///   for the columns they share, not for those two.
enum DialogDatabase {
    struct Loaded: Sendable {
        var url: String
        var table: String
        var rows: [[String?]]
    }

    static let loaded = Mutex<Loaded?>(nil)
    static let columns = "dlg_id, callid, from_uri, from_tag, to_uri, to_tag, caller_cseq, callee_cseq, caller_contact, "
        + "callee_contact, caller_sock, callee_sock, state, start_time, timeout, vars, profiles"

    static func mode(_ configuration: ScriptConfiguration) -> Int {
        configuration.optionalInteger("dialog", "db_mode") ?? 0
    }

    static func table(_ configuration: ScriptConfiguration) -> String {
        if case .string(let name)? = configuration.moduleParameters["dialog"]?["table_name"], !name.isEmpty { return name }
        return "dialog"
    }

    /// Reads the live rows once; a missing table or an unreachable database fails the start naming it.
    static func load(_ compiler: ScriptCompiler) throws(CompileError) {
        let configuration = compiler.configuration
        guard mode(configuration) != 0, loaded.withLock({ $0 == nil }) else { return }
        let at = compiler.source.parameters.first { $0.module == "dialog" && $0.name == "db_mode" }?.location
            ?? SourceLocation(file: "", line: 1, column: 1)
        guard let url = DatabaseModule.url(of: "dialog", in: configuration) else {
            throw compiler.error("dialog: db_mode needs modparam(\"dialog\", \"db_url\", \"mysql://…\") or db_default_url", at: at)
        }
        let table = table(configuration)
        guard table.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw compiler.error("dialog: '\(table)' is not a table name", at: at)
        }
        switch StartupTable.rows(url: url, query: "SELECT \(columns) FROM \(table) WHERE state IN (3, 4) "
                                 + "AND timeout > UNIX_TIMESTAMP()") {
        case .success(let rows): loaded.withLock { $0 = Loaded(url: url, table: table, rows: rows) }
        case .failure(let problem):
            throw compiler.error("dialog: cannot read the \(table) table at start-up (OpenSIPS' dialog-create.sql makes "
                + "it): \(problem)", at: at)
        }
    }

    static func dialogID(callID: String, callerTag: String) -> UInt64 {
        var hasher = FNV1a64()
        for byte in callID.utf8 { hasher.combine(byte: byte) }
        hasher.combine(byte: 0)
        for byte in callerTag.utf8 { hasher.combine(byte: byte) }
        return hasher.value & 0x7FFF_FFFF_FFFF_FFFF
    }

    // MARK: - vars and profiles

    /// `vars`: each `$dlg_val` as name, value; then acc's CDR under the name "\u{1}cdr". Each text as its UTF-8
    /// length in decimal, ':', the bytes.
    static func encodeVars(_ dialog: Dialog) -> String {
        var out = ""
        func put(_ text: String) { out += "\(text.utf8.count):\(text)" }
        for (name, value) in dialog.values.sorted(by: { $0.key < $1.key }) {
            put(name)
            put(value)
        }
        if let cdr = dialog.cdr {
            put("\u{1}cdr")
            var fields = [cdr.method, cdr.fromTag, cdr.toTag, String(cdr.code), cdr.reason,
                          String(dialog.cdrBackends.reduce(0) { $0 | 1 << $1.rawValue }),
                          String(dialog.createdUnixMilliseconds)]
            for (name, value) in cdr.extras { fields += [name, value ?? "\u{0}"] }
            var inner = ""
            for field in fields { inner += "\(field.utf8.count):\(field)" }
            put(inner)
        }
        return out
    }

    static func decodeTexts(_ text: String) -> [String]? {
        var out: [String] = []
        var bytes = Substring(text).utf8[...]
        while !bytes.isEmpty {
            guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")),
                  let count = Int(String(decoding: bytes[..<colon], as: UTF8.self)), count >= 0 else { return nil }
            let start = bytes.index(after: colon)
            guard let end = bytes.index(start, offsetBy: count, limitedBy: bytes.endIndex) else { return nil }
            out.append(String(decoding: bytes[start..<end], as: UTF8.self))
            bytes = bytes[end...]
        }
        return out
    }

    /// Restores `$dlg_val`s and acc's CDR from `vars` into `dialog` (whose call fields are already set).
    static func decodeVars(_ text: String, into dialog: inout Dialog) {
        guard let texts = decodeTexts(text), texts.count % 2 == 0 else { return }
        for pair in stride(from: 0, to: texts.count, by: 2) {
            if texts[pair] == "\u{1}cdr" {
                guard let fields = decodeTexts(texts[pair + 1]), fields.count >= 7, (fields.count - 7) % 2 == 0 else { continue }
                var record = AccRecord(kind: .transaction, method: fields[0], fromTag: fields[1], toTag: fields[2],
                                       callID: dialog.callID, code: Int(fields[3]) ?? 200, reason: fields[4],
                                       unixMilliseconds: dialog.startedUnixMilliseconds)
                dialog.createdUnixMilliseconds = Int64(fields[6]) ?? dialog.startedUnixMilliseconds
                for extra in stride(from: 7, to: fields.count, by: 2) {
                    record.extras.append((fields[extra], fields[extra + 1] == "\u{0}" ? nil : fields[extra + 1]))
                }
                let bits = Int(fields[5]) ?? 0
                dialog.cdrBackends = AccBackend.allCases.filter { bits & 1 << $0.rawValue != 0 }
                dialog.cdr = record
            } else {
                dialog.values[texts[pair]] = texts[pair + 1]
            }
        }
    }
}

/// One shard's writer of the dialog table (a `SerialWriter`, so a dialog's writes run in the order made).
final class DialogWriter {
    let serial: SerialWriter
    let table: String

    init?(context: ScriptContext, shard: Shard) {
        guard let loaded = DialogDatabase.loaded.withLock({ $0 }),
              let serial = SerialWriter(context: context, shard: shard, url: loaded.url, component: .dialogDatabase,
                                        failure: "ringsipd: dialog: a write to the \(loaded.table) table failed",
                                        consequence: "the dialog stays in memory") else { return nil }
        self.serial = serial
        table = loaded.table
    }

    /// The dialog's whole row, replacing what the table had.
    func write(_ dialog: Dialog, socket: String) {
        let id = DialogDatabase.dialogID(callID: dialog.callID, callerTag: dialog.callerTag)
        let wallNow = Int(time(nil))
        let remaining = dialog.timeoutSeconds - Int((serial.context.shard.now &- dialog.createdAt) / 1000)
        let profiles = dialog.profiles.joined(separator: "\n")
        let q = serial.quoted
        let values: [String] = [
            String(id), q(dialog.callID), q(dialog.fromURI), q(dialog.callerTag), q(dialog.toURI), q(dialog.calleeTag),
            q(String(dialog.callerCSeq)), q(String(dialog.calleeCSeq)), q(dialog.callerContact), q(dialog.calleeContact),
            q(socket), q(socket), String(dialog.state.rawValue), String(dialog.startedUnixMilliseconds / 1000),
            String(wallNow + max(remaining, 0)), q(DialogDatabase.encodeVars(dialog)), q(profiles), "0", "0",
        ]
        // OpenSIPS' schema gives the ping CSeqs no default: they are written (ringsip does not ping).
        serial.submit("REPLACE INTO \(table) (\(DialogDatabase.columns), caller_ping_cseq, callee_ping_cseq) "
                      + "VALUES (\(values.joined(separator: ", ")))")
    }

    func delete(callID: String, callerTag: String) {
        serial.submit("DELETE FROM \(table) WHERE dlg_id = \(DialogDatabase.dialogID(callID: callID, callerTag: callerTag))")
    }
}
