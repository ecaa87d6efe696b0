import Testing

@testable import SIP

/// Malformed input must never crash: every prefix and many single-byte changes of the torture
/// messages, and random bytes, go through parse, every accessor, validate and the builders. Throwing
/// is fine. A message that validates must forward into one that validates again.
/// Bounded (fixed seeds and counts) to stay within a second or two in a debug build.
@Suite struct FuzzTests {
    /// Deterministic, so a failure reproduces.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Bytes that matter to the grammar, for the byte flips.
    static let interesting: [UInt8] = Array(" \t\r\n:;,<>\"\\@[]=%/?0".utf8) + [0x00, 0x7F, 0xFF]

    final class Harness {
        let message = SIPMessage(headerCapacity: 64)
        let check = SIPMessage()
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 1)
        let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
        let received = Array("192.0.2.99".utf8)
        let newVia = Array("SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKfuzz".utf8)
        var runs = 0
        var forwarded = 0

        deinit {
            out.deallocate()
            small.deallocate()
        }

        func run(_ bytes: [UInt8]) {
            bytes.withUnsafeBytes { exercise($0) }
        }

        /// `deep` also runs every value parser on every value of every field (slow in a debug
        /// build, so only for a share of the runs).
        func exercise(_ buffer: UnsafeRawBufferPointer, deep: Bool = true, forward: Bool = true) {
            runs += 1
            let parsed = (try? message.parse(buffer)) != nil
            let m = message
            _ = (m.topVia, m.cseq, m.from, m.to, m.callID, m.maxForwards, m.requestURI, m.firstRoute, m.isAnswerable)
            for index in 0..<(deep ? m.headerCount : 0) {
                for value in m.values(ofHeaderAt: index) {
                    _ = try? SIPVia.parse(m.bytes, value)
                    _ = try? SIPNameAddr.parse(m.bytes, value)
                    _ = try? SIPCSeq.parse(m.bytes, value)
                    _ = try? SIPURI.parse(m.bytes, value.lower, value.upper)
                    var parameters = SIPParameterIterator(m.bytes, value)
                    while let parameter = try? parameters.next() { _ = parameter }
                }
            }
            if m.isAnswerable {
                _ = try? m.writeReply(into: out, statusCode: 400, reason: "Bad Request")
                if deep { _ = try? m.writeReply(into: small, statusCode: 483, reason: "Too Many Hops") }
            }
            guard parsed, (try? m.validate()) != nil, forward || deep else { return }
            received.withUnsafeBytes { received in
                newVia.withUnsafeBytes { via in
                    var options = SIPForwardingOptions()
                    options.via = .raw(via)
                    options.popRoute = true
                    options.received = received
                    options.rport = 5060
                    let written: Int?
                    if m.isRequest {
                        written = try? m.writeForwardedRequest(into: out, options)
                        if deep { _ = try? m.writeForwardedRequest(into: small, options) }
                    } else {
                        written = try? m.writeForwardedResponse(into: out, options)
                        if deep { _ = try? m.writeForwardedResponse(into: small, options) }
                    }
                    guard let written, m.isRequest || m.count(of: .via) > 1 else { return }
                    forwarded += 1
                    let copy = UnsafeRawBufferPointer(rebasing: out[0..<written])
                    do {
                        try check.parse(copy)
                        try check.validate()
                    } catch {
                        let text = String(decoding: copy, as: UTF8.self)
                        Issue.record("forwarded copy does not validate: \(error)\n\(text)")
                    }
                }
            }
        }
    }

    @Test func everyPrefixOfEveryTortureMessage() throws {
        let harness = Harness()
        for name in try TortureCorpus.names() {
            try TortureCorpus.bytes(name).withUnsafeBytes { bytes in
                for length in 0...bytes.count {
                    harness.exercise(UnsafeRawBufferPointer(rebasing: bytes[0..<length]), deep: length % 8 == 0)
                }
            }
        }
        #expect(harness.runs > 20_000)
    }

    @Test func singleByteChangesOfEveryTortureMessage() throws {
        let harness = Harness()
        var rng = SplitMix64(state: 4475)
        for name in try TortureCorpus.names() {
            var bytes = try TortureCorpus.bytes(name)
            bytes.withUnsafeMutableBytes { bytes in
                for position in bytes.indices {
                    let original = bytes[position]
                    bytes[position] = Self.interesting.randomElement(using: &rng)!
                    harness.exercise(UnsafeRawBufferPointer(bytes), deep: position % 8 == 0, forward: position % 2 == 0)
                    bytes[position] = original
                }
            }
        }
        #expect(harness.forwarded > 3_000)
    }

    @Test func randomBytesAndRandomSplices() throws {
        let harness = Harness()
        var rng = SplitMix64(state: 3261)
        let corpus = try TortureCorpus.names().map { try TortureCorpus.bytes($0) }
        for _ in 0..<2_000 {
            let length = Int.random(in: 0..<300, using: &rng)
            harness.run((0..<length).map { _ in
                Bool.random(using: &rng)
                    ? Self.interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            })
        }
        // A message with a random window of another pasted over it: header fragments in odd places.
        for _ in 0..<2_000 {
            var target = corpus.randomElement(using: &rng)!
            let source = corpus.randomElement(using: &rng)!
            let start = Int.random(in: 0..<source.count, using: &rng)
            let window = source[start..<min(source.count, start + Int.random(in: 1...80, using: &rng))]
            let at = Int.random(in: 0..<target.count, using: &rng)
            target.replaceSubrange(at..<min(target.count, at + window.count), with: window)
            harness.run(target)
        }
    }
}
