import CAllocCounter
import Engine
import Glibc
import Script

/// Whole calls through a real shard running a stateful script (record_route; t_relay): INVITE → 100 + 200,
/// ACK, BYE → 200, driven by a ping-pong caller and a callee socket. Reports the heap allocations made on
/// the shard's thread per call once warmed up. Timers are shortened (T1 = T4 = 10 ms) so transactions end
/// within the run and the message store reaches its steady state: reused blocks, no new ones.
enum StatefulShardBenchmark {
    static func run(calls: Int) -> [Measurement] {
        let callee = LoopbackSocket()
        let script = """
            loadmodule "tm.so"
            loadmodule "rr.so"
            loadmodule "sl.so"
            loadmodule "maxfwd.so"
            loadmodule "sipmsgops.so"
            modparam("tm", "T1_timer", 10)
            modparam("tm", "T4_timer", 10)
            route {
                if (!mf_process_maxfwd_header(10)) { sl_send_reply(483, "Too Many Hops"); exit; }
                if (has_totag()) { t_relay("udp:\(callee.address)"); exit; }
                if (is_method("INVITE")) { record_route(); }
                t_relay("udp:\(callee.address)");
            }
            """
        let program = try! ScriptProgram.parse(script, file: "stateful-bench.cfg")
        let registry = HandlerRegistry()
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { shard in
            let handler = CountingHandler(inner: ScriptHandler(program: program, shard: shard))
            registry.add(handler)
            return handler
        }
        do { try engine.start() } catch { fatalError("engine did not start: \(error)") }
        let caller = LoopbackSocket()
        let proxy = engine.boundAddresses[0]
        let warmUp = calls
        var atWarmUp: UInt64 = 0
        for call in 0..<(warmUp + calls) {
            if call == warmUp {
                // Let the warm-up's transactions end (64*T1 = 640 ms) so the store holds what it needs.
                usleep(800_000)
                atWarmUp = registry.handlers[0].threadAtLast
            }
            oneCall(call, caller: caller, callee: callee, proxy: proxy)
        }
        let atEnd = registry.handlers[0].threadAtLast
        engine.stop()
        let perCall = Double(atEnd - atWarmUp) / Double(calls)
        return [Measurement(name: "stateful call on a shard: thread", perSecond: 0, nanosecondsEach: 0,
                            allocationsEach: perCall)]
    }

    static func oneCall(_ n: Int, caller: LoopbackSocket, callee: LoopbackSocket, proxy: SocketAddress) {
        let tag = "c\(n)"
        let callID = "call-\(n)@bench"
        let via = "Via: SIP/2.0/UDP \(caller.address);branch=z9hG4bK-\(n)-1;rport\r\n"
        let invite = "INVITE sip:bob@\(proxy) SIP/2.0\r\n\(via)Max-Forwards: 70\r\n"
            + "From: <sip:alice@bench>;tag=\(tag)\r\nTo: <sip:bob@bench>\r\nCall-ID: \(callID)\r\nCSeq: 1 INVITE\r\n"
            + "Contact: <sip:alice@\(caller.address)>\r\nContent-Length: 0\r\n\r\n"
        caller.send(invite, to: proxy)
        expect(caller, "SIP/2.0 100", callID, n)
        let forwarded = expect(callee, "INVITE ", callID, n)
        callee.send(answer(forwarded, status: "200 OK", toTag: "b\(n)"), to: proxy)
        let ok = expect(caller, "SIP/2.0 200", callID, n)
        let to = ok.split(separator: "\r\n").first { $0.hasPrefix("To:") }!
        let ack = "ACK sip:bob@\(proxy) SIP/2.0\r\nVia: SIP/2.0/UDP \(caller.address);branch=z9hG4bK-\(n)-2;rport\r\n"
            + "Max-Forwards: 70\r\nFrom: <sip:alice@bench>;tag=\(tag)\r\n\(to)\r\nCall-ID: \(callID)\r\nCSeq: 1 ACK\r\n"
            + "Content-Length: 0\r\n\r\n"
        caller.send(ack, to: proxy)
        expect(callee, "ACK ", callID, n)
        let bye = ack.replacing("ACK sip:", with: "BYE sip:").replacing("CSeq: 1 ACK", with: "CSeq: 2 BYE")
            .replacing("-\(n)-2;", with: "-\(n)-3;")
        caller.send(bye, to: proxy)
        let forwardedBye = expect(callee, "BYE ", callID, n)
        callee.send(answer(forwardedBye, status: "200 OK", toTag: nil), to: proxy)
        expect(caller, "SIP/2.0 200", callID, n)
    }

    /// A callee's response: the request's Vias, From, To (with `toTag` added), Call-ID and CSeq.
    static func answer(_ request: String, status: String, toTag: String?) -> String {
        var text = "SIP/2.0 \(status)\r\n"
        for line in request.split(separator: "\r\n") {
            if line.hasPrefix("Via:") || line.hasPrefix("From:") || line.hasPrefix("Call-ID:") || line.hasPrefix("CSeq:")
                || line.hasPrefix("Record-Route:") {
                text += line + "\r\n"
            } else if line.hasPrefix("To:") {
                text += line + (toTag.map { ";tag=\($0)" } ?? "") + "\r\n"
            }
        }
        return text + "Content-Length: 0\r\n\r\n"
    }

    /// The next datagram on `socket` that starts with `prefix` and belongs to this call. With T1 = 10 ms a stall
    /// of the machine (it is shared) makes the proxy retransmit — an INVITE again, a 200 again, maybe of an
    /// earlier call — which is correct, so such datagrams are passed over; a few in a row at most, and nothing
    /// at all is a failure.
    @discardableResult
    static func expect(_ socket: LoopbackSocket, _ prefix: String, _ callID: String, _ call: Int) -> String {
        var passedOver: [String] = []
        while passedOver.count < 16 {
            guard let received = socket.receive() else { break }
            if received.hasPrefix(prefix) && received.contains("Call-ID: \(callID)\r\n") { return received }
            passedOver.append(String(received.prefix(40)))
        }
        fatalError("stateful call \(call): expected \(prefix)…, got \(passedOver.isEmpty ? "nothing" : "\(passedOver)")")
    }
}
