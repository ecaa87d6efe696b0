import Testing

@testable import SIP

/// RFC 4475 §3.1.2: invalid messages. Each must fail where the RFC says, with an answer (400/505) when
/// the request is answerable, or be accepted where the RFC grants a proxy that liberty.
@Suite struct TortureInvalidTests {
    @Test func badinv01EmptyViaParametersMakeTheRequestUnanswerable() throws {
        let p = try Parsed(file: "badinv01")
        #expect(p.parseError == nil)
        let error = try #require(p.validationError())
        #expect(error.reason == .badVia)
        #expect(p.string(SIPSpan(start: Int32(error.offset), end: Int32(error.offset + 2))) == ";,")
        // No readable Via: nowhere to send a 400.
        #expect(p.message.topVia == nil)
        #expect(!p.message.isAnswerable)
        // The Via splits into the values RFC 4475 describes: one real, then empty ones.
        #expect(p.values(.via) == ["SIP/2.0/UDP 192.0.2.15;;", ";", "", ""])
        #expect(throws: SIPParseError.self) { try p.nameAddr(.contact) }
    }

    @Test func clerrContentLengthBeyondTheDatagramIsAnswerable() throws {
        let p = try Parsed(file: "clerr")
        let error = try #require(p.parseError)
        #expect(error.reason == .contentLengthExceedsDatagram)
        #expect(p.string(SIPSpan(start: Int32(error.offset), end: Int32(error.offset + 4))) == "9999")
        #expect(error.reason.phrase.description == "Content-Length exceeds datagram")
        #expect(p.message.isAnswerable)
        #expect(p.message.headerCount == 9)
    }

    @Test func nclNegativeContentLengthIsAnswerable() throws {
        let p = try Parsed(file: "ncl")
        let error = try #require(p.parseError)
        #expect(error.reason == .badContentLength)
        #expect(p.string(SIPSpan(start: Int32(error.offset), end: Int32(error.offset + 4))) == "-999")
        #expect(p.message.isAnswerable)
    }

    @Test func scalar02RejectsTheOverlargeCSeqFirst() throws {
        let p = try Parsed(file: "scalar02")
        #expect(p.parseError == nil)
        #expect(p.validationError()?.reason == .badCSeq)
        #expect(p.message.isAnswerable)
        #expect(p.message.cseq == nil)
        // Max-Forwards: 300 is out of range too; with the CSeq repaired, it is the next complaint.
        var bytes = try TortureCorpus.bytes("scalar02")
        let text = bytes.text.replacingOccurrences(of: "36893488147419103232", with: "1")
        bytes = Array(text.utf8)
        #expect(Parsed(bytes).validationError()?.reason == .badMaxForwards)
    }

    @Test func scalarlgResponseWithOverlargeValuesIsDropped() throws {
        let p = try Parsed(file: "scalarlg")
        #expect(p.parseError == nil)
        #expect(!p.message.isRequest)
        #expect(p.message.statusCode == 503)
        #expect(p.validationError()?.reason == .badCSeq)
        #expect(!p.message.isAnswerable)
    }

    @Test func quotbalUnterminatedQuoteInToIsA400() throws {
        let p = try Parsed(file: "quotbal")
        #expect(p.validationError()?.reason == .badTo)
        #expect(p.message.isAnswerable)
    }

    @Test func ltgtruriAngleBracketsAroundTheRequestURIAreA400() throws {
        let p = try Parsed(file: "ltgtruri")
        #expect(p.parseError == nil)
        #expect(p.string(p.message.requestURIText) == "<sip:user@example.com>")
        #expect(p.validationError()?.reason == .badRequestURI)
        #expect(p.message.requestURI == nil)
        #expect(p.message.isAnswerable)
    }

    @Test func lwsruriSpaceInsideTheRequestURIIsA400() throws {
        let p = try Parsed(file: "lwsruri")
        #expect(p.string(p.message.requestURIText) == "sip:user@example.com; lr")
        let error = try #require(p.validationError())
        #expect(error.reason == .badRequestURI)
        #expect(error.offset == 7 + "sip:user@example.com".utf8.count)  // the "; lr"
        #expect(p.message.isAnswerable)
    }

    @Test func lwsstartExtraSpacesInTheRequestLineAreTolerated() throws {
        let p = try Parsed(file: "lwsstart")
        #expect(p.validationError() == nil)
        #expect(p.string(p.message.requestURIText) == "sip:user@example.com")
        #expect(p.string(p.message.version) == "SIP/2.0")
        // RFC 4475 §3.1.2.9: a forwarded copy must not carry the extra SPs.
        let out = try build { out throws(SIPBuildError) in
            try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
        }
        #expect(out.text.hasPrefix("INVITE sip:user@example.com SIP/2.0\r\n"))
    }

