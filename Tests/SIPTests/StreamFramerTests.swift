import Testing

@testable import SIP

/// Framing SIP over a stream (RFC 3261 §18.3, RFC 5626 §3.5.1 keep-alives).
@Suite struct StreamFramerTests {
    static func frame(_ text: String, maximum: Int = 65_535) -> SIPStreamFrame {
        Array(text.utf8).withUnsafeBytes { SIPStreamFramer.frame($0, maximum: maximum) }
    }

    static let options = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    static let message = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK2\r\nl : 5\r\n\r\nhello"

    @Test func aMessageEndsAfterItsContentLength() {
        #expect(Self.frame(Self.options) == .message(length: Self.options.utf8.count))
        #expect(Self.frame(Self.message) == .message(length: Self.message.utf8.count))
        // The next message's bytes are not part of this one.
        #expect(Self.frame(Self.message + Self.options) == .message(length: Self.message.utf8.count))
    }

    @Test func aMessageCutAnywhereIsIncomplete() {
        let whole = Array(Self.message.utf8)
        let headerEnd = whole.count - 5
        for cut in 1..<whole.count {
            let frame = whole[0..<cut].withUnsafeBytes { SIPStreamFramer.frame($0, maximum: 65_535) }
            // Once the headers are whole, the frame says how long the message is.
            #expect(frame == (cut < headerEnd ? .incomplete : .needs(length: whole.count)), "cut at \(cut)")
        }
    }

    @Test func withoutContentLengthTheBodyIsEmpty() {
        let text = "BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\nrest"
        #expect(Self.frame(text) == .message(length: text.utf8.count - 4))
    }

    @Test func headersNamedLikeContentLengthAreNotIt() {
        let text = "BYE sip:a@b SIP/2.0\r\nX-Content-Length: 9\r\nLocation: 3\r\n\r\n"
        #expect(Self.frame(text) == .message(length: text.utf8.count))
    }

    @Test func doubleCRLFIsAPingAndSingleCRLFsAreSkipped() {
        #expect(Self.frame("\r\n\r\n") == .keepAlive(length: 4, ping: true))
        #expect(Self.frame("\r\n\r\nINVITE") == .keepAlive(length: 4, ping: true))
        #expect(Self.frame("\r\nINVITE") == .keepAlive(length: 2, ping: false))
        // A lone CRLF (a pong, or CRLFs after a message) is taken at once, not held as a message's start.
        #expect(Self.frame("\r\n") == .keepAlive(length: 2, ping: false))
    }

    @Test func badOrHugeContentLengthClosesTheStream() {
        #expect(Self.frame("INVITE sip:a@b SIP/2.0\r\nContent-Length: 12x\r\n\r\n") == .invalid(.badContentLength))
        #expect(Self.frame("INVITE sip:a@b SIP/2.0\r\nContent-Length: 2147483648\r\n\r\n") == .invalid(.messageTooLarge))
        #expect(Self.frame("INVITE sip:a@b SIP/2.0\r\nContent-Length: 100\r\n\r\n", maximum: 80)
            == .invalid(.messageTooLarge))
        let endless = "INVITE sip:a@b SIP/2.0\r\n" + String(repeating: "X-A: b\r\n", count: 20)
        #expect(Self.frame(endless, maximum: 100) == .invalid(.headersTooLong))
        #expect(Self.frame(endless, maximum: 1000) == .incomplete)
    }
}
