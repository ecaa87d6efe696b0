import Glibc
import SIP

public struct RelayConfiguration: Sendable {
    /// The next hop for every request; nil routes by the top Route, else the Request-URI.
    public var forward: SocketAddress?

    public init(forward: SocketAddress? = nil) {
        self.forward = forward
    }
}

/// RFC 3261 §16.11 stateless proxying, the daemon's first job and later the script's `forward()`.
///
/// Requests: validated, Max-Forwards checked (483 at 0) and decremented, our Route popped, a Via added whose
/// branch is derived from the request (so a retransmission, its CANCEL and its non-2xx ACK get the same one),
/// received/rport added to the sender's Via, then sent to the next hop. Responses: the top Via must be ours;
/// it is removed and the response goes where the next Via says (§18.2.2). A request too broken to answer is
/// dropped and counted; one whose Via can be read gets 400 (or 505) naming the problem.
///
/// One instance per shard: the parser and scratch memory are reused, so relaying allocates nothing.
public final class StatelessRelay: ShardHandler {
    let configuration: RelayConfiguration
    let message = SIPMessage()
    /// Our sent-by per listen address (`127.0.0.1:5060`, `[::1]:5060`): the host part for our Via, the whole
    /// for recognising our Via on responses and our Route on requests.
    private var sentBy: [SentBy] = []
    private let branch: UnsafeMutableRawBufferPointer
    private let sourceHost: UnsafeMutableRawBufferPointer
    private static let branchPrefix: StaticString = "z9hG4bKrs"
    private static let server: StaticString = "ringsip"

    struct SentBy {
        let host: UnsafeMutableRawBufferPointer
        let port: UInt16
    }

    public init(configuration: RelayConfiguration) {
        self.configuration = configuration
        branch = .allocate(byteCount: 32, alignment: 8)
        sourceHost = .allocate(byteCount: 64, alignment: 8)
    }

    deinit {
        branch.deallocate()
        sourceHost.deallocate()
        for entry in sentBy { entry.host.deallocate() }
    }

