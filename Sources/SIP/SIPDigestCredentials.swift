/// The Digest credentials of an Authorization or Proxy-Authorization header (RFC 2617 §3.2.2, RFC 3261 §22.4):
/// `Digest username="alice", realm="example.com", nonce="…", uri="sip:example.com", response="…", qop=auth,
/// nc=00000001, cnonce="…", algorithm=MD5`. Values without their quotes (and their backslash escapes).
public struct SIPDigestCredentials: Equatable, Sendable {
    public var username = ""
    public var realm = ""
    public var nonce = ""
    public var uri = ""
    public var response = ""
    public var algorithm = ""
    public var qop = ""
    public var nc = ""
    public var cnonce = ""
    public var opaque = ""

    /// Nil when the value is not a Digest credentials list, or lacks username, nonce, uri or response. Scans bytes:
    /// it runs for every request that carries credentials (a Character-by-Character parse was a quarter of an
    /// authenticated REGISTER's CPU).
    public init?(_ value: UnsafeRawBufferPointer) {
        let b = value
        let end = b.count
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A }
        var i = 0
        while i < end && isSpace(b[i]) { i += 1 }
        guard end - i > 7 else { return nil }
        let scheme: [UInt8] = Array("digest".utf8)
        for k in 0..<6 where b[i + k] | 0x20 != scheme[k] { return nil }
        guard isSpace(b[i + 6]) else { return nil }
        i += 7
        while i < end {
            while i < end && (isSpace(b[i]) || b[i] == UInt8(ascii: ",")) { i += 1 }
            let nameStart = i
            while i < end && b[i] != UInt8(ascii: "=") && !isSpace(b[i]) && b[i] != UInt8(ascii: ",") { i += 1 }
            let nameEnd = i
            while i < end && isSpace(b[i]) { i += 1 }
            guard i < end, b[i] == UInt8(ascii: "="), nameEnd > nameStart else { break }
            i += 1
            while i < end && isSpace(b[i]) { i += 1 }
            var text: String
            if i < end && b[i] == UInt8(ascii: "\"") {
                i += 1
                var bytes: [UInt8] = []
                var closed = false
                while i < end {
                    let c = b[i]
                    i += 1
                    if c == UInt8(ascii: "\\"), i < end {
                        bytes.append(b[i])
                        i += 1
                        continue
                    }
                    if c == UInt8(ascii: "\"") { closed = true; break }
                    bytes.append(c)
                }
                guard closed else { return nil }
                text = String(decoding: bytes, as: UTF8.self)
            } else {
                let valueStart = i
                while i < end && b[i] != UInt8(ascii: ",") { i += 1 }
                var valueEnd = i
                while valueEnd > valueStart && isSpace(b[valueEnd - 1]) { valueEnd -= 1 }
                text = String(decoding: UnsafeRawBufferPointer(rebasing: b[valueStart..<valueEnd]), as: UTF8.self)
            }
            switch Self.field(UnsafeRawBufferPointer(rebasing: b[nameStart..<nameEnd])) {
            case .username: username = text
            case .realm: realm = text
            case .nonce: nonce = text
            case .uri: uri = text
            case .response: response = text.lowercased()
            case .algorithm: algorithm = text
            case .qop: qop = text
            case .nc: nc = text
            case .cnonce: cnonce = text
            case .opaque: opaque = text
            case nil: break
            }
        }
        guard !username.isEmpty, !nonce.isEmpty, !uri.isEmpty, !response.isEmpty else { return nil }
    }

    private enum Field: String, CaseIterable {
        case username, realm, nonce, uri, response, algorithm, qop, nc, cnonce, opaque
    }

    private static let fields: [(bytes: [UInt8], field: Field)] = Field.allCases.map { (Array($0.rawValue.utf8), $0) }

    /// The parameter a name is (ASCII case-insensitive), nil for one not used here.
    private static func field(_ name: UnsafeRawBufferPointer) -> Field? {
        for (bytes, field) in fields where bytes.count == name.count {
            var same = true
            for k in 0..<bytes.count where name[k] | 0x20 != bytes[k] {
                same = false
                break
            }
            if same { return field }
        }
        return nil
    }
}
