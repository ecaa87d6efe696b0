import Testing
@testable import TM

@Suite struct WaitTimerTests {
    @Test func waitTimeoutCapsOnlyTheLingeringTimers() {
        var settings = TimerSettings()
        #expect(settings.timerD(.unreliable) == 32_000 && settings.timerJ(.unreliable) == 32_000)
        #expect(settings.timerL == 32_000 && settings.timerM == 32_000)
        settings.waitTimeout = 5_000
        #expect(settings.timerD(.unreliable) == 5_000 && settings.timerJ(.unreliable) == 5_000)
        #expect(settings.timerL == 5_000 && settings.timerM == 5_000)
        // Waiting for an answer or an ACK is not lingering: B, F, H and the retransmit intervals keep their values.
        #expect(settings.timerB == 32_000 && settings.timerF == 32_000 && settings.timerH == 32_000)
        #expect(settings.timerK(.unreliable) == 5_000 && settings.timerI(.unreliable) == 5_000)
        // A wait timer longer than the RFC value does not stretch it.
        settings.waitTimeout = 60_000
        #expect(settings.timerJ(.unreliable) == 32_000)
        #expect(settings.timerD(.reliable) == 0)
    }
}
