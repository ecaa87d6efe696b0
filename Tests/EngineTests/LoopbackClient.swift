import Glibc
@testable import Engine

/// A blocking UDP socket for driving a running engine from a test, with a receive timeout so a missing
/// reply fails the test instead of hanging it.
final class LoopbackClient {
    let fd: Int32
    let address: SocketAddress

    init(timeoutMilliseconds: Int = 2000) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        precondition(fd >= 0)
        self.fd = fd
        var storage = SocketAddress(numericHost: "127.0.0.1", port: 0)!.storage
        _ = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: (timeoutMilliseconds % 1000) * 1000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var big: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, 4)
        address = Syscalls.localAddress(of: fd)!
    }

    deinit { close(fd) }

    func send(_ text: String, to destination: SocketAddress) {
        var storage = destination.storage
        let bytes = Array(text.utf8)
        let n = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, destination.length) }
        }
        precondition(n == bytes.count)
    }

    /// The next datagram as text, or nil after the timeout.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var n = recv(fd, &buffer, buffer.count, 0)
        while n < 0 && errno == EINTR { n = recv(fd, &buffer, buffer.count, 0) }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}
