import SIP

extension ScriptCompiler {
    /// Wraps a read with one transformation: `{s.len}`, `{s.int}`, `{s.tolower}`, `{s.toupper}`,
    /// `{uri.user}`, `{uri.host}`, `{uri.port}`, `{param.value,name}`. Unknown ones fail the check.
    func transform(_ input: @escaping Evaluate, _ t: Transformation) throws(CompileError) -> Evaluate {
        func noArguments() throws(CompileError) {
            if !t.arguments.isEmpty { throw error("transformation {\(t.name)} takes no arguments", at: t.location) }
        }
        switch t.name {
        case "s.len":
            try noArguments()
            return { context in
                switch input(context) {
                case .null: return .integer(0)
                case .integer(let n): return .integer(String(n).utf8.count)
                case .text(let text): return .integer(text.count)
                }
            }
        case "s.int":
            try noArguments()
            return { context in
                switch input(context) {
                case .null: return .integer(0)
                case .integer(let n): return .integer(n)
                case .text(let text):
                    // Leading digits, as OpenSIPS' str2sint: "42abc" is 42.
                    var end = 0
                    if end < text.count && (text[0] == UInt8(ascii: "-") || text[0] == UInt8(ascii: "+")) { end = 1 }
                    while end < text.count && text[end] >= 0x30 && text[end] <= 0x39 { end += 1 }
                    return .integer(parseDecimal(UnsafeRawBufferPointer(rebasing: text[0..<end])) ?? 0)
                }
            }
        case "s.tolower", "s.toupper":
            try noArguments()
            let upper = t.name == "s.toupper"
            return { context in
                let value = input(context)
                guard case .text(let text) = value else { return value }
                guard let space = context.arena.allocate(text.count) else { return .null }
                for i in 0..<text.count {
                    let c = text[i]
                    space[i] = upper ? (c &- 0x61 < 26 ? c & 0xDF : c) : asciiLower(c)
                }
                return .text(UnsafeRawBufferPointer(space))
            }
        case "uri.user", "uri.host", "uri.port":
            try noArguments()
            let part: URIPart = t.name == "uri.user" ? .user : t.name == "uri.host" ? .host : .port
            return { context in uriPart(input(context), part) }
        case "param.value":
            guard t.arguments.count == 1, !t.arguments[0].isEmpty else {
                throw error("transformation {param.value,name} needs the parameter name", at: t.location)
            }
            let name = permanentBytes(t.arguments[0])
            return { context in
                guard case .text(let text) = input(context) else { return .null }
                return parameterValue(text, name)
            }
        default:
            if let more = try moreTransform(input, t) { return more }
            let known = ["s.len", "s.int", "s.tolower", "s.toupper", "uri.user", "uri.host", "uri.port", "param.value"]
                + ScriptCompiler.moreTransformations
            let hint = ScriptCompiler.suggestion(for: t.name, among: known).map { " (did you mean '{\($0)}'?)" } ?? ""
            throw error("unknown transformation '{\(t.name)}'\(hint)", at: t.location)
        }
    }
}

/// The value of `name` in a `;`-separated parameter list (`a=1;b=2` or `;a=1;b=2`); an empty text for a
/// flag without value, NULL when absent.
func parameterValue(_ text: UnsafeRawBufferPointer, _ name: UnsafeRawBufferPointer) -> ScriptValue {
    var i = 0
    while i < text.count {
        while i < text.count && (text[i] == UInt8(ascii: ";") || text[i] == 0x20) { i += 1 }
        var end = i
        while end < text.count && text[end] != UInt8(ascii: ";") { end += 1 }
        var equals = i
        while equals < end && text[equals] != UInt8(ascii: "=") { equals += 1 }
        var nameEnd = equals
        while nameEnd > i && text[nameEnd - 1] == 0x20 { nameEnd -= 1 }
        if bytesEqualIgnoringCase(UnsafeRawBufferPointer(rebasing: text[i..<nameEnd]), name) {
            guard equals < end else { return .empty }
            var valueStart = equals + 1
            while valueStart < end && text[valueStart] == 0x20 { valueStart += 1 }
            return .text(UnsafeRawBufferPointer(rebasing: text[valueStart..<end]))
        }
        i = end + 1
    }
    return .null
}
