import Engine
import Glibc
import SIP

/// The transformations real scripts use beyond the basic ones: `{s.select}`, `{s.substr}`, `{s.md5}`, `{s.trim}`,
/// `{uri.param}`, `{nameaddr.uri}`, `{via.transport}`, `{ip.matches}`, `{re.subst}`. Arguments are constants,
/// checked once; each runs in the message's arena.
extension ScriptCompiler {
    static let moreTransformations = [
        "s.select", "s.substr", "s.md5", "s.trim", "s.trimr", "s.triml", "s.reverse", "uri.domain", "uri.param",
        "uri.params", "uri.transport", "uri.scheme", "uri.schema", "nameaddr.uri", "nameaddr.name", "nameaddr.param",
        "via.transport", "via.host", "via.port", "via.branch", "via.param", "ip.matches", "re.subst",
    ]

    /// nil when `t` is none of these.
    func moreTransform(_ input: @escaping Evaluate, _ t: Transformation) throws(CompileError) -> Evaluate? {
        func arguments(_ count: Int, _ usage: String) throws(CompileError) -> [String] {
            guard t.arguments.count == count, !t.arguments.contains(where: \.isEmpty) else {
                throw error("transformation {\(t.name)} is written {\(usage)}", at: t.location)
            }
            return t.arguments
        }
        func integerArgument(_ text: String, _ usage: String) throws(CompileError) -> Int {
            guard let n = Int(text.trimmingSpaces) else { throw error("{\(usage)}: '\(text)' is not an integer", at: t.location) }
            return n
        }
        switch t.name {
        case "s.select":
            let a = try arguments(2, "s.select,index,separator")
            let index = try integerArgument(a[0], "s.select,index,separator")
            guard a[1].utf8.count == 1 else { throw error("{s.select}'s separator is one character", at: t.location) }
            let separator = a[1].utf8.first!
            return { context in
                guard case .text(let text) = input(context) else { return .null }
                return select(text, index: index, separator: separator)
            }
        case "s.substr":
            let a = try arguments(2, "s.substr,offset,length")
            let offset = try integerArgument(a[0], "s.substr,offset,length")
            let length = try integerArgument(a[1], "s.substr,offset,length")
            guard length >= 0 else { throw error("{s.substr}'s length cannot be negative", at: t.location) }
            return { context in
                guard case .text(let text) = context.asText(input(context)) else { return .null }
                let start = offset < 0 ? max(0, text.count + offset) : min(offset, text.count)
                let end = length == 0 ? text.count : min(text.count, start + length)
                return .text(UnsafeRawBufferPointer(rebasing: text[start..<end]))
            }
        case "s.md5":
            _ = try arguments(0, "s.md5")
            return { context in
                guard case .text(let text) = context.asText(input(context)),
                      let space = context.arena.allocate(32) else { return .null }
                let digest = MD5.digest(text)
                withUnsafeBytes(of: digest) { bytes in
                    for i in 0..<16 {
                        space[2 * i] = hexDigits[Int(bytes[i] >> 4)]
                        space[2 * i + 1] = hexDigits[Int(bytes[i] & 0xF)]
                    }
                }
                return .text(UnsafeRawBufferPointer(space))
            }
        case "s.trim", "s.trimr", "s.triml":
            _ = try arguments(0, t.name)
            let left = t.name != "s.trimr", right = t.name != "s.triml"
            return { context in
                guard case .text(let text) = input(context) else { return input(context) }
                var start = 0, end = text.count
                func blank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A }
                if left { while start < end && blank(text[start]) { start += 1 } }
                if right { while end > start && blank(text[end - 1]) { end -= 1 } }
                return .text(UnsafeRawBufferPointer(rebasing: text[start..<end]))
            }
        case "s.reverse":
            _ = try arguments(0, "s.reverse")
            return { context in
                guard case .text(let text) = input(context), let space = context.arena.allocate(text.count) else { return .null }
                for i in 0..<text.count { space[i] = text[text.count - 1 - i] }
                return .text(UnsafeRawBufferPointer(space))
            }
        case "uri.domain":
            _ = try arguments(0, "uri.domain")
            return { context in uriPart(input(context), .host) }
        case "uri.param", "uri.params", "uri.transport":
            let name: UnsafeRawBufferPointer? = switch t.name {
            case "uri.param": permanentBytes(try arguments(1, "uri.param,name")[0])
            case "uri.transport": permanentBytes("transport")
            default: nil
            }
            if t.name != "uri.param" { _ = try arguments(0, t.name) }
            return { context in
                guard case .text(let text) = input(context), let uri = try? SIPURI.parse(text, 0, text.count) else {
                    return .null
                }
                guard uri.parameters.isPresent else { return name == nil ? .empty : .null }
                let parameters = UnsafeRawBufferPointer(rebasing: text[Int(uri.parameters.start)..<Int(uri.parameters.end)])
                guard let name else { return .text(parameters) }
                return parameterValue(parameters, name)
            }
        case "uri.scheme", "uri.schema":
            _ = try arguments(0, t.name)
            return { context in
                guard case .text(let text) = input(context), let colon = text.firstIndex(of: UInt8(ascii: ":")) else {
                    return .null
                }
                return .text(UnsafeRawBufferPointer(rebasing: text[0..<colon]))
            }
        case "nameaddr.uri", "nameaddr.name", "nameaddr.param":
            let name = t.name == "nameaddr.param" ? permanentBytes(try arguments(1, "nameaddr.param,name")[0]) : nil
            if t.name != "nameaddr.param" { _ = try arguments(0, t.name) }
            let wantsURI = t.name == "nameaddr.uri"
            return { context in
                guard case .text(let text) = input(context),
                      let address = try? SIPNameAddr.parse(text, SIPSpan(start: 0, end: Int32(text.count))) else { return .null }
                func piece(_ span: SIPSpan) -> ScriptValue {
                    span.isPresent ? .text(UnsafeRawBufferPointer(rebasing: text[Int(span.start)..<Int(span.end)])) : .null
                }
                if let name {
                    guard case .text(let parameters) = piece(address.parameters) else { return .null }
                    return parameterValue(parameters, name)
                }
                return wantsURI ? piece(address.uri.span) : piece(address.displayName)
            }
        case "via.transport", "via.host", "via.port", "via.branch", "via.param":
            let name = t.name == "via.param" ? try arguments(1, "via.param,name")[0] : nil
            if t.name != "via.param" { _ = try arguments(0, t.name) }
            let field = t.name
            let parameterName = name.map { permanentBytes($0) }
            return { context in
                guard case .text(let text) = input(context),
                      let via = try? SIPVia.parse(text, SIPSpan(start: 0, end: Int32(text.count))) else { return .null }
                func piece(_ span: SIPSpan) -> ScriptValue {
                    span.isPresent ? .text(UnsafeRawBufferPointer(rebasing: text[Int(span.start)..<Int(span.end)])) : .null
                }
                switch field {
                case "via.transport": return piece(via.transportName)
                case "via.host": return piece(via.host)
                case "via.port": return .integer(Int(via.port ?? 5060))
                case "via.branch": return piece(via.branch)
                default:
                    guard case .text(let parameters) = piece(via.parameters), let parameterName else { return .null }
                    return parameterValue(parameters, parameterName)
                }
            }
        case "ip.matches":
            let network = try IPNetwork(try arguments(1, "ip.matches,IP/bits")[0], at: t.location, compiler: self)
            return { context in
                guard case .text(let text) = input(context), let address = SocketAddress(numericHost: text, port: 0) else {
                    return .integer(0)
                }
                return .integer(network.contains(address) ? 1 : 0)
            }
        case "re.subst":
            let substitution = try RegexSubstitution(t.arguments.joined(separator: ","), at: t.location, compiler: self)
            return { context in
                guard case .text(let text) = context.asText(input(context)) else { return .null }
                return substitution.apply(text, arena: context.arena)
            }
        default:
            return nil
        }
    }
}