    public func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        if sentBy.isEmpty { learnLocalAddresses(shard) }
        do {
            try message.parse(datagram.bytes)
            try message.validate()
        } catch {
            // A datagram of CRLFs is a keep-alive (RFC 5626 §3.5.1): nothing to count, nothing to answer.
            guard error.reason != .empty else { return .done }
            shard.counters.parseErrors += 1
            if message.isAnswerable {
                reply(error.reason.statusCode, error.reason.phrase, to: datagram, on: shard)
            } else {
                shard.counters.dropped += 1
            }
            return .done
        }
        if message.isRequest {
            relayRequest(datagram, on: shard)
        } else {
            relayResponse(on: shard, arrivedOn: datagram.socketIndex)
        }
        return .done
    }

    // MARK: - Requests

    private func relayRequest(_ datagram: borrowing Datagram, on shard: Shard) {
        if message.maxForwards == 0 {
            if message.method == .ack { shard.counters.dropped += 1 } else { reply(483, "Too Many Hops", to: datagram, on: shard) }
            return
        }
        let popRoute = topRouteIsOurs()
        guard let destination = nextHop(skippingFirstRoute: popRoute) else {
            // No numeric next hop: resolving a name would block the shard, so say so instead of guessing.
            if message.method == .ack { shard.counters.dropped += 1 } else {
                reply(503, "No numeric next hop", to: datagram, on: shard)
            }
            return
        }
        guard let socket = shard.socketIndex(for: destination, preferring: datagram.socketIndex),
              let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return
        }
        let branchLength = writeBranch()
        let received = receivedHost(for: datagram.source)
        let via = message.topVia!
        let ours = sentBy[socket]
        var options = SIPForwardingOptions()
        options.popRoute = popRoute
        options.via = .parts(transport: .udp, host: UnsafeRawBufferPointer(ours.host), port: ours.port,
                             branch: UnsafeRawBufferPointer(rebasing: branch[0..<branchLength]))
        options.received = received
        if via.hasRport { options.rport = datagram.source.port }
        do {
            let length = try message.writeForwardedRequest(into: out.buffer, options)
            shard.send(out, length: length, to: destination, socketIndex: socket)
        } catch {
            shard.discard(out)
            shard.counters.dropped += 1
        }
    }

    /// The RFC 3261 branch of the sender's Via identifies the transaction and is shared by its CANCEL and
    /// its non-2xx ACK, so our branch is a hash of it. For an RFC 2543 sender (no magic cookie) the hash
    /// covers what identifies its transaction instead (§16.11), leaving out the To tag and the CSeq method
    /// so that the CANCEL and ACK still match.
    private func writeBranch() -> Int {
        var hasher = FNV1a64()
        let via = message.topVia!
        if via.hasRFC3261Branch(in: message.bytes) {
            hasher.combine(message.bytes(of: via.branch))
            hasher.combine(byte: 0)
            hasher.combine(message.bytes(of: via.host))
            hasher.combine(UInt64(via.port ?? 0))
        } else {
            hasher.combine(message.bytes(of: message.requestURIText))
            hasher.combine(byte: 0)
            hasher.combine(message.bytes(of: via.span))
            hasher.combine(byte: 0)
            if let callID = message.callID { hasher.combine(message.bytes(of: callID)) }
            hasher.combine(byte: 0)
            if let from = message.from { hasher.combine(message.bytes(of: from.tag)) }
            hasher.combine(UInt64(message.cseq?.number ?? 0))
        }
        var writer = SIPWriter(branch)
        writer.write(StatelessRelay.branchPrefix)
        writer.write(hex: hasher.value)
        return writer.count
    }

    /// `received=` is due when the sent-by host is not the address the request came from (§18.2.1).
    private func receivedHost(for source: SocketAddress) -> UnsafeRawBufferPointer? {
        let length = source.writeHost(into: sourceHost)
        let host = UnsafeRawBufferPointer(rebasing: sourceHost[0..<length])
        let written = message.bytes(of: message.topVia!.host)
        return equalIgnoringBrackets(written, host) ? nil : host
    }

    private func topRouteIsOurs() -> Bool {
        var routes = message.values(of: .route)
        guard let first = routes.next(), let route = try? SIPNameAddr.parse(message.bytes, first) else { return false }
        return isOurs(host: route.uri.host, port: route.uri.port)
    }

    private func nextHop(skippingFirstRoute: Bool) -> SocketAddress? {
        if let forward = configuration.forward { return forward }
        var routes = message.values(of: .route)
        if skippingFirstRoute { _ = routes.next() }
        if let span = routes.next() {
            guard let route = try? SIPNameAddr.parse(message.bytes, span) else { return nil }
            return address(of: route.uri)
        }
        return message.requestURI.flatMap(address(of:))
    }

    /// Where a SIP URI points: its maddr, else its host, at its port or 5060. Numeric hosts only.
    private func address(of uri: SIPURI) -> SocketAddress? {
        let bytes = message.bytes
        let host = SIPURI.parameter("maddr", in: uri.parameters, of: bytes).flatMap { $0.isEmpty ? nil : $0 } ?? uri.host
        return SocketAddress(numericHost: message.bytes(of: host), port: uri.port ?? 5060)
    }

    // MARK: - Responses

    private func relayResponse(on shard: Shard, arrivedOn socketIndex: Int) {
        let bytes = message.bytes
        guard let top = message.topVia, isOurs(host: top.host, port: top.port) else {
            shard.counters.dropped += 1
            return
        }
        var vias = message.values(of: .via)
        _ = vias.next()
        guard let nextSpan = vias.next(), let next = try? SIPVia.parse(bytes, nextSpan) else {
            shard.counters.dropped += 1
            return
        }
        // §18.2.2 for UDP: maddr, else the received address (or sent-by host) at rport (or sent-by port).
        let port = next.rportValue ?? next.port ?? 5060
        let host = next.maddr.isPresent && !next.maddr.isEmpty ? next.maddr
            : next.received.isPresent && !next.received.isEmpty ? next.received : next.host
        guard let destination = SocketAddress(numericHost: message.bytes(of: host), port: port),
              let socket = shard.socketIndex(for: destination, preferring: socketIndex),
              let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return
        }
        do {
            let length = try message.writeForwardedResponse(into: out.buffer)
            shard.send(out, length: length, to: destination, socketIndex: socket)
        } catch {
            shard.discard(out)
            shard.counters.dropped += 1
        }
    }

    // MARK: - Our own replies

    private func reply(_ status: Int, _ reason: StaticString, to datagram: borrowing Datagram, on shard: Shard) {
        guard let via = message.topVia, let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return
        }
        var destination = datagram.source
        if !via.hasRport { destination.port = via.port ?? 5060 }
        let received = receivedHost(for: datagram.source)
        let server = UnsafeRawBufferPointer(start: StatelessRelay.server.utf8Start,
                                            count: StatelessRelay.server.utf8CodeUnitCount)
        do {
            let length = try message.writeReply(into: out.buffer, statusCode: status, reason: reason, server: server,
                                                received: received, rport: via.hasRport ? datagram.source.port : nil)
            shard.send(out, length: length, to: destination, socketIndex: datagram.socketIndex)
        } catch {
            shard.discard(out)
            shard.counters.dropped += 1
        }
    }

    // MARK: - Who we are

    private func learnLocalAddresses(_ shard: Shard) {
        for address in shard.localAddresses {
            let host = UnsafeMutableRawBufferPointer.allocate(byteCount: 48, alignment: 1)
            var length = 0
            if address.isIPv6 {
                host[0] = UInt8(ascii: "[")
                length = 1 + address.writeHost(into: UnsafeMutableRawBufferPointer(rebasing: host[1..<46]))
                host[length] = UInt8(ascii: "]")
                length += 1
            } else {
                length = address.writeHost(into: host)
            }
            sentBy.append(SentBy(host: UnsafeMutableRawBufferPointer(rebasing: host[0..<length]), port: address.port))
        }
    }

    /// Whether host:port (port absent = 5060) names one of our listen addresses.
    private func isOurs(host: SIPSpan, port: UInt16?) -> Bool {
        let written = message.bytes(of: host)
        let port = port ?? 5060
        for entry in sentBy where entry.port == port && equalIgnoringBrackets(written, UnsafeRawBufferPointer(entry.host)) {
            return true
        }
        return false
    }
}

/// Byte equality, ASCII case-insensitive, treating `[::1]` and `::1` alike.
func equalIgnoringBrackets(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    var a = a[...], b = b[...]
    if a.first == UInt8(ascii: "["), a.last == UInt8(ascii: "]") { a = a.dropFirst().dropLast() }
    if b.first == UInt8(ascii: "["), b.last == UInt8(ascii: "]") { b = b.dropFirst().dropLast() }
    guard a.count == b.count else { return false }
    return zip(a, b).allSatisfy { asciiLowercase($0) == asciiLowercase($1) }
}

@inline(__always)
func asciiLowercase(_ c: UInt8) -> UInt8 {
    c &- 0x41 < 26 ? c | 0x20 : c
}
