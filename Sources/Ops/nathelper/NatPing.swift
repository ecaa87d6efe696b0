import Engine
import Glibc
import SIP
import Script

/// nathelper's keep-alive pings (`natping_interval`): every interval each shard pings the bindings whose AOR it
/// owns (so each binding is pinged once, not once per shard), to keep the NAT's mapping open: a bare CRLF CRLF
/// datagram, or an OPTIONS request for bindings carrying `sipping_bflag`. `ping_nated_only` limits them to
/// bindings registered through `fix_nated_register` (a received address). Pings go to the received address when
/// there is one, else to the Contact (numeric hosts only: no DNS). Answers to the OPTIONS carry a Via branch
/// starting with `ScriptHandler.ownRequestBranchPrefix` and are dropped before any route sees them.
/// `sipping_bflag` is taken by number (a named flag's bit is the script compiler's and unknown here: such
/// bindings get the CRLF ping).
final class NatPingService: ShardService {
    static let pingBranchPrefix = ScriptHandler.ownRequestBranchPrefix

    unowned let context: ScriptContext
    unowned let shard: Shard
    let interval: UInt64
    let natedOnly: Bool
    let sipPingFlag: UInt64?
    let from: String
    let method: String
    private var serial = 0
    /// This interval's pings not sent yet: sent a batch a turn, so they never take every send slot at once.
    private var pending: [(destination: SocketAddress, contact: String, socket: Int, options: Bool)] = []
    private var pendingNext = 0
    static let batch = 256
    /// Payload of the timer that sends the next batch (slot 1; slot 0 is the interval's).
    private var batchPayload: UInt64 { OpsPacking.timerPayload(.natPing, slot: 1, generation: 0) }

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        self.shard = shard
        interval = UInt64(configuration.integer("nathelper", "natping_interval", default: 0)) * 1000
        natedOnly = configuration.integer("nathelper", "ping_nated_only", default: 0) == 1
        if let bit = configuration.optionalInteger("nathelper", "sipping_bflag"), (0..<64).contains(bit) {
            sipPingFlag = 1 << UInt64(bit)
        } else {
            sipPingFlag = nil
        }
        if case .string(let text)? = configuration.moduleParameters["nathelper"]?["sipping_from"], !text.isEmpty {
            from = text
        } else {
            from = "sip:pinger@ringsip.invalid"
        }
        if case .string(let text)? = configuration.moduleParameters["nathelper"]?["sipping_method"], !text.isEmpty {
            method = text
        } else {
            method = "OPTIONS"
        }
        if interval > 0 { _ = shard.schedule(after: interval, payload: OpsPacking.timerPayload(.natPing, slot: 0, generation: 0)) }
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool { false }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        guard OpsPacking.component(ofTimer: payload) == .natPing else { return false }
        if payload == batchPayload {
            sendBatch()
            return true
        }
        if let location = context.services.lazy.compactMap({ $0 as? LocationService }).first { collect(location) }
        sendBatch()
        if shard.schedule(after: interval, payload: payload) == nil {
            context.log.write(level: -1, "ringsipd: nathelper: the timer wheel is full; keep-alive pings stop")
        }
        return true
    }

    func stopping(on shard: Shard) {}

    /// This interval's pings: the live bindings of the AORs this shard owns (NATed ones only with ping_nated_only).
    private func collect(_ location: LocationService) {
        pending.removeAll(keepingCapacity: true)
        pendingNext = 0
        let now = shard.now
        for (key, bindings) in location.table.records where location.owner(ofAOR: key) == shard.index {
            for binding in bindings where binding.expires > now && (!natedOnly || !binding.received.isEmpty) {
                guard let destination = Self.destination(binding) else { continue }
                let options = sipPingFlag.map { binding.branchFlags & $0 != 0 } ?? false
                pending.append((destination, binding.contact, binding.socket, options))
            }
        }
    }

    private func sendBatch() {
        let end = min(pendingNext + Self.batch, pending.count)
        while pendingNext < end {
            let ping = pending[pendingNext]
            pendingNext += 1
            if ping.options {
                sendOptions(to: ping.destination, contact: ping.contact, socket: ping.socket)
            } else {
                send(Array("\r\n\r\n".utf8), to: ping.destination, socket: ping.socket)
            }
        }
        if pendingNext < pending.count { _ = shard.schedule(after: 1, payload: batchPayload) }
    }

    /// The received address (`sip:IP:port`), else the Contact's host and port, when numeric.
    static func destination(_ binding: Binding) -> SocketAddress? {
        address(ofContact: binding.received.isEmpty ? binding.contact : binding.received)
    }

    /// A SIP URI's host and port as an address, when the host is numeric (no DNS here).
    static func address(ofContact contact: String) -> SocketAddress? {
        var text = contact
        return text.withUTF8 { raw -> SocketAddress? in
            let bytes = UnsafeRawBufferPointer(raw)
            guard let uri = try? SIPURI.parse(bytes, 0, bytes.count), uri.host.isPresent else { return nil }
            var host = String(decoding: bytes[Int(uri.host.start)..<Int(uri.host.end)], as: UTF8.self)
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            return SocketAddress(numericHost: host, port: uri.port ?? 5060)
        }
    }

    private func sendOptions(to destination: SocketAddress, contact: String, socket: Int) {
        guard let local = shard.localAddress(ofSocket: socket) else { return }
        serial += 1
        let host = local.isIPv6 ? "[\(local.hostString)]" : local.hostString
        let transport = StreamHandle.isStream(socket) ? "TCP" : "UDP"
        let request = "\(method) \(contact) SIP/2.0\r\n"
            + "Via: SIP/2.0/\(transport) \(host):\(local.port);branch=\(Self.pingBranchPrefix)-\(shard.index)-\(serial)\r\n"
            + "From: <\(from)>;tag=\(shard.index)-\(serial)\r\nTo: <\(contact)>\r\n"
            + "Call-ID: natping-\(shard.index)-\(serial)@\(host)\r\nCSeq: 1 \(method)\r\nMax-Forwards: 70\r\n"
            + "Content-Length: 0\r\n\r\n"
        send(Array(request.utf8), to: destination, socket: socket)
    }

    private func send(_ bytes: [UInt8], to destination: SocketAddress, socket: Int) {
        if !shard.sendOwn(bytes, to: destination, preferring: socket) { shard.counters.dropped += 1 }
    }
}
