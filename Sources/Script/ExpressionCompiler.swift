import Glibc

extension ScriptCompiler {
    /// A literal string (no variables) or integer, as text; nil for anything computed.
    public func constantText(_ expression: Expression?) -> String? {
        switch expression {
        case .string(let template, _)?: template.literal
        case .integer(let n, _)?: String(n)
        case .identifier(let name, _)?: name
        default: nil
        }
    }

    /// Compiles an expression to the value it yields per message.
    public func value(_ expression: Expression) throws(CompileError) -> Evaluate {
        switch expression {
        case .string(let template, _):
            return try self.template(template)
        case .integer(let n, _):
            return { _ in .integer(n) }
        case .null:
            return { _ in .null }
        case .variable(let variable):
            return try read(variable)
        case .identifier(let name, let location):
            if let variable = ScriptCompiler.legacyKeyword(name, at: location) { return try read(variable) }
            if name == "myself" {
                throw error("'myself' can only be compared with == or != (e.g. uri == myself)", at: location)
            }
            throw error("unknown name '\(name)'; expected a value, a $variable or a function call", at: location)
        case .call(let call):
            let run = try self.call(call)
            return { context in
                let code = run(context)
                context.returnCode = code
                return .integer(code)
            }
        case .not, .binary(.and, _, _, _), .binary(.or, _, _, _),
             .binary(.equal, _, _, _), .binary(.notEqual, _, _, _), .binary(.less, _, _, _),
             .binary(.lessOrEqual, _, _, _), .binary(.greater, _, _, _), .binary(.greaterOrEqual, _, _, _),
             .binary(.matches, _, _, _), .binary(.notMatches, _, _, _):
            let test = try condition(expression)
            return { context in .integer(test(context) ? 1 : 0) }
        case .negate(let operand, let location):
            let evaluate = try integer(operand, what: "operand of '-'", at: location)
            return { context in evaluate(context).map { .integer(-$0) } ?? .null }
        case .binary(.plus, let left, let right, _):
            let l = try value(left), r = try value(right)
            return { context in
                let a = l(context), b = r(context)
                if case .integer(let x) = a, case .integer(let y) = b { return .integer(x &+ y) }
                let arena = context.arena
                var text = arena.begin()
                arena.append(&text, a)
                arena.append(&text, b)
                return .text(arena.end(text))
            }
        case .binary(let op, let left, let right, let location):
            let l = try integer(left, what: "left side of '\(op.rawValue)'", at: location)
            let r = try integer(right, what: "right side of '\(op.rawValue)'", at: location)
            if case .integer(0, _) = right, op == .divide || op == .modulo {
                throw error("division by zero", at: right.location)
            }
            let apply = ScriptCompiler.arithmetic(op)
            return { context in
                guard let a = l(context), let b = r(context) else { return .null }
                return apply(a, b).map { .integer($0) } ?? .null
            }
        }
    }

    /// The integer operation behind a binary operator; nil where it has no value (division by zero, a shift
    /// outside 0…63), which the script sees as `$null`.
    static func arithmetic(_ op: BinaryOperator) -> (Int, Int) -> Int? {
        switch op {
        case .minus: { $0 &- $1 }
        case .times: { $0 &* $1 }
        case .divide: { $1 == 0 ? nil : $0.dividedReportingOverflow(by: $1).partialValue }
        case .modulo: { $1 == 0 ? nil : $0.remainderReportingOverflow(dividingBy: $1).partialValue }
        case .bitAnd: { $0 & $1 }
        case .bitOr: { $0 | $1 }
        case .bitXor: { $0 ^ $1 }
        case .shiftLeft: { (0...63).contains($1) ? $0 << $1 : nil }
        case .shiftRight: { (0...63).contains($1) ? $0 >> $1 : nil }
        default: { _, _ in nil }
        }
    }

