/// MD5 (RFC 1321) and HMAC-MD5 (RFC 2104), for what SIP and RADIUS define on them: RADIUS's Request/Response
/// Authenticators, User-Password hiding (RFC 2865) and Message-Authenticator (RFC 3579), the script's `{s.md5}`,
/// and HTTP digest (RFC 2617). Not for anything needing a secure hash. Streaming, so a packet and its secret are hashed without being joined in a new buffer; no
/// allocation.
public struct MD5 {
    private var a0: UInt32 = 0x6745_2301
    private var b0: UInt32 = 0xefcd_ab89
    private var c0: UInt32 = 0x98ba_dcfe
    private var d0: UInt32 = 0x1032_5476
    /// The partial 64-byte block not hashed yet, and how many bytes it holds.
    private var block: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var used = 0
    private var totalBytes: UInt64 = 0

    public init() {}

    /// 16 bytes of a digest.
    public typealias Digest = (UInt64, UInt64)

    private static let shifts: [UInt32] = [7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                           5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
                                           4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                           6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21]
    /// floor(2^32 × |sin(i + 1)|).
    private static let constants: [UInt32] = [
        0xd76a_a478, 0xe8c7_b756, 0x2420_70db, 0xc1bd_ceee, 0xf57c_0faf, 0x4787_c62a, 0xa830_4613, 0xfd46_9501,
        0x6980_98d8, 0x8b44_f7af, 0xffff_5bb1, 0x895c_d7be, 0x6b90_1122, 0xfd98_7193, 0xa679_438e, 0x49b4_0821,
        0xf61e_2562, 0xc040_b340, 0x265e_5a51, 0xe9b6_c7aa, 0xd62f_105d, 0x0244_1453, 0xd8a1_e681, 0xe7d3_fbc8,
        0x21e1_cde6, 0xc337_07d6, 0xf4d5_0d87, 0x455a_14ed, 0xa9e3_e905, 0xfcef_a3f8, 0x676f_02d9, 0x8d2a_4c8a,
        0xfffa_3942, 0x8771_f681, 0x6d9d_6122, 0xfde5_380c, 0xa4be_ea44, 0x4bde_cfa9, 0xf6bb_4b60, 0xbebf_bc70,
        0x289b_7ec6, 0xeaa1_27fa, 0xd4ef_3085, 0x0488_1d05, 0xd9d4_d039, 0xe6db_99e5, 0x1fa2_7cf8, 0xc4ac_5665,
        0xf429_2244, 0x432a_ff97, 0xab94_23a7, 0xfc93_a039, 0x655b_59c3, 0x8f0c_cc92, 0xffef_f47d, 0x8584_5dd1,
        0x6fa8_7e4f, 0xfe2c_e6e0, 0xa301_4314, 0x4e08_11a1, 0xf753_7e82, 0xbd3a_f235, 0x2ad7_d2bb, 0xeb86_d391]

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        totalBytes &+= UInt64(bytes.count)
        var offset = 0
        var chunk = block
        withUnsafeMutableBytes(of: &chunk) { buffer in
            while offset < bytes.count {
                let take = min(64 - used, bytes.count - offset)
                (buffer.baseAddress! + used).copyMemory(from: bytes.baseAddress! + offset, byteCount: take)
                used += take
                offset += take
                if used == 64 {
                    compress(UnsafeRawBufferPointer(buffer))
                    used = 0
                }
            }
        }
        block = chunk
    }

    public mutating func update(byte: UInt8) {
        withUnsafeBytes(of: byte) { update($0) }
    }

    /// The digest; the hasher must not be updated afterwards.
    public mutating func finalize() -> Digest {
        let bits = totalBytes &* 8
        update(byte: 0x80)
        while used != 56 { update(byte: 0) }
        withUnsafeBytes(of: bits.littleEndian) { update($0) }
        precondition(used == 0)
        return (UInt64(a0.littleEndian) | UInt64(b0.littleEndian) << 32,
                UInt64(c0.littleEndian) | UInt64(d0.littleEndian) << 32)
    }

    private mutating func compress(_ chunk: UnsafeRawBufferPointer) {
        var a = a0, b = b0, c = c0, d = d0
        for i in 0..<64 {
            var f: UInt32
            let g: Int
            switch i >> 4 {
            case 0:
                f = (b & c) | (~b & d)
                g = i
            case 1:
                f = (d & b) | (~d & c)
                g = (5 &* i &+ 1) & 15
            case 2:
                f = b ^ c ^ d
                g = (3 &* i &+ 5) & 15
            default:
                f = c ^ (b | ~d)
                g = (7 &* i) & 15
            }
            let word = UInt32(littleEndian: chunk.loadUnaligned(fromByteOffset: 4 * g, as: UInt32.self))
            f = f &+ a &+ Self.constants[i] &+ word
            a = d
            d = c
            c = b
            let s = Self.shifts[i]
            b = b &+ (f << s | f >> (32 - s))
        }
        a0 = a0 &+ a
        b0 = b0 &+ b
        c0 = c0 &+ c
        d0 = d0 &+ d
    }

    public static func digest(_ bytes: UnsafeRawBufferPointer) -> Digest {
        var md5 = MD5()
        md5.update(bytes)
        return md5.finalize()
    }
}

/// HMAC-MD5 (RFC 2104) with a key of any length.
public struct HMACMD5 {
    private var inner = MD5()
    private var outerPad: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)

    public init(key: UnsafeRawBufferPointer) {
        var keyBlock: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &keyBlock) { block in
            if key.count > 64 {
                let hashed = MD5.digest(key)
                withUnsafeBytes(of: hashed) { block.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 16) }
            } else if key.count > 0 {
                block.baseAddress!.copyMemory(from: key.baseAddress!, byteCount: key.count)
            }
        }
        var innerPad = keyBlock
        withUnsafeMutableBytes(of: &innerPad) { pad in for i in 0..<64 { pad[i] ^= 0x36 } }
        outerPad = keyBlock
        withUnsafeMutableBytes(of: &outerPad) { pad in for i in 0..<64 { pad[i] ^= 0x5c } }
        withUnsafeBytes(of: innerPad) { inner.update($0) }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        inner.update(bytes)
    }

    public mutating func finalize() -> MD5.Digest {
        let innerDigest = inner.finalize()
        var outer = MD5()
        withUnsafeBytes(of: outerPad) { outer.update($0) }
        withUnsafeBytes(of: innerDigest) { outer.update($0) }
        return outer.finalize()
    }
}
