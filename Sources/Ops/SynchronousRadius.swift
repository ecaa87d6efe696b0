import Engine
import Glibc
import Script

/// The blocking side of one shard's aaa_radius, for `radius_send_auth`/`radius_send_acct` outside `async()`
/// (as OpenSIPS runs them): the request is sent and its answer waited for on the shard's thread, sent again
/// every `retransmitMilliseconds` until the timeout. The whole shard stops meanwhile, so the check warns at
/// every such call site.
///
/// Its own socket, not the ring client's: that one always has a read in flight, which would take the answer.
/// One request at a time (the shard waits for it), so a late answer to an earlier request that timed out is
/// told apart by its identifier and authenticator, and dropped.
final class BlockingRadius {
    let server: SocketAddress
    let secret: [UInt8]
    let retransmitMilliseconds: UInt64 = 1000
    private var socket: Int32 = -1
    private let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: RadiusPacket.maximumLength, alignment: 16)
    private let response = UnsafeMutableRawBufferPointer.allocate(byteCount: RadiusPacket.maximumLength, alignment: 16)
    private var identifier: UInt8 = 0
    private var random = SystemRandomNumberGenerator()

    init(server: SocketAddress, secret: [UInt8]) {
        self.server = server
        self.secret = secret
    }

    deinit {
        if socket >= 0 { UDPClientSocket.close(socket) }
        packet.deallocate()
        response.deallocate()
    }

    /// Sends the request and waits for its answer. The attributes returned point into this object's buffer
    /// and stay valid until the next exchange.
    func exchange(accounting: Bool, userName: UnsafeRawBufferPointer, password: UnsafeRawBufferPointer,
                  attributes: borrowing RadiusAttributes, timeoutMilliseconds: UInt64)
        -> (code: RadiusCode, attributes: UnsafeRawBufferPointer) {
        let none = UnsafeRawBufferPointer(start: nil, count: 0)
        if socket < 0 {
            guard case .success(let fd) = UDPClientSocket.connected(to: server) else { return (.failed, none) }
            socket = fd
        }
        identifier &+= 1
        let written = accounting
            ? RadiusPacket.writeAccounting(into: packet, identifier: identifier, attributes: attributes, secret: secret)
            : RadiusPacket.writeAccess(into: packet, identifier: identifier, userName: userName, password: password,
                                       attributes: attributes, secret: secret, random: &random)
        guard let length = written else { return (.failed, none) }
        let start = MonotonicClock.milliseconds()
        let deadline = start + timeoutMilliseconds
        var nextSend = start
        while true {
            let now = MonotonicClock.milliseconds()
            if now >= deadline { return (.timeout, none) }
            if now >= nextSend {
                // A failed send (nothing listens: ECONNREFUSED from an earlier ICMP) is retried with the rest.
                _ = send(socket, packet.baseAddress, length, Int32(MSG_NOSIGNAL))
                nextSend = now + retransmitMilliseconds
            }
            var ready = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let wait = min(deadline, nextSend) - now
            if poll(&ready, 1, Int32(clamping: wait)) <= 0 || ready.revents == 0 { continue }
            let n = recv(socket, response.baseAddress, response.count, Int32(MSG_DONTWAIT))
            guard n > 0 else { continue }
            let received = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(response)[0..<n])
            guard let responseLength = RadiusPacket.responseLength(received), received[1] == identifier,
                  let code = RadiusPacket.outcome(accounting: accounting, responseCode: received[0]),
                  RadiusPacket.verify(response: UnsafeRawBufferPointer(rebasing: received[0..<responseLength]),
                                      requestAuthenticator: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(packet)[4..<20]),
                                      secret: secret) else { continue }
            return (code, UnsafeRawBufferPointer(rebasing: received[20..<responseLength]))
        }
    }
}
