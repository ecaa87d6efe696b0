import Engine
import Glibc
import SIP
import Script

/// OpenSIPS' nathelper, signalling part: `nat_uac_test(flags)` finds a user agent behind NAT, `fix_nated_register()`
/// keeps where a REGISTER really came from for the registrar (its `received_avp`, which `lookup` then sends to),
/// `fix_nated_contact()` and `add_rcv_param()` rewrite or mark a request's Contact with its source address.
/// Keep-alive pings of the bindings (`natping_interval`): `NatPingService`.
public enum NathelperModule {
    public static var module: ScriptModule {
        let shardsPing = "each shard pings the bindings it owns, from its timer wheel"
        let noTimeouts = "an unanswered ping does not remove the binding"
        return ScriptModule(name: "nathelper", parameters: [
            .init("received_avp", .string),
            .init("natping_interval", .integer, range: 0...86_400, unit: "seconds"), .init("ping_nated_only", .integer, range: 0...1),
            .init("sipping_from", .string), .init("sipping_method", .string), .init("sipping_bflag", .string),
            .ignored("natping_processes", shardsPing), .ignored("natping_socket", shardsPing),
            .ignored("natping_tcp", "ringsip serves UDP only for now"), .ignored("max_pings_lost", noTimeouts),
            .ignored("ping_threshold", noTimeouts), .ignored("remove_on_timeout_bflag", noTimeouts),
            .ignored("force_socket", "replies and requests leave from the socket they belong to"),
        ], functions: [
            ScriptFunction("nat_uac_test", module: "nathelper", arguments: 1...1, allowedIn: .request, compile: test),
            ScriptFunction("fix_nated_register", module: "nathelper", arguments: 0...0, allowedIn: .request,
                           compile: fixRegister),
            ScriptFunction("fix_nated_contact", module: "nathelper", arguments: 0...0, allowedIn: .request) { _, _ in
                { context in rewriteContact(context, asParameter: false) }
            },
            ScriptFunction("add_rcv_param", module: "nathelper", arguments: 0...1, allowedIn: .request) { _, _ in
                { context in rewriteContact(context, asParameter: true) }
            },
        ], service: { context, shard, configuration in
            NatPingService(context: context, shard: shard, configuration: configuration)
        })
    }

