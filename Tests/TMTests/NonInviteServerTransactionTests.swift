import Testing

@testable import TM

/// RFC 3261 §17.2.2 (figure 8).
@Suite struct NonInviteServerTransactionTests {
    typealias M = NonInviteServerTransaction
    static let udp = M(settings: rfcSettings, transport: .unreliable)

    @Test func retransmissionsAreAbsorbedThenAnsweredWithTheLastResponseUntilTimerJ() {
        play(Self.udp, [
            at(0, .request, [], .trying),
            at(100, .response(100), [.sendResponse], .proceeding),
            at(500, .request, [.retransmitResponse], .proceeding),
            at(600, .response(180), [.sendResponse], .proceeding),
            at(1000, .response(200), [.sendResponse, .startTimer(.J, milliseconds: 32000)], .completed),
            at(1500, .request, [.retransmitResponse], .completed),
            // Any other final response from the TU is discarded (§17.2.2).
            at(1600, .response(500), [], .completed),
            fire(.J, at: 33000, [.terminated], .terminated),
        ])
    }

    @Test func finalResponseInTryingCompletes() {
        play(Self.udp, [
            at(0, .response(404), [.sendResponse, .startTimer(.J, milliseconds: 32000)], .completed),
            fire(.J, at: 32000, [.terminated], .terminated),
        ])
    }

    @Test func reliableTransportTimerJIsZero() {
        play(M(settings: rfcSettings, transport: .reliable), [
            at(0, .response(200), [.sendResponse, .terminated], .terminated),
        ])
    }

    @Test func transportErrorInformsTheTU() {
        play(Self.udp, [
            at(0, .response(200), [.sendResponse, .startTimer(.J, milliseconds: 32000)], .completed),
            at(1, .transportError, [.cancelTimer(.J), .transportError, .terminated], .terminated),
        ])
        play(Self.udp, [
            at(0, .response(100), [.sendResponse], .proceeding),
            at(1, .transportError, [.transportError, .terminated], .terminated),
        ])
    }
}
