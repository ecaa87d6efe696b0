import CUring
import Glibc

// Every raw syscall the engine makes outside the ring goes through this file, so the set is easy to audit.
// None of these run per message.

enum Syscalls {
    /// A UDP socket bound to `address` with SO_REUSEPORT, so every shard can bind its own socket to the same
    /// address and the kernel spreads datagrams between them by flow hash.
    static func boundUDPSocket(_ address: SocketAddress, receiveBufferBytes: Int32) -> Result<Int32, Errno> {
        boundSharedSocket(address, type: Int32(SOCK_DGRAM.rawValue)) { fd in
            // A larger receive buffer rides out bursts while a shard is busy; failure only means the default.
            var bytes = receiveBufferBytes
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
            return 0
        }
    }

    /// A TCP socket listening on `address` with SO_REUSEPORT, one per shard: the kernel spreads new connections
    /// between the shards' sockets by flow hash, and a connection belongs to the shard that accepted it.
    static func listeningTCPSocket(_ address: SocketAddress, backlog: Int32) -> Result<Int32, Errno> {
        boundSharedSocket(address, type: Int32(SOCK_STREAM.rawValue)) { fd in listen(fd, backlog) }
    }

    /// A socket of `type` bound to `address` with SO_REUSEPORT (and IPV6_V6ONLY for IPv6), then `finish(fd)`
    /// (0 or -1 with errno set). Closed again on any failure.
    private static func boundSharedSocket(_ address: SocketAddress, type: Int32,
                                          finish: (Int32) -> Int32) -> Result<Int32, Errno> {
        let fd = socket(address.family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(Errno(rawValue: errno)) }
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        if address.isIPv6 { _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, size) }
        var storage = address.storage
        let ok = setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, size) == 0
            && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size) == 0
            && withUnsafePointer(to: &storage, {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.length) }
            }) == 0
            && finish(fd) == 0
        guard ok else {
            let error = Errno(rawValue: errno)
            close(fd)
            return .failure(error)
        }
        return .success(fd)
    }

    /// A TCP socket for a connection the shard opens (connected on the ring), or -errno.
    static func streamSocket(family: Int32) -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        return fd >= 0 ? fd : -errno
    }

    /// Sends small segments at once: a SIP message is written whole, and Nagle's delay would hold a 200 OK
    /// back until the previous segment's ACK.
    static func disableNagle(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), 1 /* TCP_NODELAY */, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// The other end of a connected socket.
    static func peerAddress(of fd: Int32) -> SocketAddress? {
        address(of: fd, getpeername)
    }

    /// Ends both directions of a connection: its multishot receive completes (0 bytes) and a send in flight fails,
    /// so the ring lets go of the socket before it is closed.
    static func shutdownStream(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Raises the soft limit on open descriptors to the hard limit (every TCP connection takes one); returns the
    /// limit now in force.
    static func raiseDescriptorLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = limit.rlim_max
            limit.rlim_cur = wanted
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 { _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        }
        return limit.rlim_cur > rlim_t(Int32.max) ? Int(Int32.max) : Int(limit.rlim_cur)
    }

    /// Whether another socket already holds `address`: a plain bind (no SO_REUSEPORT, no SO_REUSEADDR) fails with
    /// EADDRINUSE then. Checked before the shards bind theirs with SO_REUSEPORT, which would otherwise join the
    /// other process's group in silence and split the traffic with it (a second daemon started by mistake).
    static func isAddressInUse(_ address: SocketAddress, stream: Bool = false) -> Bool {
        let type = stream ? Int32(SOCK_STREAM.rawValue) : Int32(SOCK_DGRAM.rawValue)
        let fd = socket(address.family, type | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        if address.isIPv6 {
            _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        // For TCP, connections of an earlier run in TIME_WAIT would hold the port for a minute: SO_REUSEADDR
        // lets the probe past them and still fails on a socket that listens there.
        if stream { _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) }
        var storage = address.storage
        let rc = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.length) }
        }
        if rc == 0 && stream {
            // A bind succeeds beside a socket that listens with SO_REUSEADDR; listen() is what conflicts.
            return listen(fd, 1) != 0 && errno == EADDRINUSE
        }
        return rc != 0 && errno == EADDRINUSE
    }

    /// The address a socket is bound to (to learn the port the kernel chose for port 0 in tests).
    static func localAddress(of fd: Int32) -> SocketAddress? {
        address(of: fd, getsockname)
    }

    /// An address getsockname or getpeername fills in.
    private static func address(of fd: Int32,
                                _ call: (Int32, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<socklen_t>?) -> Int32)
        -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        return withUnsafeBytes(of: storage) { SocketAddress(raw: $0.baseAddress!, length: Int(length)) }
    }

    /// Every IPv4 and IPv6 address of every interface that is up, with the interface's name (start-up only:
    /// `listen = udp:eth0:5060` and `udp:*:5060`).
    static func interfaceAddresses() -> [(name: String, address: SocketAddress)] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return [] }
        defer { freeifaddrs(list) }
        var result: [(String, SocketAddress)] = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard let raw = current.pointee.ifa_addr, current.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
            let family = Int32(raw.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            let length = family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
            guard let address = SocketAddress(raw: raw, length: length) else { continue }
            result.append((String(cString: current.pointee.ifa_name), address))
        }
        return result
    }

    /// A host name's addresses through the system resolver (start-up only: it blocks).
    static func resolveHost(_ name: String) -> Result<[SocketAddress], ListenSpecError> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(name, nil, &hints, &list)
        guard rc == 0 else { return .failure(ListenSpecError(String(cString: gai_strerror(rc)))) }
        defer { freeaddrinfo(list) }
        var result: [SocketAddress] = []
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ai_next }
            if let raw = current.pointee.ai_addr,
               let address = SocketAddress(raw: raw, length: Int(current.pointee.ai_addrlen)) {
                result.append(address)
            }
        }
        return .success(result)
    }

    static func closeDescriptor(_ fd: Int32) {
        _ = close(fd)
    }

    /// Milliseconds on CLOCK_MONOTONIC: the timer wheel's clock, also what the ring's absolute timeouts use.
    static func monotonicMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    /// Milliseconds since the epoch on CLOCK_REALTIME: the time records carry (accounting, dialogs).
    static func realtimeMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    static func onlineCPUCount() -> Int {
        max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    static func pinCurrentThread(to cpu: Int) -> Errno? {
        let rc = CUring_pin_current_thread(Int32(cpu))
        return rc == 0 ? nil : Errno(rawValue: rc)
    }

    /// Page-aligned, zeroed memory for the provided-buffer ring, which the kernel requires to be page aligned.
    static func pageAlignedAllocation(bytes: Int) -> UnsafeMutableRawPointer {
        var pointer: UnsafeMutableRawPointer?
        let rc = posix_memalign(&pointer, Int(sysconf(Int32(_SC_PAGESIZE))), bytes)
        precondition(rc == 0 && pointer != nil, "out of memory allocating \(bytes) bytes for a buffer ring")
        memset(pointer!, 0, bytes)
        return pointer!
    }

    static func readSysctl(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &bytes, bytes.count)
        guard n > 0 else { return nil }
        return String(decoding: bytes[0..<n], as: UTF8.self).trimmingWhitespace()
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}

/// Wall-clock time for what records it (accounting rows, dialogs): never for deadlines, which are monotonic.
public enum WallClock {
    public static func milliseconds() -> Int64 { Syscalls.realtimeMilliseconds() }
}

/// The shard's clock for code outside Engine that waits on its own (a blocking call a script chose).
public enum MonotonicClock {
    /// Milliseconds on CLOCK_MONOTONIC, the timer wheel's clock.
    public static func milliseconds() -> UInt64 { Syscalls.monotonicMilliseconds() }
}
