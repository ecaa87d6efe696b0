import Engine
import SIP
import TM

/// The stateless core: what OpenSIPS' core, sl/signaling, rr, maxfwd, sipmsgops/textops and xlog give a
/// stateless proxy script.
enum CoreFunctions {
    static var modules: [ScriptModule] {
        [
            ScriptModule(name: "core", functions: [
                ScriptFunction("forward", module: "core", arguments: 0...1, allowedIn: .requestLike, compile: forward),
                ScriptFunction("setflag", module: "core", arguments: 1...1, compile: flag(.set)),
                ScriptFunction("resetflag", module: "core", arguments: 1...1, compile: flag(.reset)),
                ScriptFunction("isflag", module: "core", arguments: 1...1, compile: flag(.test)),
                ScriptFunction("force_rport", module: "core", arguments: 0...0, allowedIn: .requestLike) { _, _ in
                    { context in
                        context.forceRport = true
                        // A transaction made before (t_newtran) answers to the source port from now on too.
                        if let handle = context.transaction { context.transactions?.setForceRport(handle) }
                        return 1
                    }
                },
                ScriptFunction("is_myself", module: "core", arguments: 1...2, compile: isMyselfFunction),
                ScriptFunction("xlog", module: "core", arguments: 1...2, compile: xlog),
            ]),
            ScriptModule(name: "xlog", parameters: [.init("buf_size", .integer), .init("force_color", .integer)]),
            ScriptModule(name: "sl", parameters: [.init("enable_stats", .integer)], functions: [
                ScriptFunction("sl_send_reply", module: "sl", arguments: 2...2, allowedIn: [.request, .error],
                               compile: sendReply),
            ]),
            ScriptModule(name: "signaling", functions: [
                // OpenSIPS' send_reply answers through the transaction when there is one (so failure_route may use
                // it, as every load-balancer and trunking template does), statelessly otherwise.
                ScriptFunction("send_reply", module: "signaling", arguments: 2...2, allowedIn: [.request, .failure, .error],
                               compile: sendReply),
            ]),
            ScriptModule(name: "rr", parameters: [
                .init("append_fromtag", .integer), .init("enable_double_rr", .integer), .init("enable_full_lr", .integer),
            ], functions: [
                ScriptFunction("record_route", module: "rr", arguments: 0...0, allowedIn: .requestLike) { _, _ in
                    { context in context.recordRoute = true; return 1 }
                },
                ScriptFunction("loose_route", module: "rr", arguments: 0...0, allowedIn: .requestLike) { _, _ in
                    { context in LooseRouting.run(context) }
                },
                // add_rr_param(";name=value"): carried inside the Record-Route we add (after ";lr").
                ScriptFunction("add_rr_param", module: "rr", arguments: 1...1, allowedIn: .requestLike) { call, compiler throws(CompileError) in
                    let parameter = try compiler.value(call.arguments[0]!)
                    return { context in
                        guard case .text(let text) = parameter(context), text.count > 0 else { return -1 }
                        context.addRecordRouteParameter(text)
                        return 1
                    }
                },
            ]),
            ScriptModule(name: "maxfwd", parameters: [.init("max_limit", .integer)], functions: [
                ScriptFunction("mf_process_maxfwd_header", module: "maxfwd", arguments: 1...1, allowedIn: .requestLike,
                               compile: maxForwards),
            ]),
            ScriptModule(name: "sipmsgops", functions: messageFunctions(module: "sipmsgops|textops")),
            ScriptModule(name: "textops"),
        ]
    }

