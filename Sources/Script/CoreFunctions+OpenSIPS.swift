import Glibc
import SIP

/// OpenSIPS core and sipmsgops names that scripts of every version use: flag tests under their OpenSIPS names,
/// branch flags, the Request-URI rewrites (`seturi`, `rewritehostport`, `strip`, `prefix`, …), `log()`,
/// `sl_reply_error()`, `has_body()` and `remove_hf()` with its match flags.
enum OpenSIPSCoreFunctions {
    static var modules: [ScriptModule] {
        [
            ScriptModule(name: "core", functions: [
                ScriptFunction("isflagset", module: "core", arguments: 1...1, compile: CoreFunctions.flag(.test)),
                ScriptFunction("setbflag", module: "core", arguments: 1...2, compile: branchFlag(.set)),
                ScriptFunction("resetbflag", module: "core", arguments: 1...2, compile: branchFlag(.reset)),
                ScriptFunction("isbflagset", module: "core", arguments: 1...2, compile: branchFlag(.test)),
                ScriptFunction("log", module: "core", arguments: 1...2, compile: log),
            ] + uriFunctions),
            ScriptModule(name: "sl", functions: [
                ScriptFunction("sl_reply_error", module: "sl", arguments: 0...0, allowedIn: [.request, .error],
                               compile: replyError),
            ]),
            ScriptModule(name: "sipmsgops", functions: [
                ScriptFunction("has_body", module: "sipmsgops|textops", arguments: 0...1, allowedIn: .withMessage,
                               compile: hasBody),
            ]),
            // The uri module's functions that need no database (check_to, check_from and does_uri_exist read the
            // subscriber table, which ringsip does not have yet).
            ScriptModule(name: "uri", parameters: [
                .ignored("use_uri_table", "ringsip's uri module has no database functions yet"),
                .ignored("db_url", "ringsip's uri module has no database functions yet"),
                .ignored("use_domain", "ringsip's uri module has no database functions yet"),
            ], functions: [
                ScriptFunction("uri_param", module: "uri", arguments: 1...2, allowedIn: .requestLike, compile: uriParam),
                ScriptFunction("add_uri_param", module: "uri", arguments: 1...1, allowedIn: .requestLike,
                               compile: addURIParam),
            ]),
        ]
    }

    // MARK: - Branch flags

    /// `setbflag(flag[, branch])`: the flags of the Request-URI branch (branch 0), which t_relay's branches
    /// inherit. Other branch indexes are refused at start: ringsip keeps branch flags for that branch only.
    static func branchFlag(_ operation: CoreFunctions.FlagOperation)
        -> @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledCall {
        { call, compiler throws(CompileError) in
            let bit: UInt64 = 1 << UInt64(try compiler.flagBit(call.arguments[0], at: call.location))
            if call.arguments.count > 1, let branch = call.arguments[1] {
                guard compiler.constantText(branch) == "0" else {
                    throw compiler.error("\(call.name): ringsip keeps branch flags for the Request-URI branch (0) only",
                                         at: branch.location)
                }
            }
            switch operation {
            case .set: return { context in context.branchFlags |= bit; return 1 }
            case .reset: return { context in context.branchFlags &= ~bit; return 1 }
            case .test: return { context in context.branchFlags & bit != 0 ? 1 : -1 }
            }
        }
    }

    // MARK: - log, sl_reply_error, has_body

    /// `log([level,] text)`: the 1.x core log; the level is a number (OpenSIPS numbering), L_ERR by default.
    @Sendable static func log(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let textArgument = call.arguments[call.arguments.count - 1] else {
            throw compiler.error("log needs the text to log as its last argument", at: call.location)
        }
        var level = -1
        if call.arguments.count == 2 {
            guard let text = compiler.constantText(call.arguments[0]), let known = CoreFunctions.logLevel(text) else {
                throw compiler.error("log's level must be a number from -3 to 4 or a name such as L_ERR",
                                     at: call.arguments[0]?.location ?? call.location)
            }
            level = known
        }
        let text = try compiler.value(textArgument)
        let chosen = level
        return { context in
            guard chosen <= context.log.level else { return 1 }
            if case .text(let bytes) = text(context) { context.log.write(level: chosen, bytes) }
            return 1
        }
    }

    /// `sl_reply_error()`: answers the error the last function met. ringsip's functions report their errors
    /// in the log, so the answer is 500 Server Internal Error, as OpenSIPS gives for an internal error.
    @Sendable static func replyError(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let reason = permanentBytes("Server Internal Error")
        return { context in
            guard context.hasMessage, context.message.isRequest else { return -1 }
            let sent = context.relay.reply(to: context.message, status: 500, reason: reason, from: context.source,
                                           arrivedOn: context.socketIndex, headers: context.replyHeaders.lines,
                                           forceRport: context.forceRport, on: context.shard)
            if sent { context.handled = true }
            return sent ? 1 : -1
        }
    }

