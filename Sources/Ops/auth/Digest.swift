import Glibc
import SIP

/// The credentials as auth_db checks them (parsed by the SIP layer, which `$au`/`$ar` read too).
typealias DigestCredentials = SIPDigestCredentials

extension SIPDigestCredentials {
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
