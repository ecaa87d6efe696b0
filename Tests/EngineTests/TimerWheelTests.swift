import XCTest
@testable import Engine

final class TimerWheelTests: XCTestCase {
    func testTimerFiresAtItsDeadlineAndNotBefore() {
        let wheel = TimerWheel(capacity: 16, now: 1000)
        var fired: [UInt64] = []
        _ = wheel.schedule(at: 1030, payload: 7)
        wheel.advance(to: 1029) { fired.append($0) }
        XCTAssertEqual(fired, [])
        wheel.advance(to: 1030) { fired.append($0) }
        XCTAssertEqual(fired, [7])
        XCTAssertEqual(wheel.count, 0)
        XCTAssertNil(wheel.nextDeadline)
    }

    func testCancelledTimerNeverFiresAndItsHandleGoesStale() {
        let wheel = TimerWheel(capacity: 4, now: 0)
        let handle = wheel.schedule(at: 50, payload: 1)!
        XCTAssertTrue(wheel.cancel(handle))
        XCTAssertFalse(wheel.cancel(handle), "a second cancel of the same handle must be refused")
        let reuse = wheel.schedule(at: 60, payload: 2)!
        XCTAssertEqual(reuse.index, handle.index, "the freed node is reused")
        XCTAssertFalse(wheel.cancel(handle), "the old handle must not cancel the node's new timer")
        var fired: [UInt64] = []
        wheel.advance(to: 100) { fired.append($0) }
        XCTAssertEqual(fired, [2])
    }

    func testDistantTimersCascadeDownAndFireOnTheExactMillisecond() {
        let deadlines: [UInt64] = [63, 64, 65, 4095, 4096, 4097, 262_143, 262_144, 300_001, 16_777_300, 40_000_000]
        let wheel = TimerWheel(capacity: 64, now: 0)
        for d in deadlines { _ = wheel.schedule(at: d, payload: d) }
        var firedAt: [UInt64: UInt64] = [:]
        var now: UInt64 = 0
        // Jump from deadline to deadline as the shard does, checking nothing fires early.
        while let next = wheel.nextDeadline {
            XCTAssertGreaterThan(next, now)
            now = next
            wheel.advance(to: now) { firedAt[$0] = now }
        }
        XCTAssertEqual(firedAt.count, deadlines.count)
        for d in deadlines { XCTAssertEqual(firedAt[d], d, "timer for \(d) fired at \(String(describing: firedAt[d]))") }
    }

    func testManyRandomTimersFireInDeadlineOrderWithCoarseAdvances() {
        var generator = SplitMix(seed: 42)
        let wheel = TimerWheel(capacity: 5000, now: 10)
        var expected: [UInt64: Int] = [:]
        var handles: [TimerHandle] = []
        for i in 0..<5000 {
            let deadline = 10 + 1 + generator.next() % 200_000
            handles.append(wheel.schedule(at: deadline, payload: deadline)!)
            if i % 3 == 0 { XCTAssertTrue(wheel.cancel(handles[i])) } else { expected[deadline, default: 0] += 1 }
        }
        var last: UInt64 = 0
        var count = 0
        var now: UInt64 = 10
        while now < 210_100 {
            now += 1 + generator.next() % 700
            wheel.advance(to: now) { deadline in
                XCTAssertLessThanOrEqual(deadline, now)
                XCTAssertGreaterThan(deadline + 701, now, "fired later than the advance that covered it")
                XCTAssertGreaterThanOrEqual(deadline, last)
                last = max(last, deadline)
                count += 1
                expected[deadline]! -= 1
            }
        }
        XCTAssertEqual(count, expected.count > 0 ? 5000 - 1667 : 0)
        XCTAssertTrue(expected.values.allSatisfy { $0 == 0 })
    }

    func testNodesGrowAsLiveTimersReachANewHighAndEarlierHandlesStayValid() {
        let wheel = TimerWheel(capacity: 1 << 20, initial: 16, now: 0)
        var handles: [TimerHandle] = []
        for i in 0..<10_000 { handles.append(wheel.schedule(at: UInt64(5000 + i % 977), payload: UInt64(i))!) }
        XCTAssertGreaterThanOrEqual(wheel.allocated, 10_000)
        // Handles from before the nodes moved still cancel their own timer, and only it.
        for i in stride(from: 0, to: 10_000, by: 2) { XCTAssertTrue(wheel.cancel(handles[i])) }
        var fired = 0
        var last: UInt64 = 0
        wheel.advance(to: 10_000) { payload in
            XCTAssertEqual(payload % 2, 1)
            let deadline = 5000 + payload % 977
            XCTAssertGreaterThanOrEqual(deadline, last)
            last = deadline
            fired += 1
        }
        XCTAssertEqual(fired, 5000)
        XCTAssertEqual(wheel.count, 0)
        // Reused, not grown again.
        let allocated = wheel.allocated
        for i in 0..<10_000 { _ = wheel.schedule(at: UInt64(20_000 + i), payload: 0) }
        XCTAssertEqual(wheel.allocated, allocated)
    }

    func testFullWheelRefusesInsteadOfGrowing() {
        let wheel = TimerWheel(capacity: 2, now: 0)
        XCTAssertNotNil(wheel.schedule(at: 5, payload: 0))
        XCTAssertNotNil(wheel.schedule(at: 5, payload: 0))
        XCTAssertNil(wheel.schedule(at: 5, payload: 0))
    }

    func testHandlerMaySchedulePastDeadlinesWhichFireOnTheNextAdvance() {
        let wheel = TimerWheel(capacity: 8, now: 0)
        _ = wheel.schedule(at: 10, payload: 1)
        var fired: [UInt64] = []
        wheel.advance(to: 10) { payload in
            fired.append(payload)
            if payload == 1 { _ = wheel.schedule(at: 3, payload: 2) }
        }
        XCTAssertEqual(fired, [1])
        wheel.advance(to: 11) { fired.append($0) }
        XCTAssertEqual(fired, [1, 2])
    }
}

/// A small deterministic generator, so a failing case reproduces.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
