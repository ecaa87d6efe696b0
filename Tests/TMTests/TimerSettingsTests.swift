import SIP
import Testing

@testable import TM

@Suite struct TimerSettingsTests {
    @Test func timersFollowRFC3261AppendixAAndRFC6026() {
        let s = TimerSettings()
        #expect((s.t1, s.t2, s.t4) == (500, 4000, 5000))
        #expect(s.initialRetransmitInterval == 500)
        #expect([s.timerB, s.timerF, s.timerH, s.timerL, s.timerM] == [32000, 32000, 32000, 32000, 32000])
        #expect([s.timerD(.unreliable), s.timerI(.unreliable), s.timerJ(.unreliable), s.timerK(.unreliable)]
                == [32000, 5000, 32000, 5000])
        #expect([s.timerD(.reliable), s.timerI(.reliable), s.timerJ(.reliable), s.timerK(.reliable)] == [0, 0, 0, 0])
        // OpenSIPS defaults for fr_timeout and fr_inv_timeout.
        #expect(s.finalResponseTimeout == 30_000 && s.finalResponseInviteTimeout == 120_000)
    }

    @Test func timerDIsAtLeast32SecondsAndFollowsALargerT1() {
        var s = TimerSettings()
        s.t1 = 250
        #expect(s.timerD(.unreliable) == 32000 && s.timerB == 16000)
        s.t1 = 1000
        #expect(s.timerD(.unreliable) == 64000)
    }

    @Test func valuesKeptIn32BitsRoundTripAndNoneStaysNone() {
        var s = TimerSettings()
        s.finalResponseTimeout = nil
        s.waitTimeout = 0
        s.finalResponseInviteTimeout = 86_400_000  // a day
        #expect(s.finalResponseTimeout == nil && s.waitTimeout == 0 && s.finalResponseInviteTimeout == 86_400_000)
        // Past 32 bits (or negative) is clamped, never read back as "none".
        s.finalResponseTimeout = Int(UInt32.max) + 5
        s.t4 = -1
        #expect(s.finalResponseTimeout == Int(UInt32.max) - 1 && s.t4 == 0)
        s.waitTimeout = nil
        #expect(s.timerL == 32000)
        s.waitTimeout = 5000
        #expect(s.timerL == 5000 && s.timerJ(.unreliable) == 5000)
    }

    @Test func retransmitIntervalDoublesUntilT2() {
        let s = TimerSettings()
        var interval = s.initialRetransmitInterval
        var seen: [Int] = []
        for _ in 0..<6 {
            interval = s.doubledUpToT2(interval)
            seen.append(interval)
        }
        #expect(seen == [1000, 2000, 4000, 4000, 4000, 4000])
    }

    @Test func transportKindFollowsTheViaTransport() {
        #expect(TransportKind(SIPTransport.udp) == .unreliable)
        #expect(TransportKind(SIPTransport.other) == .unreliable)
        for reliable in [SIPTransport.tcp, .tls, .sctp, .ws, .wss] { #expect(TransportKind(reliable) == .reliable) }
    }

    @Test func actionsAreAPlainValueThatNeverAllocates() {
        // No references inside: building, copying and returning actions cannot touch the heap.
        #expect(_isPOD(TransactionActions.self))
        #expect(_isPOD(InviteClientTransaction.self) && _isPOD(NonInviteClientTransaction.self))
        #expect(_isPOD(InviteServerTransaction.self) && _isPOD(NonInviteServerTransaction.self))
        #expect(MemoryLayout<TransactionActions>.size <= 8 * 16 + 8)
        var actions = TransactionActions()
        for i in 0..<TransactionActions.capacity { actions.append(.startTimer(.A, milliseconds: i)) }
        #expect(actions.count == 8 && actions[7] == .startTimer(.A, milliseconds: 7))
        #expect(Array(actions).count == 8)
        #expect(actions.description.hasPrefix("[start(A, 0), start(A, 1)"))
    }

    @Test func aTimerThatWasNotArmedIsADriverBug() async {
        await #expect(processExitsWith: .failure) {
            var machine = NonInviteClientTransaction(settings: TimerSettings(), transport: .reliable)
            _ = machine.start(now: 0)
            _ = machine.timerFired(.E, now: 500)
        }
    }
}
