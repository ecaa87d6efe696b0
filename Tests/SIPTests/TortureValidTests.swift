import Testing

@testable import SIP

/// RFC 4475 §3.1.1: valid messages. Each must parse and validate, and its odd fields must read right.
@Suite struct TortureValidTests {
    @Test func wsinvReadsFoldsCompactFormsAndOddWhitespace() throws {
        let p = try Parsed(file: "wsinv")
        #expect(p.parseError == nil)
        #expect(p.validationError() == nil)
        let m = p.message
        #expect(m.method == .invite)
        let uri = try #require(m.requestURI)
        #expect(uri.scheme == .sip)
        #expect(p.string(uri.user) == "vivekg")
        #expect(p.string(uri.host) == "chair-dnrc.example.com")
        #expect(p.string(uri.parameters) == "unknownparam")
        // `TO :` folded onto the next line, LWS around ";" and "=".
        let to = try #require(m.to)
        #expect(p.string(to.uri.host) == "chair-dnrc.example.com")
        #expect(p.string(to.tag) == "1918181833n")
        // `from   :` with an escaped quote and backslash in the display name, tag on a folded line.
        let from = try #require(m.from)
        #expect(from.isDisplayNameQuoted)
        #expect(p.string(from.displayName) == #"J Rosenberg \\\""#)
        #expect(p.string(from.tag) == "98asjd8")
        #expect(m.maxForwards == 68)  // "0068"
        #expect(p.string(try #require(m.callID)) == "wsinv.ndaksdj@192.0.2.1")
        let cseq = try #require(m.cseq)  // "0009\r\n  INVITE"
        #expect(cseq.number == 9)
        #expect(cseq.method == .invite)
        // Three Vias: one on a `Via  :` line folded twice, two on a `v:` line.
        let vias = try p.vias()
        #expect(vias.count == 3)
        #expect(vias.map { p.string($0.branch) } == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"])
        #expect(vias.map { $0.transport } == [.udp, .tcp, .udp])
        #expect(vias.map { p.string($0.host) } == ["192.0.2.2", "spindle.example.com", "192.168.255.111"])
        #expect(!vias[0].hasRFC3261Branch(in: p.bytes))
        #expect(vias[1].hasRFC3261Branch(in: p.bytes))
        // `s :` is an empty Subject; the folded unknown header keeps both lines.
        #expect(p.header(.subject) == "")
        let newFangled = try #require(m.firstIndex(named: "newfangledheader"))
        #expect(p.unfolded(m.header(at: newFangled).value) == "newfangled value continued newfangled value")
        #expect(p.string(m.header(at: newFangled).name) == "NewFangledHeader")
        let route = try #require(m.firstRoute)
        #expect(p.string(route.uri.host) == "services.example.com")
        #expect(SIPURI.parameter("lr", in: route.uri.parameters, of: p.bytes) == .absent)
        // `m:` Contact with spaced parameters.
        let contact = try p.nameAddr(.contact)
        #expect(p.string(contact.displayName) == #"Quoted string \"\""#)
        let q = try #require(SIPParameterIterator.find("q", in: contact.parameters, of: p.bytes) as SIPParameter?)
        #expect(p.string(q.value) == "0.33")
        #expect(SIPParameterIterator.find("secondparam", in: contact.parameters, of: p.bytes)?.value == .absent)
        #expect(m.count(of: .contentLength) == 1)
        #expect(m.body.count == 150)
        #expect(m.length == 1001)
        #expect(p.string(m.body).hasPrefix("v=0\r\n"))
    }

    @Test func intmethKeepsAnUnusualMethodAndPasswordInTheRequestURI() throws {
        let p = try Parsed(file: "intmeth")
        #expect(p.parseError == nil)
        #expect(p.validationError() == nil)
        let m = p.message
        #expect(m.method == .other)
        #expect(p.string(m.methodName) == "!interesting-Method0123456789_*+`.%indeed'~")
        let cseq = try #require(m.cseq)
        #expect(m.equals(cseq.methodName, m.methodName))
        let uri = try #require(m.requestURI)
        #expect(p.string(uri.user) == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        #expect(p.string(uri.password) == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        #expect(p.string(uri.host) == "example.com")
        let to = try #require(m.to)
        #expect(to.isDisplayNameQuoted)
        #expect(p.bytes(of: to.displayName).contains(0))  // "\<NUL>" quoted-pair
        let from = try #require(m.from)
        #expect(p.string(from.displayName) == "token1~` token2'+_ token3*%!.-")
        #expect(p.string(from.tag) == "_token~1'+`*%!-.")
        #expect(p.string(try #require(m.callID)) == #"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#)
        #expect(m.maxForwards == 255)
        #expect(p.string(try #require(m.topVia).branch) == "z9hG4bK-.!%66*_+`'~")
        #expect(m.firstIndex(named: "extensionheader-!.%*+_`'~") != nil)
        #expect(m.body.count == 0)
    }

    @Test func esc01KeepsEscapesAndDecodesThem() throws {
        let p = try Parsed(file: "esc01")
        #expect(p.parseError == nil)
        #expect(p.validationError() == nil)
        let uri = try #require(p.message.requestURI)
        #expect(p.string(uri.user) == "sips%3Auser%40example.com")
        #expect(p.unescaped(uri.user).text == "sips:user@example.com")
        #expect(p.string(uri.host) == "example.net")
        let to = try #require(p.message.to)
        #expect(SIPEscaping.unescapedEquals(p.message.bytes(of: to.uri.user), "user"))
        #expect(p.unescaped(try #require(p.message.from).uri.user).text == "I have spaces")
        // `Contact:` with its value on a folded line.
        let contact = try p.nameAddr(.contact)
        #expect(p.unescaped(contact.uri.user).text == "caller")
        #expect(p.string(contact.uri.parameters) == "%6C%72;n%61me=v%61lue%25%34%31")
        #expect(p.message.body.count == 150)
    }

