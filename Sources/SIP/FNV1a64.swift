/// FNV-1a, 64 bit: a fast, allocation-free, deterministic hash over bytes, for branch and tag
/// derivation and hash tables keyed by spans (Call-ID, branch). Not collision-resistant against an
/// adversary: do not use it where an attacker gains by choosing collisions.
public struct FNV1a64: Sendable {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x0000_0100_0000_01b3

    public private(set) var value: UInt64

    public init() {
        value = FNV1a64.offsetBasis
    }

    @inline(__always)
    public mutating func combine(byte: UInt8) {
        value = (value ^ UInt64(byte)) &* FNV1a64.prime
    }

    public mutating func combine(_ bytes: UnsafeRawBufferPointer) {
        var v = value
        for byte in bytes {
            v = (v ^ UInt64(byte)) &* FNV1a64.prime
        }
        value = v
    }

    /// Eight bytes, little end first: for mixing in numbers (a port, a CSeq).
    public mutating func combine(_ number: UInt64) {
        var n = number
        for _ in 0..<8 {
            combine(byte: UInt8(truncatingIfNeeded: n))
            n >>= 8
        }
    }

    /// The hash of `bytes` alone.
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hasher = FNV1a64()
        hasher.combine(bytes)
        return hasher.value
    }
}
