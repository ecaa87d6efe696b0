import XCTest
@testable import Engine

final class TagTests: XCTestCase {
    func testEveryFieldRoundTrips() {
        let tag = Tag(kind: .handoff, shard: 200, generation: 0xBEEF, slot: 0xDEAD_BEEF)
        XCTAssertEqual(tag.kind, .handoff)
        XCTAssertEqual(tag.shard, 200)
        XCTAssertEqual(tag.generation, 0xBEEF)
        XCTAssertEqual(tag.slot, 0xDEAD_BEEF)
        XCTAssertEqual(tag.rawValue >> 56, UInt64(TagKind.handoff.rawValue))
    }

    func testZeroedCompletionDecodesAsNoKind() {
        XCTAssertNil(Tag(rawValue: 0).kind)
        XCTAssertNil(Tag(rawValue: 0xFF00_0000_0000_0001).kind)
    }

    func testSendSlotCompletionWithStaleGenerationIsRefused() {
        let pool = SendPool(capacity: 2, slotBytes: 64)
        let first = pool.acquire()!
        XCTAssertTrue(pool.release(slot: UInt32(first.slot), generation: first.generation))
        XCTAssertFalse(pool.release(slot: UInt32(first.slot), generation: first.generation),
                       "a duplicate completion must not free the slot twice")
        let again = pool.acquire()!
        XCTAssertEqual(again.slot, first.slot)
        XCTAssertNotEqual(again.generation, first.generation)
        XCTAssertFalse(pool.release(slot: UInt32(first.slot), generation: first.generation),
                       "a completion from the slot's previous use must not free its new use")
        XCTAssertEqual(pool.inFlight, 1)
        XCTAssertTrue(pool.release(slot: UInt32(again.slot), generation: again.generation))
        XCTAssertEqual(pool.inFlight, 0)
    }

    func testListenSpecsParseAndExplainMistakes() throws {
        XCTAssertEqual(try ListenSpec.parse("udp:127.0.0.1:5060").get().address.port, 5060)
        XCTAssertTrue(try ListenSpec.parse("udp:[::1]:5070").get().address.isIPv6)
        XCTAssertEqual(try ListenSpec.parse("10.1.2.3:5080").get().description, "udp:10.1.2.3:5080")
        XCTAssertTrue(try ListenSpec.parse("tcp:127.0.0.1:5060").get().tcp)
        XCTAssertThrowsError(try ListenSpec.parse("tls:127.0.0.1:5061").get()) {
            XCTAssertTrue("\($0)".contains("unsupported transport 'tls'"))
        }
        XCTAssertThrowsError(try ListenSpec.parse("udp:127.0.0.1:99999").get()) {
            XCTAssertTrue("\($0)".contains("bad port"))
        }
        XCTAssertThrowsError(try ListenSpec.parse("udp:sip.example.com:5060").get()) {
            XCTAssertTrue("\($0)".contains("not a numeric"))
        }
    }
}

final class RingProbeTests: XCTestCase {
    func testMissingOrBlockedIoUringIsExplainedInOneSentence() {
        XCTAssertEqual(Ring.explain(errno: ENOSYS).description,
                       "io_uring is not available: this kernel was built without it (ENOSYS).")
        let blocked = Ring.explain(errno: EPERM).description
        XCTAssertTrue(blocked.hasPrefix("io_uring is"), blocked)
        XCTAssertFalse(blocked.contains("\n"))
        XCTAssertTrue(Ring.explain(errno: ENOMEM).description.contains("RLIMIT_MEMLOCK"))
    }

    func testRingUsesTheBestSetupFlagsThisKernelAccepts() throws {
        let ring: Ring
        do { ring = try Ring(entries: 8) } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
        try ring.requireOpcodes()
        // Kernels since 6.1 take SINGLE_ISSUER|DEFER_TASKRUN; the description names what is on.
        XCTAssertTrue(ring.features.description.contains("SUBMIT_ALL"), ring.features.description)
    }
}