    static func messageFunctions(module: String) -> [ScriptFunction] {
        [
            ScriptFunction("is_method", module: module, arguments: 1...1, allowedIn: .withMessage, compile: isMethod),
            // OpenSIPS 1.x had has_totag in the uri module.
            ScriptFunction("has_totag", module: module + "|uri", arguments: 0...0, allowedIn: .withMessage) { _, _ in
                { context in
                    context.message.hasToTag ? 1 : -1
                }
            },
            ScriptFunction("append_hf", module: module, arguments: 1...2, allowedIn: .requestLike, compile: appendHeader),
            ScriptFunction("append_to_reply", module: module, arguments: 1...1, allowedIn: .requestLike) {
                call, compiler throws(CompileError) in
                let text = try compiler.value(call.arguments[0]!)
                return { context in
                    guard case .text(let bytes) = text(context), bytes.count > 0 else { return -1 }
                    return context.replyHeaders.append(bytes) ? 1 : -1
                }
            },
            ScriptFunction("remove_hf", module: module, arguments: 1...2, allowedIn: .withMessage, compile: removeHeader),
            ScriptFunction("is_present_hf", module: module, arguments: 1...1, allowedIn: .withMessage,
                           compile: isPresentHeader),
        ]
    }

    // MARK: - forward / replies

    @Sendable static func forward(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let target = try Destination.argument(call.arguments.first ?? nil, of: call.name, compiler)
        return { context in
            guard context.hasMessage, context.message.isRequest else { return -1 }
            guard let forced = target.resolve(context), let destination = forced ?? context.nextHop() else { return -1 }
            return context.forward(to: destination) ? 1 : context.relay.lastForwardTooLarge ? 0 : -1
        }
    }

    @Sendable static func sendReply(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let codeArgument = call.arguments[0]!
        let code = try compiler.integer(codeArgument, what: "reply code")
        if let constant = compiler.constantText(codeArgument), let n = Int(constant), !(100...699).contains(n) {
            throw compiler.error("reply code \(n) is not between 100 and 699", at: codeArgument.location)
        }
        let reason = try compiler.value(call.arguments[1]!)
        let name = call.name
        let stateful = name == "send_reply"
        return { context in
            guard context.hasMessage, context.message.isRequest, case .text(var phrase) = reason(context) else { return -1 }
            var status = code(context) ?? 0
            // A code made at run time that is no status (too large, not a number): the caller still gets an
            // answer, and the log says why it is not the one the script asked for.
            if !(100...699).contains(status) {
                context.log.write(level: -1, "ringsipd: \(name): the reply code is not a number from 100 to 699; "
                    + "answering 500 instead")
                status = 500
                phrase = serverErrorReason
            }
            if stateful, let handle = context.transaction, let manager = context.transactions {
                return manager.reply(handle, status: status, reason: phrase, to: context.message,
                                     headers: context.replyHeaders.lines, on: context.shard) ? 1 : -1
            }
            let sent = context.relay.reply(to: context.message, status: status, reason: phrase, from: context.source,
                                           arrivedOn: context.socketIndex, headers: context.replyHeaders.lines,
                                           forceRport: context.forceRport, on: context.shard)
            if sent { context.handled = true }
            return sent ? 1 : -1
        }
    }

    // MARK: - Flags, myself, logging

    enum FlagOperation { case set, reset, test }

    static func flag(_ operation: FlagOperation) -> @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledCall {
        { call, compiler throws(CompileError) in
            let bit: UInt64 = 1 << UInt64(try compiler.flagBit(call.arguments[0], at: call.location))
            switch operation {
            case .set: return { context in context.flags |= bit; return 1 }
            case .reset: return { context in context.flags &= ~bit; return 1 }
            case .test: return { context in context.flags & bit != 0 ? 1 : -1 }
            }
        }
    }

    @Sendable static func isMyselfFunction(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let subject = try compiler.value(call.arguments[0]!)
        let port = try call.arguments.count > 1 ? call.arguments[1].map { (e: Expression) throws(CompileError) in
            try compiler.integer(e, what: "port")
        } : nil
        return { context in
            guard case .text(let text) = subject(context) else { return -1 }
            if let port, let number = port(context), number > 0 && number < 65536 {
                guard let target = HostPort(text) else { return -1 }
                let host = UnsafeRawBufferPointer(rebasing: text[target.host])
                return context.relay.isOurs(host, port: UInt16(number), on: context.shard) ? 1 : -1
            }
            return isMyself(text, context) ? 1 : -1
        }
    }

