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

    /// Nil when the value is not a Digest credentials list, or lacks username, realm, nonce, uri or response.
    init?(_ value: UnsafeRawBufferPointer) {
        let text = String(decoding: value, as: UTF8.self)
        var rest = Substring(text).drop { $0 == " " || $0 == "\t" }
        guard rest.count > 7, rest.prefix(6).lowercased() == "digest", rest.dropFirst(6).first?.isWhitespace == true else {
            return nil
        }
        rest = rest.dropFirst(7)
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "\t" || $0 == "," || $0 == "\r" || $0 == "\n" }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let name = rest[..<equals].trimmingSpaces.lowercased()
            rest = rest[rest.index(after: equals)...].drop { $0 == " " || $0 == "\t" }
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                var closed = false
                while let c = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(c); escaped = false; continue }
                    if c == "\\" { escaped = true; continue }
                    if c == "\"" { closed = true; break }
                    value.append(c)
                }
                guard closed else { return nil }
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end].trimmingSpaces)
                rest = rest[end...]
            }
            switch name {
            case "username": username = value
            case "realm": realm = value
            case "nonce": nonce = value
            case "uri": uri = value
            case "response": response = value.lowercased()
            case "algorithm": algorithm = value
            case "qop": qop = value
            case "nc": nc = value
            case "cnonce": cnonce = value
            case "opaque": opaque = value
            default: break
            }
        }
        guard !username.isEmpty, !nonce.isEmpty, !uri.isEmpty, !response.isEmpty else { return nil }
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