    /// The slot of an `$avp(name)` a modparam names (`"$avp(rcv)"`, or `"rcv"`), nil when unset.
    static func avpParameter(_ module: String, _ name: String, _ compiler: ScriptCompiler,
                             at location: SourceLocation) throws(CompileError) -> Int? {
        guard case .string(var text)? = compiler.configuration.moduleParameters[module]?[name], !text.isEmpty else { return nil }
        if text.hasPrefix("$avp(") && text.hasSuffix(")") { text = String(text.dropFirst(5).dropLast()) }
        guard !text.isEmpty, text.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
            throw compiler.error("\(module)'s \(name) must name an $avp, e.g. \"$avp(rcv)\"", at: location)
        }
        return compiler.avpSlot(named: text)
    }

    // MARK: - nat_uac_test

    /// The tests of OpenSIPS' flags, any of which true is NAT: 1 the Contact is a private address; 2 the top Via's
    /// host is not the source address; 4 the top Via is a private address; 8 the SDP's connection address is
    /// private; 16 the source port is not the top Via's; 32 the Contact is a private IPv6 address (fc00::/7);
    /// 64 the Contact's host or port differs from the source's. Flags ringsip does not know are ignored.
    @Sendable static func test(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let flags = try compiler.integer(call.arguments[0]!, what: "nat_uac_test's flags")
        return { context in
            guard context.hasMessage, context.message.isRequest, let bits = flags(context) else { return -1 }
            let message = context.message
            let source = context.source
            let contact = firstContact(message)
            if bits & 1 != 0, let contact, isPrivateIPv4(message.string(contact.host)) { return 1 }
            if let via = message.topVia {
                let host = message.string(via.host).trimming("[]")
                if bits & 2 != 0, host != source.hostString { return 1 }
                if bits & 4 != 0, isPrivateIPv4(host) { return 1 }
                if bits & 16 != 0, Int(via.port ?? 5060) != Int(source.port) { return 1 }
            }
            if bits & 8 != 0, sdpConnectionIsPrivate(message) { return 1 }
            if bits & 32 != 0, let contact, isPrivateIPv6(message.string(contact.host)) { return 1 }
            if bits & 64 != 0, let contact {
                let host = message.string(contact.host).trimming("[]")
                if host != source.hostString || Int(contact.port ?? 5060) != Int(source.port) { return 1 }
            }
            return -1
        }
    }

    static func firstContact(_ message: SIPMessage) -> SIPURI? {
        var values = message.values(of: .contact)
        guard let value = values.next(), let address = try? SIPNameAddr.parse(message.bytes, value) else { return nil }
        return address.uri
    }

    /// RFC 1918 and the shared address space of RFC 6598 (carrier-grade NAT).
    static func isPrivateIPv4(_ host: String) -> Bool {
        let parts = host.split(separator: ".").compactMap { UInt8($0) }
        guard parts.count == 4, host.split(separator: ".").count == 4 else { return false }
        return parts[0] == 10 || (parts[0] == 172 && (16...31).contains(parts[1])) || (parts[0] == 192 && parts[1] == 168)
            || (parts[0] == 100 && (64...127).contains(parts[1]))
    }

    /// Unique local addresses, fc00::/7: a first group of four hex digits starting fc or fd.
    static func isPrivateIPv6(_ host: String) -> Bool {
        let bare = host.trimming("[]").lowercased()
        guard let first = bare.split(separator: ":", omittingEmptySubsequences: false).first, first.count == 4,
              first.allSatisfy(\.isHexDigit) else { return false }
        return first.hasPrefix("fc") || first.hasPrefix("fd")
    }

    static func sdpConnectionIsPrivate(_ message: SIPMessage) -> Bool {
        guard message.body.isPresent else { return false }
        let body = message.string(message.body)
        for line in body.split(whereSeparator: { $0 == "\r" || $0 == "\n" }) where line.hasPrefix("c=IN IP4 ") {
            if isPrivateIPv4(String(line.dropFirst(9).prefix { $0 != "/" && $0 != " " })) { return true }
        }
        return false
    }

    // MARK: - fix_nated_register, fix_nated_contact, add_rcv_param

    @Sendable static func fixRegister(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        guard let slot = try avpParameter("nathelper", "received_avp", compiler, at: call.location) else {
            throw compiler.error("fix_nated_register needs modparam(\"nathelper\", \"received_avp\", \"$avp(rcv)\") — and the same "
                + "for registrar — to hand the source address to save()", at: call.location)
        }
        return { context in
            guard context.hasMessage, context.message.method == .register, let uri = sourceURI(context) else { return -1 }
            context.avps.remove(slot, all: true)
            return context.avps.push(slot, .text(uri)) ? 1 : -1
        }
    }

    /// `sip:IP:port` of the request's source, in the arena.
    static func sourceURI(_ context: ScriptContext) -> UnsafeRawBufferPointer? {
        context.arena.copy("sip:\(context.source)")
    }

    /// Replaces the first Contact with one whose URI's host and port are the source's (`fix_nated_contact`), or
    /// whose header parameters gain `received="sip:IP:port"` (`add_rcv_param`); the new header follows the others.
    static func rewriteContact(_ context: ScriptContext, asParameter: Bool) -> Int {
        guard context.hasMessage, context.message.isRequest else { return -1 }
        let message = context.message
        guard let index = message.firstIndex(of: .contact), !message.isHeaderRemoved(at: index) else { return -1 }
        var values = message.values(ofHeaderAt: index)
        guard let value = values.next(), let address = try? SIPNameAddr.parse(message.bytes, value),
              address.uri.host.isPresent else { return -1 }
        let valueStart = Int(value.start), valueEnd = Int(value.end)
        let bytes = Array(message.bytes)
        func text(_ from: Int, _ to: Int) -> String { String(decoding: bytes[from..<to], as: UTF8.self) }
        let source = context.source
        let host = source.isIPv6 ? "[\(source.hostString)]" : source.hostString
        var rewritten: String
        if asParameter {
            rewritten = text(valueStart, valueEnd) + ";received=\"sip:\(host):\(source.port)\""
        } else {
            // Host, and port when there is one, replaced; the user part, parameters and display name kept.
            let hostStart = Int(address.uri.host.start)
            var hostEnd = Int(address.uri.host.end)
            if address.uri.port != nil {
                hostEnd += 1
                while hostEnd < valueEnd && bytes[hostEnd] >= 0x30 && bytes[hostEnd] <= 0x39 { hostEnd += 1 }
            }
            rewritten = text(valueStart, hostStart) + "\(host):\(source.port)" + text(hostEnd, valueEnd)
        }
        // Other Contacts of the same header (rare outside REGISTER) stay as they were: the bytes after this value.
        let rest = text(valueEnd, Int(message.header(at: index).value.end))
        var line = "Contact: " + rewritten + rest + "\r\n"
        let appended = line.withUTF8 { context.appendHeaderLine(UnsafeRawBufferPointer($0)) }
        guard appended else { return -1 }
        message.removeHeader(at: index)
        return 1
    }
}
