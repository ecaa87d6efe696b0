/// SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudo-random function, so a branch's MAC cannot
/// be computed without the key even by someone who has seen many branches. FNV-1a (the SIP module's
/// hash) cannot do that: its low 32 output bits depend only on the low 32 bits of its state, so a
/// secret mixed into FNV falls to a 2^32 offline search from one observed branch.
struct SipHash24 {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64

    init(k0: UInt64, k1: UInt64) {
        v0 = k0 ^ 0x736f_6d65_7073_6575
        v1 = k1 ^ 0x646f_7261_6e64_6f6d
        v2 = k0 ^ 0x6c79_6765_6e65_7261
        v3 = k1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
        v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
    }

    @inline(__always)
    private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    private mutating func finish(_ last: UInt64) -> UInt64 {
        compress(last)
        v2 ^= 0xff
        round()
        round()
        round()
        round()
        return v0 ^ v1 ^ v2 ^ v3
    }

    /// The hash of `bytes` (words read little-endian, as the reference implementation does).
    static func hash(k0: UInt64, k1: UInt64, _ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var state = SipHash24(k0: k0, k1: k1)
        let n = bytes.count
        var i = 0
        while i + 8 <= n {
            state.compress(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
            i += 8
        }
        var last = UInt64(truncatingIfNeeded: n) << 56
        var shift: UInt64 = 0
        while i < n {
            last |= UInt64(bytes[i]) << shift
            shift += 8
            i += 1
        }
        return state.finish(last)
    }

    /// The hash of the eight little-endian bytes of `word`, without touching memory.
    static func hash(k0: UInt64, k1: UInt64, word: UInt64) -> UInt64 {
        var state = SipHash24(k0: k0, k1: k1)
        state.compress(word)
        return state.finish(8 << 56)
    }
}

extension UInt64 {
    @inline(__always)
    fileprivate func rotatedLeft(_ n: UInt64) -> UInt64 { self << n | self >> (64 - n) }
}