    /// `has_body([content_type])`: a non-empty body, of that type when one is given (`application/sdp`).
    @Sendable static func hasBody(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        var wanted: UnsafeRawBufferPointer?
        if let argument = call.arguments.first ?? nil {
            guard let type = compiler.constantText(argument), !type.isEmpty else {
                throw compiler.error("has_body takes a constant content type, e.g. \"application/sdp\"", at: argument.location)
            }
            wanted = permanentBytes(type)
        }
        let type = wanted
        return { context in
            let message = context.message
            guard message.body.isPresent, message.bytes(of: message.body).count > 0 else { return -1 }
            guard let type else { return 1 }
            var matched = false
            forEachHeader(message, .contentType, contentTypeName) { value in
                var end = 0
                while end < value.count && value[end] != UInt8(ascii: ";") && value[end] != 0x20 { end += 1 }
                matched = bytesEqualIgnoringCase(UnsafeRawBufferPointer(rebasing: value[0..<end]), type)
                return false
            }
            return matched ? 1 : -1
        }
    }

    nonisolated(unsafe) static let contentTypeName = permanentBytes("Content-Type")

    // MARK: - uri module

    /// `uri_param(name[, value])`: the Request-URI has the parameter (with that value, when one is given).
    @Sendable static func uriParam(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let name = compiler.constantText(call.arguments[0]), !name.isEmpty else {
            throw compiler.error("uri_param takes a constant parameter name", at: call.location)
        }
        let nameBytes = permanentBytes(name)
        let wanted = try call.arguments.count > 1 ? call.arguments[1].map { (e: Expression) throws(CompileError) in
            try compiler.value(e)
        } : nil
        return { context in
            let uri = context.currentRequestURI
            guard uri.count > 0, let parsed = try? SIPURI.parse(uri, 0, uri.count), parsed.parameters.isPresent else {
                return -1
            }
            let parameters = UnsafeRawBufferPointer(rebasing: uri[Int(parsed.parameters.start)..<Int(parsed.parameters.end)])
            let found = parameterValue(parameters, nameBytes)
            guard case .text(let value) = found else { return -1 }
            guard let wanted else { return 1 }
            guard case .text(let expected) = context.asText(wanted(context)) else { return -1 }
            return bytesEqualIgnoringCase(value, expected) ? 1 : -1
        }
    }

    /// `add_uri_param("name=value")`: appends `;name=value` to the Request-URI's parameters.
    @Sendable static func addURIParam(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let parameter = try compiler.value(call.arguments[0]!)
        return { context in
            guard case .text(let text) = parameter(context), text.count > 0 else { return -1 }
            let uri = context.currentRequestURI
            guard uri.count > 0, let parsed = try? SIPURI.parse(uri, 0, uri.count) else { return -1 }
            // After the existing parameters, before any ?headers.
            let insertAt = parsed.parameters.isPresent ? Int(parsed.parameters.end)
                : (uri.firstIndex(of: UInt8(ascii: "?")) ?? uri.count)
            let arena = context.arena
            var result = arena.begin()
            arena.append(&result, UnsafeRawBufferPointer(rebasing: uri[0..<insertAt]))
            arena.append(&result, semicolon)
            arena.append(&result, text)
            arena.append(&result, UnsafeRawBufferPointer(rebasing: uri[insertAt...]))
            guard !arena.overflowed else { return -1 }
            context.requestURI = arena.end(result)
            return 1
        }
    }

    nonisolated(unsafe) static let semicolon = permanentBytes(";")

    // MARK: - Request-URI rewrites

