import Script

/// OpenSIPS' dialplan module: `dp_translate(id, input[, $out[, $attrs]])` (3.x) and `dp_translate(id,
/// "$src/$dest"[, $attrs])` (1.x/2.x) against OpenSIPS' `dialplan` table (dpid, pr, match_op, match_exp,
/// match_flags, subst_exp, repl_exp, disabled, attrs; timerec in 2.x and later), read once at start-up as
/// OpenSIPS caches it, so a translation never waits on the database.
///
/// A dialplan's rules are tried by ascending `pr`. `match_op` 0 compares the whole input, 1 matches
/// `match_exp` as a regular expression (POSIX extended, with `\d`, `\w` and `\s` read as OpenSIPS' PCRE reads
/// them); `match_flags` 1 ignores case. On the first match the output is the input with `subst_exp` replaced by
/// `repl_exp` (`\0`–`\9` its groups), `repl_exp` alone when there is no `subst_exp`, else the input itself; the
/// rule's attrs go to `$attrs`. 1 when a rule matched, -1 when none did.
public enum DialplanModule {
    public static var module: ScriptModule {
        ScriptModule(name: "dialplan", parameters: [
            .init("db_url", .string, validate: DatabaseModule.resolveURL),
            .init("table_name", .string), .init("dpid_col", .string), .init("pr_col", .string),
            .init("match_op_col", .string), .init("match_exp_col", .string), .init("match_flags_col", .string),
            .init("subst_exp_col", .string), .init("repl_exp_col", .string), .init("disabled_col", .string),
            .init("attrs_col", .string),
            .ignored("timerec_col", "rules with a time recurrence are not loaded (a warning names them)"),
            .ignored("attrs_pvar", "give the attrs variable to dp_translate instead"),
            .ignored("partition", "ringsip has the default partition only"),
            .ignored("fetch_rows", "the table is read once at start-up"),
        ], functions: [
            ScriptFunction("dp_translate", module: "dialplan", arguments: 2...5, allowedIn: .all, compile: translate),
        ])
    }

    struct Rule {
        let priority: Int
        let equal: UnsafeRawBufferPointer?
        let regex: RegexSubstitution?
        let ignoreCase: Bool
        let substitution: RegexSubstitution?
        let replacement: UnsafeRawBufferPointer?
        let attrs: UnsafeRawBufferPointer?
    }

