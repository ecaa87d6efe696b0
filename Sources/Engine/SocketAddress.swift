import Glibc

/// An IPv4 or IPv6 UDP endpoint, stored as the kernel's `sockaddr_in`/`sockaddr_in6` bytes so it can be handed
/// to `sendmsg` without conversion. A value type of fixed size: copying one allocates nothing.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// A `sockaddr_in` or a `sockaddr_in6`, in the 28 bytes of the larger: every transaction keeps several
    /// addresses, and a `sockaddr_storage` (128 bytes) each made up a sixth of a transaction's memory.
    private var inet = sockaddr_in6()

    /// Writes the address's `length` bytes where a `msghdr` names them (a send slot's address: the hot path, so
    /// no 128-byte `sockaddr_storage` is built for it).
    @inline(__always)
    public func write(to destination: UnsafeMutableRawPointer) {
        withUnsafeBytes(of: inet) { destination.copyMemory(from: $0.baseAddress!, byteCount: Int(length)) }
    }

    /// The address as the socket calls take it.
    public var storage: sockaddr_storage {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { out in withUnsafeBytes(of: inet) { out.copyMemory(from: $0) } }
        return storage
    }

    public init(ipv4 bytes: (UInt8, UInt8, UInt8, UInt8), port: UInt16) {
        withUnsafeMutableBytes(of: &inet) { raw in
            let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
            sin.pointee.sin_family = sa_family_t(AF_INET)
            sin.pointee.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.pointee.sin_addr) { a in
                a[0] = bytes.0; a[1] = bytes.1; a[2] = bytes.2; a[3] = bytes.3
            }
        }
    }

    /// - Precondition: `raw` holds a `sockaddr_in` or `sockaddr_in6` of `length` bytes.
    public init?(raw: UnsafeRawPointer, length: Int) {
        let family = Int32(raw.load(as: sockaddr.self).sa_family)
        let needed = family == AF_INET ? MemoryLayout<sockaddr_in>.size
            : family == AF_INET6 ? MemoryLayout<sockaddr_in6>.size : Int.max
        guard length >= needed else { return nil }
        withUnsafeMutableBytes(of: &inet) { $0.copyMemory(from: UnsafeRawBufferPointer(start: raw, count: needed)) }
    }

    /// Parses a numeric IPv4 address (`127.0.0.1`) or IPv6 address (`::1`, with or without brackets).
    /// Never resolves a name: that would block the shard. Allocates nothing (it runs per relayed message).
    public init?<Bytes: Collection>(numericHost host: Bytes, port: UInt16) where Bytes.Element == UInt8 {
        var result = sockaddr_in6()
        let ok = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { text -> Bool in
            var count = 0
            var sawColon = false
            for byte in host where byte != UInt8(ascii: "[") && byte != UInt8(ascii: "]") {
                guard count < 63 else { return false }
                text[count] = CChar(bitPattern: byte)
                sawColon = sawColon || byte == UInt8(ascii: ":")
                count += 1
            }
            text[count] = 0
            return withUnsafeMutableBytes(of: &result) { raw -> Bool in
                if sawColon {
                    let sin6 = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self)
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    return inet_pton(AF_INET6, text.baseAddress!, &sin6.pointee.sin6_addr) == 1
                }
                let sin = raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self)
                sin.pointee.sin_family = sa_family_t(AF_INET)
                sin.pointee.sin_port = port.bigEndian
                return inet_pton(AF_INET, text.baseAddress!, &sin.pointee.sin_addr) == 1
            }
        }
        guard ok else { return nil }
        inet = result
    }

    public init?(numericHost host: String, port: UInt16) {
        self.init(numericHost: Array(host.utf8), port: port)
    }

    public var family: Int32 { Int32(inet.sin6_family) }
    public var isIPv6: Bool { family == AF_INET6 }

    public var length: socklen_t {
        socklen_t(isIPv6 ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size)
    }

    public var port: UInt16 {
        get {
            withUnsafeBytes(of: inet) { raw in
                isIPv6 ? UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
                    : UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
            }
        }
        set {
            let v6 = isIPv6
            withUnsafeMutableBytes(of: &inet) { raw in
                if v6 {
                    raw.baseAddress!.assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_port = newValue.bigEndian
                } else {
                    raw.baseAddress!.assumingMemoryBound(to: sockaddr_in.self).pointee.sin_port = newValue.bigEndian
                }
            }
        }
    }

    /// Writes the numeric host (IPv6 without brackets) as ASCII into `out`; returns the byte count.
    /// Used on the hot path for `received=` and our own Via, so it writes into caller memory.
    public func writeHost(into out: UnsafeMutableRawBufferPointer) -> Int {
        var text = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &text) { buffer -> Int in
            let dst = buffer.baseAddress!.assumingMemoryBound(to: CChar.self)
            let ok: Bool = withUnsafeBytes(of: inet) { raw in
                if isIPv6 {
                    var a = raw.load(as: sockaddr_in6.self).sin6_addr
                    return inet_ntop(AF_INET6, &a, dst, socklen_t(buffer.count)) != nil
                }
                var a = raw.load(as: sockaddr_in.self).sin_addr
                return inet_ntop(AF_INET, &a, dst, socklen_t(buffer.count)) != nil
            }
            guard ok else { return 0 }
            let n = min(strlen(dst), out.count)
            out.copyMemory(from: UnsafeRawBufferPointer(start: buffer.baseAddress, count: n))
            return n
        }
    }

    public var hostString: String {
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = bytes.withUnsafeMutableBytes { writeHost(into: $0) }
        return String(decoding: bytes[0..<n], as: UTF8.self)
    }

    public var description: String { isIPv6 ? "[\(hostString)]:\(port)" : "\(hostString):\(port)" }

    /// Whether this address's first `bits` bits equal `network`'s (the same family; ports are not compared).
    public func isIn(_ network: SocketAddress, prefixLength bits: Int) -> Bool {
        guard family == network.family else { return false }
        return withUnsafeBytes(of: inet) { a in
            withUnsafeBytes(of: network.inet) { b in
                // The address bytes: sin_addr at offset 4, sin6_addr at offset 8.
                var i = isIPv6 ? 8 : 4
                var remaining = min(bits, isIPv6 ? 128 : 32)
                while remaining > 0 {
                    let mask: UInt8 = remaining >= 8 ? 0xFF : UInt8(truncatingIfNeeded: 0xFF << (8 - remaining))
                    if a[i] & mask != b[i] & mask { return false }
                    remaining -= 8
                    i += 1
                }
                return true
            }
        }
    }

    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        guard lhs.family == rhs.family else { return false }
        let n = Int(lhs.length)
        return withUnsafeBytes(of: lhs.inet) { l in
            withUnsafeBytes(of: rhs.inet) { r in
                if lhs.isIPv6 {
                    let a = l.load(as: sockaddr_in6.self), b = r.load(as: sockaddr_in6.self)
                    return a.sin6_port == b.sin6_port
                        && withUnsafeBytes(of: a.sin6_addr) { x in withUnsafeBytes(of: b.sin6_addr) { y in x.elementsEqual(y) } }
                }
                return memcmp(l.baseAddress!, r.baseAddress!, min(n, 8)) == 0
            }
        }
    }

    /// The same address, whatever the ports.
    public func hasSameHost(as other: SocketAddress) -> Bool {
        var a = self, b = other
        a.port = 0
        b.port = 0
        return a == b
    }

    /// What `==` compares: the family, the port and the address (an IPv6 address's flow label and scope are not).
    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: inet) { raw in
            if isIPv6 {
                let a = raw.load(as: sockaddr_in6.self)
                hasher.combine(a.sin6_port)
                withUnsafeBytes(of: a.sin6_addr) { hasher.combine(bytes: $0) }
            } else {
                hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: raw[0..<8]))
            }
        }
    }
}