    static var uriFunctions: [ScriptFunction] {
        var list: [ScriptFunction] = []
        for name in ["seturi", "rewriteuri"] {
            list.append(ScriptFunction(name, module: "core", arguments: 1...1, allowedIn: .requestLike) {
                call, compiler throws(CompileError) in
                let value = try compiler.value(call.arguments[0]!)
                return { context in
                    guard case .text(let uri) = value(context), uri.count > 0,
                          (try? SIPURI.parse(uri, 0, uri.count)) != nil else { return -1 }
                    context.requestURI = uri
                    return 1
                }
            })
        }
        for (names, part) in [(["sethost", "rewritehost"], URIPart.host), (["setuser", "rewriteuser"], .user),
                              (["setport", "rewriteport"], .port)] {
            for name in names {
                list.append(ScriptFunction(name, module: "core", arguments: 1...1, allowedIn: .requestLike) {
                    call, compiler throws(CompileError) in
                    let value = try compiler.value(call.arguments[0]!)
                    return { context in
                        guard let uri = replacingURIPart(context.currentRequestURI, part, with: value(context),
                                                         arena: context.arena) else { return -1 }
                        context.requestURI = uri
                        return 1
                    }
                })
            }
        }
        for name in ["sethostport", "rewritehostport"] {
            list.append(ScriptFunction(name, module: "core", arguments: 1...1, allowedIn: .requestLike) {
                call, compiler throws(CompileError) in
                let value = try compiler.value(call.arguments[0]!)
                return { context in
                    guard case .text(let hostPort) = value(context), let target = HostPort(hostPort) else { return -1 }
                    let host = ScriptValue.text(UnsafeRawBufferPointer(rebasing: hostPort[target.host]))
                    let port: ScriptValue = target.port.map { .integer(Int($0)) } ?? .null
                    guard let withHost = replacingURIPart(context.currentRequestURI, .host, with: host, arena: context.arena),
                          let uri = replacingURIPart(withHost, .port, with: port, arena: context.arena) else { return -1 }
                    context.requestURI = uri
                    return 1
                }
            })
        }
        list.append(ScriptFunction("revert_uri", module: "core", arguments: 0...0, allowedIn: .requestLike) { _, _ in
            { context in context.requestURI = nil; return 1 }
        })
        list.append(ScriptFunction("strip", module: "core", arguments: 1...1, allowedIn: .requestLike, compile: userEdit(.strip)))
        list.append(ScriptFunction("strip_tail", module: "core", arguments: 1...1, allowedIn: .requestLike,
                                   compile: userEdit(.stripTail)))
        list.append(ScriptFunction("prefix", module: "core", arguments: 1...1, allowedIn: .requestLike,
                                   compile: userEdit(.prefix)))
        return list
    }

    enum UserEdit { case strip, stripTail, prefix }

    /// `strip(n)`, `strip_tail(n)`: the Request-URI's user without its first or last n characters;
    /// `prefix(text)`: with text before it.
    static func userEdit(_ edit: UserEdit) -> @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledCall {
        { call, compiler throws(CompileError) in
            let argument = call.arguments[0]!
            if edit == .prefix {
                let text = try compiler.value(argument)
                return { context in
                    let user = uriPart(context.currentRequestURI, .user)
                    let arena = context.arena
                    var joined = arena.begin()
                    arena.append(&joined, text(context))
                    if case .text = user { arena.append(&joined, user) }
                    return setUser(.text(arena.end(joined)), context)
                }
            }
            let count = try compiler.integer(argument, what: "\(call.name)'s character count")
            let fromEnd = edit == .stripTail
            return { context in
                guard let n = count(context), n >= 0, case .text(let user) = uriPart(context.currentRequestURI, .user) else {
                    return -1
                }
                let kept = n >= user.count ? UnsafeRawBufferPointer(start: nil, count: 0)
                    : fromEnd ? UnsafeRawBufferPointer(rebasing: user[0..<(user.count - n)])
                    : UnsafeRawBufferPointer(rebasing: user[n...])
                return setUser(.text(kept), context)
            }
        }
    }

    private static func setUser(_ user: ScriptValue, _ context: ScriptContext) -> Int {
        guard let uri = replacingURIPart(context.currentRequestURI, .user, with: user, arena: context.arena) else { return -1 }
        context.requestURI = uri
        return 1
    }
}

/// A header-name pattern: a POSIX regular expression or a shell glob, matched case-insensitively against the
/// whole name. Compiled once at start-up.
final class NameMatcher: @unchecked Sendable {
    private let regex: UnsafeMutablePointer<regex_t>?
    private let glob: [CChar]?
    /// glibc's FNM_CASEFOLD (a GNU extension, 1 << 4 in fnmatch.h), which Swift's Glibc module does not export.
    static let caseFold: Int32 = 1 << 4

    init(_ pattern: String, glob isGlob: Bool, at location: SourceLocation, compiler: ScriptCompiler) throws(CompileError) {
        if isGlob {
            glob = Array(pattern.utf8CString)
            regex = nil
            return
        }
        glob = nil
        let compiled = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        let rc = regcomp(compiled, "^(" + pattern + ")$", REG_EXTENDED | REG_NOSUB | REG_ICASE)
        guard rc == 0 else {
            compiled.deallocate()
            throw compiler.error("bad regular expression \"\(pattern)\"", at: location)
        }
        regex = compiled
    }

    /// regexec and fnmatch need a NUL-terminated name: copied into the arena with one.
    func matches(_ name: UnsafeRawBufferPointer, arena: Arena) -> Bool {
        guard let space = arena.allocate(name.count + 1) else { return false }
        space.copyMemory(from: name)
        space[name.count] = 0
        let text = space.baseAddress!.assumingMemoryBound(to: CChar.self)
        if let regex { return regexec(regex, text, 0, nil, 0) == 0 }
        return glob!.withUnsafeBufferPointer { fnmatch($0.baseAddress!, text, NameMatcher.caseFold) == 0 }
    }
}
