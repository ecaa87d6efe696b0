import Engine
import Script

/// aaa_radius for scripts: `radius_send_auth(input_set, output_set)` and `radius_send_acct(input_set)`,
/// inside `async()` on the ring, outside it waited for on the shard's thread (as OpenSIPS; the check warns),
/// with the sets as OpenSIPS writes them, `modparam("aaa_radius", "sets", "in = { User-Name = $fU; User-Password = $avp(pw) }")` (repeatable),
/// and the servers as `modparam("aaa_radius", "auth_server", "IP:1812")`, `"acct_server"`, `"secret"`
/// (ringsip's own: it has no radiusclient.conf). Output sets name `$avp`s only. `$rc`: 1 Access-Accept or
/// Accounting-Response, -1 Access-Reject, -2 timeout, -3 no free request identifier, -4 Access-Challenge,
/// -5 failed.
public enum RadiusModule {
    public static var module: ScriptModule {
        ScriptModule(name: "aaa_radius", parameters: [
            .init("sets", .string), .init("auth_server", .string), .init("acct_server", .string),
            .init("secret", .string), .init("timeout", .integer), .init("radius_config", .string),
        ], functions: [
            // Outside async() they run synchronously, as in OpenSIPS: the shard waits, so the check warns.
            ScriptFunction("radius_send_auth", module: "aaa_radius", arguments: 2...2) { call, compiler throws(CompileError) in
                try compileSynchronous(call, compiler, accounting: false)
            },
            ScriptFunction("radius_send_acct", module: "aaa_radius", arguments: 1...1) { call, compiler throws(CompileError) in
                try compileSynchronous(call, compiler, accounting: true)
            },
        ], asyncOperations: [
            AsyncOperationDefinition("radius_send_auth", module: "aaa_radius", arguments: 2...2, defaultTimeout: 5_000,
                                     timeoutParameter: ("timeout", 1)) { call, compiler throws(CompileError) in
                try compile(call, compiler, accounting: false)
            },
            AsyncOperationDefinition("radius_send_acct", module: "aaa_radius", arguments: 1...1, defaultTimeout: 5_000,
                                     timeoutParameter: ("timeout", 1)) { call, compiler throws(CompileError) in
                try compile(call, compiler, accounting: true)
            },
        ], service: { context, shard, configuration in RadiusService(context: context, shard: shard, configuration: configuration) })
    }

    /// RFC 2865/2866 attributes a set may name: type and value encoding.
    static let dictionary: [String: (type: UInt8, integer: Bool)] = [
        "user-name": (1, false), "user-password": (2, false), "password": (2, false), "nas-ip-address": (4, false),
        "nas-port": (5, true), "service-type": (6, true), "reply-message": (18, false), "state": (24, false),
        "class": (25, false), "called-station-id": (30, false), "calling-station-id": (31, false),
        "nas-identifier": (32, false), "acct-status-type": (40, true), "acct-delay-time": (41, true),
        "acct-session-id": (44, false), "acct-session-time": (46, true), "event-timestamp": (55, true),
    ]

    struct Input {
        let type: UInt8
        let integer: Bool
        let value: ScriptCompiler.Evaluate
    }

    /// `name = { Attribute = $pv; … }` from every "sets" modparam.
    static func sets(_ compiler: ScriptCompiler, at location: SourceLocation) throws(CompileError)
        -> [String: [(attribute: String, variable: PseudoVariable)]] {
        var result: [String: [(attribute: String, variable: PseudoVariable)]] = [:]
        for value in compiler.configuration.moduleParameterLists["aaa_radius"]?["sets"] ?? [] {
            guard case .string(let text) = value, let equals = text.firstIndex(of: "="),
                  let open = text.firstIndex(of: "{"), let close = text.lastIndex(of: "}"), equals < open, open < close else {
                throw compiler.error("aaa_radius sets must read 'name = { Attribute = $pv; … }'", at: location)
            }
            let name = text[..<equals].trimming(" \t")
            var entries: [(attribute: String, variable: PseudoVariable)] = []
            for item in text[text.index(after: open)..<close].split(separator: ";") {
                let pair = item.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { continue }
                let attribute = pair[0].trimming(" \t")
                let spec = pair[1].trimming(" \t")
                guard spec.hasPrefix("$") else {
                    throw compiler.error("aaa_radius set '\(name)': '\(attribute)' needs a $variable", at: location)
                }
                var pvName = String(spec.dropFirst())
                var argument: String?
                if let paren = pvName.firstIndex(of: "("), pvName.hasSuffix(")") {
                    argument = String(pvName[pvName.index(after: paren)..<pvName.index(before: pvName.endIndex)])
                    pvName = String(pvName[..<paren])
                }
                entries.append((attribute, PseudoVariable(name: pvName, argument: argument, index: nil,
                                                          transformations: [], location: location)))
            }
            result[name] = entries
        }
        return result
    }

