import Engine
import Glibc
import SIP

/// `$ru`, `$hdr(name)`, `$avp(x)`, …: each resolved at compile time to a closure that reads (or writes)
/// the context directly. Transformations (`{s.len}`, …) wrap the read.
extension ScriptCompiler {
    static let readOnlyVariables: Set<String> = [
        "fu", "fU", "fd", "tu", "tU", "td", "ci", "cs", "rm", "rs", "rr", "si", "sp", "Ri", "Rp", "pr", "ua", "ml", "mb",
        "hdr", "rc", "retcode", "time", "Ts", "from", "to", "proto", "src_ip", "T_reply_code", "T_branch_idx", "T_ruri",
        "branch", "ct", "cT", "cl", "rb", "ft", "tt", "fn", "tn", "ou", "oU", "od", "rv", "msg.type", "msg.is_request",
        "err.class", "err.level", "err.info", "err.rcode", "err.rreason", "socket_in", "au", "aU", "ar", "an", "adu",
    ]

    public func read(_ variable: PseudoVariable) throws(CompileError) -> Evaluate {
        var evaluate = try readBase(variable)
        for transformation in variable.transformations {
            evaluate = try transform(evaluate, transformation)
        }
        return evaluate
    }

    private func needsMessage(_ variable: PseudoVariable) throws(CompileError) {
        if !RouteKinds.withMessage.contains(RouteKinds(currentRouteKind)) {
            throw error("$\(variable.name) refers to the message, and \(currentRouteKind) has none", at: variable.location)
        }
    }

    /// acc's `$acc_extra(tag)`: one value kept with the transaction like an `$avp` (under a name no script can
    /// write), so the report of its answer reads it.
    func accExtraSlot(_ v: PseudoVariable) throws(CompileError) -> Int {
        guard configuration.loadedModules.contains("acc") else {
            throw error("$acc_extra needs loadmodule \"acc.so\"", at: v.location)
        }
        guard let name = v.argument, !name.isEmpty, v.index == nil else {
            throw error("$acc_extra needs a tag: $acc_extra(tag)", at: v.location)
        }
        return avpSlot(ScriptCompiler.accExtraPrefix + name)
    }

    /// The `$avp` name `$acc_extra(tag)` keeps its value under: the prefix, then the tag.
    public static let accExtraPrefix = "\u{1}acc_extra:"

    private func noArgument(_ variable: PseudoVariable) throws(CompileError) {
        if variable.argument != nil { throw error("$\(variable.name) takes no argument", at: variable.location) }
        if variable.index != nil { throw error("$\(variable.name) takes no index", at: variable.location) }
    }

