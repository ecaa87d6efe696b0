import Testing

@testable import TM

/// RFC 3261 §17.1.2 (figure 6), plus `fr_timeout`.
@Suite struct NonInviteClientTransactionTests {
    typealias M = NonInviteClientTransaction
    static let udp = M(settings: rfcSettings, transport: .unreliable)
    /// What `start` returns over UDP with the RFC timers alone.
    static let sent: TransactionActions = [
        .sendRequest, .startTimer(.E, milliseconds: 500), .startTimer(.F, milliseconds: 32000),
    ]

    @Test func retransmitIntervalDoublesUntilT2AndTimerFTimesOut() {
        var rows: [Row<M>] = [
            at(0, .start, Self.sent, .trying),
            fire(.E, at: 500, [.retransmitRequest, .startTimer(.E, milliseconds: 1000)], .trying),
            fire(.E, at: 1500, [.retransmitRequest, .startTimer(.E, milliseconds: 2000)], .trying),
            fire(.E, at: 3500, [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .trying),
        ]
        // From here on every interval is T2: 7.5 s, 11.5 s, ... 31.5 s.
        for time in stride(from: 7500, through: 31500, by: 4000) {
            rows.append(fire(.E, at: UInt64(time), [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .trying))
        }
        rows.append(fire(.F, at: 32000, [.cancelTimer(.E), .timeout, .terminated], .terminated))
        play(Self.udp, rows)
    }

    @Test func provisionalMovesToProceedingWhereTimerEFiresAtT2() {
        play(Self.udp, [
            at(0, .start, Self.sent, .trying),
            fire(.E, at: 500, [.retransmitRequest, .startTimer(.E, milliseconds: 1000)], .trying),
            // Timer E keeps its deadline; when it fires in Proceeding it is reset to T2 (§17.1.2.2).
            at(600, .response(100), [.passUp], .proceeding),
            fire(.E, at: 1500, [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .proceeding),
            at(2000, .response(180), [.passUp], .proceeding),
            fire(.E, at: 5500, [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .proceeding),
            at(6000, .response(200), [.cancelTimer(.E), .cancelTimer(.F), .passUp, .startTimer(.K, milliseconds: 5000)],
               .completed),
            // Retransmissions of the final response are absorbed in Completed.
            at(6100, .response(200), [], .completed),
            at(6200, .response(100), [], .completed),
            at(6300, .transportError, [], .completed),
            fire(.K, at: 11000, [.terminated], .terminated),
        ])
    }

    @Test func finalResponseInTryingCompletes() {
        play(Self.udp, [
            at(0, .start, Self.sent, .trying),
            at(40, .response(404), [.cancelTimer(.E), .cancelTimer(.F), .passUp, .startTimer(.K, milliseconds: 5000)],
               .completed),
            fire(.K, at: 5040, [.terminated], .terminated),
        ])
    }

    @Test func timerFTimesOutInProceeding() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.F, milliseconds: 32000)], .trying),
            at(10, .response(100), [.passUp], .proceeding),
            fire(.F, at: 32000, [.timeout, .terminated], .terminated),
        ])
    }

    @Test func reliableTransportNeverRetransmitsAndTimerKIsZero() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .start, [.sendRequest, .startTimer(.F, milliseconds: 32000)], .trying),
            at(50, .response(200), [.cancelTimer(.F), .passUp, .terminated], .terminated),
        ])
    }

    @Test func finalResponseTimeoutFailsOverBeforeTimerF() {
        var rows: [Row<M>] = [
            at(0, .start, [.sendRequest, .startTimer(.E, milliseconds: 500), .startTimer(.F, milliseconds: 32000),
                           .startTimer(.finalResponse, milliseconds: 30000)], .trying),
            fire(.E, at: 500, [.retransmitRequest, .startTimer(.E, milliseconds: 1000)], .trying),
            fire(.E, at: 1500, [.retransmitRequest, .startTimer(.E, milliseconds: 2000)], .trying),
            fire(.E, at: 3500, [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .trying),
        ]
        for time in stride(from: 7500, through: 27500, by: 4000) {
            rows.append(fire(.E, at: UInt64(time), [.retransmitRequest, .startTimer(.E, milliseconds: 4000)], .trying))
        }
        rows.append(fire(.finalResponse, at: 30000, [.cancelTimer(.E), .cancelTimer(.F), .timeout, .terminated],
                         .terminated))
        play(M(settings: TimerSettings(), transport: .unreliable), rows)
    }

    @Test func transportErrorInformsTheTU() {
        play(Self.udp, [
            at(0, .start, Self.sent, .trying),
            at(1, .transportError, [.cancelTimer(.E), .cancelTimer(.F), .transportError, .terminated], .terminated),
        ])
    }
}