    /// OpenSIPS log levels by name (the longer spellings are accepted as OpenSIPS 3.x scripts write them).
    static let logLevels: [String: Int] = [
        "L_ALERT": -3, "L_CRIT": -2, "L_CRITICAL": -2, "L_ERR": -1, "L_ERROR": -1, "L_WARN": 1, "L_WARNING": 1,
        "L_NOTICE": 2, "L_INFO": 3, "L_DBG": 4, "L_DEBUG": 4,
    ]

    /// A log level from its name or its number (-3 to 4), or nil.
    static func logLevel(_ text: String) -> Int? {
        if let known = logLevels[text] { return known }
        if let number = Int(text), (-3...4).contains(number) { return number }
        return nil
    }

    /// `xlog([level,] format)`: the level a constant name or number, or a `$var` read per message (an unknown
    /// value logs at L_ERR, OpenSIPS' default). Filtered by `xlog_level` when the script sets it.
    @Sendable static func xlog(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let formatArgument = call.arguments[call.arguments.count - 1] else {
            throw compiler.error("xlog needs the text to log as its last argument", at: call.location)
        }
        let format = try compiler.value(formatArgument)
        var dynamicLevel: ScriptCompiler.Evaluate?
        var constantLevel = -1
        if call.arguments.count == 2 {
            guard let argument = call.arguments[0] else {
                throw compiler.error("xlog's level is empty: write L_ERR, L_WARN, L_NOTICE, L_INFO or L_DBG", at: call.location)
            }
            if let name = compiler.constantText(argument) {
                guard let known = logLevel(name) else {
                    throw compiler.error("xlog level must be one of \(logLevels.keys.sorted().joined(separator: ", ")) "
                        + "or a number from -3 to 4", at: argument.location)
                }
                constantLevel = known
            } else {
                dynamicLevel = try compiler.value(argument)
            }
        }
        let chosen = constantLevel
        return { context in
            var level = chosen
            if let dynamicLevel {
                switch dynamicLevel(context) {
                case .integer(let n) where (-3...4).contains(n): level = n
                case .text(let text): level = logLevel(String(decoding: text, as: UTF8.self)) ?? -1
                default: level = -1
                }
            }
            let threshold = context.log.xlogLevel
            guard level <= threshold else { return 1 }
            switch format(context) {
            case .text(let text): context.log.write(level: level, threshold: threshold, text)
            case .integer(let n): context.log.write(level: level, threshold: threshold, "\(n)")
            case .null: break
            }
            return 1
        }
    }

    // MARK: - Max-Forwards, methods, headers

    @Sendable static func maxForwards(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let text = compiler.constantText(call.arguments[0]), let limit = Int(text), (1...255).contains(limit) else {
            throw compiler.error("mf_process_maxfwd_header takes a number from 1 to 255", at: call.location)
        }
        return { context in
            let message = context.message
            guard message.count(of: .maxForwards) > 0 else {
                context.maxForwardsWhenAbsent = limit
                return 2
            }
            guard let value = message.maxForwards else { return -2 }
            return value == 0 ? -1 : 1
        }
    }

    @Sendable static func isMethod(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let text = compiler.constantText(call.arguments[0]) else {
            throw compiler.error("is_method takes a constant list of methods, e.g. \"INVITE,BYE\"", at: call.location)
        }
        var known: Set<SIPMethod> = []
        var others: [UnsafeRawBufferPointer] = []
        for name in text.split(whereSeparator: { $0 == "," || $0 == "|" || $0 == " " }) {
            if let method = SIPMethod.allCases.first(where: { "\($0.name)" == name.uppercased() && $0 != .other }) {
                known.insert(method)
            } else {
                others.append(permanentBytes(String(name)))
            }
        }
        guard !known.isEmpty || !others.isEmpty else { throw compiler.error("is_method needs at least one method", at: call.location) }
        let methods = known, extensions = others
        return { context in
            let message = context.message
            let method: SIPMethod
            let name: SIPSpan
            if message.isRequest {
                method = message.method
                name = message.methodName
            } else {
                guard let cseq = message.cseq else { return -1 }
                method = cseq.method
                name = cseq.methodName
            }
            if method != .other { return methods.contains(method) ? 1 : -1 }
            let bytes = message.bytes(of: name)
            for candidate in extensions where bytesEqual(bytes, candidate) { return 1 }
            return -1
        }
    }

