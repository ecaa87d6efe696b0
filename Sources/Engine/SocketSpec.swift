import Glibc

/// A script's `listen =` / `socket =` value in the forms OpenSIPS accepts, resolved once at start-up (on the
/// main thread, never on a shard):
///
///     udp:10.0.0.1:5060        10.0.0.1          udp:*:5060            udp:eth0:5060
///     udp:sip.example.com      udp:10.0.0.1:5060 as 203.0.113.1:5080   udp:10.0.0.1 use_workers 4
///
/// `*` is every address of every interface that is up, an interface name its addresses, a host name every
/// address it resolves to; a missing port is the script's `port` (5060 by default). `as HOST[:PORT]` is what
/// the socket advertises in Via and Record-Route (a public address in front of NAT). Options that tune
/// OpenSIPS processes (`use_workers`, `use_children`, `tag`, `anycast`, `frag`, `mark`,
/// `use_auto_scaling_profile`) are returned as notes for a warning.
public struct SocketSpec: Sendable {
    /// Whether names and interfaces are looked up. Off only in the fuzz target, where a random name must not wait
    /// on a resolver.
    nonisolated(unsafe) public static var resolvesNames = true

    public var addresses: [SocketAddress] = []
    /// `tcp:…`: connections are accepted on these addresses (else datagrams are received).
    public var tcp = false
    public var advertised: AdvertisedAddress?
    /// Options accepted without effect, as written (`use_workers 4`).
    public var ignoredOptions: [String] = []

    /// Transports OpenSIPS names that ringsip does not serve yet: an error naming them, not "a bad address".
    static let otherTransports: Set<String> = [
        "tls", "sctp", "ws", "wss", "bin", "bins", "hep_udp", "hep_tcp", "hep_tls", "smpp", "msrp", "msrps",
        "ipsec",
    ]
    /// Options that take a value, and those that stand alone.
    static let optionsWithValue: Set<String> = ["use_children", "use_workers", "tag", "mark", "use_auto_scaling_profile"]
    static let flagOptions: Set<String> = ["anycast", "frag", "accept_subdomain", "reuse_port"]

    public static func parse(_ text: String, defaultPort: UInt16 = 5060) -> Result<SocketSpec, ListenSpecError> {
        var words = text.split(separator: " ").map(String.init)
        guard !words.isEmpty else { return .failure(.init("expected udp:IP:PORT")) }
        let main = words.removeFirst()
        var spec = SocketSpec()
        while !words.isEmpty {
            let option = words.removeFirst()
            if option == "as" {
                guard !words.isEmpty else { return .failure(.init("expected HOST[:PORT] after 'as' in '\(text)'")) }
                switch AdvertisedAddress.parse(words.removeFirst()) {
                case .success(let advertised): spec.advertised = advertised
                case .failure(let problem): return .failure(problem)
                }
            } else if optionsWithValue.contains(option) {
                guard !words.isEmpty else { return .failure(.init("expected a value after '\(option)' in '\(text)'")) }
                spec.ignoredOptions.append("\(option) \(words.removeFirst())")
            } else if flagOptions.contains(option) {
                spec.ignoredOptions.append(option)
            } else {
                return .failure(.init("unknown socket option '\(option)' in '\(text)'"))
            }
        }
        var rest = Substring(main)
        if let colon = rest.firstIndex(of: ":"), !rest.hasPrefix("[") {
            let proto = rest[..<colon].lowercased()
            if proto == "udp" || proto == "tcp" {
                spec.tcp = proto == "tcp"
                rest = rest[rest.index(after: colon)...]
            } else if otherTransports.contains(proto) {
                return .failure(.init("transport '\(proto)' in '\(text)' is not supported yet: ringsip serves udp and tcp"))
            } else if proto.allSatisfy({ $0.isLetter || $0 == "_" }) && rest[rest.index(after: colon)...].contains(":") {
                return .failure(.init("unknown transport '\(proto)' in '\(text)' (udp and tcp are supported)"))
            }
        }
        let host: Substring
        var port = defaultPort
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return .failure(.init("missing ']' in IPv6 address '\(text)'")) }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = UInt16(after.dropFirst()), p != 0 else {
                    return .failure(.init("bad port '\(after.dropFirst())' in '\(text)' (expected 1-65535)"))
                }
                port = p
            }
        } else if rest.filter({ $0 == ":" }).count > 1 {
            host = rest  // a bare IPv6 address, no port
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            let portText = rest[rest.index(after: colon)...]
            guard let p = UInt16(portText), p != 0 else {
                return .failure(.init("bad port '\(portText)' in '\(text)' (expected 1-65535)"))
            }
            port = p
        } else {
            host = rest
        }
        guard !host.isEmpty else { return .failure(.init("missing address in '\(text)'")) }
        switch resolve(String(host), port: port) {
        case .success(let addresses): spec.addresses = addresses
        case .failure(let problem): return .failure(.init("'\(host)' in '\(text)': \(problem.description)"))
        }
        return .success(spec)
    }

    /// A numeric address as itself; `*` every interface address; an interface name its addresses; else a host
    /// name through the system resolver. Link-local IPv6 addresses are left out (they need a scope id).
    static func resolve(_ host: String, port: UInt16) -> Result<[SocketAddress], ListenSpecError> {
        if let numeric = SocketAddress(numericHost: host, port: port) { return .success([numeric]) }
        guard resolvesNames else { return .failure(.init("names are not resolved here")) }
        let interfaces = Syscalls.interfaceAddresses()
        if host == "*" {
            let all = interfaces.map(\.address).filter { !$0.isLinkLocal }
            return all.isEmpty ? .failure(.init("no interface has an address")) : .success(unique(all, port: port))
        }
        let named = interfaces.filter { $0.name == host }.map(\.address).filter { !$0.isLinkLocal }
        if !named.isEmpty { return .success(unique(named, port: port)) }
        switch Syscalls.resolveHost(host) {
        case .success(let addresses) where !addresses.isEmpty: return .success(unique(addresses, port: port))
        case .success: return .failure(.init("the name has no address"))
        case .failure(let reason): return .failure(.init("not an address, an interface or a name that resolves (\(reason))"))
        }
    }

    private static func unique(_ addresses: [SocketAddress], port: UInt16) -> [SocketAddress] {
        var result: [SocketAddress] = []
        for var address in addresses {
            address.port = port
            if !result.contains(address) { result.append(address) }
        }
        return result
    }
}

