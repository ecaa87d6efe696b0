import Testing

@testable import TM

/// RFC 3261 §17.2.1 (figure 7) with RFC 6026 §7.1 and §8.7.
@Suite struct InviteServerTransactionTests {
    typealias M = InviteServerTransaction
    static let udp = M(settings: rfcSettings, transport: .unreliable)
    /// What a 300-699 from the TU returns in `.proceeding` over UDP.
    static let sentFinal: TransactionActions = [
        .sendResponse, .startTimer(.G, milliseconds: 500), .startTimer(.H, milliseconds: 32000),
    ]

    @Test func requestRetransmissionsGetTheLastProvisional() {
        play(Self.udp, [
            // Before any provisional there is nothing to repeat.
            at(0, .request, [], .proceeding),
            at(10, .response(100), [.sendResponse], .proceeding),
            at(500, .request, [.retransmitResponse], .proceeding),
            at(600, .response(180), [.sendResponse], .proceeding),
            at(700, .ack, [], .proceeding),
            at(1500, .request, [.retransmitResponse], .proceeding),
        ])
    }

    @Test func nonSuccessFinalIsRetransmittedDoublingUntilT2AndTimerHTimesOut() {
        var rows: [Row<M>] = [
            at(0, .response(100), [.sendResponse], .proceeding),
            at(1000, .response(486), Self.sentFinal, .completed),
            fire(.G, at: 1500, [.retransmitResponse, .startTimer(.G, milliseconds: 1000)], .completed),
            fire(.G, at: 2500, [.retransmitResponse, .startTimer(.G, milliseconds: 2000)], .completed),
            fire(.G, at: 4500, [.retransmitResponse, .startTimer(.G, milliseconds: 4000)], .completed),
            // A retransmitted INVITE gets the final response too, without disturbing Timer G.
            at(5000, .request, [.retransmitResponse], .completed),
        ]
        for time in stride(from: 8500, through: 32500, by: 4000) {
            rows.append(fire(.G, at: UInt64(time), [.retransmitResponse, .startTimer(.G, milliseconds: 4000)],
                             .completed))
        }
        rows.append(fire(.H, at: 33000, [.cancelTimer(.G), .timeout, .terminated], .terminated))
        play(Self.udp, rows)
    }

    @Test func ackMovesToConfirmedAndTimerIEndsIt() {
        play(Self.udp, [
            at(0, .response(486), Self.sentFinal, .completed),
            at(100, .request, [.retransmitResponse], .completed),
            at(200, .ack, [.cancelTimer(.G), .cancelTimer(.H), .startTimer(.I, milliseconds: 5000)], .confirmed),
            // ACK and INVITE retransmissions are absorbed in Confirmed.
            at(300, .ack, [], .confirmed),
            at(400, .request, [], .confirmed),
            at(500, .transportError, [], .confirmed),
            fire(.I, at: 5200, [.terminated], .terminated),
        ])
    }

    @Test func successMovesToAcceptedWhereAcksArePassedUpUntilTimerL() {
        play(Self.udp, [
            at(0, .response(100), [.sendResponse], .proceeding),
            at(1000, .response(200), [.sendResponse, .startTimer(.L, milliseconds: 32000)], .accepted),
            // RFC 6026 §7.1: INVITE retransmissions absorbed, the TU's 2xx retransmissions sent, ACKs passed up.
            at(1100, .request, [], .accepted),
            at(1500, .response(200), [.sendResponse], .accepted),
            at(1600, .ack, [.passUp], .accepted),
            at(1700, .response(486), [], .accepted),
            at(1800, .response(180), [], .accepted),
            at(1900, .transportError, [.transportError], .accepted),
            fire(.L, at: 33000, [.terminated], .terminated),
        ])
    }

    @Test func successAfterANonSuccessFinalIsSentWithoutReplacingIt() {
        play(Self.udp, [
            at(0, .response(487), Self.sentFinal, .completed),
            // A 200 that crossed the CANCEL still goes upstream (§16.7 step 10); Timer G keeps repeating the 487.
            at(100, .response(200), [.sendResponseStatelessly], .completed),
            at(150, .response(180), [], .completed),
            at(160, .response(503), [], .completed),
            fire(.G, at: 500, [.retransmitResponse, .startTimer(.G, milliseconds: 1000)], .completed),
            at(600, .ack, [.cancelTimer(.G), .cancelTimer(.H), .startTimer(.I, milliseconds: 5000)], .confirmed),
            at(700, .response(200), [.sendResponseStatelessly], .confirmed),
        ])
    }

    @Test func reliableTransportNeverRetransmitsAndTimerIIsZero() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .response(486), [.sendResponse, .startTimer(.H, milliseconds: 32000)], .completed),
            at(100, .request, [.retransmitResponse], .completed),
            at(200, .ack, [.cancelTimer(.H), .terminated], .terminated),
        ])
    }

    @Test func transportErrorInformsTheTU() {
        play(Self.udp, [
            at(0, .response(404), Self.sentFinal, .completed),
            at(5, .transportError, [.cancelTimer(.G), .cancelTimer(.H), .transportError, .terminated], .terminated),
        ])
        play(Self.udp, [
            at(0, .transportError, [.transportError, .terminated], .terminated),
        ])
    }
}
