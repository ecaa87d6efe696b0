import SIP

/// RADIUS packets as both clients write and check them: the ring's RadiusRunner and the blocking one that
/// `radius_send_*` outside `async()` uses. Packets are written into the caller's buffer; nothing allocates.
///
/// - Access-Request: User-Name, the hidden User-Password (RFC 2865 §5.2) and a Message-Authenticator
///   (RFC 3579 §3.2), then the caller's attributes; the Request Authenticator is 16 random octets.
/// - Accounting-Request: Request Authenticator = MD5(Code+ID+Length+16 zero octets+Attributes+Secret)
///   (RFC 2866 §3).
/// - A response: Response Authenticator = MD5(Code+ID+Length+RequestAuth+Attributes+Secret), and its
///   Message-Authenticator when present.
public enum RadiusPacket {
    /// RFC 2865 §3: 4096 bytes at most.
    static let maximumLength = 4096

    /// Writes an Access-Request into `packet` (`maximumLength` bytes); its length, or nil when the user name
    /// (253) or password (128) is too long or the whole does not fit.
    static func writeAccess(into packet: UnsafeMutableRawBufferPointer, identifier: UInt8,
                            userName: UnsafeRawBufferPointer, password: UnsafeRawBufferPointer,
                            attributes: borrowing RadiusAttributes, secret: [UInt8],
                            random: inout SystemRandomNumberGenerator) -> Int? {
        guard userName.count <= 253, password.count <= 128 else { return nil }
        let paddedPassword = max(16, (password.count + 15) & ~15)
        let length = 20 + (2 + userName.count) + (2 + paddedPassword) + 18 + attributes.encoded.count
        guard length <= min(maximumLength, packet.count) else { return nil }
        packet[0] = 1
        packet[1] = identifier
        packet.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
        // The Request Authenticator: 16 unpredictable octets (RFC 2865 §3).
        packet.storeBytes(of: random.next() as UInt64, toByteOffset: 4, as: UInt64.self)
        packet.storeBytes(of: random.next() as UInt64, toByteOffset: 12, as: UInt64.self)
        var offset = 20
        put(RadiusAttributeType.userName, userName, at: &offset, in: packet)
        // User-Password, RFC 2865 §5.2: c(1) = p(1) xor MD5(S + RA), c(i) = p(i) xor MD5(S + c(i-1)).
        packet[offset] = RadiusAttributeType.userPassword
        packet[offset + 1] = UInt8(2 + paddedPassword)
        let hidden = offset + 2
        for i in 0..<paddedPassword { packet[hidden + i] = i < password.count ? password[i] : 0 }
        secret.withUnsafeBytes { secret in
            var previous = UnsafeRawBufferPointer(rebasing: packet[4..<20])
            for block in stride(from: 0, to: paddedPassword, by: 16) {
                var md5 = MD5()
                md5.update(secret)
                md5.update(previous)
                let b = md5.finalize()
                withUnsafeBytes(of: b) { b in for i in 0..<16 { packet[hidden + block + i] ^= b[i] } }
                previous = UnsafeRawBufferPointer(rebasing: packet[hidden + block..<hidden + block + 16])
            }
        }
        offset = hidden + paddedPassword
        // Message-Authenticator: HMAC-MD5 over the whole packet with its own value zeroed (RFC 3579 §3.2).
        let messageAuthenticator = offset + 2
        packet[offset] = RadiusAttributeType.messageAuthenticator
        packet[offset + 1] = 18
        for i in 0..<16 { packet[messageAuthenticator + i] = 0 }
        offset += 18
        attributes.encoded.withUnsafeBytes { copy($0, into: packet, at: offset) }
        offset += attributes.encoded.count
        precondition(offset == length)
        let mac = secret.withUnsafeBytes { secret in
            var hmac = HMACMD5(key: secret)
            hmac.update(UnsafeRawBufferPointer(rebasing: packet[0..<length]))
            return hmac.finalize()
        }
        withUnsafeBytes(of: mac) { copy($0, into: packet, at: messageAuthenticator) }
        return length
    }