    /// A call's compiled sets: the input attributes to read, the output `$avp`s by attribute type, the service.
    struct Request {
        let inputs: [Input]
        let outputs: [(type: UInt8, slot: Int)]
        let service: Int
    }

    static func request(_ call: FunctionCall, _ compiler: ScriptCompiler, accounting: Bool) throws(CompileError) -> Request {
        let known = try sets(compiler, at: call.location)
        func set(_ argument: Expression?) throws(CompileError) -> [(attribute: String, variable: PseudoVariable)] {
            guard let name = compiler.constantText(argument), let entries = known[name] else {
                throw compiler.error("unknown aaa_radius set '\(compiler.constantText(argument) ?? "?")'; define it with "
                    + "modparam(\"aaa_radius\", \"sets\", \"name = { … }\")", at: argument?.location ?? call.location)
            }
            return entries
        }
        var inputs: [Input] = []
        for (attribute, variable) in try set(call.arguments[0]) {
            guard let known = dictionary[attribute.lowercased()] else {
                throw compiler.error("unknown RADIUS attribute '\(attribute)'", at: call.location)
            }
            inputs.append(Input(type: known.type, integer: known.integer, value: try compiler.read(variable)))
        }
        var outputs: [(type: UInt8, slot: Int)] = []
        if !accounting {
            for (attribute, variable) in try set(call.arguments[1]) {
                guard let known = dictionary[attribute.lowercased()] else {
                    throw compiler.error("unknown RADIUS attribute '\(attribute)'", at: call.location)
                }
                guard let slot = try compiler.outputTarget(.variable(variable), what: "a RADIUS output") else { continue }
                outputs.append((known.type, slot))
            }
            guard inputs.contains(where: { $0.type == 1 }), inputs.contains(where: { $0.type == 2 }) else {
                throw compiler.error("radius_send_auth's input set needs User-Name and User-Password", at: call.location)
            }
        }
        guard let service = compiler.serviceIndex(of: "aaa_radius") else {
            throw compiler.error("\(call.name) needs loadmodule \"aaa_radius.so\"", at: call.location)
        }
        return Request(inputs: inputs, outputs: outputs, service: service)
    }

    static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler, accounting: Bool) throws(CompileError)
        -> CompiledAsyncOperation {
        let request = try request(call, compiler, accounting: accounting)
        let service = request.service
        return CompiledAsyncOperation(
            start: { context, ticket in
                guard let radius = context.service(service) as? RadiusService else { return Int(RadiusCode.failed.rawValue) }
                return radius.start(request.inputs, outputs: request.outputs, accounting: accounting, ticket: ticket,
                                    context: context)
            },
            cancel: { context, ticket in
                guard let radius = context.service(service) as? RadiusService,
                      let data = context.suspensions.operationData(ticket) else { return }
                radius.cancel(data)
            })
    }

    /// Outside `async()`: the same request, waited for on the shard's thread, for `modparam("aaa_radius",
    /// "timeout", ms)` or 5 s; `$rc` and the output `$avp`s as the resume route would see them.
    static func compileSynchronous(_ call: FunctionCall, _ compiler: ScriptCompiler, accounting: Bool) throws(CompileError)
        -> CompiledCall {
        compiler.warn("\(call.name)() outside async() blocks the whole shard until the server answers; "
            + "async(\(call.name)(…), resume_route) does not", at: call.location)
        let request = try request(call, compiler, accounting: accounting)
        var timeout: UInt64 = 5_000
        if case .integer(let ms)? = compiler.configuration.moduleParameters["aaa_radius"]?["timeout"], ms > 0 {
            timeout = UInt64(ms)
        }
        let service = request.service, limit = timeout
        return { context in
            guard let radius = context.service(service) as? RadiusService else { return Int(RadiusCode.failed.rawValue) }
            return radius.perform(request.inputs, outputs: request.outputs, accounting: accounting,
                                  timeoutMilliseconds: limit, context: context)
        }
    }
}

