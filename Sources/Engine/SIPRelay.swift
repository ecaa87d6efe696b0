import Glibc
import SIP

/// What a request gets changed on its way out, beyond what every proxied request gets (our Via,
/// Max-Forwards, received/rport). Views into memory the caller keeps valid during the call.
public struct RelayEdits {
    public var requestURI: UnsafeRawBufferPointer?
    public var popRoute = false
    /// Whole header lines (CRLF-terminated) placed below the received Vias and above a received Record-Route,
    /// e.g. our Record-Route.
    public var insertedHeaders: UnsafeRawBufferPointer?
    /// Whole header lines appended after the received ones (`append_hf`).
    public var appendedHeaders: UnsafeRawBufferPointer?
    /// Answer the sender's port in `rport` even if its Via did not ask (`force_rport()`).
    public var forceRport = false
    public var maxForwardsWhenAbsent = 70
    public var removedKinds = SIPHeaderKindSet()

    public init() {}
}

/// Where a request goes next: an address, and the transport its URI asks for (`;transport=tcp`, `tcp:` in a
/// script's destination); UDP when nothing says.
public struct NextHop: Equatable, Sendable {
    public var address: SocketAddress
    public var transport: SIPTransport

    public init(address: SocketAddress, transport: SIPTransport = .udp) {
        self.address = address
        self.transport = transport
    }

    /// The transport a URI's `transport` parameter names; UDP without one, or for one ringsip does not carry.
    public static func transport(of uri: SIPURI, in bytes: UnsafeRawBufferPointer) -> SIPTransport {
        guard let value = SIPURI.parameter("transport", in: uri.parameters, of: bytes) else { return .udp }
        return SIPTransport.classify(bytes, Int(value.start), Int(value.end)) == .tcp ? .tcp : .udp
    }
}

/// Who the proxy says it is, from the script's globals: what its Via and Record-Route carry (`advertised_*`,
/// `as` on a socket), which other names are "myself" (`alias`), and its replies' Server header.
public struct RelayIdentity: Sendable {
    /// Per listen address (as bound): what that socket advertises instead of its own address.
    public var advertisedBySocket: [(address: SocketAddress, advertised: AdvertisedAddress)] = []
    /// `advertised_address` / `advertised_port`: for every socket without its own.
    public var advertised: AdvertisedAddress?
    /// `alias = host[:port]`: names that are also us (a nil port: any port).
    public var aliases: [(host: String, port: UInt16?)] = []
    /// The value of the Server header of our replies (`server_header`); nil: none (`server_signature = no`).
    public var server: String? = "ringsip"

    public init() {}
}

/// The stateless proxy's moves (RFC 3261 §16.11), shared by the script's `forward()`/`sl_send_reply()` and
/// by the plain `StatelessRelay` handler: one implementation behind both.
///
/// One instance per shard; its scratch memory is allocated once, so each move allocates nothing.
public final class SIPRelay {
    /// Our sent-by per listen address (`127.0.0.1:5060`, `[::1]:5060`), learned from the shard on first use.
    private var sentBy: [SentBy] = []
    /// The same for each TCP listen address (`streamListenAddresses`), whose Record-Route says `transport=tcp`.
    private var streamSentBy: [SentBy] = []
    private var streamFamilies: [Int32] = []
    /// The TCP listen addresses, learned with the rest (read per forwarded request: not through `any ShardIO`).
    private var streamAddresses: [SocketAddress] = []
    private let branch: UnsafeMutableRawBufferPointer
    private let sourceHost: UnsafeMutableRawBufferPointer
    private static let branchPrefix: StaticString = "z9hG4bKrs"
    /// Names we answer to besides our sockets' sent-by: aliases and the bound addresses behind advertised ones.
    private var otherNames: [(host: [UInt8], port: UInt16?)] = []
    private var server: [UInt8]? = Array("ringsip".utf8)
    /// - Precondition: set before the relay's first use (the sent-by of each socket is computed then).
    public var identity = RelayIdentity() {
        didSet { server = identity.server.map { Array($0.utf8) } }
    }

    struct SentBy {
        let host: UnsafeMutableRawBufferPointer
        let port: UInt16
        /// `Record-Route: <sip:HOST:PORT;lr>\r\n` for this address.
        let recordRoute: UnsafeMutableRawBufferPointer
    }