    @Test func escnullDecodesEscapedNulls() throws {
        let p = try Parsed(file: "escnull")
        #expect(p.validationError() == nil)
        #expect(p.unescaped(try #require(p.message.to).uri.user) == Array("null-\u{0}-null".utf8))
        let contacts = p.message.values(of: .contact).map { value in
            p.unescaped((try? SIPNameAddr.parse(p.bytes, value))?.uri.user ?? .absent)
        }
        #expect(contacts == [[0], [0, 0]])
        #expect(p.header(.contentLength) == "0")  // `L:0`
    }

    @Test func esc02TreatsPercentOutsideURIsLiterally() throws {
        let p = try Parsed(file: "esc02")
        #expect(p.validationError() == nil)
        let m = p.message
        #expect(m.method == .other)  // RE%47IST%45R is not REGISTER
        #expect(p.string(m.methodName) == "RE%47IST%45R")
        #expect(p.string(try #require(m.to).displayName) == "%Z%45")
        #expect(p.string(try #require(m.topVia).branch) == "z9hG4bK209%fzsnel234")
        // C%6Fntact is an unknown header, not a third Contact.
        #expect(m.count(of: .contact) == 2)
        #expect(m.firstIndex(named: "c%6fntact") != nil)
    }

    @Test func lwsdispAcceptsNoSpaceBeforeTheAngleBracket() throws {
        let p = try Parsed(file: "lwsdisp")
        #expect(p.validationError() == nil)
        let from = try #require(p.message.from)
        #expect(p.string(from.displayName) == "caller")
        #expect(!from.isDisplayNameQuoted)
        #expect(p.string(from.uri.user) == "caller")
        #expect(p.string(from.tag) == "323")
    }

    @Test func longreqHandlesLongValuesAndThirtyFourVias() throws {
        let p = try Parsed(file: "longreq")
        #expect(p.validationError() == nil)
        let m = p.message
        let vias = try p.vias()
        #expect(vias.count == 34)
        #expect(p.string(vias[0].host) == "sip33.example.com")
        #expect(p.string(vias[33].host) == "host.example.com")
        #expect(p.string(vias[33].received) == "192.0.2.5")
        #expect(vias[33].branch.count == 215)
        let to = try #require(m.to)
        #expect(to.displayName.count == 103)
        #expect(to.uri.port == 6000)
        #expect(SIPURI.parameter("unknownparam1", in: to.uri.parameters, of: p.bytes) != nil)
        let from = try #require(m.from)
        #expect(from.tag.count > 100)
        #expect(!from.isNameAddr)
        #expect(m.body.count == 150)
    }

    @Test func dblreqIgnoresTheSecondMessageInTheDatagram() throws {
        let p = try Parsed(file: "dblreq")
        #expect(p.validationError() == nil)
        #expect(p.message.method == .register)
        #expect(p.message.body.count == 0)
        #expect(p.message.length == 300)  // the INVITE after it is not part of this message
        #expect(p.string(try #require(p.message.callID)) == "dblreq.0ha0isndaksdj99sdfafnl3lk233412")
    }

    @Test func semiuriFindsTheUserPartBeforeTheAt() throws {
        let p = try Parsed(file: "semiuri")
        #expect(p.validationError() == nil)
        let uri = try #require(p.message.requestURI)
        #expect(p.string(uri.user) == "user;par=u%40example.net")
        #expect(p.string(uri.host) == "example.com")
        #expect(!uri.parameters.isPresent)
        // A folded list splits into its six values.
        #expect(p.values(.accept).count == 6)
        #expect(p.values(.accept).last == "message/sipfrag")
    }

    @Test func transportsReadsKnownAndUnknownTransports() throws {
        let p = try Parsed(file: "transports")
        #expect(p.validationError() == nil)
        let vias = try p.vias()
        #expect(vias.map { $0.transport } == [.udp, .sctp, .tls, .other, .tcp])
        #expect(p.string(vias[3].transportName) == "UNKNOWN")
        #expect(p.string(try #require(p.message.callID)) == "transports.kijh4akdnaqjkwendsasfdj")
    }

    @Test func mpart01FramesAMultipartBody() throws {
        let p = try Parsed(file: "mpart01")
        #expect(p.validationError() == nil)
        #expect(p.message.method == .message)
        #expect(p.message.body.count == 553)
        let via = try #require(p.message.topVia)
        #expect(via.hasRport && via.rportValue == nil)
        #expect(via.port == 5070)
        #expect(p.string(try #require(p.message.firstRoute).uri.host) == "127.0.0.1")
        #expect(try #require(p.message.firstRoute).uri.port == 5080)
        #expect(p.header(.contentType) == "multipart/mixed;boundary=7a9cbec02ceef655")
    }

    @Test func unreasonKeepsAUTF8ReasonPhrase() throws {
        let p = try Parsed(file: "unreason")
        #expect(p.validationError() == nil)
        #expect(!p.message.isRequest)
        #expect(p.message.statusCode == 200)
        #expect(p.string(p.message.reasonPhrase).hasPrefix("= 2**3 * 5**2 но сто девяносто девять"))
        #expect(p.message.body.count == 154)
    }

    @Test func noreasonAcceptsAnEmptyReasonPhrase() throws {
        let p = try Parsed(file: "noreason")
        #expect(p.validationError() == nil)
        #expect(p.message.statusCode == 100)
        #expect(p.message.reasonPhrase.isEmpty)
        #expect(!p.message.isAnswerable)  // responses are never answered
    }
}
