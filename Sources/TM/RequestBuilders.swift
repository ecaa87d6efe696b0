import SIP

/// The requests a proxy's client transaction makes up itself from the request it forwarded: the ACK for a
/// non-2xx final response (§17.1.1.3) and the CANCEL (§9.1). Both copy the forwarded request's Request-URI,
/// top Via (our branch), Route set, From, Call-ID and CSeq number.
enum RequestBuilders {
    /// - Parameter request: the forwarded request, parsed.
    /// - Parameter response: the final response being acknowledged, parsed (its To carries the tag).
    static func writeAck(request: SIPMessage, response: SIPMessage,
                         into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var w = SIPWriter(buffer)
        w.write("ACK ")
        w.write(request.bytes(of: request.requestURIText))
        w.write(" SIP/2.0\r\n")
        guard writeCommon(request, &w, cseqMethod: "ACK") else { return nil }
        guard let to = response.firstIndex(of: .to) else { return nil }
        w.write(response.bytes(of: response.header(at: to).line))
        w.write("Content-Length: 0\r\n\r\n")
        return try? w.finish()
    }

    static func writeCancel(request: SIPMessage, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        var w = SIPWriter(buffer)
        w.write("CANCEL ")
        w.write(request.bytes(of: request.requestURIText))
        w.write(" SIP/2.0\r\n")
        guard writeCommon(request, &w, cseqMethod: "CANCEL") else { return nil }
        guard let to = request.firstIndex(of: .to) else { return nil }
        w.write(request.bytes(of: request.header(at: to).line))
        w.write("Content-Length: 0\r\n\r\n")
        return try? w.finish()
    }

    /// Via (the top value only), Max-Forwards, Route fields, From, Call-ID, CSeq with `cseqMethod`.
    private static func writeCommon(_ request: SIPMessage, _ w: inout SIPWriter, cseqMethod: StaticString) -> Bool {
        guard let via = request.topVia, let cseq = request.cseq, let from = request.firstIndex(of: .from),
              let callID = request.firstIndex(of: .callID) else { return false }
        w.write("Via: ")
        w.write(request.bytes(of: via.span))
        w.write("\r\nMax-Forwards: 70\r\n")
        var route = request.firstIndex(of: .route)
        while let index = route {
            w.write(request.bytes(of: request.header(at: index).line))
            route = request.nextIndex(sameKindAs: index)
        }
        w.write(request.bytes(of: request.header(at: from).line))
        w.write(request.bytes(of: request.header(at: callID).line))
        w.write("CSeq: ")
        w.write(decimal: Int(cseq.number))
        w.write(" ")
        w.write(cseqMethod)
        w.write("\r\n")
        return true
    }
}