/// One shard's RADIUS clients (authentication and accounting), seen from the script layer.
final class RadiusService: ShardService, RadiusRunnerDelegate {
    unowned let context: ScriptContext
    var auth: RadiusRunner?
    var accounting: RadiusRunner?
    /// For calls outside async(); their sockets open at first use.
    var blockingAuth: BlockingRadius?
    var blockingAccounting: BlockingRadius?
    private var attributes = RadiusAttributes()
    /// Output mapping per in-flight request, by suspension slot: up to 8 (attribute type, avp slot + 1).
    private let outputs: UnsafeMutablePointer<(UInt8, Int32)>
    private static let tracked = 65_536
    private static let perRequest = 8

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        outputs = .allocate(capacity: RadiusService.tracked * RadiusService.perRequest)
        outputs.initialize(repeating: (0, 0), count: RadiusService.tracked * RadiusService.perRequest)
        guard case .string(let secret)? = configuration.moduleParameters["aaa_radius"]?["secret"] else { return }
        func server(_ name: String, _ port: UInt16) -> SocketAddress? {
            if case .string(let text)? = configuration.moduleParameters["aaa_radius"]?[name],
               case .success(let spec) = ListenSpec.parse(text) { return spec.address }
            return SocketAddress(numericHost: "127.0.0.1", port: port)
        }
        if let address = server("auth_server", 1812) {
            auth = try? RadiusRunner(shard: shard, configuration: .init(server: address, secret: secret), delegate: self)
            blockingAuth = BlockingRadius(server: address, secret: Array(secret.utf8))
        }
        if let address = server("acct_server", 1813) {
            var settings = RadiusRunner.Configuration(server: address, secret: secret)
            settings.component = .radiusAccounting
            accounting = try? RadiusRunner(shard: shard, configuration: settings, delegate: self)
            blockingAccounting = BlockingRadius(server: address, secret: Array(secret.utf8))
        }
    }

    deinit { outputs.deallocate() }

    func start(_ inputs: [RadiusModule.Input], outputs targets: [(type: UInt8, slot: Int)], accounting isAccounting: Bool,
               ticket: AsyncTicket, context: ScriptContext) -> Int? {
        guard ticket.slot < UInt32(RadiusService.tracked), let runner = isAccounting ? accounting : auth else {
            return Int(RadiusCode.failed.rawValue)
        }
        let (userName, password) = encode(inputs, accounting: isAccounting, context: context)
        let base = Int(ticket.slot) * RadiusService.perRequest
        for i in 0..<RadiusService.perRequest {
            outputs[base + i] = i < targets.count ? (targets[i].type, Int32(targets[i].slot + 1)) : (0, 0)
        }
        let token = OpsPacking.token(ticket)
        // The suspension's timeout cancels the request first; the runner's own (it needs one) is a backstop.
        let submission = isAccounting
            ? runner.submitAccounting(attributes: attributes, timeoutMilliseconds: 60_000, token: token)
            : runner.submitAccess(userName: userName, password: password, attributes: attributes, timeoutMilliseconds: 60_000,
                                  token: token)
        switch submission {
        case .accepted(let handle):
            context.suspensions.setOperationData(ticket, (isAccounting ? 1 << 40 : 0) | UInt64(handle.identifier) << 16
                | UInt64(handle.generation))
            return nil
        case .rejected(let code):
            return Int(code.rawValue)
        }
    }

    /// The inputs' values into `attributes`; User-Name and User-Password of an Access-Request apart (the
    /// client writes those itself). The views last as long as the route run.
    private func encode(_ inputs: [RadiusModule.Input], accounting isAccounting: Bool, context: ScriptContext)
        -> (userName: UnsafeRawBufferPointer, password: UnsafeRawBufferPointer) {
        attributes.removeAll()
        var userName = UnsafeRawBufferPointer(start: nil, count: 0)
        var password = UnsafeRawBufferPointer(start: nil, count: 0)
        for input in inputs {
            let value = input.value(context)
            if input.integer {
                guard let n = value.integerValue, n >= 0, n <= Int(UInt32.max) else { continue }
                _ = attributes.append(type: input.type, integer: UInt32(n))
                continue
            }
            guard case .text(let text) = value else { continue }
            if !isAccounting && input.type == 1 { userName = text; continue }
            if !isAccounting && input.type == 2 { password = text; continue }
            if input.type == 4, let address = SocketAddress(numericHost: text, port: 0), !address.isIPv6 {
                var octets: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
                withUnsafeBytes(of: address.storage) { raw in
                    octets = (raw[4], raw[5], raw[6], raw[7])
                }
                _ = attributes.append(type: 4, ipv4: octets)
                continue
            }
            _ = attributes.append(type: input.type, bytes: text)
        }
        return (userName, password)
    }

    /// A request outside async(): waits for the answer (or the timeout) and writes the output `$avp`s.
    func perform(_ inputs: [RadiusModule.Input], outputs targets: [(type: UInt8, slot: Int)], accounting isAccounting: Bool,
                 timeoutMilliseconds: UInt64, context: ScriptContext) -> Int {
        guard let client = isAccounting ? blockingAccounting : blockingAuth else { return Int(RadiusCode.failed.rawValue) }
        let (userName, password) = encode(inputs, accounting: isAccounting, context: context)
        let (code, answer) = client.exchange(accounting: isAccounting, userName: userName, password: password,
                                             attributes: attributes, timeoutMilliseconds: timeoutMilliseconds)
        guard code == .accepted || code == .rejected || code == .challenge else { return Int(code.rawValue) }
        // As after a resume: an attribute in the answer replaces its `$avp`'s old values (the last of a type is
        // [0]); an `$avp` whose attribute is absent keeps what it had.
        var replaced: UInt64 = 0
        RadiusCompletion.forEachAttribute(in: answer) { type, bytes in
            for (i, target) in targets.enumerated() where target.type == type {
                if i < 64 && replaced & (1 << i) == 0 {
                    if target.slot < OutputTarget.writerBase { context.avps.remove(target.slot, all: true) }
                    replaced |= 1 << i
                }
                guard let copy = context.arena.copy(bytes) else { continue }
                context.appendOutput(target.slot, .text(copy))
            }
        }
        return Int(code.rawValue)
    }

    func cancel(_ data: UInt64) {
        let runner = data & (1 << 40) != 0 ? accounting : auth
        runner?.cancel(RadiusHandle(identifier: UInt8(truncatingIfNeeded: data >> 16), generation: UInt16(truncatingIfNeeded: data)))
    }

    func radiusCompleted(token: UInt64, _ completion: borrowing RadiusCompletion, on shard: Shard) {
        let ticket = OpsPacking.ticket(ofToken: token)
        let base = Int(ticket.slot) * RadiusService.perRequest
        completion.forEachAttribute { type, bytes in
            for i in 0..<RadiusService.perRequest where outputs[base + i].1 > 0 && outputs[base + i].0 == type {
                context.stageOutput(avp: Int(outputs[base + i].1) - 1, bytes)
            }
        }
        context.asyncCompleted(ticket, code: Int(completion.code.rawValue))
    }

    // Each runner has its own component: a completion or timer goes to the one runner whose it is (with one
    // shared component, either runner took the other's reads, writes and retransmission timers for its own).
    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        switch OpsPacking.component(of: id) {
        case .radius: auth?.operationCompleted(id, result: result, flags: flags)
        case .radiusAccounting: accounting?.operationCompleted(id, result: result, flags: flags)
        default: return false
        }
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        switch OpsPacking.component(ofTimer: payload) {
        case .radius: auth?.timerFired(payload: payload)
        case .radiusAccounting: accounting?.timerFired(payload: payload)
        default: return false
        }
        return true
    }

    func stopping(on shard: Shard) {
        auth?.shutdown()
        accounting?.shutdown()
    }
}
