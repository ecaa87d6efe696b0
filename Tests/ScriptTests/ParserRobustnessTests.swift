import Testing

import Script

/// Broken scripts end in a `CompileError`, never a trap: every prefix of the realistic scripts and seeded random
/// byte mutations of them. An error must also point into the text it names.
@Suite struct ParserRobustnessTests {
    /// SplitMix64: fixed seeds keep a failure reproducible.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func check(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        do {
            _ = try ScriptLoader.parse(text, file: "fuzz.cfg")
        } catch {
            #expect(error.location.line >= 1 && error.location.column >= 1)
            #expect(error.sourceLine != nil, "no source line for \(error.location)")
        }
    }

    @Test(arguments: [ParserScriptTests.opensips3, ParserScriptTests.opensips2])
    func everyPrefixParsesOrFailsCleanly(script: String) {
        let bytes = Array(script.utf8)
        for end in 0...bytes.count { Self.check(Array(bytes[0..<end])) }
    }

    @Test(arguments: 1...4)
    func randomMutationsParseOrFailCleanly(seed: UInt64) {
        var random = Generator(state: seed)
        let interesting = Array("$(){}[]\"'\\#/*;,:=!<>-+&|{}.0123456789x \n\t@".utf8)
        let base = Array((ParserScriptTests.opensips3 + ParserScriptTests.opensips2).utf8)
        for _ in 0..<300 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let i = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[i] = interesting.randomElement(using: &random)!
                case 1: bytes.remove(at: i)
                default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: i)
                }
            }
            Self.check(bytes)
        }
    }
}