    @Sendable static func appendHeader(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let text = try compiler.value(call.arguments[0]!)
        return { context in
            guard case .text(let bytes) = text(context), bytes.count > 0 else { return -1 }
            return context.appendHeader(bytes) ? 1 : -1
        }
    }

    static func headerName(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> (SIPHeaderKind, UnsafeRawBufferPointer) {
        guard let name = compiler.constantText(call.arguments[0]), !name.isEmpty else {
            throw compiler.error("\(call.name) takes a constant header name", at: call.location)
        }
        return (SIPHeaderKind.named(name), permanentBytes(name))
    }

    /// `remove_hf(name[, flags])`: every field of that name; with flags "r" the name is a regular expression, with
    /// "g" a shell glob (`X-*`), both matched case-insensitively against whole field names (OpenSIPS 3.x).
    @Sendable static func removeHeader(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let flags = call.arguments.count > 1 ? call.arguments[1].flatMap { compiler.constantText($0) } ?? "" : ""
        guard flags.allSatisfy({ $0 == "r" || $0 == "g" || $0 == "i" }), !(flags.contains("r") && flags.contains("g")) else {
            throw compiler.error("remove_hf's flags are \"r\" (a regular expression) or \"g\" (a glob)",
                                 at: call.arguments[1]?.location ?? call.location)
        }
        if flags.contains("r") || flags.contains("g") {
            guard let pattern = compiler.constantText(call.arguments[0]), !pattern.isEmpty else {
                throw compiler.error("remove_hf takes a constant pattern", at: call.location)
            }
            let matcher = try NameMatcher(pattern, glob: flags.contains("g"), at: call.location, compiler: compiler)
            let protected: [SIPHeaderKind] = [.via, .from, .to, .callID, .cseq, .contentLength]
            return { context in
                let message = context.message
                var removed = 0
                for i in 0..<message.headerCount where !message.isHeaderRemoved(at: i) {
                    let field = message.header(at: i)
                    guard !protected.contains(field.kind), matcher.matches(message.bytes(of: field.name), arena: context.arena)
                    else { continue }
                    message.removeHeader(at: i)
                    removed += 1
                }
                return removed > 0 ? 1 : -1
            }
        }
        let (kind, name) = try headerName(call, compiler)
        if [.via, .from, .to, .callID, .cseq, .contentLength].contains(kind) {
            throw compiler.error("remove_hf cannot remove \(kind.name): the proxy needs it", at: call.location)
        }
        return { context in
            let message = context.message
            var removed = 0
            for i in 0..<message.headerCount {
                let field = message.header(at: i)
                let matches = kind != .other ? field.kind == kind
                    : field.kind == .other && bytesEqualIgnoringCase(message.bytes(of: field.name), name)
                if matches && !message.isHeaderRemoved(at: i) {
                    message.removeHeader(at: i)
                    removed += 1
                }
            }
            return removed > 0 ? 1 : -1
        }
    }

    @Sendable static func isPresentHeader(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (kind, name) = try headerName(call, compiler)
        return { context in
            var found = false
            forEachHeader(context.message, kind, name) { _ in found = true; return false }
            return found ? 1 : -1
        }
    }
}

/// Where `forward("…")` sends: `udp:IP:PORT`, `tcp:IP:PORT`, `IP:PORT`, `IP`, `[IPv6]:PORT` or a `sip:` URI with
/// a numeric host (`;transport=tcp` asks for TCP). Never a name: resolving one would block the shard.
enum Destination {
    /// A function's optional destination argument: a constant checked now, or a value parsed per call.
    struct Argument {
        let constant: NextHop?
        let dynamic: ScriptCompiler.Evaluate?

