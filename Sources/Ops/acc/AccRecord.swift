import SIP
import Script

/// One accounting record: OpenSIPS' fixed fields, and the extra fields of its backend.
struct AccRecord: Equatable {
    enum Kind {
        /// An answered transaction (the `acc` table; "transaction answered" in the log).
        case transaction
        /// A call that ended with a negative final (the `missed_calls` table; "call missed").
        case missed
        /// acc_log_request / acc_db_request ("request accounted").
        case request
    }

    var kind: Kind
    var method: String
    var fromTag: String
    var toTag: String
    var callID: String
    var code: Int
    var reason: String
    var unixMilliseconds: Int64
    /// Name (log name or column) and value; nil for a field that had no value.
    var extras: [(name: String, value: String?)] = []
    /// A CDR (the cdr flag: the INVITE's record, written when its dialog ends) carries the call's times; then
    /// `unixMilliseconds` is when the call was answered.
    var cdr: CDR?

    struct CDR: Equatable {
        var durationMilliseconds: Int64
        /// From the INVITE to its 2xx.
        var setupMilliseconds: Int64
        var createdUnixMilliseconds: Int64
    }

    static func == (a: AccRecord, b: AccRecord) -> Bool {
        a.kind == b.kind && a.method == b.method && a.fromTag == b.fromTag && a.toTag == b.toTag && a.callID == b.callID
            && a.code == b.code && a.reason == b.reason && a.unixMilliseconds == b.unixMilliseconds
            && a.extras.map(\.name) == b.extras.map(\.name) && a.extras.map(\.value) == b.extras.map(\.value)
            && a.cdr == b.cdr
    }

    /// The request's fixed fields (method, From tag, Call-ID) with the answer's.
    static func of(_ request: SIPMessage, kind: Kind, code: Int, reason: String, toTag: String,
                   unixMilliseconds: Int64) -> AccRecord {
        AccRecord(kind: kind, method: request.string(request.methodName), fromTag: request.fromTagText, toTag: toTag,
                  callID: request.callIDText, code: code, reason: reason, unixMilliseconds: unixMilliseconds)
    }

    /// The log line, in OpenSIPS' form: `ACC: transaction answered: timestamp=…;method=…;from_tag=…;to_tag=…;
    /// call_id=…;code=…;reason=…`, then `name=value` for each extra field.
    var logLine: String {
        let what = switch kind {
        case .transaction: "transaction answered"
        case .missed: "call missed"
        case .request: "request accounted"
        }
        var line = "ACC: \(what): timestamp=\(unixMilliseconds / 1000);method=\(method);from_tag=\(fromTag);"
        if let cdr {
            line = "ACC: call ended: created=\(cdr.createdUnixMilliseconds / 1000);call_start_time=\(unixMilliseconds / 1000);"
                + "duration=\(cdr.durationMilliseconds / 1000);ms_duration=\(cdr.durationMilliseconds);"
                + "setuptime=\(cdr.setupMilliseconds / 1000);method=\(method);from_tag=\(fromTag);"
        }
        line += "to_tag=\(toTag);call_id=\(callID);code=\(code);reason=\(reason)"
        for (name, value) in extras { line += ";\(name)=\(value ?? "")" }
        return line
    }
}

/// The extra fields of each backend, compiled once: 2.2+ `extra_fields` ("db: tag->column; tag2"), each read from
/// `$acc_extra(tag)`; 1.x–2.1 `log_extra`/`db_extra` ("name=$pv; …"), each a pseudo-variable read on the request.
struct AccExtras {
    private var fields: [AccBackend: [(name: String, value: ScriptCompiler.Evaluate)]] = [:]

    static func compile(_ compiler: ScriptCompiler) throws(CompileError) -> AccExtras {
        var extras = AccExtras()
        for parameter in compiler.source.parameters where parameter.module == "acc" {
            guard case .string(let text) = parameter.value else { continue }
            switch parameter.name {
            case "extra_fields": try extras.addTagged(text, parameter, compiler)
            case "log_extra": try extras.addVariables(text, backend: .log, parameter, compiler)
            case "db_extra": try extras.addVariables(text, backend: .db, parameter, compiler)
            case "aaa_extra": try extras.addVariables(text, backend: .aaa, parameter, compiler)
            default: continue
            }
        }
        return extras
    }