    /// Compiles an expression used as a condition, with the OpenSIPS truth rule for function results:
    /// positive is true, negative false, and 0 ends the script (the condition is then false and the
    /// context's flow is `.exit`).
    func condition(_ expression: Expression) throws(CompileError) -> Condition {
        switch expression {
        case .call(let call):
            let run = try self.call(call)
            return { context in
                let code = run(context)
                context.returnCode = code
                if code == 0 {
                    if context.flow == .normal { context.flow = .exit }
                    return false
                }
                return code > 0
            }
        case .not(let operand, _):
            let test = try condition(operand)
            return { context in !test(context) }
        case .binary(.and, let left, let right, _):
            let l = try condition(left), r = try condition(right)
            return { context in l(context) && context.flow == .normal && r(context) }
        case .binary(.or, let left, let right, _):
            let l = try condition(left), r = try condition(right)
            return { context in
                if l(context) { return true }
                return context.flow == .normal && r(context)
            }
        case .binary(let op, let left, let right, let location) where op == .equal || op == .notEqual:
            if let test = try myselfComparison(left, right, negated: op == .notEqual, location) { return test }
            let l = try value(left), r = try value(right)
            let wanted = op == .equal
            return { context in
                let a = l(context), b = r(context)
                let equal = a.isNull || b.isNull ? a.isNull && b.isNull : compareValues(a, b) == 0
                return equal == wanted
            }
        case .binary(let op, let left, let right, _)
            where op == .less || op == .lessOrEqual || op == .greater || op == .greaterOrEqual:
            let l = try value(left), r = try value(right)
            return { context in
                guard let order = compareValues(l(context), r(context)) else { return false }
                switch op {
                case .less: return order < 0
                case .lessOrEqual: return order <= 0
                case .greater: return order > 0
                default: return order >= 0
                }
            }
        case .binary(let op, let left, let right, let location) where op == .matches || op == .notMatches:
            let subject = try value(left)
            guard case .string(let template, let patternLocation) = right, let pattern = template.literal else {
                throw error("the right side of '\(op.rawValue)' must be a literal regular expression", at: right.location)
            }
            let regex = try CompiledRegex(pattern, at: patternLocation, compiler: self)
            let wanted = op == .matches
            _ = location
            return { context in
                let value = subject(context)
                guard !value.isNull else { return false }
                return regex.matches(value, arena: context.arena) == wanted
            }
        default:
            let evaluate = try value(expression)
            return { context in evaluate(context).isTrue }
        }
    }

    /// An expression that must yield an integer: a number, or text holding one (a wrong type is caught at
    /// compile time when the expression is a constant).
    public func integer(_ expression: Expression, what: String,
                        at location: SourceLocation? = nil) throws(CompileError) -> (ScriptContext) -> Int? {
        if case .string(let template, let l) = expression, let text = template.literal {
            guard let n = Int(text) else { throw error("\(what) must be an integer, not \"\(text)\"", at: l) }
            return { _ in n }
        }
        if case .integer(let n, _) = expression { return { _ in n } }
        let evaluate = try value(expression)
        return { context in evaluate(context).integerValue }
    }

    /// `"text $var(x) more"`: a constant when there are no variables, else a concatenation in the arena.
    func template(_ template: StringTemplate) throws(CompileError) -> Evaluate {
        if let literal = template.literal {
            let bytes = permanentBytes(literal)
            return { _ in .text(bytes) }
        }
        enum Piece {
            case literal(UnsafeRawBufferPointer)
            case variable(Evaluate)
        }
        var pieces: [Piece] = []
        for part in template.parts {
            switch part {
            case .literal(let text): pieces.append(.literal(permanentBytes(text)))
            case .variable(let variable): pieces.append(.variable(try read(variable)))
            }
        }
        let all = pieces
        return { context in
            // Variables are evaluated first, onto the context's value stack: their own text may land in the
            // arena, which must not interleave with the concatenation being built.
            let base = context.stackTop
            for piece in all {
                if case .variable(let evaluate) = piece { context.push(evaluate(context)) }
            }
            let arena = context.arena
            var text = arena.begin()
            var index = base
            for piece in all {
                switch piece {
                case .literal(let bytes): arena.append(&text, bytes)
                case .variable:
                    if index < ScriptContext.stackCapacity { arena.append(&text, context.stack[index]) }
                    index += 1
                }
            }
            context.stackTop = base
            return .text(arena.end(text))
        }
    }

    /// `uri == myself` and friends: compares the other side's host (and port, when it has one) with our
    /// listen addresses.
    private func myselfComparison(_ left: Expression, _ right: Expression, negated: Bool,
                                  _ location: SourceLocation) throws(CompileError) -> Condition? {
        let other: Expression
        if case .identifier("myself", _) = right { other = left } else if case .identifier("myself", _) = left {
            other = right
        } else {
            return nil
        }
        let subject = try value(other)
        return { context in
            let value = subject(context)
            guard case .text(let text) = value else { return negated }
            return isMyself(text, context) != negated
        }
    }

