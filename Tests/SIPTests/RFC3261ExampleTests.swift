import Testing

@testable import SIP

/// The session setup of RFC 3261 §24.2 through the atlanta.com and biloxi.com proxies: the builders
/// must turn each message into the next one byte for byte.
@Suite struct RFC3261ExampleTests {
    /// 142 bytes standing in for "(Alice's SDP not shown)".
    static let aliceSDP = String(repeating: "a", count: 140) + "\r\n"
    static let bobSDP = String(repeating: "b", count: 129) + "\r\n"

    static let f1 = crlf("""
        INVITE sip:bob@biloxi.com SIP/2.0
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8
        Max-Forwards: 70
        To: Bob <sip:bob@biloxi.com>
        From: Alice <sip:alice@atlanta.com>;tag=1928301774
        Call-ID: a84b4c76e66710
        CSeq: 314159 INVITE
        Contact: <sip:alice@pc33.atlanta.com>
        Content-Type: application/sdp
        Content-Length: 142


        """) + aliceSDP

    static let f2 = crlf("""
        SIP/2.0 100 Trying
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
        To: Bob <sip:bob@biloxi.com>
        From: Alice <sip:alice@atlanta.com>;tag=1928301774
        Call-ID: a84b4c76e66710
        CSeq: 314159 INVITE
        Content-Length: 0


        """)

    static let f3 = crlf("""
        INVITE sip:bob@biloxi.com SIP/2.0
        Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
        Max-Forwards: 69
        To: Bob <sip:bob@biloxi.com>
        From: Alice <sip:alice@atlanta.com>;tag=1928301774
        Call-ID: a84b4c76e66710
        CSeq: 314159 INVITE
        Contact: <sip:alice@pc33.atlanta.com>
        Content-Type: application/sdp
        Content-Length: 142


        """) + aliceSDP

    static let f11 = crlf("""
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3
        Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
        To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
        From: Alice <sip:alice@atlanta.com>;tag=1928301774
        Call-ID: a84b4c76e66710
        CSeq: 314159 INVITE
        Contact: <sip:bob@192.0.2.4>
        Content-Type: application/sdp
        Content-Length: 131


        """) + bobSDP

    static let f12 = crlf("""
        SIP/2.0 200 OK
        Via: SIP/2.0/UDP bigbox3.site3.atlanta.com;branch=z9hG4bK77ef4c2312983.1;received=192.0.2.2
        Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8;received=192.0.2.1
        To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
        From: Alice <sip:alice@atlanta.com>;tag=1928301774
        Call-ID: a84b4c76e66710
        CSeq: 314159 INVITE
        Contact: <sip:bob@192.0.2.4>
        Content-Type: application/sdp
        Content-Length: 131


        """) + bobSDP

    static let register = crlf("""
        REGISTER sip:registrar.biloxi.com SIP/2.0
        Via: SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7
        Max-Forwards: 70
        To: Bob <sip:bob@biloxi.com>
        From: Bob <sip:bob@biloxi.com>;tag=456248
        Call-ID: 843817637684230@998sdasdh09
        CSeq: 1826 REGISTER
        Contact: <sip:bob@192.0.2.4>
        Expires: 7200
        Content-Length: 0


        """)

    @Test func f1ParsesIntoItsFields() throws {
        let p = Parsed(Self.f1)
        #expect(p.validationError() == nil)
        let m = p.message
        #expect(m.method == .invite)
        #expect(p.string(try #require(m.requestURI).user) == "bob")
        #expect(p.string(try #require(m.to).displayName) == "Bob")
        #expect(p.string(try #require(m.from).tag) == "1928301774")
        #expect(m.cseq?.number == 314159)
        #expect(m.maxForwards == 70)
        #expect(m.body.count == 142)
        #expect(m.length == Self.f1.utf8.count)
        let via = try #require(m.topVia)
        #expect(p.string(via.host) == "pc33.atlanta.com" && via.port == nil && via.transport == .udp)
    }

    @Test func atlantaProxyTurnsF1IntoF3() throws {
        let p = Parsed(Self.f1)
        try p.message.validate()
        let arena = Arena()
        var options = SIPForwardingOptions()
        options.via = .parts(
            transport: .udp, host: arena.bytes("bigbox3.site3.atlanta.com"), port: nil,
            branch: arena.bytes("z9hG4bK77ef4c2312983.1"))
        options.received = arena.bytes("192.0.2.1")
        let out = try build { out throws(SIPBuildError) in try p.message.writeForwardedRequest(into: out, options) }
        #expect(out.text == Self.f3)
    }

    @Test func atlantaProxyAnswersF1WithF2() throws {
        let p = Parsed(Self.f1)
        try p.message.validate()
        let arena = Arena()
        let out = try build { out throws(SIPBuildError) in
            try p.message.writeReply(into: out, statusCode: 100, reason: "Trying", received: arena.bytes("192.0.2.1"))
        }
        #expect(out.text == Self.f2)
    }

    @Test func biloxiProxyTurnsF11IntoF12() throws {
        let p = Parsed(Self.f11)
        try p.message.validate()
        let out = try build { out throws(SIPBuildError) in try p.message.writeForwardedResponse(into: out) }
        #expect(out.text == Self.f12)
    }

    @Test func registerOfSection24_1Validates() throws {
        let p = Parsed(Self.register)
        #expect(p.validationError() == nil)
        #expect(p.message.method == .register)
        #expect(p.message.topVia?.port == 5060)
        #expect(p.header(.expires) == "7200")
        #expect(p.message.body.count == 0)
    }
}