/// What a socket says it is in Via and Record-Route instead of its bound address: `advertised_address` /
/// `advertised_port` globally, `as HOST[:PORT]` per socket. The host is kept as written (a name or an IP).
public struct AdvertisedAddress: Sendable, Equatable {
    public var host: String?
    public var port: UInt16?

    public init(host: String?, port: UInt16?) {
        self.host = host
        self.port = port
    }

    public static func parse(_ text: String) -> Result<AdvertisedAddress, ListenSpecError> {
        var rest = Substring(text)
        if let colon = rest.firstIndex(of: ":"), rest[..<colon].lowercased() == "udp" { rest = rest[rest.index(after: colon)...] }
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            let after = rest[rest.index(after: close)...]
            guard after.isEmpty || (after.hasPrefix(":") && UInt16(after.dropFirst()).map { $0 != 0 } == true) else {
                return .failure(.init("bad port in advertised address '\(text)'"))
            }
            return .success(AdvertisedAddress(host: String(rest[...close]), port: after.isEmpty ? nil : UInt16(after.dropFirst())))
        }
        if let colon = rest.lastIndex(of: ":"), rest.filter({ $0 == ":" }).count == 1 {
            guard let port = UInt16(rest[rest.index(after: colon)...]), port != 0 else {
                return .failure(.init("bad port in advertised address '\(text)' (expected 1-65535)"))
            }
            return .success(AdvertisedAddress(host: String(rest[..<colon]), port: port))
        }
        guard !rest.isEmpty else { return .failure(.init("empty advertised address")) }
        return .success(AdvertisedAddress(host: String(rest), port: nil))
    }
}

extension SocketAddress {
    /// fe80::/10: usable only with a scope id, which a listen address does not carry.
    var isLinkLocal: Bool {
        guard isIPv6 else { return false }
        return withUnsafeBytes(of: storage) { raw in
            let address = raw.load(as: sockaddr_in6.self).sin6_addr
            return withUnsafeBytes(of: address) { $0[0] == 0xFE && $0[1] & 0xC0 == 0x80 }
        }
    }
}

/// Host names in URLs the script configures (`db_url`), resolved once at start-up so that no connection on a
/// shard ever resolves a name (Connector/C would call the blocking getaddrinfo there).
public enum URLHostResolution {
    /// `scheme://[userinfo@]host[:port][/rest]` with a host name replaced by the first address it resolves to,
    /// IPv4 first (`localhost` is 127.0.0.1, where servers listen by default, before ::1). A numeric host is
    /// kept as it is.
    public static func resolved(_ url: String) -> Result<String, ListenSpecError> {
        guard let colon = url.firstIndex(of: ":"), url[colon...].hasPrefix("://") else { return .success(url) }
        let afterScheme = url[url.index(colon, offsetBy: 3)...]
        let authorityEnd = afterScheme.firstIndex(of: "/") ?? afterScheme.endIndex
        let authority = afterScheme[..<authorityEnd]
        let hostStart = authority.lastIndex(of: "@").map { authority.index(after: $0) } ?? authority.startIndex
        let hostAndPort = authority[hostStart...]
        guard !hostAndPort.hasPrefix("[") else { return .success(url) }
        let hostEnd = hostAndPort.firstIndex(of: ":") ?? hostAndPort.endIndex
        let host = String(hostAndPort[..<hostEnd])
        guard !host.isEmpty, SocketAddress(numericHost: host, port: 1) == nil else { return .success(url) }
        guard SocketSpec.resolvesNames else { return .failure(.init("names are not resolved here")) }
        switch Syscalls.resolveHost(host) {
        case .success(let addresses):
            guard let first = addresses.first(where: { !$0.isIPv6 }) ?? addresses.first else {
                return .failure(.init("host '\(host)' has no address"))
            }
            let numeric = first.isIPv6 ? "[\(first.hostString)]" : first.hostString
            return .success(String(url[..<hostStart]) + numeric + String(url[hostEnd...]))
        case .failure(let reason):
            return .failure(.init("host '\(host)' does not resolve (\(reason))"))
        }
    }
}