    private func readBase(_ v: PseudoVariable) throws(CompileError) -> Evaluate {
        if case .variable? = v.index, v.name != "avp" {
            throw error("a $variable index works with $avp only: $(avp(name)[$var(i)])", at: v.location)
        }
        switch v.name {
        case "var":
            guard let name = v.argument, !name.isEmpty else { throw error("$var needs a name: $var(name)", at: v.location) }
            let slot = variableSlot(name)
            return { context in context.variables[slot] }
        case "acc_extra":
            let slot = try accExtraSlot(v)
            return { context in context.avps.value(slot) }
        case "avp":
            guard let name = v.argument, !name.isEmpty else { throw error("$avp needs a name: $avp(name)", at: v.location) }
            let slot = avpSlot(name)
            switch v.index {
            case nil: return { context in context.avps.value(slot) }
            case .position(let n)?: return { context in context.avps.value(slot, index: n) }
            case .variable(let indexVariable)?:
                let position = try read(indexVariable)
                return { context in
                    guard let n = position(context).integerValue else { return .null }
                    return context.avps.value(slot, index: n)
                }
            case .all?:
                // Every value, newest first, comma-separated (as OpenSIPS prints them).
                return { context in
                    let count = context.avps.valueCount(slot)
                    guard count > 0 else { return .null }
                    let arena = context.arena
                    var text = arena.begin()
                    for i in 0..<count {
                        if i > 0 { arena.append(&text, comma) }
                        arena.append(&text, context.avps.value(slot, index: i))
                    }
                    return .text(arena.end(text))
                }
            }
        case "rc", "retcode":
            try noArgument(v)
            return { context in .integer(context.returnCode) }
        case "param":
            // route(name, a, b) passes $param(1), $param(2); launch()'s report route gets its parameter as $param(1).
            guard let text = v.argument, let position = Int(text), (1...16).contains(position) else {
                throw error("$param takes a position from 1 to 16: $param(1)", at: v.location)
            }
            return { context in
                let parameters = context.routeParameters
                if position <= parameters.count { return context.stack[parameters.lowerBound + position - 1] }
                if parameters.isEmpty && position == 1, let launched = context.launchParameter { return .text(launched) }
                return .null
            }
        case "Ts":
            try noArgument(v)
            return { _ in .integer(time(nil)) }
        case "time":
            let format = permanentBytes((v.argument ?? "%c") + "\0")
            return { context in
                var now = time(nil)
                var parts = tm()
                localtime_r(&now, &parts)
                guard let space = context.arena.allocate(128) else { return .null }
                let n = strftime(space.baseAddress!.assumingMemoryBound(to: CChar.self), 128,
                                 format.baseAddress!.assumingMemoryBound(to: CChar.self), &parts)
                return .text(UnsafeRawBufferPointer(rebasing: space[0..<n]))
            }
        case "hdr":
            try needsMessage(v)
            return try headerRead(v)
        case "T_reply_code":
            // 0 before any reply, as in OpenSIPS; NULL outside a transaction.
            try noArgument(v)
            return { context in
                guard let code = context.transactionReplyCode else { return .null }
                return .integer(code)
            }
        case "T_branch_idx":
            // The branch a branch_route or onreply_route runs for; 0 elsewhere (OpenSIPS).
            try noArgument(v)
            return { context in .integer(context.branchIndex ?? 0) }
        case "T_ruri":
            try noArgument(v)
            return { context in
                guard let handle = context.transaction, let uri = context.transactions?.requestURI(handle) else {
                    return .null
                }
                return .text(uri)
            }
        case "T_fr_timeout", "T_fr_inv_timeout":
            try noArgument(v)
            let invite = v.name == "T_fr_inv_timeout"
            return { context in
                let milliseconds: Int?
                if let handle = context.transaction, let settings = context.transactions?.settings(handle) {
                    milliseconds = invite ? settings.finalResponseInviteTimeout : settings.finalResponseTimeout
                } else if let manager = context.transactions {
                    milliseconds = (invite ? context.pendingInviteFinalResponseTimeout : context.pendingFinalResponseTimeout)
                        ?? (invite ? manager.settings.finalResponseInviteTimeout : manager.settings.finalResponseTimeout)
                } else {
                    return .null
                }
                return milliseconds.map { .integer($0 / 1000) } ?? .integer(0)
            }
        case "branch":
            return try branchRead(v)
        default:
            break
        }
        if let field = ScriptCompiler.errorFields[v.name] {
            try noArgument(v)
            return field
        }
        if v.name == "socket_in" { return try socketRead(v) }
        if let variable = library.variables[v.name] {
            guard configuration.loadedModules.contains(variable.module) else {
                throw error("$\(v.name) needs loadmodule \"\(variable.module).so\"", at: v.location)
            }
            return try variable.read(v, self)
        }
        guard let field = ScriptCompiler.messageFields[v.name] else {
            let known = Array(ScriptCompiler.messageFields.keys) + Array(ScriptCompiler.errorFields.keys)
                + ["var", "avp", "hdr", "rc", "retcode", "time", "Ts", "socket_in", "param", "branch"]
            let hint = ScriptCompiler.suggestion(for: v.name, among: known).map { " (did you mean '$\($0)'?)" } ?? ""
            throw error("unknown pseudo-variable '$\(v.name)'\(hint)", at: v.location)
        }
        try needsMessage(v)
        try noArgument(v)
        return field
    }

