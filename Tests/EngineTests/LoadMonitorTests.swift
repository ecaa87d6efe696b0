import Engine
import Testing

@Suite struct LoadMonitorTests {
    static let ms: UInt64 = 1_000_000

    /// A monitor past its first sample, and a way to feed it windows of a given load.
    struct Windows {
        var load = LoadMonitor(thresholdPercent: 90)
        var wall: UInt64 = 1_000 * LoadMonitorTests.ms
        var wanted: UInt64 = 0

        init() { _ = load.sample(wallNanoseconds: wall, wantedNanoseconds: wanted) }

        mutating func window(_ percent: UInt64) -> Bool {
            wall += 100 * LoadMonitorTests.ms
            wanted += percent * LoadMonitorTests.ms
            return load.sample(wallNanoseconds: wall, wantedNanoseconds: wanted)
        }

        /// How many of 1,000 new requests are admitted now.
        mutating func admittedOfAThousand() -> Int { (0..<1000).count { _ in load.admits() } }
    }

    @Test func aSurgeIsCutInProportionAndHeldWhileTheLoadSitsBetweenTheMarks() {
        var w = Windows()
        #expect(w.load.releasePercent == 75)
        #expect(!w.window(50) && !w.load.overloaded && w.load.percent == 50 && w.admittedOfAThousand() == 1000)
        // One window's spike is averaged away.
        #expect(!w.window(110) && w.load.percent == 80 && !w.load.overloaded)
        #expect(!w.window(60) && w.load.percent == 70)
        // A surge (twice what the core carries) is cut to what brings the load to nine tenths of the threshold.
        #expect(w.window(200) && w.load.overloaded && w.load.percent == 135)
        #expect(abs(w.load.admitted - 81.0 / 135) < 0.001)
        #expect((599...601).contains(w.admittedOfAThousand()))
        // While the average stays past the threshold it is cut again; between the marks it is held.
        while w.load.percent >= 90 { _ = w.window(85) }
        let held = w.load.admitted
        #expect(!w.window(85) && (75..<90).contains(w.load.percent) && w.load.admitted == held)
        // Below the lower mark: a tenth back each window, overloaded until all of it is.
        #expect(!w.window(55) && w.load.percent < 75 && abs(w.load.admitted - (held + 0.1)) < 0.001)
        var windows = 1
        while w.load.overloaded {
            _ = w.window(55)
            windows += 1
        }
        let tenths = Int(((1 - held) / 0.1).rounded(.up))
        #expect((tenths...tenths + 1).contains(windows) && w.admittedOfAThousand() == 1000)
    }

    @Test func aShardIdleForASecondIsBackToFullAtItsNextSample() {
        var w = Windows()
        for _ in 0..<5 { _ = w.window(300) }
        #expect(w.load.overloaded)
        w.wall += 1_000 * LoadMonitorTests.ms
        w.wanted += 10 * LoadMonitorTests.ms
        #expect(w.load.sample(wallNanoseconds: w.wall, wantedNanoseconds: w.wanted) && !w.load.overloaded)
    }

    @Test func aTrickleIsAlwaysAdmitted() {
        var w = Windows()
        for _ in 0..<20 { _ = w.window(1000) }
        #expect(w.load.admitted == 0.02 && w.admittedOfAThousand() == 20)
    }

    @Test func waitingForACPUCounts() {
        // A thread that ran 60 ms and waited 60 ms of a 100 ms window wanted 120 % of its core.
        var w = Windows()
        #expect(w.window(120) && w.load.percent == 120 && w.load.overloaded)  // the first window is not averaged
    }

    @Test func aWindowIsDueAfterAHundredMilliseconds() {
        var load = LoadMonitor(thresholdPercent: 90)
        #expect(load.due(wallNanoseconds: 5 * Self.ms))
        _ = load.sample(wallNanoseconds: 5 * Self.ms, wantedNanoseconds: 0)
        #expect(!load.due(wallNanoseconds: 104 * Self.ms))
        #expect(load.due(wallNanoseconds: 105 * Self.ms))
    }

    @Test func zeroNeverOverloads() {
        var load = LoadMonitor(thresholdPercent: 0)
        _ = load.sample(wallNanoseconds: 0, wantedNanoseconds: 0)
        let changed = load.sample(wallNanoseconds: 100 * Self.ms, wantedNanoseconds: 200 * Self.ms)
        #expect(!changed && !load.overloaded)
    }

    @Test func aClockThatDidNotMoveChangesNothing() {
        var load = LoadMonitor(thresholdPercent: 90)
        _ = load.sample(wallNanoseconds: 100 * Self.ms, wantedNanoseconds: 0)
        let changed = load.sample(wallNanoseconds: 100 * Self.ms, wantedNanoseconds: 50 * Self.ms)
        #expect(!changed && !load.overloaded)
    }
}
