import Engine
import SIP
import Script

/// `save(table[, flags[, aor]])`: a REGISTER's Contacts into the location table, answered as RFC 3261 §10.3
/// says — 200 listing every current binding with its remaining time, or the error (400, 420, 500, 503) — unless
/// flag `r` leaves the answer to the script. Flags (OpenSIPS 2.x/3.x): `r` no reply, `c<N>` at most N bindings,
/// `p0`/`p1`/`p2` Path off/lazy/strict, `m` memory only (always so here); others are ignored as OpenSIPS does.
struct SaveSettings: Sendable {
    var defaultExpires = 3600
    var minExpires = 60
    /// 0: no bound.
    var maxExpires = 0
    /// q × 1000 given to Contacts without one; -1: none (ordered as 1.0).
    var defaultQ = -1
    var maxContacts = 0
    var retryAfter = 0
    /// -1 Path not kept; 0 kept, not echoed; 1 echoed when the UA supports path; 2 refused (420) unless it does.
    var pathMode = -1
    var reply = true

    init(_ configuration: ScriptConfiguration, flags: String) {
        defaultExpires = configuration.integer("registrar", "default_expires", default: defaultExpires)
        minExpires = configuration.integer("registrar", "min_expires", default: minExpires)
        maxExpires = configuration.integer("registrar", "max_expires", default: maxExpires)
        defaultQ = configuration.integer("registrar", "default_q", default: defaultQ)
        maxContacts = configuration.integer("registrar", "max_contacts", default: maxContacts)
        retryAfter = configuration.integer("registrar", "retry_after", default: retryAfter)
        if configuration.integer("registrar", "use_path", default: 0) == 1 {
            pathMode = configuration.integer("registrar", "path_mode", default: 2)
        }
        var characters = Array(flags)[...]
        while let flag = characters.popFirst() {
            let digits = String(characters.prefix(while: \.isNumber))
            switch flag {
            case "r": reply = false
            case "c":
                characters.removeFirst(digits.count)
                maxContacts = Int(digits) ?? maxContacts
            case "p":
                characters.removeFirst(digits.count)
                pathMode = min(Int(digits) ?? 0, 2)
            default: break
            }
        }
    }
}

extension RegistrarModule {
    @Sendable static func save(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let (table, index) = try site(call, compiler)
        var constantFlags: SaveSettings?
        var flagValue: ScriptCompiler.Evaluate?
        if call.arguments.count > 1, let argument = call.arguments[1] {
            if let text = compiler.constantText(argument) {
                constantFlags = SaveSettings(compiler.configuration, flags: text)
            } else {
                flagValue = try compiler.value(argument)
            }
        }
        let configuration = compiler.configuration
        let defaults = SaveSettings(configuration, flags: "")
        let argument = try aorArgument(call, at: 2, compiler)
        // Where fix_nated_register left the REGISTER's source (`sip:IP:port`): kept with the bindings, and lookup
        // sends there.
        let receivedSlot = try NathelperModule.avpParameter("registrar", "received_avp", compiler, at: call.location)
        return { context in
            guard context.hasMessage, context.message.method == .register,
                  let service = locationService(context, index) else { return -1 }
            var settings = constantFlags ?? defaults
            if let flagValue, case .text(let text) = flagValue(context) {
                settings = SaveSettings(configuration, flags: String(decoding: text, as: UTF8.self))
            }
            guard let aor = aor(from: argument, default: toURI, table: table, service, context) else {
                return refuse(context, settings, 400, "Invalid AOR")
            }
            var request: RegisterRequest
            switch readRegister(context, aor: aor, settings) {
            case .success(let read): request = read
            case .failure(let refusal): return refuse(context, settings, refusal.status, refusal.reason, refusal.header)
            }
            if let receivedSlot, case .text(let received) = context.avps.value(receivedSlot), received.count > 0 {
                request.received = String(decoding: received, as: UTF8.self)
            }
            switch service.register(request) {
            case .outOfOrder:
                return refuse(context, settings, 400, "Invalid CSeq number")
            case .tooManyContacts:
                return refuse(context, settings, 503, "Too Many Registered Contacts",
                              settings.retryAfter > 0 ? "Retry-After: \(settings.retryAfter)\r\n" : nil)
            case .applied:
                guard settings.reply else { return 1 }
                let lines = okHeaders(service.table.bindings(of: aor, now: context.shard.now), request, context, settings)
                return context.replyToRequest(status: 200, reason: "OK", headers: lines) ? 1 : -1
            }
        }
    }

    struct Refusal: Error {
        var status: Int
        var reason: StaticString
        var header: String?
    }

