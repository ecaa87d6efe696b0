import CUring
import Glibc

/// A non-blocking UDP socket connected to one peer, for clients that run on a shard's ring (the RADIUS client):
/// the kernel fills in the destination on `submitWrite` and drops datagrams from any other source before a
/// `submitRead` sees them. Created and closed on control paths only, never per message.
public enum UDPClientSocket {
    /// A socket connected to `peer` (bound to an ephemeral port of the matching family).
    public static func connected(to peer: SocketAddress) -> Result<Int32, Errno> {
        let type = Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        let fd = socket(peer.family, type, 0)
        guard fd >= 0 else { return .failure(Errno(rawValue: errno)) }
        var storage = peer.storage
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, peer.length) }
        }
        guard rc == 0 else {
            let error = Errno(rawValue: errno)
            Glibc.close(fd)
            return .failure(error)
        }
        return .success(fd)
    }

    /// The local address the socket was given (its ephemeral port).
    public static func localAddress(of fd: Int32) -> SocketAddress? {
        Syscalls.localAddress(of: fd)
    }

    /// Shuts the socket down first: a read still in flight on the ring holds the file open past `close`, and the
    /// shutdown makes it complete (with 0) instead of waiting for a datagram into a buffer about to be freed.
    public static func close(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_RDWR))
        Syscalls.closeDescriptor(fd)
    }
}
