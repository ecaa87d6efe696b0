import Testing

@testable import SIP

/// Forwarding and replying, checked by parsing the output again.
@Suite struct BuilderTests {
    static let routed = crlf("""
        INVITE sip:bob@biloxi.example.com SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.10:5062;rport;branch=z9hG4bKabc;received=10.0.0.9
        Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>
        Route: <sip:p3.example.com;lr>
        Record-Route: <sip:old.example.com;lr>
        Max-Forwards: 1
        From: <sip:alice@atlanta.example.com>;tag=f1
        To: <sip:bob@biloxi.example.com>
        Call-ID: routed-1
        CSeq: 7 INVITE
        X-Debug: secret
        Content-Type: text/plain
        Content-Length: 5

        hello
        """)

    static func forward(_ p: Parsed, _ options: SIPForwardingOptions) throws -> Parsed {
        let out = try build { out throws(SIPBuildError) in try p.message.writeForwardedRequest(into: out, options) }
        let forwarded = Parsed(out)
        #expect(forwarded.validationError() == nil, "\(out.text)")
        return forwarded
    }

    @Test func forwardedRequestGetsNewViaFewerHopsAndThePoppedRoute() throws {
        let p = Parsed(Self.routed)
        try p.message.validate()
        let arena = Arena()
        var options = SIPForwardingOptions()
        options.via = .raw(arena.bytes("SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bKproxy1"))
        options.popRoute = true
        options.received = arena.bytes("203.0.113.7")
        options.rport = 40000
        let f = try Self.forward(p, options)
        let vias = try f.vias()
        #expect(vias.count == 2)
        #expect(f.string(vias[0].branch) == "z9hG4bKproxy1")
        #expect(vias[0].port == 5060)
        // received replaced, rport flag filled in, other parameters untouched.
        #expect(f.string(vias[1].received) == "203.0.113.7")
        #expect(vias[1].rportValue == 40000)
        #expect(f.string(vias[1].branch) == "z9hG4bKabc")
        #expect(f.values(.via)[1] == "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKabc;received=203.0.113.7;rport=40000")
        #expect(f.message.maxForwards == 0)
        #expect(f.values(.route) == ["<sip:p2.example.com;lr>", "<sip:p3.example.com;lr>"])
        #expect(f.message.count(of: .route) == 2)
        #expect(f.string(f.message.body) == "hello")
        #expect(f.header(.contentLength) == "5")
        #expect(f.string(f.message.requestURIText) == "sip:bob@biloxi.example.com")
    }

    @Test func poppingTheOnlyValueOfARouteLineDropsTheLine() throws {
        let p = Parsed(Self.routed
            .replacingOccurrences(of: ", <sip:p2.example.com;lr>", with: "")
            .replacingOccurrences(of: "Max-Forwards: 1", with: "Max-Forwards: 5"))
        var options = SIPForwardingOptions()
        options.popRoute = true
        let f = try Self.forward(p, options)
        #expect(f.values(.route) == ["<sip:p3.example.com;lr>"])
        #expect(f.message.count(of: .route) == 1)
        // Popping again from the output pops the last one.
        let g = try Self.forward(f, options)
        #expect(g.message.count(of: .route) == 0)
    }

    @Test func requestURIIsReplacedAndHeadersAddedAndRemoved() throws {
        let p = Parsed(Self.routed)
        let arena = Arena()
        var options = SIPForwardingOptions()
        options.requestURI = arena.bytes("sip:bob@192.0.2.44:5070;transport=udp")
        options.insertedHeaders = arena.bytes("Record-Route: <sip:proxy.example.com;lr>\r\n")
        options.appendedHeaders = arena.bytes("X-Proxy: ringsip\r\nX-Hop: 1\r\n")
        options.removedKinds.insert(.contentType)
        let debug = try #require(p.message.firstIndex(named: "x-debug"))
        p.message.removeHeader(at: debug)
        let f = try Self.forward(p, options)
        let uri = try #require(f.message.requestURI)
        #expect(f.string(uri.host) == "192.0.2.44" && uri.port == 5070)
        #expect(f.values(.recordRoute) == ["<sip:proxy.example.com;lr>", "<sip:old.example.com;lr>"])
        #expect(f.message.firstIndex(named: "x-debug") == nil)
        #expect(f.message.count(of: .contentType) == 0)
        #expect(f.message.firstIndex(named: "x-hop") != nil)
        // Appended after the received fields, before Content-Length.
        #expect(f.message.firstIndex(named: "x-proxy")! > f.message.firstIndex(of: .cseq)!)
        // Removal lasts until restored.
        #expect(p.message.isHeaderRemoved(at: debug))
        p.message.restoreHeaders()
        #expect(try Self.forward(p, SIPForwardingOptions()).message.firstIndex(named: "x-debug") != nil)
    }

    @Test func missingMaxForwardsIsInsertedAs70() throws {
        let p = Parsed(Self.routed.replacingOccurrences(of: "Max-Forwards: 1\r\n", with: ""))
        #expect(p.message.maxForwards == nil)
        let f = try Self.forward(p, SIPForwardingOptions())
        #expect(f.message.maxForwards == 70)
    }

