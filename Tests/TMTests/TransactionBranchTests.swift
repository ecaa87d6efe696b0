import Testing

@testable import TM

@Suite struct TransactionBranchTests {
    static let key = BranchKey(k0: 0x0123_4567_89ab_cdef, k1: 0xfedc_ba98_7654_3210)

    static func encoded(_ branch: TransactionBranch, key: BranchKey = key) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: TransactionBranch.encodedCount)
        let n = bytes.withUnsafeMutableBytes { branch.encode(key: key, into: $0) }
        #expect(n == TransactionBranch.encodedCount)
        return bytes
    }

    static func decode(_ bytes: [UInt8], key: BranchKey = key) -> TransactionBranch? {
        bytes.withUnsafeBytes { TransactionBranch.decode($0, key: key) }
    }

    static func decode(_ text: String) -> TransactionBranch? { decode(Array(text.utf8)) }

    @Test func sipHashMatchesTheReferenceVectors() {
        // Key 00 01 .. 0f, message 00 01 .. (n-1): vectors from the SipHash reference implementation.
        let k0: UInt64 = 0x0706_0504_0302_0100
        let k1: UInt64 = 0x0f0e_0d0c_0b0a_0908
        let expected: [Int: UInt64] = [0: 0x726f_db47_dd0e_0e31, 8: 0x93f5_f579_9a93_2462, 15: 0xa129_ca61_49be_45e5]
        for (length, value) in expected {
            let message = (0..<length).map { UInt8($0) }
            #expect(message.withUnsafeBytes { SipHash24.hash(k0: k0, k1: k1, $0) } == value, "length \(length)")
        }
        #expect(SipHash24.hash(k0: k0, k1: k1, word: 0x0706_0504_0302_0100) == 0x93f5_f579_9a93_2462)
    }

    @Test func roundTripsEveryField() {
        let cases = [
            TransactionBranch(shard: 0, slot: 0, generation: 1),
            TransactionBranch(shard: 3, slot: 99_999, generation: 17, branchIndex: 2),
            TransactionBranch(shard: 255, slot: .max, generation: .max, branchIndex: .max),
            TransactionBranch(shard: 0x5a, slot: 0xdead_beef, generation: 0x1234, branchIndex: 0x80),
        ]
        for branch in cases {
            let bytes = Self.encoded(branch)
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("z9hG4bKrs"))
            #expect(text.utf8.dropFirst(9).allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x76) })
            #expect(Self.decode(bytes) == branch, "\(text)")
        }
    }

    @Test func differentKeysGiveDifferentBranchesForTheSameSlot() {
        let branch = TransactionBranch(shard: 1, slot: 42, generation: 7)
        let other = BranchKey(k0: 1, k1: 2)
        #expect(Self.encoded(branch) != Self.encoded(branch, key: other))
        // A branch from a previous run of the daemon (another key) is not ours.
        #expect(Self.decode(Self.encoded(branch, key: other)) == nil)
    }

    @Test func everySingleDigitChangeIsRejected() {
        let bytes = Self.encoded(TransactionBranch(shard: 2, slot: 1234, generation: 99, branchIndex: 1))
        let digits = Array("0123456789abcdefghijklmnopqrstuv".utf8)
        var accepted = 0
        for position in 9..<bytes.count {
            for digit in digits where digit != bytes[position] {
                var forged = bytes
                forged[position] = digit
                if Self.decode(forged) != nil { accepted += 1 }
            }
        }
        // 20 positions × 31 digits: a 32-bit MAC lets none of these 620 through (2^-32 each).
        #expect(accepted == 0)
    }

    @Test func forgingAnotherLiveSlotFails() {
        // An attacker who saw the branch of slot 10 edits the slot field; without the key the MAC is wrong.
        var seen = Self.encoded(TransactionBranch(shard: 0, slot: 10, generation: 5))
        let target = Self.encoded(TransactionBranch(shard: 0, slot: 11, generation: 5))
        // Copy the fields of the target but keep the seen MAC (the last 7 digits carry mostly MAC bits).
        for i in 9..<(9 + 13) { seen[i] = target[i] }
        #expect(seen != target)
        #expect(Self.decode(seen) == nil)
    }

    @Test func otherElementsBranchesAreRejected() {
        let good = String(decoding: Self.encoded(TransactionBranch(shard: 1, slot: 2, generation: 3)), as: UTF8.self)
        #expect(Self.decode(good) != nil)
        let digits = String(good.dropFirst(9))
        var foreign: [String] = ["z9hG4bK776asdhds", "z9hG4bK", "", "z9hG4bKrs", "1234567890"]
        foreign.append("z9hG4bK.1a2b3c4d5e6f7a8b9c0d1")  // another proxy's branch of our length
        foreign.append(String(good.dropLast()))  // wrong length
        foreign.append(good + "0")
        foreign.append(good.uppercased())  // case matters: we only issue lower case
        foreign.append("Z9HG4BKrs" + digits)  // cookie case
        foreign.append("z9hG4bKsr" + digits)  // not our tag
        foreign.append("z9hG4bKrsw" + digits.dropFirst())  // outside the alphabet
        foreign.append("z9hG4bKrs2" + digits.dropFirst())  // padding bits set
        for foreign in foreign {
            #expect(Self.decode(foreign) == nil, "\(foreign)")
        }
    }
}