    /// The OpenSIPS 1.x/2.x keywords that stand for message fields: `uri`, `from_uri`, `src_ip`, ...
    static func legacyKeyword(_ name: String, at location: SourceLocation) -> PseudoVariable? {
        let map = ["uri": "ru", "from_uri": "fu", "to_uri": "tu", "src_ip": "si", "src_port": "sp",
                   "method": "rm", "status": "rs", "dst_ip": "Ri", "dst_port": "Rp", "proto": "pr"]
        guard let pv = map[name] else { return nil }
        return PseudoVariable(name: pv, argument: nil, index: nil, transformations: [], location: location)
    }
}

/// Whether a URI or host[:port] text names this proxy. Without a port any of our ports matches, as
/// OpenSIPS' `myself` check does.
func isMyself(_ text: UnsafeRawBufferPointer, _ context: ScriptContext) -> Bool {
    guard let target = HostPort(text) else { return false }
    let host = UnsafeRawBufferPointer(rebasing: text[target.host])
    if let port = target.port { return context.relay.isOurs(host, port: port, on: context.shard) }
    return context.relay.isOurHost(host, on: context.shard)
}

/// The host and port of a SIP URI or a bare `host[:port]`, located without parsing the rest.
struct HostPort {
    var host: Range<Int>
    var port: UInt16?

    init?(_ text: UnsafeRawBufferPointer) {
        var start = 0
        let end = text.count
        // Skip a scheme, then userinfo.
        if let colon = text.firstIndex(of: UInt8(ascii: ":")), colon > 0,
           text[0..<colon].allSatisfy({ asciiLower($0) >= 0x61 && asciiLower($0) <= 0x7A }),
           text[0] != UInt8(ascii: "[") {
            let scheme = UnsafeRawBufferPointer(rebasing: text[0..<colon])
            if bytesEqualIgnoringCase(scheme, permanentSIP) || bytesEqualIgnoringCase(scheme, permanentSIPS) {
                start = colon + 1
            }
        }
        var limit = end
        for i in start..<end where text[i] == UInt8(ascii: ";") || text[i] == UInt8(ascii: "?")
            || text[i] == UInt8(ascii: ">") {
            limit = i
            break
        }
        if let at = text[start..<limit].lastIndex(of: UInt8(ascii: "@")) { start = at + 1 }
        guard start < limit else { return nil }
        var hostEnd = limit
        if text[start] == UInt8(ascii: "[") {
            guard let close = text[start..<limit].firstIndex(of: UInt8(ascii: "]")) else { return nil }
            hostEnd = close + 1
        } else if let colon = text[start..<limit].firstIndex(of: UInt8(ascii: ":")) {
            hostEnd = colon
        }
        host = start..<hostEnd
        port = nil
        if hostEnd < limit && text[hostEnd] == UInt8(ascii: ":") {
            guard let n = parseDecimal(UnsafeRawBufferPointer(rebasing: text[(hostEnd + 1)..<limit])),
                  n > 0 && n < 65536 else { return nil }
            port = UInt16(n)
        }
    }
}

nonisolated(unsafe) private let permanentSIP = permanentBytes("sip")
nonisolated(unsafe) private let permanentSIPS = permanentBytes("sips")

/// A POSIX extended regular expression compiled once at start-up.
final class CompiledRegex: @unchecked Sendable {
    private let regex: UnsafeMutablePointer<regex_t>

    init(_ pattern: String, at location: SourceLocation, compiler: ScriptCompiler) throws(CompileError) {
        regex = .allocate(capacity: 1)
        let rc = regcomp(regex, pattern, REG_EXTENDED | REG_NOSUB)
        guard rc == 0 else {
            var message = [CChar](repeating: 0, count: 256)
            regerror(rc, regex, &message, message.count)
            regex.deallocate()
            let reason = String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw compiler.error("bad regular expression \"\(pattern)\": \(reason)", at: location)
        }
    }

    /// regexec needs a NUL-terminated string: the value is copied into the arena with one.
    func matches(_ value: ScriptValue, arena: Arena) -> Bool {
        var text = arena.begin()
        arena.append(&text, value)
        guard let nul = arena.allocate(1) else { return false }
        nul[0] = 0
        let bytes = arena.end(text)
        guard let base = bytes.baseAddress ?? UnsafeRawPointer(nul.baseAddress) else { return false }
        return regexec(regex, base.assumingMemoryBound(to: CChar.self), 0, nil, 0) == 0
    }
}
