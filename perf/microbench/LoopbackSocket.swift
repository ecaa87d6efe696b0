import Glibc
import Engine

/// A blocking UDP socket on 127.0.0.1 with a receive timeout, standing in for a SIP peer.
final class LoopbackSocket {
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
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        address = withUnsafeBytes(of: bound) { SocketAddress(raw: $0.baseAddress!, length: Int(length))! }
    }

    deinit { close(fd) }

    func send(_ text: String, to destination: SocketAddress) {
        var storage = destination.storage
        let bytes = Array(text.utf8)
        _ = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, destination.length) }
        }
    }

    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var n = recv(fd, &buffer, buffer.count, 0)
        while n < 0 && errno == EINTR { n = recv(fd, &buffer, buffer.count, 0) }
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }
}