        /// nil: the argument's value is not a usable destination (the call fails); .some(nil): no argument.
        func resolve(_ context: ScriptContext) -> NextHop?? {
            if let constant { return .some(constant) }
            guard let dynamic else { return .some(nil) }
            guard case .text(let text) = dynamic(context), let hop = Destination.parse(text) else { return nil }
            return .some(hop)
        }
    }

    static func argument(_ argument: Expression?, of function: String,
                         _ compiler: ScriptCompiler) throws(CompileError) -> Argument {
        guard let argument else { return Argument(constant: nil, dynamic: nil) }
        guard let text = compiler.constantText(argument) else {
            return Argument(constant: nil, dynamic: try compiler.value(argument))
        }
        guard let hop = parse(permanentBytes(text)) else {
            throw compiler.error("\(function)(): '\(text)' is not a destination ringsip can use; "
                + "expected udp:IP:PORT, tcp:IP:PORT, IP:PORT or sip:IP:PORT with a numeric IP", at: argument.location)
        }
        return Argument(constant: hop, dynamic: nil)
    }

    static func parse(_ text: UnsafeRawBufferPointer) -> NextHop? {
        var bytes = text
        var transport = SIPTransport.udp
        if bytes.count > 4, bytesEqualIgnoringCase(UnsafeRawBufferPointer(rebasing: bytes[0..<4]), udpPrefix) {
            bytes = UnsafeRawBufferPointer(rebasing: bytes[4...])
        } else if bytes.count > 4, bytesEqualIgnoringCase(UnsafeRawBufferPointer(rebasing: bytes[0..<4]), tcpPrefix) {
            bytes = UnsafeRawBufferPointer(rebasing: bytes[4...])
            transport = .tcp
        } else if let uri = try? SIPURI.parse(bytes, 0, bytes.count) {
            transport = NextHop.transport(of: uri, in: bytes)
        }
        guard let target = HostPort(bytes),
              let address = SocketAddress(numericHost: UnsafeRawBufferPointer(rebasing: bytes[target.host]),
                                          port: target.port ?? 5060) else { return nil }
        return NextHop(address: address, transport: transport)
    }

    nonisolated(unsafe) private static let udpPrefix = permanentBytes("udp:")
    nonisolated(unsafe) private static let tcpPrefix = permanentBytes("tcp:")
}

extension ScriptContext {
    /// The next hop when `forward()` names none: `$du`, else the Route set, else the Request-URI.
    func nextHop() -> NextHop? {
        if let destinationURI {
            return Destination.parse(destinationURI)
        }
        return relay.defaultNextHop(message, skippingFirstRoute: popRoute, requestURI: requestURI)
    }

    /// Sends the request, with every edit the script made, to `destination`.
    func forward(to destination: NextHop) -> Bool {
        let sent = relay.forwardRequest(message, from: source, arrivedOn: socketIndex, to: destination.address,
                                        transport: destination.transport, edits: edits(toward: destination.address),
                                        on: shard)
        if sent { handled = true }
        // Too large for a datagram: answered 513 rather than lost (an ACK gets no answer).
        if !sent && relay.lastForwardTooLarge && message.method != .ack
            && relay.reply(to: message, status: 513, reason: tooLargeReason, from: source, arrivedOn: socketIndex,
                           forceRport: forceRport, on: shard) {
            handled = true
        }
        return sent
    }
}

nonisolated(unsafe) private let serverErrorReason = permanentBytes("Server Internal Error")
nonisolated(unsafe) private let tooLargeReason = permanentBytes("Message Too Large")
