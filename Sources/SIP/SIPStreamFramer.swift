/// Where one SIP message ends in a byte stream (RFC 3261 §18.3): the headers end at the first empty line, and
/// the body is Content-Length bytes after it. Over a stream the header is mandatory; a message without one is
/// taken as having no body, as OpenSIPS and Kamailio take it.
///
/// Only framing: the message found is parsed and validated as a datagram's would be. Nothing is copied, so the
/// caller can hand a whole message to the parser in place whenever a read holds one.
public enum SIPStreamFrame: Equatable, Sendable {
    /// A whole message of `length` bytes starts the buffer.
    case message(length: Int)
    /// CRLFs between messages, to be skipped. `ping`: a double CRLF, the keep-alive of RFC 5626 §3.5.1, which
    /// the server answers with one CRLF (the pong).
    case keepAlive(length: Int, ping: Bool)
    /// The buffer holds the beginning of a message and no more: wait for the rest.
    case incomplete
    /// The buffer holds a message's whole header block and part of its body: the message is `length` bytes, so
    /// nothing need be framed again until that many have arrived (a body dripping in costs no rescans).
    case needs(length: Int)
    /// The stream cannot be framed any further (a Content-Length that is not a number, or one or a header
    /// block larger than `maximum`): the connection must be closed.
    case invalid(SIPStreamFramingError)
}

public enum SIPStreamFramingError: UInt8, Equatable, Sendable, CustomStringConvertible {
    case headersTooLong
    case badContentLength
    case messageTooLarge

    public var description: String {
        switch self {
        case .headersTooLong: "no end of headers within the largest message"
        case .badContentLength: "a Content-Length that is not a number"
        case .messageTooLarge: "a Content-Length past the largest message"
        }
    }
}

public enum SIPStreamFramer {
    /// The frame at the start of `bytes`. `maximum`: the largest message accepted, headers and body.
    public static func frame(_ bytes: UnsafeRawBufferPointer, maximum: Int) -> SIPStreamFrame {
        let count = bytes.count
        guard count > 0 else { return .incomplete }
        if bytes[0] == cr || bytes[0] == lf { return keepAlive(bytes) }
        // Scan for the empty line, noting the Content-Length header on the way (a name at a line start).
        var lineStart = 0
        var contentLength: Int?
        var i = 0
        while i < count {
            guard bytes[i] == lf else {
                i += 1
                continue
            }
            // A line ends at i. An empty line (CRLF CRLF, or a bare LF LF) ends the headers.
            let lineEnd = i > lineStart && bytes[i - 1] == cr ? i - 1 : i
            if lineEnd == lineStart {
                let bodyStart = i + 1
                let length = bodyStart + (contentLength ?? 0)
                guard length <= maximum else { return .invalid(.messageTooLarge) }
                return length <= count ? .message(length: length) : .needs(length: length)
            }
            if lineStart > 0, let value = contentLengthValue(bytes, lineStart, lineEnd) {
                guard let parsed = value else { return .invalid(.badContentLength) }
                contentLength = parsed
            }
            lineStart = i + 1
            i += 1
        }
        return count >= maximum ? .invalid(.headersTooLong) : .incomplete
    }

    /// Whether bytes `start..<end` of `bytes` complete a header block: an LF there followed by CRLF or LF (the
    /// empty line), looking back over the three bytes before `start`. For a message that arrives in pieces: the
    /// framer need run again only when this is true.
    public static func endsHeaderBlock(_ bytes: UnsafeRawBufferPointer, from start: Int, to end: Int) -> Bool {
        var i = max(0, start - 3)
        while i < end - 1 {
            if bytes[i] == lf && (bytes[i + 1] == lf || (bytes[i + 1] == cr && i + 2 < end && bytes[i + 2] == lf)) {
                return true
            }
            i += 1
        }
        return false
    }

    private static func keepAlive(_ bytes: UnsafeRawBufferPointer) -> SIPStreamFrame {
        var n = 0
        while n < bytes.count && (bytes[n] == cr || bytes[n] == lf) { n += 1 }
        // A run that ends the buffer is taken as it is: a lone CRLF is a pong (RFC 5626 §4.4.1), and one kept
        // waiting for more would start the clock of a message that never comes. A ping split over two reads is
        // then two pongs' worth of CRLF and goes unanswered; the client pings again.
        let ping = n >= 4 && bytes[0] == cr && bytes[1] == lf && bytes[2] == cr && bytes[3] == lf
        if ping { return .keepAlive(length: 4, ping: true) }
        return .keepAlive(length: n, ping: false)
    }

    /// For a `Content-Length:` or `l:` line: .some(value), or .some(nil) when the value is not a number. nil for
    /// any other header.
    private static func contentLengthValue(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int?? {
        var nameEnd = start
        while nameEnd < end && bytes[nameEnd] != colon && bytes[nameEnd] != space && bytes[nameEnd] != tab { nameEnd += 1 }
        let nameLength = nameEnd - start
        guard nameLength == 1 || nameLength == longName.count else { return nil }
        if nameLength == 1 {
            guard bytes[start] | 0x20 == UInt8(ascii: "l") else { return nil }
        } else {
            for k in 0..<nameLength where bytes[start + k] | 0x20 != longName[k] { return nil }
        }
        var i = nameEnd
        while i < end && (bytes[i] == space || bytes[i] == tab) { i += 1 }
        guard i < end, bytes[i] == colon else { return nil }
        i += 1
        while i < end && (bytes[i] == space || bytes[i] == tab) { i += 1 }
        var value = 0
        var digits = 0
        while i < end, bytes[i] &- zero < 10 {
            value = value &* 10 &+ Int(bytes[i] &- zero)
            digits += 1
            // Past nine digits the value is larger than any message; stop before it can overflow.
            if digits > 9 { return .some(Int.max / 2) }
            i += 1
        }
        while i < end && (bytes[i] == space || bytes[i] == tab) { i += 1 }
        return digits > 0 && i == end ? .some(value) : .some(nil)
    }

    private static let cr = UInt8(ascii: "\r"), lf = UInt8(ascii: "\n"), colon = UInt8(ascii: ":")
    private static let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), zero = UInt8(ascii: "0")
    /// "content-length" lowercased, compared with each byte ORed with 0x20 (so '-' must match itself: 0x2D | 0x20).
    private static let longName: [UInt8] = Array("content-length".utf8)
}