    /// Fields of the message, read straight from the parsed message (or the script's edits).
    static var messageFields: [String: Evaluate] { [
        "ru": { context in context.hasMessage && context.message.isRequest ? .text(context.currentRequestURI) : .null },
        "rU": { context in uriPart(context.currentRequestURI, .user) },
        "rd": { context in uriPart(context.currentRequestURI, .host) },
        "rp": { context in uriPart(context.currentRequestURI, .port) },
        "du": { context in context.destinationURI.map { .text($0) } ?? .null },
        "fu": { context in nameAddrURI(context, context.message.from) },
        "fU": { context in uriPart(nameAddrURI(context, context.message.from), .user) },
        "fd": { context in uriPart(nameAddrURI(context, context.message.from), .host) },
        "tu": { context in nameAddrURI(context, context.message.to) },
        "tU": { context in uriPart(nameAddrURI(context, context.message.to), .user) },
        "td": { context in uriPart(nameAddrURI(context, context.message.to), .host) },
        "ci": { context in context.message.callID.map { .text(context.message.bytes(of: $0)) } ?? .null },
        "cs": { context in context.message.cseq.map { .integer(Int($0.number)) } ?? .null },
        "rm": { context in
            let m = context.message
            if m.isRequest { return .text(m.bytes(of: m.methodName)) }
            return m.cseq.map { .text(m.bytes(of: $0.methodName)) } ?? .null
        },
        "rs": { context in context.message.isRequest ? .null : .integer(context.message.statusCode) },
        "rr": { context in
            context.message.isRequest ? .null : .text(context.message.bytes(of: context.message.reasonPhrase))
        },
        "si": { context in
            guard let space = context.arena.allocate(64) else { return .null }
            let n = context.source.writeHost(into: space)
            return .text(UnsafeRawBufferPointer(rebasing: space[0..<n]))
        },
        "sp": { context in .integer(Int(context.source.port)) },
        "Ri": { context in
            guard let space = context.arena.allocate(64) else { return .null }
            guard let local = context.shard.localAddress(ofSocket: context.socketIndex) else { return .null }
            let n = local.writeHost(into: space)
            return .text(UnsafeRawBufferPointer(rebasing: space[0..<n]))
        },
        "Rp": { context in context.shard.localAddress(ofSocket: context.socketIndex).map { .integer(Int($0.port)) } ?? .null },
        "pr": { context in .text(StreamHandle.isStream(context.socketIndex) ? tcpText : udpText) },
        "proto": { context in .text(StreamHandle.isStream(context.socketIndex) ? tcpText : udpText) },
        "ua": { context in
            guard let index = context.message.firstIndex(of: .userAgent) else { return .null }
            return .text(context.message.bytes(of: context.message.header(at: index).value))
        },
        // The Digest credentials the request carries (Authorization, else Proxy-Authorization): user, realm, nonce,
        // and the uri they were computed for.
        // $aU the whole username, $au its user part (before an '@'), as OpenSIPS.
        "aU": { context in credentials(context).map { text(context, $0.username) } ?? .null },
        "au": { context in
            credentials(context).map { text(context, String($0.username.split(separator: "@", maxSplits: 1).first ?? "")) }
                ?? .null
        },
        "ar": { context in credentials(context).map { text(context, $0.realm) } ?? .null },
        "an": { context in credentials(context).map { text(context, $0.nonce) } ?? .null },
        "adu": { context in credentials(context).map { text(context, $0.uri) } ?? .null },
        "ml": { context in .integer(context.message.length) },
        "mb": { context in .text(UnsafeRawBufferPointer(rebasing: context.message.bytes[0..<context.message.length])) },
        "ct": { context in firstHeaderValue(context, .contact) },
        "cT": { context in firstHeaderValue(context, .contentType) },
        "cl": { context in firstHeaderValue(context, .contentLength).integerValue.map { .integer($0) } ?? .null },
        "rb": { context in
            let message = context.message
            return message.body.isPresent ? .text(message.bytes(of: message.body)) : .empty
        },
        "ft": { context in tag(context, context.message.from) },
        "tt": { context in tag(context, context.message.to) },
        "fn": { context in displayName(context, context.message.from) },
        "tn": { context in displayName(context, context.message.to) },
        "ou": { context in context.message.isRequest ? .text(context.message.bytes(of: context.message.requestURIText)) : .null },
        "oU": { context in
            context.message.isRequest ? uriPart(context.message.bytes(of: context.message.requestURIText), .user) : .null
        },
        "od": { context in
            context.message.isRequest ? uriPart(context.message.bytes(of: context.message.requestURIText), .host) : .null
        },
        "rv": { _ in .text(sipVersion) },
        "msg.type": { context in .text(context.message.isRequest ? requestText : replyText) },
        "msg.is_request": { context in .integer(context.message.isRequest ? 1 : 0) },
    ] }

