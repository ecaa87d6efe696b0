import Glibc
import SIP

/// The Digest credentials of an Authorization or Proxy-Authorization header (RFC 2617 §3.2.2, RFC 3261 §22.4):
/// `Digest username="alice", realm="example.com", nonce="…", uri="sip:example.com", response="…", qop=auth,
/// nc=00000001, cnonce="…", algorithm=MD5`. Values without their quotes (and their backslash escapes).
struct DigestCredentials: Equatable, Sendable {
    var username = ""
    var realm = ""
    var nonce = ""
    var uri = ""
    var response = ""
    var algorithm = ""
    var qop = ""
    var nc = ""
    var cnonce = ""
    var opaque = ""

    /// Nil when the value is not a Digest credentials list, or lacks username, nonce, uri or response. Scans bytes:
    /// it runs for every request that carries credentials (a Character-by-Character parse was a quarter of an
    /// authenticated REGISTER's CPU).
    init?(_ value: UnsafeRawBufferPointer) {
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

    /// The response a user agent holding `ha1` computes for `method` (RFC 2617 §3.2.2.1, qop auth or none).
    func expectedResponse(ha1: String, method: String) -> String {
        let ha2 = md5Hex("\(method):\(uri)")
        if qop.isEmpty { return md5Hex("\(ha1):\(nonce):\(ha2)") }
        return md5Hex("\(ha1):\(nonce):\(nc):\(cnonce):\(qop):\(ha2)")
    }
}

/// MD5 of UTF-8 text as 32 lower-case hex digits.
func md5Hex(_ text: String) -> String {
    var text = text
    let digest = text.withUTF8 { MD5.digest(UnsafeRawBufferPointer($0)) }
    return hex(digest)
}

func hex(_ digest: MD5.Digest) -> String {
    var out = ""
    withUnsafeBytes(of: digest) { bytes in
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 15)])
        }
    }
    return out
}

private let hexDigits = Array("0123456789abcdef")

/// Nonces this daemon issues, checked without keeping them: `expiry (8 hex) | serial (8 hex) | MAC (32 hex)`, the MAC
/// an HMAC-MD5 of the first 16 characters under a secret every shard shares (the `secret` modparam, else random at
/// start), so a nonce made on one shard is valid on all and a forged or altered one is refused.
struct NonceIssuer: Sendable {
    let secret: [UInt8]
    /// Seconds a nonce stays valid (`nonce_expire`).
    let lifetime: Int

    enum Check: Equatable { case valid, stale, forged }

    func make(now: Int, serial: UInt32) -> String {
        let head = hex32(UInt32(truncatingIfNeeded: now + lifetime)) + hex32(serial)
        return head + mac(head)
    }

    func check(_ nonce: String, now: Int) -> Check {
        guard nonce.utf8.count == 48 else { return .forged }
        let head = String(nonce.prefix(16))
        guard mac(head) == nonce.suffix(32), let expiry = UInt32(head.prefix(8), radix: 16) else { return .forged }
        return Int(expiry) >= now ? .valid : .stale
    }

    private func mac(_ head: String) -> String {
        var head = head
        return secret.withUnsafeBytes { key in
            var hmac = HMACMD5(key: key)
            head.withUTF8 { hmac.update(UnsafeRawBufferPointer($0)) }
            return hex(hmac.finalize())
        }
    }

    private func hex32(_ n: UInt32) -> String {
        let digits = String(n, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return s
    }
}
