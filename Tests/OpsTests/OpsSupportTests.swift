@testable import Ops
import Testing

/// The small pieces Ops modules share: trimming, the failure count that thins logs, the probe back-off.
@Suite struct OpsSupportTests {
    @Test func trimmingComparesScalarsSoACRLFEndIsTrimmed() {
        #expect("  14\r\n".trimming(" \t\r\n") == "14")
        #expect(Substring("[::1]").trimming("[]") == "::1")
        #expect(" \t ".trimming(" \t") == "")
        #expect("a b".trimming(" ") == "a b")
    }

    @Test func failuresAreLoggedFirstThenEveryThousandth() {
        var failures = FailureCount()
        let logged = (1...3000).filter { _ in failures.add() }
        #expect(logged == [1, 1000, 2000, 3000])
        #expect(failures.count == 3000)
    }

    @Test func aFailedServerIsProbedOnceAtATimeAfterADoublingBackOff() {
        var backoff = ProbeBackoff()
        #expect(backoff.maySend(now: 0, idle: false))
        backoff.failed(now: 1_000)
        #expect(!backoff.maySend(now: 1_249, idle: true))
        #expect(backoff.maySend(now: 1_250, idle: true))
        #expect(!backoff.maySend(now: 1_250, idle: false))  // a probe is in flight
        backoff.failed(now: 2_000)
        #expect(!backoff.maySend(now: 2_499, idle: true) && backoff.maySend(now: 2_500, idle: true))
        for _ in 0..<10 { backoff.failed(now: 10_000) }
        #expect(backoff.maySend(now: 15_000, idle: true))  // capped at 5 s
        backoff.succeeded()
        #expect(backoff.maySend(now: 15_000, idle: false))
    }
}