    @Test func trwsTrailingSpacesInTheRequestLineAreTolerated() throws {
        let p = try Parsed(file: "trws")
        #expect(p.validationError() == nil)
        #expect(p.string(p.message.version) == "SIP/2.0")
        #expect(p.string(p.message.requestURIText) == "sip:remote-target@example.com")
    }

    @Test func escruriHeadersInTheRequestURIAreReadButNotForwarded() throws {
        let p = try Parsed(file: "escruri")
        #expect(p.validationError() == nil)
        let uri = try #require(p.message.requestURI)
        #expect(p.string(uri.headers) == "Route=%3Csip:example.com%3E")
        #expect(p.string(uri.host) == "example.com")
        // RFC 3261 §19.1.5: the headers of a Request-URI are not sent on.
        let out = try build { out throws(SIPBuildError) in
            try p.message.writeForwardedRequest(into: out, SIPForwardingOptions())
        }
        #expect(out.text.hasPrefix("INVITE sip:user@example.com SIP/2.0\r\n"))
    }

    @Test func baddateADateAProxyDoesNotReadIsAccepted() throws {
        let p = try Parsed(file: "baddate")
        #expect(p.validationError() == nil)
        // Date is not a list: its comma does not split it.
        #expect(p.values(.date) == ["Fri, 01 Jan 2010 16:00:00 EST"])
        #expect(p.message.body.count == 150)
    }

    @Test func regbadctBareContactWithHeadersIsReadLiberally() throws {
        let p = try Parsed(file: "regbadct")
        #expect(p.validationError() == nil)
        let contact = try p.nameAddr(.contact)
        #expect(!contact.isNameAddr)
        #expect(p.string(contact.uri.headers) == "Route=%3Csip:sip.example.com%3E")
    }

    @Test func badaspecSpacesInsideAngleBracketsAreA400() throws {
        let p = try Parsed(file: "badaspec")
        #expect(p.validationError()?.reason == .badTo)
        #expect(p.message.isAnswerable)
        #expect(p.string(try #require(p.message.from).displayName) == "Bell, Alexander")
    }

    @Test func baddnUnquotedCommaInTheDisplayNameIsA400() throws {
        // The archive's file lacks the empty line: that alone is a framing error, still answerable.
        let p = try Parsed(file: "baddn")
        #expect(p.parseError?.reason == .missingEmptyLine)
        #expect(p.message.isAnswerable)
        #expect(p.message.headerCount == 8)
        // With the empty line restored, the display name is the problem.
        let repaired = Parsed(try TortureCorpus.bytes("baddn") + Array("\r\n".utf8))
        #expect(repaired.parseError == nil)
        #expect(repaired.validationError()?.reason == .badFrom)
        #expect(repaired.message.isAnswerable)
    }

    @Test func badversUnknownVersionIsA505() throws {
        let p = try Parsed(file: "badvers")
        #expect(p.parseError == nil)
        let error = try #require(p.validationError())
        #expect(error.reason == .unsupportedVersion)
        #expect(error.reason.statusCode == 505)
        #expect(p.string(p.message.version) == "SIP/7.0")
        #expect(p.message.isAnswerable)
        #expect(p.string(try #require(p.message.topVia).protocolVersion) == "7.0")
    }

    @Test func mismatch01CSeqMethodDiffersFromTheRequestLine() throws {
        let p = try Parsed(file: "mismatch01")
        #expect(p.message.method == .options)
        #expect(p.validationError()?.reason == .cseqMethodMismatch)
        #expect(p.message.isAnswerable)
    }

    @Test func mismatch02UnknownMethodWithAMismatchedCSeq() throws {
        let p = try Parsed(file: "mismatch02")
        #expect(p.message.method == .other)
        #expect(p.string(p.message.methodName) == "NEWMETHOD")
        #expect(p.validationError()?.reason == .cseqMethodMismatch)
        #expect(p.message.cseq?.method == .invite)
    }

    @Test func bigcodeOverlargeStatusCodeIsUnreadable() throws {
        let p = try Parsed(file: "bigcode")
        let error = try #require(p.parseError)
        #expect(error.reason == .badStartLine)
        #expect(error.offset == 8)
        #expect(!p.message.hasStartLine)
        #expect(!p.message.isAnswerable)
    }
}
