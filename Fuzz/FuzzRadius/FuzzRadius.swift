import FuzzReplay
import Ops
import SIP

/// What the RADIUS client reads from the network: a response's length, its attribute framing and authenticators
/// (`RadiusPacket.verify`), and its attributes (`RadiusCompletion.forEachAttribute`). Each input is tried as it
/// came and again with a correct Response Authenticator written in, so the attribute walk behind a passed check
/// is reached too. Throwing away a bad packet is fine; trapping or reading outside it is not.
///
/// Built with `-sanitize=fuzzer,address -DFUZZING` (`make fuzz`), a libFuzzer target; built normally, a replayer.
enum FuzzRadius {
    static let secret = Array("fuzzing-secret".utf8)
    static let requestAuthenticator = [UInt8](repeating: 0xA5, count: 16)
    nonisolated(unsafe) static let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)

    static func run(_ bytes: UnsafeRawBufferPointer) {
        check(bytes)
        // The same bytes with their header's length made true and the authenticator they need.
        let count = min(bytes.count, packet.count)
        guard count >= 20 else { return }
        packet.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
        packet[2] = UInt8(count >> 8)
        packet[3] = UInt8(count & 0xFF)
        var md5 = MD5()
        md5.update(UnsafeRawBufferPointer(rebasing: packet[0..<4]))
        requestAuthenticator.withUnsafeBytes { md5.update($0) }
        md5.update(UnsafeRawBufferPointer(rebasing: packet[20..<count]))
        secret.withUnsafeBytes { md5.update($0) }
        withUnsafeBytes(of: md5.finalize()) { digest in
            for i in 0..<16 { packet[4 + i] = digest[i] }
        }
        check(UnsafeRawBufferPointer(rebasing: packet[0..<count]))
    }

    private static func check(_ received: UnsafeRawBufferPointer) {
        guard let length = RadiusPacket.responseLength(received) else { return }
        let response = UnsafeRawBufferPointer(rebasing: received[0..<length])
        let verified = requestAuthenticator.withUnsafeBytes {
            RadiusPacket.verify(response: response, requestAuthenticator: $0, secret: secret)
        }
        guard verified else { return }
        var total = 0
        RadiusCompletion.forEachAttribute(in: UnsafeRawBufferPointer(rebasing: response[20...])) { type, value in
            precondition(value.count <= 253, "an attribute value longer than RADIUS allows")
            total += Int(type) + value.count
        }
        _ = total
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRadius(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    FuzzRadius.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("fuzz_radius_main")
public func fuzzEntry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzRadius)
}
#else
@main
struct FuzzRadiusReplay {
    static func main() { FuzzReplay.replay(CommandLine.arguments.dropFirst(), FuzzRadius.run) }
}
#endif