    /// Dialplan id → its rules by ascending priority, from the start-up read.
    static func dialplans(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> [Int: [Rule]] {
        let (url, names) = try StartupTable.source(
            of: "dialplan",
            names: [("table_name", "dialplan"), ("dpid_col", "dpid"), ("pr_col", "pr"), ("match_op_col", "match_op"),
                    ("match_exp_col", "match_exp"), ("match_flags_col", "match_flags"), ("subst_exp_col", "subst_exp"),
                    ("repl_exp_col", "repl_exp"), ("disabled_col", "disabled"), ("attrs_col", "attrs")],
            for: call, compiler)
        let columns = names.dropFirst().joined(separator: ", ")
        // 2.x and later tables have a timerec column; 1.x ones do not.
        let rows = try StartupTable.firstRows(
            of: ["SELECT \(columns), timerec FROM \(names[0])", "SELECT \(columns) FROM \(names[0])"],
            url: url, table: names[0], module: "dialplan", for: call, compiler)
        var timed: Set<Int> = []
        var plans: [Int: [Rule]] = [:]
        for row in rows {
            guard let dpid = row[0].flatMap({ Int($0) }), row[7].flatMap({ Int($0) }) ?? 0 == 0 else { continue }
            if row.count > 9, let timerec = row[9], !timerec.isEmpty {
                timed.insert(dpid)
                continue
            }
            let op = row[2].flatMap { Int($0) } ?? 0
            let ignoreCase = row[4].flatMap { Int($0) } ?? 0 == 1
            let match = row[3] ?? ""
            var regex: RegexSubstitution?
            if op == 1 {
                guard let compiled = RegexSubstitution(pattern: posix(match), replacement: "", ignoreCase: ignoreCase) else {
                    throw compiler.error("dialplan \(dpid): match_exp '\(match)' is no regular expression ringsip reads",
                                         at: call.location)
                }
                regex = compiled
            } else if op != 0 {
                throw compiler.error("dialplan \(dpid): match_op \(op) (fnmatch) is not supported; use 0 or 1", at: call.location)
            }
            var substitution: RegexSubstitution?
            if let subst = row[5], !subst.isEmpty {
                guard let compiled = RegexSubstitution(pattern: posix(subst), replacement: row[6] ?? "") else {
                    throw compiler.error("dialplan \(dpid): subst_exp '\(subst)' is no regular expression ringsip reads",
                                         at: call.location)
                }
                substitution = compiled
            }
            plans[dpid, default: []].append(Rule(
                priority: row[1].flatMap { Int($0) } ?? 0, equal: op == 0 ? permanentBytes(match) : nil, regex: regex,
                ignoreCase: ignoreCase, substitution: substitution,
                replacement: (row[5] ?? "").isEmpty ? row[6].flatMap { $0.isEmpty ? nil : permanentBytes($0) } : nil,
                attrs: row[8].map { permanentBytes($0) }))
        }
        for dpid in timed.sorted() {
            compiler.warn("dialplan \(dpid): rules with a timerec are not loaded (ringsip does not evaluate time "
                + "recurrences)", at: call.location)
        }
        return plans.mapValues { rules in rules.enumerated().sorted { ($0.element.priority, $0.offset) < ($1.element.priority, $1.offset) }.map(\.element) }
    }

    /// OpenSIPS reads PCRE: its everyday shorthands, written for POSIX extended expressions.
    static func posix(_ pattern: String) -> String {
        var out = ""
        var escaped = false
        for character in pattern {
            if escaped {
                switch character {
                case "d": out += "[0-9]"
                case "D": out += "[^0-9]"
                case "w": out += "[A-Za-z0-9_]"
                case "s": out += "[[:space:]]"
                default: out += "\\" + String(character)
                }
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                out.append(character)
            }
        }
        return escaped ? out + "\\" : out
    }

    @Sendable static func translate(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let plans = try dialplans(call, compiler)
        let id = try compiler.integer(call.arguments[0]!, what: "the dialplan id")
        let input: ScriptCompiler.Evaluate
        let output: Int?
        let attrs: Int?
        // 1.x/2.x: "$src/$dest" — a source variable and a destination, written as one string.
        if call.arguments.count <= 3, case .string(let template, _)? = call.arguments[1],
           template.parts.count == 3, case .variable(let source) = template.parts[0],
           case .literal("/") = template.parts[1], case .variable(let destination) = template.parts[2] {
            input = try compiler.value(.variable(source))
            output = try compiler.outputTarget(.variable(destination), what: "dp_translate's destination")
            attrs = try compiler.outputTarget(call.arguments.count > 2 ? call.arguments[2] : nil, what: "dp_translate's attrs")
        } else {
            guard call.arguments.count < 5 || call.arguments[4] == nil else {
                throw compiler.error("dp_translate: ringsip has the default partition only", at: call.location)
            }
            input = try compiler.value(call.arguments[1]!)
            output = try compiler.outputTarget(call.arguments.count > 2 ? call.arguments[2] : nil, what: "dp_translate's output")
            attrs = try compiler.outputTarget(call.arguments.count > 3 ? call.arguments[3] : nil, what: "dp_translate's attrs")
        }
        return { context in
            guard let dpid = id(context), let rules = plans[dpid], case .text(let text) = input(context) else { return -1 }
            for rule in rules {
                if let equal = rule.equal {
                    guard rule.ignoreCase ? bytesEqualIgnoringCase(equal, text) : equal.elementsEqual(text) else { continue }
                } else if let regex = rule.regex {
                    guard regex.matches(text, arena: context.arena) else { continue }
                }
                let result: ScriptValue = if let substitution = rule.substitution {
                    substitution.apply(text, arena: context.arena)
                } else if let replacement = rule.replacement {
                    .text(replacement)
                } else {
                    .text(text)
                }
                if let output { context.writeOutput(output, result) }
                if let attrs { context.writeOutput(attrs, rule.attrs.map { .text($0) } ?? .null) }
                return 1
            }
            return -1
        }
    }
}
