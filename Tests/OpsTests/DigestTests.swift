@testable import Ops
import Testing

@Suite struct DigestTests {
    static func parse(_ text: String) -> DigestCredentials? {
        Array(text.utf8).withUnsafeBytes { DigestCredentials($0) }
    }

    @Test func md5IsTheStandardOne() {
        #expect(md5Hex("") == "d41d8cd98f00b204e9800998ecf8427e")
        #expect(md5Hex("The quick brown fox jumps over the lazy dog") == "9e107d9d372bb6826bd81d3542a419d6")
    }

    @Test func rfc2617sExampleResponseIsReproduced() throws {
        // RFC 2617 §3.5 (qop=auth), with the method and URI it uses.
        let digest = try #require(Self.parse(
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", "
            + "uri=\"/dir/index.html\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", "
            + "response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""))
        #expect(digest.username == "Mufasa" && digest.realm == "testrealm@host.com" && digest.qop == "auth"
                && digest.nc == "00000001" && digest.cnonce == "0a4f113b")
        let ha1 = md5Hex("Mufasa:testrealm@host.com:Circle Of Life")
        #expect(digest.expectedResponse(ha1: ha1, method: "GET") == digest.response)
        #expect(digest.expectedResponse(ha1: md5Hex("Mufasa:testrealm@host.com:wrong"), method: "GET") != digest.response)
    }

    @Test func malformedCredentialsAreRefused() {
        #expect(Self.parse("Basic dXNlcjpwYXNz") == nil)
        #expect(Self.parse("Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"sip:x\"") == nil)  // no response
        #expect(Self.parse("Digest username=\"a, realm=\"r\"") == nil)  // unterminated quote
        #expect(Self.parse("Digest username=\"a\\\"b\", realm=r, nonce=n, uri=\"sip:x\", response=ABC")?.username == "a\"b")
    }

    @Test func noncesExpireAndCannotBeForged() {
        let issuer = NonceIssuer(secret: Array("s3cret".utf8), lifetime: 30)
        let nonce = issuer.make(now: 1_000_000, serial: 7)
        #expect(nonce.utf8.count == 48)
        #expect(issuer.check(nonce, now: 1_000_030) == .valid)
        #expect(issuer.check(nonce, now: 1_000_031) == .stale)
        // Moving the expiry later breaks the MAC.
        let altered = "ffffffff" + nonce.dropFirst(8)
        #expect(issuer.check(altered, now: 1_000_000) == .forged)
        #expect(NonceIssuer(secret: Array("other".utf8), lifetime: 30).check(nonce, now: 1_000_000) == .forged)
        #expect(issuer.check("short", now: 0) == .forged)
    }
}