    /// `$err.class`, `$err.level`, `$err.info`, `$err.rcode`, `$err.rreason` in error_route: the script error that
    /// brought it there (class 1, level L_ERR, the reason logged, and the 500 the caller is owed).
    static var errorFields: [String: Evaluate] { [
        "err.class": { context in context.errorInfo == nil ? .null : .integer(1) },
        "err.level": { context in context.errorInfo == nil ? .null : .integer(-1) },
        "err.info": { context in
            guard let info = context.errorInfo else { return .null }
            let arena = context.arena
            var text = arena.begin()
            info.utf8.withContiguousStorageIfAvailable { arena.append(&text, UnsafeRawBufferPointer($0)) }
            return .text(arena.end(text))
        },
        "err.rcode": { context in context.errorInfo == nil ? .null : .integer(500) },
        "err.rreason": { context in context.errorInfo == nil ? .null : .text(serverInternalError) },
    ] }

    /// The destination set (`append_branch`), not counting the Request-URI's own branch:
    /// `$branch` / `$branch(uri)` the n-th branch's URI (`[0]` when no index, `[-1]` the last, `[*]` all,
    /// comma-joined), `$branch(duri)` its `$du`, `$branch(count)` how many there are (a ringsip addition:
    /// OpenSIPS scripts count with `$(branch(uri)[*])`). NULL past the end.
    private func branchRead(_ v: PseudoVariable) throws(CompileError) -> Evaluate {
        let field = v.argument ?? "uri"
        guard field == "uri" || field == "duri" || field == "count" else {
            throw error("$branch(\(field)): expected uri, duri or count", at: v.location)
        }
        if field == "count" {
            if v.index != nil { throw error("$branch(count) takes no index", at: v.location) }
            return { context in .integer(context.destinationCount) }
        }
        let wantsDestination = field == "duri"
        func value(_ context: ScriptContext, _ i: Int) -> ScriptValue {
            let branch = context.destinationSet[i]
            if wantsDestination { return branch.destination.map { .text($0) } ?? .null }
            return .text(branch.uri)
        }
        switch v.index {
        case .all?:
            return { context in
                guard context.destinationCount > 0 else { return .null }
                let arena = context.arena
                var text = arena.begin()
                for i in 0..<context.destinationCount {
                    if i > 0 { arena.append(&text, commaSpace) }
                    arena.append(&text, value(context, i))
                }
                return .text(arena.end(text))
            }
        default:
            var wanted = 0
            if case .position(let n)? = v.index { wanted = n }
            let position = wanted
            return { context in
                let i = position < 0 ? context.destinationCount + position : position
                guard i >= 0 && i < context.destinationCount else { return .null }
                return value(context, i)
            }
        }
    }

    /// `$socket_in` (`udp:IP:PORT`) and `$socket_in(ip)`, `(port)`, `(proto)`, `(advertised_ip)`,
    /// `(advertised_port)`: the socket the message arrived on (OpenSIPS 3.x).
    private func socketRead(_ v: PseudoVariable) throws(CompileError) -> Evaluate {
        if v.index != nil { throw error("$socket_in takes no index", at: v.location) }
        let field = v.argument ?? ""
        switch field {
        case "", "ip", "advertised_ip":
            let full = field.isEmpty
            return { context in
                guard let address = context.shard.localAddress(ofSocket: context.socketIndex),
                      let host = context.arena.allocate(64) else { return .null }
                let hostText = UnsafeRawBufferPointer(rebasing: host[0..<address.writeHost(into: host)])
                guard full else { return .text(hostText) }
                let arena = context.arena
                var text = arena.begin()
                let stream = StreamHandle.isStream(context.socketIndex)
                arena.append(&text, address.isIPv6 ? (stream ? tcpOpenBracket : udpOpenBracket) : (stream ? tcpColon : udpColon))
                arena.append(&text, hostText)
                arena.append(&text, address.isIPv6 ? closeBracketColon : colonOnly)
                arena.appendDecimal(&text, Int(address.port))
                return .text(arena.end(text))
            }
        case "port", "advertised_port":
            return { context in context.shard.localAddress(ofSocket: context.socketIndex).map { .integer(Int($0.port)) } ?? .null }
        case "proto":
            return { context in .text(StreamHandle.isStream(context.socketIndex) ? tcpText : udpText) }
        default:
            throw error("$socket_in(\(field)): expected ip, port, proto, advertised_ip or advertised_port", at: v.location)
        }
    }

