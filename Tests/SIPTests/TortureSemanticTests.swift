import Testing

@testable import SIP

/// RFC 4475 §3.2–§3.4: syntactically valid messages whose handling is up to the layers above. The
/// parser must read them whole and expose what those layers decide on.
@Suite struct TortureSemanticTests {
    @Test func badbranchCookieAloneIsNotAnRFC3261Branch() throws {
        let p = try Parsed(file: "badbranch")
        #expect(p.validationError() == nil)
        let via = try #require(p.message.topVia)
        #expect(p.string(via.branch) == "z9hG4bK")
        #expect(!via.hasRFC3261Branch(in: p.bytes))
    }

    @Test func insufMissingHeadersAreAnswerableWithWhatIsThere() throws {
        let p = try Parsed(file: "insuf")
        #expect(p.parseError == nil)
        #expect(p.validationError()?.reason == .missingCallID)
        #expect(p.message.isAnswerable)
        let reply = try build { out throws(SIPBuildError) in
            try p.message.writeReply(into: out, statusCode: 400, reason: SIPParseError.Reason.missingCallID.phrase)
        }
        #expect(reply.text == crlf("""
            SIP/2.0 400 Missing Call-ID
            CSeq: 193942 INVITE
            Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
            Content-Length: 0


            """))
    }

    @Test func unkscmUnknownRequestURISchemeIsKeptOpaque() throws {
        let p = try Parsed(file: "unkscm")
        #expect(p.validationError() == nil)
        let uri = try #require(p.message.requestURI)
        #expect(uri.scheme == .other)
        #expect(p.string(uri.opaque) == "totallyopaquecontent")
    }

    @Test func novelscAtypicalSchemeIsKeptOpaque() throws {
        let p = try Parsed(file: "novelsc")
        #expect(p.validationError() == nil)
        let uri = try #require(p.message.requestURI)
        #expect(uri.scheme == .other)
        #expect(p.string(uri.span) == "soap.beep://192.0.2.103:3002")
    }

    @Test func unksm2UnknownSchemesInToFromAndContact() throws {
        let p = try Parsed(file: "unksm2")
        #expect(p.validationError() == nil)
        let to = try #require(p.message.to)
        #expect(to.uri.scheme == .other && !to.isNameAddr)
        #expect(p.string(to.uri.span) == "isbn:2983792873")
        let from = try #require(p.message.from)
        #expect(p.string(from.uri.span) == "http://www.example.com")
        #expect(p.string(from.tag) == "3234233")
        #expect(p.string(try p.nameAddr(.contact).uri.opaque) == "John_Smith")
    }

    @Test func bext01ListsProxyRequireOptions() throws {
        let p = try Parsed(file: "bext01")
        #expect(p.validationError() == nil)
        #expect(p.values(.proxyRequire) == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])
        #expect(p.values(.require) == ["nothingSupportsThis", "nothingSupportsThisEither"])
        #expect(p.message.topVia?.transport == .tls)
    }

    @Test func invutUnknownContentTypeIsFramedByContentLength() throws {
        let p = try Parsed(file: "invut")
        #expect(p.validationError() == nil)
        #expect(p.header(.contentType) == "application/unknownformat")
        #expect(p.message.body.count == 40)
    }

    @Test func regaut01UnknownAuthorizationSchemeIsOpaque() throws {
        let p = try Parsed(file: "regaut01")
        #expect(p.validationError() == nil)
        #expect(p.header(.authorization) == "NoOneKnowsThisScheme opaque-data=here")
        #expect(p.header(.contentLength) == "0")  // `Content-Length:0`
    }

    @Test func multi01RepeatedSingleValueHeadersAreA400() throws {
        let p = try Parsed(file: "multi01")
        #expect(p.parseError == nil)
        let error = try #require(p.validationError())
        #expect(error.reason == .multipleCSeq)
        #expect(p.string(SIPSpan(start: Int32(error.offset), end: Int32(error.offset + 11))) == "CSeq: 59 IN")
        #expect(p.message.isAnswerable)
        #expect(p.message.count(of: .callID) == 2)
        #expect(p.message.count(of: .maxForwards) == 2)
    }

    @Test func mcl01TwoContentLengthsAreA400() throws {
        let p = try Parsed(file: "mcl01")
        let error = try #require(p.parseError)
        #expect(error.reason == .multipleContentLength)
        #expect(p.message.isAnswerable)
    }

    @Test func bcastResponseLosesOnlyItsTopVia() throws {
        let p = try Parsed(file: "bcast")
        #expect(p.validationError() == nil)
        let vias = try p.vias()
        #expect(vias.count == 2)
        #expect(p.string(vias[1].host) == "255.255.255.255")
        let out = try build { out throws(SIPBuildError) in try p.message.writeForwardedResponse(into: out) }
        let forwarded = Parsed(out)
        #expect(forwarded.validationError() == nil)
        #expect(try forwarded.vias().map { forwarded.string($0.host) } == ["255.255.255.255"])
        #expect(forwarded.message.body.count == 154)
    }

    @Test func zeromfMaxForwardsZeroGetsA483NotAForward() throws {
        let p = try Parsed(file: "zeromf")
        #expect(p.validationError() == nil)
        #expect(p.message.maxForwards == 0)
        #expect(throws: SIPBuildError.maxForwardsExhausted) {
            try build { out throws(SIPBuildError) in
                try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
            }
        }
        let reply = Parsed(try build { out throws(SIPBuildError) in
            try p.message.writeReply(into: out, statusCode: 483, reason: "Too Many Hops")
        })
        #expect(reply.validationError() == nil)
        #expect(reply.message.statusCode == 483)
        #expect(reply.message.to?.tag.count == 16)
    }

    @Test func cparam01BareContactParameterIsAHeaderParameter() throws {
        let p = try Parsed(file: "cparam01")
        #expect(p.validationError() == nil)
        let contact = try p.nameAddr(.contact)
        #expect(!contact.uri.parameters.isPresent)
        #expect(p.string(contact.parameters) == ";unknownparam")
        #expect(p.string(contact.uri.user) == "+19725552222")
    }

    @Test func cparam02BracketedContactParameterIsAURIParameter() throws {
        let p = try Parsed(file: "cparam02")
        #expect(p.validationError() == nil)
        let contact = try p.nameAddr(.contact)
        #expect(p.string(contact.uri.parameters) == "unknownparam")
        #expect(!contact.parameters.isPresent)
    }

    @Test func regescrtEscapedHeaderInABracketedContact() throws {
        let p = try Parsed(file: "regescrt")
        #expect(p.validationError() == nil)
        let contact = try p.nameAddr(.contact)  // `M:`
        #expect(p.string(contact.uri.headers) == "Route=%3Csip:sip.example.com%3E")
        #expect(p.unescaped(contact.uri.headers).text == "Route=<sip:sip.example.com>")
    }

    @Test func sdp01UnacceptableAcceptIsStillAValidRequest() throws {
        let p = try Parsed(file: "sdp01")
        #expect(p.validationError() == nil)
        #expect(p.values(.accept) == ["text/nobodyKnowsThis"])
        #expect(p.message.body.count == 150)
    }

    @Test func inv2543OldSyntaxWithoutMaxForwardsOrBranchIsForwarded() throws {
        let p = try Parsed(file: "inv2543")
        #expect(p.validationError() == nil)
        #expect(p.message.maxForwards == nil)
        let via = try #require(p.message.topVia)
        #expect(!via.branch.isPresent)
        #expect(p.message.from?.tag.isPresent == false)
        #expect(p.message.count(of: .contentLength) == 0)
        let forwarded = Parsed(try build { out throws(SIPBuildError) in
            try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
        })
        #expect(forwarded.validationError() == nil)
        #expect(forwarded.message.maxForwards == 70)
        #expect(forwarded.message.body.count == p.message.body.count)
        #expect(forwarded.header(.contentLength) == String(p.message.body.count))
    }
}
