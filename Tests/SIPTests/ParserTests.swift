import Testing

@testable import SIP

/// Pieces of the parser on their own: framing edge cases, URIs, Via, name-addr, lists, tables.
@Suite struct ParserTests {
    static let minimal = crlf("""
        OPTIONS sip:x@example.com SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1
        From: <sip:a@example.com>;tag=1
        To: <sip:x@example.com>
        Call-ID: c1
        CSeq: 1 OPTIONS
        Content-Length: 0


        """)

    /// Parses `text` as the only value of a throwaway header and hands back its span and bytes.
    static func value(_ text: String) -> Parsed {
        Parsed(crlf("OPTIONS sip:x SIP/2.0\nX: ") + text + "\r\n\r\n")
    }

    static func uri(_ text: String) throws(SIPParseError) -> (Parsed, SIPURI) {
        let p = value(text)
        let span = p.message.header(at: 0).value
        return (p, try SIPURI.parse(p.bytes, span.lower, span.upper))
    }

    // MARK: Framing

    @Test func leadingCRLFsAreSkippedAndCRLFAloneIsAKeepAlive() {
        #expect(Parsed("\r\n\r\n" + Self.minimal).validationError() == nil)
        #expect(Parsed("\r\n\r\n").parseError?.reason == .empty)
        #expect(Parsed("").parseError?.reason == .empty)
    }

    @Test func bareLineFeedsAreRefused() {
        let p = Parsed(Self.minimal.replacingOccurrences(of: "Call-ID: c1\r\n", with: "Call-ID: c1\nX: y\r\n"))
        #expect(p.parseError?.reason == .badHeaderLine)
        #expect(Parsed("OPTIONS sip:x SIP/2.0\n\n").parseError?.reason == .badStartLine)
    }

    @Test func aBadHeaderLineStillIndexesTheFieldsAfterIt() throws {
        let p = Parsed(crlf("""
            INVITE sip:x@example.com SIP/2.0
            No colon here
            Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1
            CSeq: 1 INVITE


            """))
        let error = try #require(p.parseError)
        #expect(error.reason == .badHeaderLine)
        #expect(error.offset == "INVITE sip:x@example.com SIP/2.0\r\nNo ".utf8.count)  // where ":" was due
        #expect(p.message.isAnswerable)
        #expect(p.message.headerCount == 2)
    }

    @Test func startLinesThatCannotBeReadAreUnanswerable() {
        let lines = [
            "INVITE", "INVITE sip:x", "INVITE sip:x HTTP/1.1", "INVITE  SIP/2.0", "SIP/2.0 20 OK", "SIP/2.0 099 Low",
            "SIP/2.0 700 High", "SIP/2.0x 200 OK", "<INVITE> sip:x SIP/2.0", " INVITE sip:x SIP/2.0",
        ]
        for line in lines {
            let p = Parsed(line + "\r\nVia: SIP/2.0/UDP h\r\n\r\n")
            #expect(p.parseError?.reason == .badStartLine, "\(line)")
            #expect(!p.message.isAnswerable)
        }
        #expect(Parsed("SIP/2.0 200\r\n\r\n").message.statusCode == 200)  // no SP, no reason: tolerated
    }