    /// `$hdr(name)`, `$hdr(name)[n]` (n-th field, -1 the last), `$(hdr(name)[*])` (all, comma-joined).
    private func headerRead(_ v: PseudoVariable) throws(CompileError) -> Evaluate {
        guard let name = v.argument, !name.isEmpty else { throw error("$hdr needs a header name: $hdr(name)", at: v.location) }
        let kind = SIPHeaderKind.named(name)
        let nameBytes = permanentBytes(name)
        switch v.index {
        case .all?:
            return { context in
                let arena = context.arena
                var text = arena.begin()
                var first = true
                forEachHeader(context.message, kind, nameBytes) { value in
                    if !first { arena.append(&text, commaSpace) }
                    first = false
                    arena.append(&text, value)
                    return true
                }
                return first ? .null : .text(arena.end(text))
            }
        case .position(let n)? where n < 0:
            return { context in
                var total = 0
                forEachHeader(context.message, kind, nameBytes) { _ in total += 1; return true }
                let wanted = total + n
                guard wanted >= 0 else { return .null }
                var seen = 0
                var result = ScriptValue.null
                forEachHeader(context.message, kind, nameBytes) { value in
                    if seen == wanted { result = .text(value); return false }
                    seen += 1
                    return true
                }
                return result
            }
        default:
            var wanted = 0
            if case .position(let n)? = v.index { wanted = n }
            let position = wanted
            return { context in
                var seen = 0
                var result = ScriptValue.null
                forEachHeader(context.message, kind, nameBytes) { value in
                    if seen == position { result = .text(value); return false }
                    seen += 1
                    return true
                }
                return result
            }
        }
    }
}

nonisolated(unsafe) private let udpText = permanentBytes("udp")
nonisolated(unsafe) private let tcpText = permanentBytes("tcp")
nonisolated(unsafe) private let tcpColon = permanentBytes("tcp:")
nonisolated(unsafe) private let tcpOpenBracket = permanentBytes("tcp:[")
nonisolated(unsafe) private let commaSpace = permanentBytes(", ")
nonisolated(unsafe) private let comma = permanentBytes(",")
nonisolated(unsafe) private let udpColon = permanentBytes("udp:")
nonisolated(unsafe) private let udpOpenBracket = permanentBytes("udp:[")
nonisolated(unsafe) private let closeBracketColon = permanentBytes("]:")
nonisolated(unsafe) private let colonOnly = permanentBytes(":")
nonisolated(unsafe) private let sipVersion = permanentBytes("SIP/2.0")
nonisolated(unsafe) private let requestText = permanentBytes("request")
nonisolated(unsafe) private let replyText = permanentBytes("reply")
nonisolated(unsafe) private let serverInternalError = permanentBytes("Server Internal Error")

/// Calls `body` with the value of each field named by `kind` (or, for unknown kinds, by `name`), in order,
/// until it returns false.
@inline(__always)
func forEachHeader(_ message: SIPMessage, _ kind: SIPHeaderKind, _ name: UnsafeRawBufferPointer,
                   _ body: (UnsafeRawBufferPointer) -> Bool) {
    if kind != .other {
        var index = message.firstIndex(of: kind)
        while let i = index {
            if !body(message.bytes(of: message.header(at: i).value)) { return }
            index = message.nextIndex(sameKindAs: i)
        }
        return
    }
    for i in 0..<message.headerCount {
        let field = message.header(at: i)
        if field.kind == .other && bytesEqualIgnoringCase(message.bytes(of: field.name), name) {
            if !body(message.bytes(of: field.value)) { return }
        }
    }
}

enum URIPart: CustomStringConvertible {
    case user, host, port

    var description: String {
        switch self {
        case .user: "rU"
        case .host: "rd"
        case .port: "rp"
        }
    }
}

/// The value of the first field of a kind, or NULL.
func firstHeaderValue(_ context: ScriptContext, _ kind: SIPHeaderKind) -> ScriptValue {
    guard let index = context.message.firstIndex(of: kind) else { return .null }
    return .text(context.message.bytes(of: context.message.header(at: index).value))
}