extension ScriptContext {
    /// A value as text (an integer in decimal), for transformations that work on characters.
    func asText(_ value: ScriptValue) -> ScriptValue {
        guard case .integer(let n) = value else { return value }
        var text = arena.begin()
        arena.appendDecimal(&text, n)
        return .text(arena.end(text))
    }
}

/// The `index`-th field of `text` split at `separator`; a negative index counts from the end.
func select(_ text: UnsafeRawBufferPointer, index: Int, separator: UInt8) -> ScriptValue {
    var count = 1
    for byte in text where byte == separator { count += 1 }
    let position = index < 0 ? count + index : index
    guard position >= 0 && position < count else { return .null }
    var field = 0
    var start = 0
    for i in 0...text.count where i == text.count || text[i] == separator {
        if field == position { return .text(UnsafeRawBufferPointer(rebasing: text[start..<i])) }
        field += 1
        start = i + 1
    }
    return .null
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

/// `IP/bits` (IPv4 or IPv6); a bare IP is one address.
struct IPNetwork: Sendable {
    let address: SocketAddress
    let bits: Int

    init(_ text: String, at location: SourceLocation, compiler: ScriptCompiler) throws(CompileError) {
        let parts = text.trimmingSpaces.split(separator: "/", maxSplits: 1).map(String.init)
        guard let address = SocketAddress(numericHost: parts[0], port: 0) else {
            throw compiler.error("'\(parts[0])' is not an IP address", at: location)
        }
        let width = address.isIPv6 ? 128 : 32
        let bits = parts.count > 1 ? Int(parts[1]) : width
        guard let bits, (0...width).contains(bits) else {
            throw compiler.error("'\(text)': the prefix length must be 0 to \(width)", at: location)
        }
        self.address = address
        self.bits = bits
    }

    func contains(_ other: SocketAddress) -> Bool { other.isIn(address, prefixLength: bits) }
}

/// `{re.subst,/regex/replacement/flags}`: the first match (every match with `g`) replaced; `\0`–`\9` in the
/// replacement are the match and its groups; `i` ignores case. Any character may delimit, as in sed.
public final class RegexSubstitution: @unchecked Sendable {
    private let regex: UnsafeMutablePointer<regex_t>
    private let replacement: [UInt8]
    private let global: Bool

    /// A substitution given as its parts (dialplan's subst_exp and repl_exp); nil when the pattern is no POSIX
    /// extended regular expression.
    public init?(pattern: String, replacement: String, ignoreCase: Bool = false, global: Bool = false) {
        regex = .allocate(capacity: 1)
        guard regcomp(regex, pattern, REG_EXTENDED | (ignoreCase ? REG_ICASE : 0)) == 0 else {
            regex.deallocate()
            return nil
        }
        self.replacement = Array(replacement.utf8)
        self.global = global
    }

    /// Whether the pattern matches `text` anywhere.
    public func matches(_ text: UnsafeRawBufferPointer, arena: Arena) -> Bool {
        guard let subject = arena.allocate(text.count + 1) else { return false }
        subject.copyMemory(from: text)
        subject[text.count] = 0
        return regexec(regex, subject.baseAddress!.assumingMemoryBound(to: CChar.self), 0, nil, 0) == 0
    }

    init(_ expression: String, at location: SourceLocation, compiler: ScriptCompiler) throws(CompileError) {
        let bytes = Array(expression.utf8)
        guard let delimiter = bytes.first else { throw compiler.error("{re.subst} needs /regex/replacement/", at: location) }
        var parts: [[UInt8]] = [[]]
        var i = 1
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 1 < bytes.count, bytes[i + 1] == delimiter {
                parts[parts.count - 1].append(delimiter)
                i += 2
                continue
            }
            if bytes[i] == delimiter { parts.append([]) } else { parts[parts.count - 1].append(bytes[i]) }
            i += 1
        }
        guard parts.count == 3 else {
            throw compiler.error("{re.subst} is written {re.subst,/regex/replacement/flags}", at: location)
        }
        let flags = String(decoding: parts[2], as: UTF8.self)
        guard flags.allSatisfy({ $0 == "i" || $0 == "g" }) else {
            throw compiler.error("{re.subst}'s flags are i (ignore case) and g (every match)", at: location)
        }
        regex = .allocate(capacity: 1)
        let pattern = String(decoding: parts[0], as: UTF8.self)
        guard regcomp(regex, pattern, REG_EXTENDED | (flags.contains("i") ? REG_ICASE : 0)) == 0 else {
            regex.deallocate()
            throw compiler.error("bad regular expression \"\(pattern)\" in {re.subst}", at: location)
        }
        replacement = parts[1]
        global = flags.contains("g")
    }

    /// `text` with the first match (every match when global) replaced; unchanged when nothing matches.
    public func apply(_ text: UnsafeRawBufferPointer, arena: Arena) -> ScriptValue {
        // regexec needs a NUL-terminated subject: a copy in the arena.
        guard let subject = arena.allocate(text.count + 1) else { return .null }
        subject.copyMemory(from: text)
        subject[text.count] = 0
        let base = subject.baseAddress!.assumingMemoryBound(to: CChar.self)
        var result = arena.begin()
        var at = 0
        return withUnsafeTemporaryAllocation(of: regmatch_t.self, capacity: 10) { matches -> ScriptValue in
            while at <= text.count, regexec(regex, base + at, 10, matches.baseAddress, at > 0 ? REG_NOTBOL : 0) == 0 {
                let start = at + Int(matches[0].rm_so), end = at + Int(matches[0].rm_eo)
                arena.append(&result, UnsafeRawBufferPointer(rebasing: text[at..<start]))
                var i = 0
                while i < replacement.count {
                    let b = replacement[i]
                    if b == UInt8(ascii: "\\"), i + 1 < replacement.count, replacement[i + 1] >= 0x30, replacement[i + 1] <= 0x39 {
                        let group = matches[Int(replacement[i + 1] - 0x30)]
                        if group.rm_so >= 0 {
                            arena.append(&result, UnsafeRawBufferPointer(rebasing: text[(at + Int(group.rm_so))..<(at + Int(group.rm_eo))]))
                        }
                        i += 2
                        continue
                    }
                    replacement.withUnsafeBytes { arena.append(&result, UnsafeRawBufferPointer(rebasing: $0[i..<(i + 1)])) }
                    i += 1
                }
                // An empty match moves on by one character so the loop ends.
                if end == start {
                    if start < text.count { arena.append(&result, UnsafeRawBufferPointer(rebasing: text[start..<(start + 1)])) }
                    at = start + 1
                } else {
                    at = end
                }
                if !global { break }
            }
            if at < text.count { arena.append(&result, UnsafeRawBufferPointer(rebasing: text[at...])) }
            return arena.overflowed ? .null : .text(arena.end(result))
        }
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
