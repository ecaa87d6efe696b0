import Testing
@testable import SIP

@Suite struct ValidateForRelayTests {
    func check(_ text: String) -> SIPParseError? {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { buffer -> SIPParseError? in
            let message = SIPMessage()
            do throws(SIPParseError) {
                try message.parse(buffer)
                try message.validateForRelay()
                return nil
            } catch {
                return error
            }
        }
    }

    let head = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb\r\n"
    let tail = "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"

    @Test func relayableResponsePassesWithoutParsingFromAndTo() {
        #expect(check(head + "From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n" + tail) == nil)
        // A From value the proxy never reads does not stop the relay; the endpoints judge it.
        #expect(check(head + "From: <sip:a@h;tag=1\r\nTo: <sip:b@h>;tag=2\r\n" + tail) == nil)
    }

    @Test func responseMissingWhatRoutingNeedsFails() {
        #expect(check("SIP/2.0 200 OK\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\n" + tail)?.reason == .missingVia)
        #expect(check(head + "From: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: one INVITE\r\n\r\n")?.reason == .badCSeq)
        #expect(check(head + "To: <sip:b@h>\r\n" + tail)?.reason == .missingFrom)
        #expect(check(head + "From: <sip:a@h>\r\nTo: <sip:b@h>\r\nTo: <sip:c@h>\r\n" + tail)?.reason == .multipleTo)
        #expect(check(head.replacing("SIP/2.0 200", with: "SIP/3.0 200") + "From: <sip:a@h>\r\nTo: <sip:b@h>\r\n" + tail)?
            .reason == .unsupportedVersion)
    }
}
