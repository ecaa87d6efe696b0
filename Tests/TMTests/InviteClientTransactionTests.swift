import Testing

@testable import TM

/// RFC 3261 §17.1.1 (figure 5) with RFC 6026 §8.4, and the proxy timers of §16.6–16.8.
@Suite struct InviteClientTransactionTests {
    typealias M = InviteClientTransaction
    static let udp = M(settings: rfcSettings, transport: .unreliable)
    /// What `start` returns over UDP with the RFC timers alone.
    static let sent: TransactionActions = [
        .sendRequest, .startTimer(.A, milliseconds: 500), .startTimer(.B, milliseconds: 32000),
    ]

    @Test func timerADoublesWithoutCapUntilTimerBTimesOut() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            fire(.A, at: 500, [.retransmitRequest, .startTimer(.A, milliseconds: 1000)], .calling),
            fire(.A, at: 1500, [.retransmitRequest, .startTimer(.A, milliseconds: 2000)], .calling),
            fire(.A, at: 3500, [.retransmitRequest, .startTimer(.A, milliseconds: 4000)], .calling),
            // Past T2: Timer A, unlike E and G, is not capped (§17.1.1.2).
            fire(.A, at: 7500, [.retransmitRequest, .startTimer(.A, milliseconds: 8000)], .calling),
            fire(.A, at: 15500, [.retransmitRequest, .startTimer(.A, milliseconds: 16000)], .calling),
            fire(.A, at: 31500, [.retransmitRequest, .startTimer(.A, milliseconds: 32000)], .calling),
            fire(.B, at: 32000, [.cancelTimer(.A), .timeout, .terminated], .terminated),
        ])
    }

    @Test func provisionalStopsRetransmissionsAndNonSuccessFinalIsAcknowledged() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            fire(.A, at: 500, [.retransmitRequest, .startTimer(.A, milliseconds: 1000)], .calling),
            at(700, .response(100), [.cancelTimer(.A), .cancelTimer(.B), .passUp], .proceeding),
            at(1000, .response(180), [.passUp], .proceeding),
            at(5000, .response(486), [.sendAck, .passUp, .startTimer(.D, milliseconds: 32000)], .completed),
            // A retransmitted final response is ACKed again and not passed up.
            at(5100, .response(486), [.sendAck], .completed),
            at(5200, .response(180), [], .completed),
            at(5300, .response(200), [], .completed),
            fire(.D, at: 37000, [.terminated], .terminated),
        ])
    }

    @Test func nonSuccessFinalInCallingIsAcknowledged() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            at(100, .response(503), [.cancelTimer(.A), .cancelTimer(.B), .sendAck, .passUp,
                                     .startTimer(.D, milliseconds: 32000)], .completed),
            fire(.D, at: 32100, [.terminated], .terminated),
        ])
    }

    @Test func successMovesToAcceptedAndPassesEvery2xxUpUntilTimerM() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            at(100, .response(180), [.cancelTimer(.A), .cancelTimer(.B), .passUp], .proceeding),
            at(2000, .response(200), [.passUp, .startTimer(.M, milliseconds: 32000)], .accepted),
            // RFC 6026 §8.4: retransmitted 2xx (and other branches' 2xx) go to the TU, which ACKs them.
            at(2500, .response(200), [.passUp], .accepted),
            at(2600, .response(202), [.passUp], .accepted),
            at(2700, .response(183), [], .accepted),
            at(2800, .response(486), [], .accepted),
            at(2900, .transportError, [], .accepted),
            fire(.M, at: 34000, [.terminated], .terminated),
        ])
    }

    @Test func nonSuccessFinalWithEveryCallingTimerArmedProducesTheLongestActionList() {
        play(M(settings: TimerSettings(), transport: .unreliable), [
            at(0, .start, [.sendRequest, .startTimer(.A, milliseconds: 500), .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .calling),
            at(100, .response(486), [.cancelTimer(.A), .cancelTimer(.B), .cancelTimer(.finalResponse), .sendAck,
                                     .passUp, .startTimer(.D, milliseconds: 32000)], .completed),
        ])
    }

    @Test func successInCallingGoesStraightToAccepted() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            at(100, .response(200), [.cancelTimer(.A), .cancelTimer(.B), .passUp, .startTimer(.M, milliseconds: 32000)],
               .accepted),
            fire(.M, at: 32100, [.terminated], .terminated),
        ])
    }

    @Test func reliableTransportSendsOnceAndTimerDIsZero() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.B, milliseconds: 32000)], .calling),
            at(100, .response(486), [.cancelTimer(.B), .sendAck, .passUp, .terminated], .terminated),
        ])
    }

    @Test func reliableTransportTimesOutWithTimerB() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.B, milliseconds: 32000)], .calling),
            fire(.B, at: 32000, [.timeout, .terminated], .terminated),
        ])
    }

    @Test func transportErrorInCallingInformsTheTU() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            at(10, .transportError, [.cancelTimer(.A), .cancelTimer(.B), .transportError, .terminated], .terminated),
        ])
    }

    @Test func transportErrorSendingTheAckInCompletedEndsTheTransaction() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            at(100, .response(404), [.cancelTimer(.A), .cancelTimer(.B), .sendAck, .passUp,
                                     .startTimer(.D, milliseconds: 32000)], .completed),
            at(101, .transportError, [.cancelTimer(.D), .transportError, .terminated], .terminated),
        ])
    }

    // MARK: - Proxy timers and CANCEL

    @Test func finalResponseTimeoutGivesUpBeforeTimerBAndALateProvisionalIsCancelled() {
        play(M(settings: TimerSettings(), transport: .unreliable), [
            at(0, .start, [.sendRequest, .startTimer(.A, milliseconds: 500), .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .calling),
            fire(.A, at: 500, [.retransmitRequest, .startTimer(.A, milliseconds: 1000)], .calling),
            fire(.A, at: 1500, [.retransmitRequest, .startTimer(.A, milliseconds: 2000)], .calling),
            fire(.A, at: 3500, [.retransmitRequest, .startTimer(.A, milliseconds: 4000)], .calling),
            fire(.A, at: 7500, [.retransmitRequest, .startTimer(.A, milliseconds: 8000)], .calling),
            fire(.A, at: 15500, [.retransmitRequest, .startTimer(.A, milliseconds: 16000)], .calling),
            // fr_timeout: the TU answers 408; retransmissions stop, the transaction waits out Timer B.
            fire(.finalResponse, at: 30000, [.cancelTimer(.A), .timeout], .calling),
            // A provisional after all: it is passed up and the branch cancelled (§9.1), with B as the limit.
            at(31000, .response(180), [.passUp, .sendCancel, .startTimer(.B, milliseconds: 32000)], .proceeding),
            at(31200, .response(487), [.cancelTimer(.B), .sendAck, .passUp, .startTimer(.D, milliseconds: 32000)],
               .completed),
            fire(.D, at: 63200, [.terminated], .terminated),
        ])
    }

    @Test func finalResponseTimeoutThenTimerBEndsWithoutASecondTimeout() {
        var settings = rfcSettings
        settings.finalResponseTimeout = 1000
        play(M(settings: settings, transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 1000)], .calling),
            fire(.finalResponse, at: 1000, [.timeout], .calling),
            fire(.B, at: 32000, [.terminated], .terminated),
        ])
    }

    @Test func timerCRestartsOnProvisionalsOtherThan100AndCancelsTheBranch() {
        play(M(settings: TimerSettings(), transport: .unreliable), [
            at(0, .start, [.sendRequest, .startTimer(.A, milliseconds: 500), .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .calling),
            // The first provisional, even a 100, swaps fr_timeout for fr_inv_timeout (Timer C).
            at(100, .response(100), [.cancelTimer(.A), .cancelTimer(.finalResponse), .cancelTimer(.B), .passUp,
                                     .startTimer(.C, milliseconds: 120_000)], .proceeding),
            at(5000, .response(180), [.passUp, .startTimer(.C, milliseconds: 120_000)], .proceeding),
            // §16.7 step 2: a 100 does not restart Timer C.
            at(6000, .response(100), [.passUp], .proceeding),
            fire(.C, at: 125_000, [.timeout, .sendCancel, .startTimer(.B, milliseconds: 32000)], .proceeding),
            // The TU's own CANCEL after that is not sent twice, and C stays off.
            at(125_100, .cancel, [], .proceeding),
            at(125_200, .response(183), [.passUp], .proceeding),
            // No 487 in 64*T1: given up (§9.1); the timeout was reported already.
            fire(.B, at: 157_000, [.terminated], .terminated),
        ])
    }

    @Test func perTransactionFrInvTimeoutAppliesFromTheNextProvisional() {
        var machine = M(settings: TimerSettings(), transport: .unreliable)
        var timers = VirtualTimers()
        var clock: UInt64 = 0
        play(&machine, [
            at(0, .start, [.sendRequest, .startTimer(.A, milliseconds: 500), .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .calling),
            at(100, .response(100), [.cancelTimer(.A), .cancelTimer(.finalResponse), .cancelTimer(.B), .passUp,
                                     .startTimer(.C, milliseconds: 120_000)], .proceeding),
        ], timers: &timers, clock: &clock)
        // `$T_fr_inv_timeout = 30` in an onreply_route.
        machine.settings.finalResponseInviteTimeout = 30_000
        play(&machine, [
            at(200, .response(180), [.passUp, .startTimer(.C, milliseconds: 30_000)], .proceeding),
            fire(.C, at: 30_200, [.timeout, .sendCancel, .startTimer(.B, milliseconds: 32000)], .proceeding),
        ], timers: &timers, clock: &clock)
    }

    @Test func cancelBeforeAnyProvisionalWaitsForOne() {
        play(Self.udp, [
            at(0, .start, Self.sent, .calling),
            // §9.1: no CANCEL before a provisional; the INVITE is still retransmitted.
            at(100, .cancel, [], .calling),
            fire(.A, at: 500, [.retransmitRequest, .startTimer(.A, milliseconds: 1000)], .calling),
            at(600, .response(100), [.cancelTimer(.A), .passUp, .sendCancel, .startTimer(.B, milliseconds: 32000)],
               .proceeding),
            at(700, .cancel, [], .proceeding),
            at(800, .response(487), [.cancelTimer(.B), .sendAck, .passUp, .startTimer(.D, milliseconds: 32000)],
               .completed),
            at(900, .cancel, [], .completed),
            fire(.D, at: 32800, [.terminated], .terminated),
        ])
    }

    @Test func cancelInProceedingSendsCancelAndStopsTimerC() {
        play(M(settings: TimerSettings(), transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.B, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .calling),
            at(100, .response(180), [.cancelTimer(.finalResponse), .cancelTimer(.B), .passUp,
                                     .startTimer(.C, milliseconds: 120_000)], .proceeding),
            at(200, .cancel, [.cancelTimer(.C), .sendCancel, .startTimer(.B, milliseconds: 32000)], .proceeding),
            at(300, .response(180), [.passUp], .proceeding),
            // The 200 crossed the CANCEL: it is passed up like any 2xx.
            at(400, .response(200), [.cancelTimer(.B), .passUp, .startTimer(.M, milliseconds: 32000)], .accepted),
            at(500, .cancel, [], .accepted),
        ])
    }
}
