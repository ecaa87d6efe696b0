/// The per-process secret behind branch MACs: 128 random bits the daemon reads at start-up (this module
/// reads no randomness itself, so it stays pure and testable).
public struct BranchKey: Sendable {
    public let k0: UInt64
    public let k1: UInt64

    public init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }
}

/// The Via branch ringsip generates for its client transactions: it names the transaction's owner, so a
/// response (or a CANCEL's response) that the kernel delivers to any shard is routed to the owning shard
/// and slot in O(1), without a hash lookup.
///
/// Text, 29 bytes: `z9hG4bK` (RFC 3261 §8.1.1.7 magic cookie) `rs` (ours) and 20 base-32 digits
/// (`0-9a-v`, lower case, all `token` characters) of a 100-bit number:
///
///     zero 4 | shard 8 | slot 32 | generation 16 | branchIndex 8 | mac 32      (high to low)
///
/// `mac` is the low 32 bits of SipHash-2-4 under the process's `BranchKey` of the 64 bits before it, so
/// a branch that was not issued by this process decodes to nil except by a 2^-32 chance per try, and a
/// forged branch cannot be aimed at another live slot. The slot's generation (which the table advances
/// on every free) keeps a late response from reaching the slot's next transaction.
///
/// Uniqueness (§8.1.1.7 asks it across space and time): the key differs per process; within a process
/// (shard, slot, generation, branchIndex) repeats only after a slot's generation wraps, 65,535 reuses of
/// that slot: the table hands slots out first-in first-out, so at 100,000 slots that is 6.5 billion
/// transactions per shard later.
public struct TransactionBranch: Sendable, Equatable, Hashable {
    public var shard: UInt8
    public var slot: UInt32
    public var generation: UInt16
    /// Which client transaction of the owning transaction (the fork's branch, `$T_branch_idx`); 0 when the
    /// driver gives every client transaction a slot of its own.
    public var branchIndex: UInt8

    public init(shard: UInt8, slot: UInt32, generation: UInt16, branchIndex: UInt8 = 0) {
        self.shard = shard
        self.slot = slot
        self.generation = generation
        self.branchIndex = branchIndex
    }

    public static let prefix: StaticString = "z9hG4bKrs"
    static let digitCount = 20
    /// Bytes `encode` writes: the prefix and 20 digits.
    public static let encodedCount = 9 + digitCount
    private static let alphabet: StaticString = "0123456789abcdefghijklmnopqrstuv"

    var word: UInt64 {
        UInt64(shard) << 56 | UInt64(slot) << 24 | UInt64(generation) << 8 | UInt64(branchIndex)
    }

    static func mac(_ word: UInt64, _ key: BranchKey) -> UInt32 {
        UInt32(truncatingIfNeeded: SipHash24.hash(k0: key.k0, k1: key.k1, word: word))
    }

    /// Writes the branch value (without `branch=`) at the start of `buffer` and returns `encodedCount`.
    /// - Precondition: `buffer.count >= encodedCount`.
    @discardableResult
    public func encode(key: BranchKey, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= TransactionBranch.encodedCount, "branch buffer too small")
        let prefix = TransactionBranch.prefix
        buffer.baseAddress!.copyMemory(from: prefix.utf8Start, byteCount: prefix.utf8CodeUnitCount)
        let word = self.word
        // The 100-bit number as two halves: `high` holds bits 64..99 (the top four zero), `low` bits 0..63.
        let high = word >> 32
        let low = word << 32 | UInt64(TransactionBranch.mac(word, key))
        let digits = TransactionBranch.alphabet.utf8Start
        var i = 0
        while i < TransactionBranch.digitCount {
            let shift = 5 * (TransactionBranch.digitCount - 1 - i)
            let value: UInt64
            if shift >= 64 {
                value = high >> UInt64(shift - 64)
            } else if shift == 0 {
                value = low
            } else {
                value = low >> UInt64(shift) | high << UInt64(64 - shift)
            }
            buffer[9 + i] = digits[Int(value & 31)]
            i += 1
        }
        return TransactionBranch.encodedCount
    }

    /// The branch `bytes` name, or nil when they are not a branch this process issued: another element's
    /// branch, a different length or alphabet, nonzero padding, or a MAC that does not verify.
    public static func decode(_ bytes: UnsafeRawBufferPointer, key: BranchKey) -> TransactionBranch? {
        guard bytes.count == encodedCount else { return nil }
        let prefix = TransactionBranch.prefix.utf8Start
        var i = 0
        while i < 9 {
            if bytes[i] != prefix[i] { return nil }
            i += 1
        }
        var high: UInt64 = 0
        var low: UInt64 = 0
        while i < encodedCount {
            let c = bytes[i]
            let digit: UInt64
            switch c {
            case 0x30...0x39: digit = UInt64(c - 0x30)
            case 0x61...0x76: digit = UInt64(c - 0x61 + 10)
            default: return nil
            }
            // Shift the 128-bit (high, low) left by 5 and add the digit.
            high = high << 5 | low >> 59
            low = low << 5 | digit
            i += 1
        }
        // 100 bits were read: the top 4 must be zero, so `high` has at most 32 significant bits left.
        guard high >> 32 == 0 else { return nil }
        let word = high << 32 | low >> 32
        let mac = UInt32(truncatingIfNeeded: low)
        guard mac == TransactionBranch.mac(word, key) else { return nil }
        return TransactionBranch(
            shard: UInt8(truncatingIfNeeded: word >> 56), slot: UInt32(truncatingIfNeeded: word >> 24),
            generation: UInt16(truncatingIfNeeded: word >> 8), branchIndex: UInt8(truncatingIfNeeded: word))
    }
}