    func values(for backend: AccBackend, _ context: ScriptContext) -> [(name: String, value: String?)] {
        guard let fields = fields[backend] else { return [] }
        return fields.map { ($0.name, $0.value(context).string) }
    }

    /// "db: a->col_a; col_b", several backends in one value ("db: a->col_a; log: a") or one a modparam; without a
    /// backend the fields are for log and db.
    private mutating func addTagged(_ text: String, _ parameter: ModuleParameter, _ compiler: ScriptCompiler) throws(CompileError) {
        var backends: [AccBackend] = [.log, .db]
        for part in text.split(separator: ";") {
            var item = part
            let arrow = item.indices.first { item[$0] == "-" && item[item.index(after: $0)...].first == ">" }
            if let colon = item.firstIndex(of: ":"), arrow.map({ colon < $0 }) ?? true {
                let name = item[..<colon].trimming(" \t").lowercased()
                switch name {
                case "log": backends = [.log]
                case "db": backends = [.db]
                case "aaa": backends = [.aaa]
                case "evi":
                    compiler.warn("acc: extra_fields for \(name) are not used: the \(name) backend is not built",
                                  at: parameter.valueLocation)
                    backends = []
                default:
                    throw compiler.error("acc: extra_fields backend '\(name)' is unknown (log, db, aaa)", at: parameter.valueLocation)
                }
                item = item[item.index(after: colon)...]
            }
            var tag = item.trimming(" \t"), name = tag
            if let dash = item.indices.first(where: { item[$0] == "-" && item[item.index(after: $0)...].first == ">" }) {
                tag = item[..<dash].trimming(" \t")
                name = item[item.index(dash, offsetBy: 2)...].trimming(" \t")
            }
            guard !tag.isEmpty else { continue }
            try checkName(name, backends, parameter, compiler)
            let slot = compiler.avpSlot(named: ScriptCompiler.accExtraPrefix + tag)
            for backend in backends {
                fields[backend, default: []].append((name, { context in context.avps.value(slot) }))
            }
        }
    }

    /// "caller=$fU; src=$si; x=$avp(y)".
    private mutating func addVariables(_ text: String, backend: AccBackend, _ parameter: ModuleParameter,
                                       _ compiler: ScriptCompiler) throws(CompileError) {
        for item in text.split(separator: ";") {
            let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimming(" \t") }
            guard pair.count == 2, !pair[0].isEmpty else {
                if item.trimming(" \t").isEmpty { continue }
                throw compiler.error("acc: \(parameter.name) items read 'name=$pv': '\(item)'", at: parameter.valueLocation)
            }
            try checkName(pair[0], [backend], parameter, compiler)
            guard pair[1].hasPrefix("$"), pair[1].count > 1 else {
                throw compiler.error("acc: \(parameter.name): '\(pair[0])' needs a $variable", at: parameter.valueLocation)
            }
            var name = String(pair[1].dropFirst())
            var argument: String?
            if let open = name.firstIndex(of: "("), name.hasSuffix(")") {
                argument = String(name[name.index(after: open)..<name.index(before: name.endIndex)])
                name = String(name[..<open])
            }
            let variable = PseudoVariable(name: name, argument: argument, index: nil, transformations: [],
                                          location: parameter.valueLocation)
            fields[backend, default: []].append((pair[0], try compiler.read(variable)))
        }
    }

    /// A db extra becomes a column name in the INSERT: it must be a plain identifier.
    private func checkName(_ name: String, _ backends: [AccBackend], _ parameter: ModuleParameter,
                           _ compiler: ScriptCompiler) throws(CompileError) {
        if backends.contains(.aaa) && AccRadius.attributeType(name) == nil {
            let known = RadiusModule.dictionary.keys.sorted().joined(separator: ", ")
            throw compiler.error("acc: '\(name)' is not a RADIUS attribute ringsip knows (\(known))", at: parameter.valueLocation)
        }
        guard backends.contains(.db) else { return }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw compiler.error("acc: '\(name)' is not a column name", at: parameter.valueLocation)
        }
    }
}