    /// The request's bindings as RFC 3261 §10.3 steps 2–8 read them.
    static func readRegister(_ context: ScriptContext, aor: String,
                             _ settings: SaveSettings) -> Result<RegisterRequest, Refusal> {
        let message = context.message
        guard let callID = message.callID, let cseq = message.cseq else {
            return .failure(Refusal(status: 400, reason: "Bad Request"))
        }
        var headerExpires: Int?
        if let at = message.firstIndex(of: .expires) {
            guard let seconds = decimal(message.bytes(of: message.header(at: at).value)) else {
                return .failure(Refusal(status: 400, reason: "Invalid Expires"))
            }
            headerExpires = seconds
        }
        var contacts: [ContactRequest] = []
        var wildcard = false
        var values = message.values(of: .contact)
        while let value = values.next() {
            let bytes = message.bytes(of: value)
            if bytes.count == 1 && bytes[0] == UInt8(ascii: "*") {
                wildcard = true
                continue
            }
            guard let address = try? SIPNameAddr.parse(message.bytes, value) else {
                return .failure(Refusal(status: 400, reason: "Invalid Contact"))
            }
            var expires = headerExpires ?? settings.defaultExpires
            var q = settings.defaultQ
            var instance = ""
            var regID = 0
            var parameters = SIPParameterIterator(message.bytes, address.parameters)
            while let parameter = try? parameters.next() {
                let name = message.string(parameter.name).lowercased()
                let text = message.bytes(of: parameter.value)
                switch name {
                case "expires":
                    guard let seconds = decimal(text) else { return .failure(Refusal(status: 400, reason: "Invalid Contact")) }
                    expires = seconds
                case "q":
                    guard let thousandths = qValue(text) else { return .failure(Refusal(status: 400, reason: "Invalid q")) }
                    q = thousandths
                case "+sip.instance": instance = String(decoding: text, as: UTF8.self)
                case "reg-id": regID = decimal(text) ?? 0
                default: break
                }
            }
            if expires > 0 && expires < settings.minExpires { expires = settings.minExpires }
            if settings.maxExpires > 0 && expires > settings.maxExpires { expires = settings.maxExpires }
            contacts.append(ContactRequest(contact: message.string(address.uri.span), expiresSeconds: expires, q: q,
                                           instance: instance, regID: regID))
        }
        // §10.3 step 6: `*` only alone and only with Expires: 0.
        if wildcard && (!contacts.isEmpty || headerExpires != 0) {
            return .failure(Refusal(status: 400, reason: "Invalid Contact"))
        }
        var path = ""
        if settings.pathMode >= 0 {
            var joined: [String] = []
            var paths = message.values(of: .path)
            while let value = paths.next() { joined.append(message.string(value)) }
            path = joined.joined(separator: ", ")
            if !path.isEmpty && settings.pathMode == 2 && !supportsPath(message) {
                return .failure(Refusal(status: 420, reason: "Bad Extension", header: "Unsupported: path\r\n"))
            }
        }
        let userAgent = message.firstIndex(of: .userAgent).map { message.string(message.header(at: $0).value) } ?? ""
        return .success(RegisterRequest(
            aor: aor, contacts: contacts, wildcard: wildcard, callID: message.string(callID), cseq: cseq.number,
            path: path, userAgent: userAgent, socket: context.socketIndex, branchFlags: context.branchFlags,
            maxContacts: settings.maxContacts))
    }

    static func supportsPath(_ message: SIPMessage) -> Bool {
        var supported = message.values(of: .supported)
        while let value = supported.next() {
            if message.equalsIgnoringCase(value, "path") { return true }
        }
        return false
    }

    /// The 200's Contact lines (each binding with its remaining seconds) and, when the mode echoes it, the Path.
    static func okHeaders(_ bindings: [Binding], _ request: RegisterRequest, _ context: ScriptContext,
                          _ settings: SaveSettings) -> String {
        let now = context.shard.now
        var lines = ""
        for binding in bindings {
            lines += "Contact: <\(binding.contact)>;expires=\((binding.expires - now + 999) / 1000)"
            if binding.q >= 0 { lines += ";q=\(qText(binding.q))" }
            if !binding.instance.isEmpty { lines += ";+sip.instance=\(binding.instance)" }
            if binding.regID > 0 { lines += ";reg-id=\(binding.regID)" }
            lines += "\r\n"
        }
        if !request.path.isEmpty && (settings.pathMode == 2 || (settings.pathMode == 1 && supportsPath(context.message))) {
            lines += "Path: \(request.path)\r\n"
        }
        return lines
    }

    static func refuse(_ context: ScriptContext, _ settings: SaveSettings, _ status: Int, _ reason: StaticString,
                       _ header: String? = nil) -> Int {
        if settings.reply { _ = context.replyToRequest(status: status, reason: reason, headers: header ?? "") }
        return -1
    }

    /// A non-negative decimal (an Expires value); values past 2^31-1 are taken as 2^31-1 (§20.19 allows larger
    /// values to be treated so).
    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count > 0 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value = min(value * 10 + Int(byte - 0x30), Int(Int32.max))
        }
        return value
    }

    /// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` as thousandths.
    static func qValue(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let first = bytes.first, first == 0x30 || first == 0x31 else { return nil }
        var value = Int(first - 0x30) * 1000
        guard bytes.count > 1 else { return value }
        guard bytes[1] == UInt8(ascii: "."), bytes.count <= 5 else { return nil }
        var scale = 100
        for byte in bytes.dropFirst(2) {
            guard byte >= 0x30 && byte <= 0x39 else { return nil }
            value += Int(byte - 0x30) * scale
            scale /= 10
        }
        return value <= 1000 ? value : nil
    }

    static func qText(_ thousandths: Int) -> String {
        if thousandths >= 1000 { return "1" }
        var digits = String(thousandths + 1000).dropFirst()
        while digits.last == "0" { digits.removeLast() }
        return digits.isEmpty ? "0" : "0." + digits
    }
}