    public init() {
        branch = .allocate(byteCount: 32, alignment: 8)
        sourceHost = .allocate(byteCount: 64, alignment: 8)
    }

    deinit {
        branch.deallocate()
        sourceHost.deallocate()
        for entry in sentBy + streamSentBy {
            entry.host.deallocate()
            entry.recordRoute.deallocate()
        }
    }

    // MARK: - Requests

    /// Whether the last `forwardRequest` failed because the request, as forwarded, is larger than a datagram:
    /// the caller answers 513 Message Too Large (RFC 3261 §18.1.1 would switch to TCP, which ringsip lacks).
    public private(set) var lastForwardTooLarge = false

    /// Builds the forwarded request into a send buffer and queues it to `destination`.
    /// Returns false (and counts a drop) when it cannot: no socket of that family, no send buffer, or a
    /// message that cannot be rebuilt (e.g. Max-Forwards already 0).
    @discardableResult
    public func forwardRequest(_ message: SIPMessage, from source: SocketAddress, arrivedOn socketIndex: Int,
                               to destination: SocketAddress, transport: SIPTransport = .udp, edits: RelayEdits,
                               on shard: any ShardIO) -> Bool {
        lastForwardTooLarge = false
        guard let socket = socketToward(destination, transport: transport, preferring: socketIndex, on: shard),
              let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return false
        }
        let branchLength = writeBranch(message)
        let branch = UnsafeRawBufferPointer(rebasing: self.branch[0..<branchLength])
        guard let length = buildRequest(message, from: source, socket: socket, toward: destination, branch: branch,
                                        edits: edits, into: out.buffer) else {
            shard.discard(out)
            shard.counters.dropped += 1
            // Built into a full-size send buffer: a request that does not fit there is too large for UDP.
            lastForwardTooLarge = message.length + (edits.insertedHeaders?.count ?? 0)
                + (edits.appendedHeaders?.count ?? 0) + 200 > out.buffer.count
            return false
        }
        shard.send(out, length: length, to: destination, socketIndex: socket)
        return true
    }

    /// The socket a request to `destination` leaves from; nil when none has its family, or when the
    /// destination is this proxy (sending to ourselves would only come back until Max-Forwards runs out).
    /// Over TCP: `StreamHandle.toward`, which the shard meets with a connection to the destination.
    public func socketToward(_ destination: SocketAddress, transport: SIPTransport = .udp, preferring socketIndex: Int,
                             on shard: any ShardIO) -> Int? {
        learnLocalAddresses(shard)
        guard !shard.localAddresses.contains(destination), !streamAddresses.contains(destination) else {
            return nil
        }
        if transport == .tcp { return StreamHandle.toward }
        return shard.socketIndex(for: destination, preferring: socketIndex)
    }

    /// Who we say we are on a message leaving from `socket` toward an address of `family`: the socket's
    /// sent-by, or for TCP a TCP listen address of that family (the first UDP one when there is none, so a
    /// proxy that only connects out still names an address).
    private func ourSentBy(socket: Int, family: Int32) -> (sentBy: SentBy, transport: SIPTransport) {
        guard StreamHandle.isStream(socket) else { return (sentBy[socket], .udp) }
        if let i = streamFamilies.firstIndex(of: family) ?? streamFamilies.indices.first { return (streamSentBy[i], .tcp) }
        return (sentBy[0], .tcp)
    }

    /// Writes the request as forwarded from `socket` with `branch` in our Via (a transaction's own branch,
    /// or the stateless one) into `buffer`; nil when it cannot be rebuilt or does not fit.
    public func buildRequest(_ message: SIPMessage, from source: SocketAddress, socket: Int, toward destination: SocketAddress,
                             branch: UnsafeRawBufferPointer, edits: RelayEdits,
                             into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let via = message.topVia!
        let (ours, transport) = ourSentBy(socket: socket, family: destination.family)
        var options = SIPForwardingOptions()
        options.popRoute = edits.popRoute
        options.requestURI = edits.requestURI
        options.insertedHeaders = edits.insertedHeaders
        options.appendedHeaders = edits.appendedHeaders
        options.removedKinds = edits.removedKinds
        options.maxForwardsWhenAbsent = edits.maxForwardsWhenAbsent
        options.via = .parts(transport: transport, host: UnsafeRawBufferPointer(ours.host), port: ours.port, branch: branch)
        options.received = receivedHost(message, source)
        if via.hasRport || edits.forceRport { options.rport = source.port }
        return try? message.writeForwardedRequest(into: buffer, options)
    }

    /// The Record-Route line for the listen address a request to `destination` leaves from; for a request that
    /// arrived over TCP, a TCP listen address (with `transport=tcp`), so the dialog's requests come back that way.
    public func recordRouteLine(toward destination: SocketAddress?, arrivedOn socketIndex: Int,
                                on shard: any ShardIO) -> UnsafeRawBufferPointer {
        learnLocalAddresses(shard)
        if StreamHandle.isStream(socketIndex) {
            return UnsafeRawBufferPointer(ourSentBy(socket: socketIndex, family: destination?.family ?? Int32(AF_INET)).sentBy.recordRoute)
        }
        let socket = destination.flatMap { shard.socketIndex(for: $0, preferring: socketIndex) } ?? socketIndex
        return UnsafeRawBufferPointer(sentBy[socket].recordRoute)
    }

    /// The RFC 3261 branch of the sender's Via identifies the transaction and is shared by its CANCEL and
    /// its non-2xx ACK, so our branch is a hash of it. For an RFC 2543 sender (no magic cookie) the hash
    /// covers what identifies its transaction instead (§16.11), leaving out the To tag and the CSeq method
    /// so that the CANCEL and ACK still match.
    private func writeBranch(_ message: SIPMessage) -> Int {
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
        writer.write(SIPRelay.branchPrefix)
        writer.write(hex: hasher.value)
        return writer.count
    }

    /// `received=` is due when the sent-by host is not the address the request came from (§18.2.1).
    /// Compared as addresses (inet_pton), so the usual case — a numeric sent-by equal to the source — does
    /// not format the source address (inet_ntop goes through sprintf: ~3 % of the daemon's CPU).
    private func receivedHost(_ message: SIPMessage, _ source: SocketAddress) -> UnsafeRawBufferPointer? {
        let via = message.topVia!
        let written = message.bytes(of: via.host)
        if let sentBy = SocketAddress(numericHost: written, port: source.port), sentBy == source { return nil }
        let length = source.writeHost(into: sourceHost)
        let host = UnsafeRawBufferPointer(rebasing: sourceHost[0..<length])
        return equalIgnoringBrackets(written, host) ? nil : host
    }

    /// Whether the first Route names us (so a loose router pops it, RFC 3261 §16.4).
    public func topRouteIsOurs(_ message: SIPMessage, on shard: any ShardIO) -> Bool {
        guard let route = message.firstRoute else { return false }
        return isOurs(message.bytes(of: route.uri.host), port: route.uri.port, on: shard)
    }

    /// Where a request goes when nothing else says: the top Route (after ours, if popped), else the
    /// Request-URI (or `requestURI` when the script changed it). Numeric hosts only: resolving a name
    /// would block the shard.
    public func defaultNextHop(_ message: SIPMessage, skippingFirstRoute: Bool,
                               requestURI: UnsafeRawBufferPointer? = nil) -> NextHop? {
        var routes = message.values(of: .route)
        if skippingFirstRoute { _ = routes.next() }
        if let span = routes.next() {
            guard let route = try? SIPNameAddr.parse(message.bytes, span) else { return nil }
            return SIPRelay.nextHop(of: route.uri, in: message.bytes)
        }
        if let requestURI {
            guard let uri = try? SIPURI.parse(requestURI, 0, requestURI.count) else {
                return nil
            }
            return SIPRelay.nextHop(of: uri, in: requestURI)
        }
        return message.requestURI.flatMap { SIPRelay.nextHop(of: $0, in: message.bytes) }
    }

    /// Where a SIP URI points and over which transport.
    public static func nextHop(of uri: SIPURI, in bytes: UnsafeRawBufferPointer) -> NextHop? {
        address(of: uri, in: bytes).map { NextHop(address: $0, transport: NextHop.transport(of: uri, in: bytes)) }
    }

    /// Where a SIP URI points: its maddr, else its host, at its port or 5060. Numeric hosts only.
    public static func address(of uri: SIPURI, in bytes: UnsafeRawBufferPointer) -> SocketAddress? {
        var host = uri.host
        if let maddr = SIPURI.parameter("maddr", in: uri.parameters, of: bytes), !maddr.isEmpty { host = maddr }
        guard host.isPresent else { return nil }
        let text = UnsafeRawBufferPointer(rebasing: bytes[Int(host.start)..<Int(host.end)])
        return SocketAddress(numericHost: text, port: uri.port ?? 5060)
    }

    // MARK: - Responses

    /// Relays a response statelessly: our Via must be on top; it is removed and the response goes where
    /// the next Via says (§18.2.2 for UDP: maddr, else received or sent-by host, at rport or sent-by port).
    @discardableResult
    public func forwardResponse(_ message: SIPMessage, arrivedOn socketIndex: Int, on shard: any ShardIO) -> Bool {
        learnLocalAddresses(shard)
        let bytes = message.bytes
        guard let top = message.topVia, isOurs(message.bytes(of: top.host), port: top.port, on: shard) else {
            shard.counters.dropped += 1
            return false
        }
        var vias = message.values(of: .via)
        _ = vias.next()
        guard let nextSpan = vias.next(), let next = try? SIPVia.parse(bytes, nextSpan) else {
            shard.counters.dropped += 1
            return false
        }
        let port = next.rportValue ?? next.port ?? 5060
        let host = next.maddr.isPresent && !next.maddr.isEmpty ? next.maddr
            : next.received.isPresent && !next.received.isEmpty ? next.received : next.host
        // Over TCP when the next Via says so (§18.2.2): on the connection the request came on, which the shard
        // finds by the address (received, rport), else a new one to the sent-by.
        let stream = next.transport == .tcp
        guard let destination = SocketAddress(numericHost: message.bytes(of: host), port: port),
              let socket = stream ? StreamHandle.toward : shard.socketIndex(for: destination, preferring: socketIndex),
              let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return false
        }
        do {
            let length = try message.writeForwardedResponse(into: out.buffer)
            shard.send(out, length: length, to: destination, socketIndex: socket)
            return true
        } catch {
            shard.discard(out)
            shard.counters.dropped += 1
            return false
        }
    }

    // MARK: - Our own replies

    /// Answers a request statelessly, back to where it came from (§18.2.2: the source address, at the
    /// source port when the Via asked for rport or the script called force_rport(), else at the Via's port).
    @discardableResult
    public func reply(to message: SIPMessage, status: Int, reason: UnsafeRawBufferPointer, from source: SocketAddress,
                      arrivedOn socketIndex: Int, headers: UnsafeRawBufferPointer? = nil, forceRport: Bool = false,
                      on shard: any ShardIO) -> Bool {
        guard message.topVia != nil, message.method != .ack, let out = shard.makeDatagram() else {
            shard.counters.dropped += 1
            return false
        }
        guard let length = buildReply(to: message, status: status, reason: reason, from: source, headers: headers,
                                      forceRport: forceRport, into: out.buffer) else {
            shard.discard(out)
            shard.counters.dropped += 1
            return false
        }
        shard.send(out, length: length, to: responseDestination(message, from: source, forceRport: forceRport),
                   socketIndex: socketIndex)
        return true
    }

    /// Where responses to a request go (§18.2.2 for UDP): its source address, at the source port when its
    /// Via asked for rport (RFC 3581 §4) or `forceRport` (the script's force_rport(), for a client behind NAT
    /// that does not ask), else at the Via's port.
    public func responseDestination(_ message: SIPMessage, from source: SocketAddress,
                                    forceRport: Bool = false) -> SocketAddress {
        var destination = source
        if !forceRport, let via = message.topVia, !via.hasRport { destination.port = via.port ?? 5060 }
        return destination
    }

    /// Writes our reply to a request into `buffer`: its top Via gets `received` when the source address is not
    /// the Via's host (§18.2.1), and `rport` with the source port when the Via asked for it or `forceRport`.
    /// `headers`: whole lines (CRLF-terminated) to add, e.g. a 503's Retry-After.
    public func buildReply(to message: SIPMessage, status: Int, reason: UnsafeRawBufferPointer, from source: SocketAddress,
                           headers: UnsafeRawBufferPointer? = nil, forceRport: Bool = false,
                           into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        guard let via = message.topVia else { return nil }
        let received = receivedHost(message, source)
        return server.withOptionalBytes { server in
            try? message.writeReply(into: buffer, statusCode: status, reason: reason, server: server,
                                    received: received, rport: via.hasRport || forceRport ? source.port : nil,
                                    headers: headers)
        }
    }

    @discardableResult
    public func reply(to message: SIPMessage, status: Int, reason: StaticString, from source: SocketAddress,
                      arrivedOn socketIndex: Int, on shard: any ShardIO) -> Bool {
        reply(to: message, status: status,
              reason: UnsafeRawBufferPointer(start: reason.utf8Start, count: reason.utf8CodeUnitCount),
              from: source, arrivedOn: socketIndex, on: shard)
    }

    // MARK: - Who we are

    private func learnLocalAddresses(_ shard: any ShardIO) {
        guard sentBy.isEmpty && streamSentBy.isEmpty else { return }
        sentBy = shard.localAddresses.map { learn($0, transportParameter: "") }
        streamSentBy = shard.streamListenAddresses.map { learn($0, transportParameter: ";transport=tcp") }
        streamAddresses = shard.streamListenAddresses
        streamFamilies = streamAddresses.map(\.family)
        otherNames += identity.aliases.map { (Array($0.host.utf8), $0.port) }
    }

    private func learn(_ address: SocketAddress, transportParameter: String) -> SentBy {
        let advertised = identity.advertisedBySocket.first { $0.address == address }?.advertised ?? identity.advertised
        var hostText = address.isIPv6 ? "[\(address.hostString)]" : address.hostString
        var port = address.port
        if let advertised {
            otherNames.append((Array(hostText.utf8), address.port))
            if let host = advertised.host { hostText = host }
            if let advertisedPort = advertised.port { port = advertisedPort }
        }
        let host = UnsafeMutableRawBufferPointer.allocate(byteCount: max(hostText.utf8.count, 1), alignment: 1)
        host.copyBytes(from: hostText.utf8)
        let line = Array("Record-Route: <sip:\(hostText):\(port)\(transportParameter);lr>\r\n".utf8)
        let recordRoute = UnsafeMutableRawBufferPointer.allocate(byteCount: line.count, alignment: 1)
        recordRoute.copyBytes(from: line)
        return SentBy(host: UnsafeMutableRawBufferPointer(rebasing: host[0..<hostText.utf8.count]), port: port,
                      recordRoute: recordRoute)
    }

    /// Whether host:port (port absent = 5060) names one of our listen addresses.
    public func isOurs(_ host: UnsafeRawBufferPointer, port: UInt16?, on shard: any ShardIO) -> Bool {
        learnLocalAddresses(shard)
        let port = port ?? 5060
        // Two loops, not one over `sentBy + streamSentBy`: that would build an array per message.
        for entry in sentBy where entry.port == port && equalIgnoringBrackets(host, UnsafeRawBufferPointer(entry.host)) {
            return true
        }
        for entry in streamSentBy where entry.port == port && equalIgnoringBrackets(host, UnsafeRawBufferPointer(entry.host)) {
            return true
        }
        for name in otherNames where name.port == nil || name.port == port {
            if name.host.withUnsafeBytes({ equalIgnoringBrackets(host, $0) }) { return true }
        }
        return false
    }

    /// Whether `host` (any port) names one of our listen addresses: for `uri == myself` without a port.
    public func isOurHost(_ host: UnsafeRawBufferPointer, on shard: any ShardIO) -> Bool {
        learnLocalAddresses(shard)
        return sentBy.contains { equalIgnoringBrackets(host, UnsafeRawBufferPointer($0.host)) }
            || streamSentBy.contains { equalIgnoringBrackets(host, UnsafeRawBufferPointer($0.host)) }
            || otherNames.contains { name in name.host.withUnsafeBytes { equalIgnoringBrackets(host, $0) } }
    }
}

extension Optional where Wrapped == [UInt8] {
    /// The bytes as a raw buffer for the call, or nil.
    func withOptionalBytes<R>(_ body: (UnsafeRawBufferPointer?) -> R) -> R {
        guard let bytes = self else { return body(nil) }
        return bytes.withUnsafeBytes { body($0) }
    }
}

/// Byte equality, ASCII case-insensitive, treating `[::1]` and `::1` alike.
public func equalIgnoringBrackets(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
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