    @Test func malformedMaxForwardsIsNotForwarded() throws {
        let p = Parsed(Self.routed.replacingOccurrences(of: "Max-Forwards: 1", with: "Max-Forwards: x"))
        #expect(p.validationError()?.reason == .badMaxForwards)
        #expect(throws: SIPBuildError.malformedMessage) {
            try build { out throws(SIPBuildError) in
                try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
            }
        }
    }

    @Test func viaPartsWithAnIPv6HostRoundTrip() throws {
        let p = Parsed(Self.routed)
        let arena = Arena()
        var options = SIPForwardingOptions()
        options.via = .parts(
            transport: .tcp, host: arena.bytes("[2001:db8::1]"), port: 5060, branch: arena.bytes("z9hG4bK6"))
        let f = try Self.forward(p, options)
        let via = try #require(f.message.topVia)
        #expect(f.string(via.host) == "[2001:db8::1]")
        #expect(via.port == 5060 && via.transport == .tcp)
        #expect(f.string(via.branch) == "z9hG4bK6")
    }

    @Test func contentLengthCountsTheBodyNotTheDatagram() throws {
        // No Content-Length over UDP: the body is the rest of the datagram and gets one.
        let noLength = Parsed(Self.routed.replacingOccurrences(of: "Content-Length: 5\r\n", with: ""))
        let f = try Self.forward(noLength, SIPForwardingOptions())
        #expect(f.header(.contentLength) == "5")
        // Bytes after the declared body are not forwarded.
        let trailing = Parsed(Self.routed + "JUNK")
        #expect(trailing.message.length == Self.routed.utf8.count)
        let g = try Self.forward(trailing, SIPForwardingOptions())
        #expect(g.message.length == g.message.bytes.count)
        #expect(g.string(g.message.body) == "hello")
    }

    @Test func everyTooSmallBufferIsRefused() throws {
        let p = Parsed(Self.routed)
        let full = try build { out throws(SIPBuildError) in
            try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
        }
        for capacity in 0..<full.count {
            #expect(throws: SIPBuildError.bufferTooSmall) {
                try build(capacity: capacity) { out throws(SIPBuildError) in
                    try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
                }
            }
        }
        let exact = try build(capacity: full.count) { out throws(SIPBuildError) in
            try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
        }
        #expect(exact == full)
    }

    @Test func forwardedResponseLosesOnlyTheFirstValueOfAMultiValueVia() throws {
        let p = Parsed(crlf("""
            SIP/2.0 180 Ringing
            Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp , SIP/2.0/UDP a.example.com;branch=z9hG4bKa
            v: SIP/2.0/TCP b.example.com;branch=z9hG4bKb
            From: <sip:a@example.com>;tag=1
            To: <sip:b@example.com>;tag=2
            Call-ID: r1
            CSeq: 1 INVITE
            l: 0


            """))
        try p.message.validate()
        let out = try build { out throws(SIPBuildError) in try p.message.writeForwardedResponse(into: out) }
        let f = Parsed(out)
        #expect(f.validationError() == nil)
        #expect(f.values(.via) == [
            "SIP/2.0/UDP a.example.com;branch=z9hG4bKa", "SIP/2.0/TCP b.example.com;branch=z9hG4bKb",
        ])
        #expect(f.string(f.message.reasonPhrase) == "Ringing")
        #expect(out.text.contains("Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKa\r\nv: SIP/2.0/TCP"))
    }

    @Test func responseWithoutViaCannotBeForwarded() throws {
        let p = Parsed(crlf("SIP/2.0 200 OK\nCall-ID: x\n\n"))
        #expect(throws: SIPBuildError.malformedMessage) {
            try build { out throws(SIPBuildError) in try p.message.writeForwardedResponse(into: out) }
        }
    }

    @Test func replyAddsAStableToTagAboveOneHundred() throws {
        let p = Parsed(Self.routed)
        let arena = Arena()
        func reply(_ code: Int, tag: UnsafeRawBufferPointer? = nil) throws -> Parsed {
            Parsed(try build { out throws(SIPBuildError) in
                try p.message.writeReply(
                    into: out, statusCode: code, reason: "Whatever", toTag: tag, server: arena.bytes("ringsip"))
            })
        }
        let first = try reply(483)
        let again = try reply(483)
        #expect(first.validationError() == nil)
        #expect(first.message.statusCode == 483)
        let tag = try #require(first.message.to?.tag)
        #expect(tag.count == 16)
        #expect(first.string(tag) == again.string(try #require(again.message.to?.tag)))
        #expect(first.header(.server) == "ringsip")
        #expect(first.header(.contentLength) == "0")
        #expect(first.values(.via) == p.values(.via))
        #expect(first.header(.callID) == "routed-1")
        #expect(try reply(100).message.to?.tag.isPresent == false)
        let given = try reply(404, tag: arena.bytes("given"))
        #expect(given.string(try #require(given.message.to?.tag)) == "given")
        // Nothing the proxy does not echo: no Route, Max-Forwards, body.
        #expect(first.message.count(of: .route) == 0 && first.message.count(of: .maxForwards) == 0)
    }

    @Test func replyKeepsAnExistingToTag() throws {
        let p = Parsed(Self.routed.replacingOccurrences(
            of: "To: <sip:bob@biloxi.example.com>", with: "To: <sip:bob@biloxi.example.com>;tag=dialog"))
        let reply = Parsed(try build { out throws(SIPBuildError) in
            try p.message.writeReply(into: out, statusCode: 481, reason: "Call/Transaction Does Not Exist")
        })
        #expect(reply.string(try #require(reply.message.to?.tag)) == "dialog")
        #expect(reply.message.count(of: .to) == 1)
    }

    @Test func writerWritesDecimalsAndHex() throws {
        let out = try build { out throws(SIPBuildError) in
            var w = SIPWriter(out)
            for value in [0, 9, 10, 65535, Int.max] {
                w.write(decimal: value)
                w.write(byte: 0x20)
            }
            w.write(hex: 0xDEAD_BEEF, digits: 8)
            return try w.finish()
        }
        #expect(out.text == "0 9 10 65535 9223372036854775807 deadbeef")
    }
}
