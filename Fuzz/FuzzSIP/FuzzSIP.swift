import FuzzReplay
import SIP

/// The SIP parser, validator and builders on arbitrary bytes: framed as a TCP stream; parse; read every field a
/// proxy reads; validate; and for what validates, build the forwarded request (then parse and validate that
/// again), the reply, and the forwarded response, into buffers both large and too small. Throwing is fine;
/// trapping is not.
///
/// Built with `-sanitize=fuzzer,address -DFUZZING` (`make fuzz`), a libFuzzer target; built normally, a replayer.
enum FuzzSIP {
    nonisolated(unsafe) static let message = SIPMessage(headerCapacity: 64)
    nonisolated(unsafe) static let again = SIPMessage(headerCapacity: 64)
    nonisolated(unsafe) static let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 << 10, alignment: 8)
    nonisolated(unsafe) static let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 96, alignment: 8)
    static let host = Array("198.51.100.1".utf8)
    static let branch = Array("z9hG4bKfuzz1".utf8)
    static let received = Array("192.0.2.99".utf8)
    static let reason = Array("Busy Here".utf8)

    static func run(_ bytes: UnsafeRawBufferPointer) {
        frameAsStream(bytes)
        guard (try? message.parse(bytes)) != nil else { return }
        let m = message
        _ = (m.topVia, m.cseq, m.from, m.to, m.callID, m.maxForwards, m.requestURI, m.firstRoute, m.isAnswerable)
        for i in 0..<m.headerCount { _ = m.bytes(of: m.header(at: i).value).count }
        guard (try? m.validate()) != nil else { return }
        host.withUnsafeBytes { host in
            branch.withUnsafeBytes { branch in
                received.withUnsafeBytes { received in
                    build(m, host: host, branch: branch, received: received)
                }
            }
        }
    }

    /// The bytes as a TCP stream: every frame lies within what is left and moves forward, and a whole message
    /// is parsed where it lies (as a shard does).
    private static func frameAsStream(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch SIPStreamFramer.frame(rest, maximum: 4096) {
            case .message(let length), .keepAlive(let length, _):
                precondition(length > 0 && length <= rest.count && length <= 4096, "a frame outside the stream")
                _ = try? again.parse(UnsafeRawBufferPointer(rebasing: rest[0..<length]))
                offset += length
            case .needs(let length):
                precondition(length > rest.count && length <= 4096, "a message's length outside the maximum")
                return
            case .incomplete, .invalid:
                return
            }
        }
    }

    private static func build(_ m: SIPMessage, host: UnsafeRawBufferPointer, branch: UnsafeRawBufferPointer,
                              received: UnsafeRawBufferPointer) {
        if m.isRequest {
            var options = SIPForwardingOptions()
            options.via = .parts(transport: .udp, host: host, port: 5060, branch: branch)
            options.received = received
            options.rport = 40000
            options.popRoute = true
            if let length = try? m.writeForwardedRequest(into: out, options) {
                // What we forward must parse and validate again: a peer would otherwise answer 400.
                let forwarded = UnsafeRawBufferPointer(rebasing: out[0..<length])
                precondition((try? again.parse(forwarded)) != nil && (try? again.validate()) != nil,
                             "a forwarded request does not parse again")
            }
            _ = try? m.writeForwardedRequest(into: small, options)
            reason.withUnsafeBytes { reason in
                _ = try? m.writeReply(into: out, statusCode: 486, reason: reason, server: host, received: received,
                                      rport: 40000)
                _ = try? m.writeReply(into: small, statusCode: 486, reason: reason)
            }
        } else {
            _ = try? m.writeForwardedResponse(into: out)
            _ = try? m.writeForwardedResponse(into: small)
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSIP(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    FuzzSIP.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("fuzz_sip_main")
public func fuzzEntry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzSIP)
}
#else
@main
struct FuzzSIPReplay {
    static func main() { FuzzReplay.replay(CommandLine.arguments.dropFirst(), FuzzSIP.run) }
}
#endif