func tag(_ context: ScriptContext, _ address: SIPNameAddr?) -> ScriptValue {
    guard let address, address.tag.isPresent else { return .null }
    return .text(context.message.bytes(of: address.tag))
}

func displayName(_ context: ScriptContext, _ address: SIPNameAddr?) -> ScriptValue {
    guard let address, address.displayName.isPresent else { return .null }
    return .text(context.message.bytes(of: address.displayName))
}

func nameAddrURI(_ context: ScriptContext, _ address: SIPNameAddr?) -> ScriptValue {
    guard let address else { return .null }
    return .text(context.message.bytes(of: address.uri.span))
}

func uriPart(_ value: ScriptValue, _ part: URIPart) -> ScriptValue {
    guard case .text(let text) = value else { return .null }
    return uriPart(text, part)
}

/// A part of a URI given as text (the Request-URI, a From URI, a `{uri.*}` input).
func uriPart(_ text: UnsafeRawBufferPointer, _ part: URIPart) -> ScriptValue {
    guard text.count > 0, let uri = try? SIPURI.parse(text, 0, text.count) else { return .null }
    switch part {
    case .user:
        return uri.user.isPresent ? .text(UnsafeRawBufferPointer(rebasing: text[Int(uri.user.start)..<Int(uri.user.end)])) : .null
    case .host:
        return uri.host.isPresent ? .text(UnsafeRawBufferPointer(rebasing: text[Int(uri.host.start)..<Int(uri.host.end)])) : .null
    case .port:
        return uri.port.map { .integer(Int($0)) } ?? .null
    }
}

/// The URI with its user, host or port replaced (NULL or empty removes a user or port), built in the arena.
func replacingURIPart(_ text: UnsafeRawBufferPointer, _ part: URIPart, with value: ScriptValue,
                      arena: Arena) -> UnsafeRawBufferPointer? {
    guard text.count > 0, let uri = try? SIPURI.parse(text, 0, text.count), uri.host.isPresent else { return nil }
    let hostStart = Int(uri.host.start)
    // The port (if any) runs from the host's end to the first ';', '?' or the end.
    var afterPort = Int(uri.host.end)
    while afterPort < text.count && text[afterPort] != UInt8(ascii: ";") && text[afterPort] != UInt8(ascii: "?")
        && text[afterPort] != UInt8(ascii: ">") {
        afterPort += 1
    }
    let userStart: Int = uri.user.isPresent ? Int(uri.user.start) : hostStart
    var result = arena.begin()
    // Scheme and ':' (everything before the user or host).
    arena.append(&result, UnsafeRawBufferPointer(rebasing: text[0..<userStart]))
    switch part {
    case .user:
        if value.isTrue || (value.integerValue != nil) {
            arena.append(&result, value)
            arena.append(&result, atSign)
        }
        arena.append(&result, UnsafeRawBufferPointer(rebasing: text[hostStart..<text.count]))
    case .host:
        arena.append(&result, UnsafeRawBufferPointer(rebasing: text[userStart..<hostStart]))
        arena.append(&result, value)
        arena.append(&result, UnsafeRawBufferPointer(rebasing: text[Int(uri.host.end)..<text.count]))
    case .port:
        arena.append(&result, UnsafeRawBufferPointer(rebasing: text[userStart..<Int(uri.host.end)]))
        if !value.isNull, value.isTrue {
            arena.append(&result, colon)
            arena.append(&result, value)
        }
        arena.append(&result, UnsafeRawBufferPointer(rebasing: text[afterPort..<text.count]))
    }
    return arena.overflowed ? nil : arena.end(result)
}

nonisolated(unsafe) private let atSign = permanentBytes("@")
nonisolated(unsafe) private let colon = permanentBytes(":")

/// The first Digest credentials of the message, Authorization first.
private func credentials(_ context: ScriptContext) -> SIPDigestCredentials? {
    let message = context.message
    for kind in [SIPHeaderKind.authorization, .proxyAuthorization] {
        var index = message.firstIndex(of: kind)
        while let i = index {
            if let digest = SIPDigestCredentials(message.bytes(of: message.header(at: i).value)) { return digest }
            index = message.nextIndex(sameKindAs: i)
        }
    }
    return nil
}

/// A String value for the route, copied into the arena.
private func text(_ context: ScriptContext, _ value: String) -> ScriptValue {
    context.arena.copy(value).map { .text($0) } ?? .null
}