    /// Writes an Accounting-Request with `attributes` (which should hold Acct-Status-Type and Acct-Session-Id,
    /// RFC 2866 §5); its length, or nil when it does not fit.
    static func writeAccounting(into packet: UnsafeMutableRawBufferPointer, identifier: UInt8,
                                attributes: borrowing RadiusAttributes, secret: [UInt8]) -> Int? {
        let length = 20 + attributes.encoded.count
        guard length <= min(maximumLength, packet.count) else { return nil }
        packet[0] = 4
        packet[1] = identifier
        packet.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
        for i in 4..<20 { packet[i] = 0 }
        attributes.encoded.withUnsafeBytes { copy($0, into: packet, at: 20) }
        let authenticator = secret.withUnsafeBytes { secret in
            var md5 = MD5()
            md5.update(UnsafeRawBufferPointer(rebasing: packet[0..<length]))
            md5.update(secret)
            return md5.finalize()
        }
        withUnsafeBytes(of: authenticator) { copy($0, into: packet, at: 4) }
        return length
    }

    /// What a response code means for a request of this kind; nil when it is no answer to such a request.
    static func outcome(accounting: Bool, responseCode: UInt8) -> RadiusCode? {
        switch (accounting, responseCode) {
        case (false, 2), (true, 5): .accepted
        case (false, 3): .rejected
        case (false, 11): .challenge
        default: nil
        }
    }

    /// The response's own length when `received` holds a whole packet header and that many bytes; else nil.
    public static func responseLength(_ received: UnsafeRawBufferPointer) -> Int? {
        guard received.count >= 20 else { return nil }
        let length = Int(UInt16(received[2]) << 8 | UInt16(received[3]))
        return length >= 20 && length <= received.count ? length : nil
    }

    /// Checks a response's attribute framing, its Response Authenticator and its Message-Authenticator if any.
    /// `response` is exactly the packet (its header's length); `requestAuthenticator` the request's 16 octets.
    public static func verify(response packet: UnsafeRawBufferPointer, requestAuthenticator: UnsafeRawBufferPointer,
                              secret: [UInt8]) -> Bool {
        var messageAuthenticator = -1
        var offset = 20
        while offset < packet.count {
            guard offset + 2 <= packet.count else { return false }
            let attributeLength = Int(packet[offset + 1])
            guard attributeLength >= 2, offset + attributeLength <= packet.count else { return false }
            if packet[offset] == RadiusAttributeType.messageAuthenticator {
                guard attributeLength == 18 else { return false }
                messageAuthenticator = offset + 2
            }
            offset += attributeLength
        }
        return secret.withUnsafeBytes { secret in
            var md5 = MD5()
            md5.update(UnsafeRawBufferPointer(rebasing: packet[0..<4]))
            md5.update(requestAuthenticator)
            md5.update(UnsafeRawBufferPointer(rebasing: packet[20...]))
            md5.update(secret)
            let expected = md5.finalize()
            let matches = withUnsafeBytes(of: expected) { expected in
                (0..<16).allSatisfy { expected[$0] == packet[4 + $0] }
            }
            guard matches else { return false }
            guard messageAuthenticator >= 0 else { return true }
            // RFC 3579 §3.2: HMAC-MD5 over the response with the Request Authenticator in place of the Response
            // Authenticator and the Message-Authenticator's value zeroed.
            var hmac = HMACMD5(key: secret)
            hmac.update(UnsafeRawBufferPointer(rebasing: packet[0..<4]))
            hmac.update(requestAuthenticator)
            hmac.update(UnsafeRawBufferPointer(rebasing: packet[20..<messageAuthenticator]))
            let zeros: (UInt64, UInt64) = (0, 0)
            withUnsafeBytes(of: zeros) { hmac.update($0) }
            hmac.update(UnsafeRawBufferPointer(rebasing: packet[(messageAuthenticator + 16)...]))
            let mac = hmac.finalize()
            return withUnsafeBytes(of: mac) { mac in
                (0..<16).allSatisfy { mac[$0] == packet[messageAuthenticator + $0] }
            }
        }
    }

    private static func put(_ type: UInt8, _ value: UnsafeRawBufferPointer, at offset: inout Int,
                            in packet: UnsafeMutableRawBufferPointer) {
        packet[offset] = type
        packet[offset + 1] = UInt8(2 + value.count)
        copy(value, into: packet, at: offset + 2)
        offset += 2 + value.count
    }

    private static func copy(_ bytes: UnsafeRawBufferPointer, into packet: UnsafeMutableRawBufferPointer, at offset: Int) {
        guard bytes.count > 0 else { return }
        (packet.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
    }
}