/// `udp:IP:PORT`, `tcp:IP:PORT` or `udp:[IPv6]:PORT`, as written on the command line and in scripts.
public struct ListenSpec: Sendable, Equatable, CustomStringConvertible {
    public var address: SocketAddress
    /// `tcp:`: connections are accepted there (else datagrams).
    public var tcp = false

    public init(address: SocketAddress, tcp: Bool = false) {
        self.address = address
        self.tcp = tcp
    }

    /// Returns nil with `reason` describing the first problem found.
    public static func parse(_ text: String) -> Result<ListenSpec, ListenSpecError> {
        var rest = Substring(text)
        let tcp = rest.hasPrefix("tcp:")
        if rest.hasPrefix("udp:") || tcp {
            rest = rest.dropFirst(4)
        } else if let colon = rest.firstIndex(of: ":"), rest[..<colon].allSatisfy(\.isLetter),
                  !rest[..<colon].isEmpty, rest.first != "[" {
            return .failure(.init("unsupported transport '\(rest[..<colon])' in '\(text)' (udp and tcp are supported)"))
        }
        let host: Substring
        let portText: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                return .failure(.init("missing ']' in IPv6 address '\(text)'"))
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            guard after.hasPrefix(":") else { return .failure(.init("missing ':PORT' in '\(text)'")) }
            portText = after.dropFirst()
        } else {
            guard let colon = rest.lastIndex(of: ":") else {
                return .failure(.init("expected udp:IP:PORT, got '\(text)'"))
            }
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        }
        guard let port = UInt16(portText), port != 0 else {
            return .failure(.init("bad port '\(portText)' in '\(text)' (expected 1-65535)"))
        }
        guard let address = SocketAddress(numericHost: String(host), port: port) else {
            return .failure(.init("'\(host)' in '\(text)' is not a numeric IPv4 or IPv6 address"))
        }
        return .success(ListenSpec(address: address, tcp: tcp))
    }

    public var description: String { "\(tcp ? "tcp" : "udp"):\(address)" }
}

public struct ListenSpecError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