    @Test func tooManyHeadersIsReported() {
        let message = SIPMessage(headerCapacity: 4)
        let text = Array(Self.minimal.utf8)
        _ = text.withUnsafeBytes { buffer in
            #expect(throws: SIPParseError(.tooManyHeaders, at: "OPTIONS sip:x@example.com SIP/2.0\r\n".utf8.count
                + "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n".utf8.count
                + "To: <sip:x@example.com>\r\nCall-ID: c1\r\n".utf8.count)) {
                try message.parse(buffer)
            }
        }
    }

    @Test func oneMessageObjectIsReusedWithoutStaleValues() {
        let message = SIPMessage()
        let first = Array(Self.minimal.utf8)
        let second = Array(RFC3261ExampleTests.f11.utf8)
        first.withUnsafeBytes { buffer in
            try? message.parse(buffer)
            #expect(message.topVia?.port == nil && message.isRequest)
            #expect(message.cseq?.method == .options)
        }
        second.withUnsafeBytes { buffer in
            try? message.parse(buffer)
            #expect(!message.isRequest && message.statusCode == 200)
            #expect(message.string(message.topVia?.host ?? .absent) == "server10.biloxi.com")
            #expect(message.cseq?.method == .invite)
            #expect(message.count(of: .via) == 3)
            #expect(message.count(of: .maxForwards) == 0)
        }
    }

    @Test func contentLengthMayCarryLWSButNothingElse() {
        #expect(Parsed(Self.minimal.replacingOccurrences(of: "Content-Length: 0", with: "l:   0  ")).parseError == nil)
        for bad in ["l: 0 0", "l: 99999999999", "l: +1", "l:"] {
            let p = Parsed(Self.minimal.replacingOccurrences(of: "Content-Length: 0", with: bad))
            #expect(p.parseError?.reason == .badContentLength, "\(bad)")
        }
    }

    // MARK: URIs

    @Test func sipURIPartsAreSplit() throws {
        let (p, uri) = try Self.uri("sips:alice:secret@[2001:db8::10]:5061;transport=tls;lr?subject=hi&x=y")
        #expect(uri.scheme == .sips)
        #expect(p.string(uri.user) == "alice" && p.string(uri.password) == "secret")
        #expect(p.string(uri.host) == "[2001:db8::10]" && uri.isIPv6Reference)
        #expect(uri.port == 5061)
        #expect(p.string(uri.parameters) == "transport=tls;lr")
        #expect(p.string(uri.headers) == "subject=hi&x=y")
        #expect(SIPURI.parameter("transport", in: uri.parameters, of: p.bytes).map { p.string($0) } == "tls")
        #expect(SIPURI.parameter("lr", in: uri.parameters, of: p.bytes) == .absent)
        #expect(SIPURI.parameter("maddr", in: uri.parameters, of: p.bytes) == nil)
    }

    @Test func hostOnlyAndTelURIs() throws {
        let (p, host) = try Self.uri("SIP:Example.COM")
        #expect(host.scheme == .sip && !host.user.isPresent && p.string(host.host) == "Example.COM")
        let (q, tel) = try Self.uri("tel:+1-201-555-0123;phone-context=example.com")
        #expect(tel.scheme == .tel)
        #expect(q.string(tel.user) == "+1-201-555-0123")
        #expect(q.string(tel.parameters) == "phone-context=example.com")
    }

    @Test func malformedURIsAreRefused() {
        let malformed = [
            "sip:", "sip:@example.com", "sip:example.com:99999", "sip:[2001:db8::1", "sip:host;;lr", "sip:host;=x",
            "sip:user%4@host", "sip:host?", "1sip:host", "sip:ho st", "sip:host>", "tel:", "sip:[]", "sip:host:", "x:",
            "sip:host;lr?a b",
        ]
        for text in malformed {
            #expect(throws: SIPParseError.self, "\(text)") { _ = try Self.uri(text) }
        }
    }

    // MARK: Via

    @Test func viaWithIPv6SentByAndEveryKnownParameter() throws {
        let p = Self.value(
            "SIP/2.0/UDP [2001:db8::9]:5080;branch=z9hG4bKx;rport=5090;maddr=224.2.0.1;ttl=16;received=[2001:db8::8]")
        let via = try SIPVia.parse(p.bytes, p.message.header(at: 0).value)
        #expect(p.string(via.host) == "[2001:db8::9]" && via.port == 5080)
        #expect(via.rportValue == 5090 && via.hasRport)
        #expect(p.string(via.maddr) == "224.2.0.1" && via.ttl == 16)
        #expect(p.string(via.received) == "[2001:db8::8]")
        #expect(p.string(via.receivedParameter) == ";received=[2001:db8::8]")
        #expect(p.string(via.protocolName) == "SIP" && p.string(via.protocolVersion) == "2.0")
    }

    @Test func malformedViasAreRefused() {
        let malformed = [
            "SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:70000", "SIP/2.0/UDP host;branch", "SIP/2.0/UDP h;rport=x",
            "SIP/2.0/UDP host;ttl=300", "SIP/2.0/UDP host junk", "/2.0/UDP host", "SIP/2.0/UDPhost", "SIP/2.0/UDP [::1",
        ]
        for text in malformed {
            let p = Self.value(text)
            var reason: SIPParseError.Reason?
            do {
                _ = try SIPVia.parse(p.bytes, p.message.header(at: 0).value)
            } catch {
                reason = error.reason
            }
            #expect(reason == .badVia, "\(text)")
        }
    }

    // MARK: name-addr and lists

    @Test func nameAddrForms() throws {
        let quoted = Self.value(#""A \"B\" C" <sip:a@example.com;transport=tcp>;tag=x;foo"#)
        let a = try SIPNameAddr.parse(quoted.bytes, quoted.message.header(at: 0).value)
        #expect(quoted.string(a.displayName) == #"A \"B\" C"#)
        #expect(quoted.string(a.uri.parameters) == "transport=tcp")
        #expect(quoted.string(a.tag) == "x")
        let bare = Self.value("sip:a@example.com;tag=y")
        let b = try SIPNameAddr.parse(bare.bytes, bare.message.header(at: 0).value)
        #expect(!b.isNameAddr && bare.string(b.tag) == "y" && !b.uri.parameters.isPresent)
        let malformed = [
            "<sip:a@example.com", "\"open <sip:a@example.com>", "<sip:a@example.com> junk", "Bad, Name <sip:a@b>",
            "<sip:a@example.com>;tag", "< sip:a@example.com>", "",
        ]
        for text in malformed {
            let p = Self.value(text)
            #expect(throws: SIPParseError.self, "\(text)") {
                _ = try SIPNameAddr.parse(p.bytes, p.message.header(at: 0).value)
            }
        }
    }

    @Test func listsSplitOutsideQuotesAndAngleBrackets() {
        let p = Parsed(crlf("""
            OPTIONS sip:x SIP/2.0
            Contact: "a, b" <sip:x;y=1,2>, <sip:z> ,sip:w
            Subject: not, a, list


            """))
        #expect(p.values(.contact) == [#""a, b" <sip:x;y=1,2>"#, "<sip:z>", "sip:w"])
        #expect(p.values(.subject) == ["not, a, list"])
    }

    // MARK: Tables

    @Test func everyHeaderNameAndCompactFormClassifiesBack() {
        for kind in SIPHeaderKind.allCases where kind != .other {
            let name = "\(kind.name)"
            for variant in [name, name.lowercased(), name.uppercased()] {
                let bytes = Array(variant.utf8)
                let got = bytes.withUnsafeBytes { SIPHeaderKind.classify($0, 0, bytes.count) }
                #expect(got == kind, "\(variant)")
            }
        }
        let compact: [Character: SIPHeaderKind] = [
            "v": .via, "f": .from, "t": .to, "i": .callID, "l": .contentLength, "m": .contact, "c": .contentType,
            "k": .supported, "s": .subject, "e": .contentEncoding, "o": .event, "r": .referTo, "u": .allowEvents,
            "x": .sessionExpires, "y": .identity, "b": .referredBy, "a": .acceptContact, "j": .rejectContact,
            "d": .requestDisposition, "n": .identityInfo,
        ]
        for (letter, kind) in compact {
            for variant in [String(letter), String(letter).uppercased()] {
                let bytes = Array(variant.utf8)
                #expect(bytes.withUnsafeBytes { SIPHeaderKind.classify($0, 0, 1) } == kind)
            }
        }
        #expect(Array("X-Via".utf8).withUnsafeBytes { SIPHeaderKind.classify($0, 0, 5) } == .other)
    }

    @Test func methodsCompareCaseSensitively() {
        for method in SIPMethod.allCases where method != .other {
            let bytes = Array("\(method.name)".utf8)
            #expect(bytes.withUnsafeBytes { SIPMethod.classify($0, 0, bytes.count) } == method)
            let lower = Array("\(method.name)".lowercased().utf8)
            #expect(lower.withUnsafeBytes { SIPMethod.classify($0, 0, lower.count) } == .other)
        }
    }

    @Test func byteClassMasksMatchTheirDefinitions() {
        for (cls, extra) in ByteClass.definitions {
            let built = ByteClass(members: ByteClass.alphanumeric + extra)
            #expect(cls.low == built.low && cls.high == built.high, "\(extra)")
        }
        let ipv6 = ByteClass(members: ":.0123456789ABCDEFabcdef")
        #expect(ByteClass.ipv6.low == ipv6.low && ByteClass.ipv6.high == ipv6.high)
        let letters = ByteClass(members: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        #expect(ByteClass.letter.low == letters.low && ByteClass.letter.high == letters.high)
        let params = ByteClass(members: ByteClass.alphanumeric + "[]/:&+$-_.!~*'()%=;")
        let built = ByteClass.uriParameterOrSemicolon
        #expect(built.low == params.low && built.high == params.high)
    }

    @Test func fnv1a64MatchesReferenceVectors() {
        #expect(Array("".utf8).withUnsafeBytes { FNV1a64.hash($0) } == 0xcbf2_9ce4_8422_2325)
        #expect(Array("a".utf8).withUnsafeBytes { FNV1a64.hash($0) } == 0xaf63_dc4c_8601_ec8c)
        #expect(Array("foobar".utf8).withUnsafeBytes { FNV1a64.hash($0) } == 0x8594_4171_f739_67e8)
    }

    @Test func unescapingRefusesBrokenEscapesAndShortBuffers() {
        let source = Array("a%4".utf8)
        var out = [UInt8](repeating: 0, count: 8)
        #expect(source.withUnsafeBytes { s in out.withUnsafeMutableBytes { SIPEscaping.unescape(s, into: $0) } } == nil)
        let ok = Array("%41%62c".utf8)
        var short = [UInt8](repeating: 0, count: 2)
        #expect(ok.withUnsafeBytes { s in short.withUnsafeMutableBytes { SIPEscaping.unescape(s, into: $0) } } == nil)
        #expect(ok.withUnsafeBytes { SIPEscaping.unescapedEquals($0, "Abc") })
        #expect(!ok.withUnsafeBytes { SIPEscaping.unescapedEquals($0, "Ab") })
    }
}
