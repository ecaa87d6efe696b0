import Foundation
import Testing

@testable import Script

/// Each core function on a real shard: what reaches the client or the sink.
@Suite(.enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimeFunctionTests {
    // MARK: - Replies and forwarding

    @Test func slSendReplyAnswersTheClientAndForwardsNothing() throws {
        let rig = try ScriptRig("route {\n    sl_send_reply(404, \"Not Here\");\n    forward(\"udp:@SINK@\");\n}\n")
        let reply = try #require(rig.reply(to: rig.request()))
        #expect(SIPText.startLine(reply) == "SIP/2.0 404 Not Here")
        #expect(SIPText.header("Via", in: reply)
            == ["SIP/2.0/UDP 127.0.0.1:\(rig.client.address.port);branch=z9hG4bK-rt-17;rport=\(rig.client.address.port)"])
        #expect(SIPText.header("To", in: reply).first?.hasPrefix("<sip:bob@biloxi.example.com:5062>;tag=") == true)
        #expect(SIPText.header("Call-ID", in: reply) == ["call-7@127.0.0.1"])
        #expect(SIPText.header("CSeq", in: reply) == ["17 INVITE"])
        // forward() after a reply still runs (sl_send_reply does not end the script), as in OpenSIPS.
        #expect(rig.sink.receive() != nil)
    }

    @Test func slSendReplyWithComputedCodeAndReason() throws {
        let rig = try ScriptRig("""
            route {
                $var(code) = 480;
                sl_send_reply($var(code), "Gone $rU");
            }

            """)
        #expect(SIPText.startLine(try #require(rig.reply(to: rig.request()))) == "SIP/2.0 480 Gone bob")
    }

    @Test func slSendReplyWithAComputedCodeOutOfRangeAnswers500Itself() throws {
        // The caller gets an answer and the log says why it is not the one asked for (logged: see the
        // integration test); the call counts as answered, so the script's own fallback does not answer twice.
        let rig = try ScriptRig("""
            route {
                $var(code) = 99;
                if (!sl_send_reply($var(code), "Low")) {
                    sl_send_reply(500, "code $var(code) refused");
                }
            }

            """)
        #expect(rig.reason(of: rig.request(), status: 500) == "Server Internal Error")
    }

    @Test func forwardToAFixedDestination() throws {
        let rig = try ScriptRig("route {\n    forward(\"udp:@SINK@\");\n}\n")
        rig.send(rig.request(via: "SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bK-abc-1"))
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.startLine(forwarded) == "INVITE sip:bob@127.0.0.2:5070;transport=udp SIP/2.0")
        let vias = SIPText.header("Via", in: forwarded)
        #expect(vias.count == 2)
        #expect(vias.first?.hasPrefix("SIP/2.0/UDP \(rig.proxy);branch=z9hG4bKrs") == true)
        #expect(vias.last == "SIP/2.0/UDP 10.9.9.9:5999;branch=z9hG4bK-abc-1;received=127.0.0.1")
        #expect(SIPText.header("Max-Forwards", in: forwarded) == ["69"])
        #expect(rig.client.receiveNothing() == nil)
    }

    @Test func forwardToADestinationComputedPerMessage() throws {
        let rig = try ScriptRig("""
            route {
                $var(next) = "udp:" + $hdr(X-Next);
                forward("$var(next)");
            }

            """)
        rig.send(rig.request(extra: "X-Next: \(rig.sink.address)\r\n"))
        #expect(rig.sink.receive() != nil)
    }

    @Test func forwardWithoutDestinationFollowsTheRequestURIAndFailsForAName() throws {
        let rig = try ScriptRig("""
            route {
                if (!forward()) {
                    sl_send_reply(503, "No Route $rd");
                }
            }

            """)
        rig.send(rig.request(uri: "sip:bob@\(rig.sink.address)"))
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.startLine(forwarded) == "INVITE sip:bob@\(rig.sink.address) SIP/2.0")
        #expect(rig.reason(of: rig.request(uri: "sip:bob@biloxi.example.com", cseq: 18), status: 503)
            == "No Route biloxi.example.com")
    }

    @Test func recordRouteGoesOnTopNamingTheProxy() throws {
        let rig = try ScriptRig("route {\n    record_route();\n    forward(\"udp:@SINK@\");\n}\n")
        rig.send(rig.request(extra: "Record-Route: <sip:192.0.2.9;lr>\r\n"))
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.header("Record-Route", in: forwarded) == ["<sip:\(rig.proxy);lr>", "<sip:192.0.2.9;lr>"])
        let lines = forwarded.components(separatedBy: "\r\n")
        #expect(lines[1].hasPrefix("Via: SIP/2.0/UDP \(rig.proxy)"))
        // On top of the Record-Route set (RFC 3261 §16.6 step 4), below the Via rows, which stay together.
        #expect(lines[2].hasPrefix("Via: SIP/2.0/UDP "))
        #expect(lines[3] == "Record-Route: <sip:\(rig.proxy);lr>")
        let vias = lines.indices.filter { lines[$0].hasPrefix("Via:") }
        let recordRoutes = lines.indices.filter { lines[$0].hasPrefix("Record-Route:") }
        #expect(vias.max()! < recordRoutes.min()!, "no Record-Route between Via rows")
    }

    // MARK: - Tests on the message

    @Test func isMethodMatchesOneOfAListIncludingExtensionMethods() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if (is_method("INVITE")) { $var(r) += "i"; }
                if (is_method("BYE|invite")) { $var(r) += "b"; }
                if (is_method("OPTIONS,FOO")) { $var(r) += "x"; }
                if (!is_method("REGISTER")) { $var(r) += "n"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        #expect(rig.reason(of: rig.request("INVITE")) == "ibn")
        #expect(rig.reason(of: rig.request("BYE", cseq: 18)) == "bn")
        #expect(rig.reason(of: rig.request("FOO", cseq: 19)) == "xn")
        #expect(rig.reason(of: rig.request("REGISTER", cseq: 20)) == "")
    }

    @Test func hasTotag() throws {
        let rig = try ScriptRig("""
            route {
                if (has_totag()) { sl_send_reply(299, "in dialog"); } else { sl_send_reply(299, "initial"); }
            }

            """)
        #expect(rig.reason(of: rig.request()) == "initial")
        #expect(rig.reason(of: rig.request("BYE", to: "<sip:bob@biloxi.example.com>;tag=314159", cseq: 18)) == "in dialog")
    }

    @Test func uriEqualsMyselfComparesHostAndPortWithTheListenAddresses() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if (uri == myself) { $var(r) += "uri"; }
                if ($ru == myself) { $var(r) += ",ru"; }
                if (myself == $ru) { $var(r) += ",mirror"; }
                if (uri != myself) { $var(r) += "not"; }
                if ($fu == myself) { $var(r) += ",from"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        let port = rig.proxy.port
        #expect(rig.reason(of: rig.request(uri: "sip:bob@127.0.0.1:\(port);transport=udp")) == "uri,ru,mirror")
        #expect(rig.reason(of: rig.request(uri: "sip:127.0.0.1", cseq: 18)) == "uri,ru,mirror", "no port: any of ours")
        #expect(rig.reason(of: rig.request(uri: "sip:bob@127.0.0.1:\(port == 9 ? 10 : 9)", cseq: 19)) == "not")
        #expect(rig.reason(of: rig.request(uri: "sip:bob@127.0.0.2:\(port)", cseq: 20)) == "not")
        #expect(rig.reason(of: rig.request(uri: "sip:bob@biloxi.example.com", cseq: 21)) == "not")
    }

    @Test func isMyselfTakesAURIOrHostAndAnOptionalPort() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if (is_myself("$ru")) { $var(r) += "ru"; }
                if (is_myself("127.0.0.1")) { $var(r) += ",host"; }
                if (is_myself("127.0.0.1", $hdr(X-Port))) { $var(r) += ",port"; }
                if (is_myself("127.0.0.1", 9)) { $var(r) += ",nine"; }
                if (!is_myself("sip:alice@127.0.0.2")) { $var(r) += ",other"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        let port = rig.proxy.port
        #expect(rig.reason(of: rig.request(uri: "sip:bob@127.0.0.1:\(port)", extra: "X-Port: \(port)\r\n"))
            == "ru,host,port,other")
        #expect(rig.reason(of: rig.request(extra: "X-Port: \(port == 9 ? 10 : 9)\r\n", cseq: 18)) == ",host,other")
    }

    @Test func regularExpressionsMatchAndNotMatch() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if ($ru =~ "^sip:[a-z]+@127\\.0\\.0\\.2") { $var(r) += "m"; }
                if ($ua !~ "^friendly") { $var(r) += "n"; }
                if ($hdr(X-Absent) =~ ".*") { $var(r) += "null-matched"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        #expect(rig.reason(of: rig.request(extra: "User-Agent: scanner\r\n")) == "mn")
    }

    // MARK: - Header edits

    @Test func appendHfAddsLinesWithVariablesAfterTheReceivedHeaders() throws {
        let rig = try ScriptRig("""
            route {
                append_hf("X-Test: $rU\\r\\n");
                append_hf("X-No-CRLF: $cs");
                forward("udp:@SINK@");
            }

            """)
        rig.send(rig.request())
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.header("X-Test", in: forwarded) == ["bob"])
        #expect(SIPText.header("X-No-CRLF", in: forwarded) == ["17"])
        let lines = forwarded.components(separatedBy: "\r\n")
        let callID = try #require(lines.firstIndex { $0.hasPrefix("Call-ID:") })
        let test = try #require(lines.firstIndex { $0.hasPrefix("X-Test:") })
        #expect(test > callID)
        #expect(lines[test + 1] == "X-No-CRLF: 17")
        #expect(lines[test + 2] == "Content-Length: 0")
    }

    @Test func removeHfRemovesEveryFieldOfThatNameAndReportsWhetherItDid() throws {
        let rig = try ScriptRig("""
            route {
                if (remove_hf("x-multi")) { append_hf("X-Removed: multi\\r\\n"); }
                if (!remove_hf("X-Absent")) { append_hf("X-Removed: none\\r\\n"); }
                remove_hf("User-Agent");
                forward("udp:@SINK@");
            }

            """)
        rig.send(rig.request(extra: "User-Agent: phone\r\nX-Multi: one\r\nX-Keep: k\r\nX-MULTI: two\r\n"))
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.header("X-Multi", in: forwarded).isEmpty)
        #expect(SIPText.header("User-Agent", in: forwarded).isEmpty)
        #expect(SIPText.header("X-Keep", in: forwarded) == ["k"])
        #expect(SIPText.header("X-Removed", in: forwarded) == ["multi", "none"])
    }

    @Test func isPresentHf() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if (is_present_hf("X-Multi")) { $var(r) += "multi"; }
                if (is_present_hf("user-agent")) { $var(r) += ",ua"; }
                if (is_present_hf("Route")) { $var(r) += ",route"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        #expect(rig.reason(of: rig.request(extra: "x-multi: 1\r\n")) == "multi")
        #expect(rig.reason(of: rig.request(extra: "User-Agent: p\r\nRoute: <sip:192.0.2.1;lr>\r\n", cseq: 18)) == ",ua,route")
    }

    // MARK: - Flags, Max-Forwards, rport

    @Test func flagsBySetResetAndTestByNumberAndName() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = "";
                if (!isflag(5)) { $var(r) += "clear"; }
                setflag(5);
                setflag(0);
                setflag(NAT);
                if (isflag(5) && isflag(0) && isflag(NAT) && isflag("NAT")) { $var(r) += ",set"; }
                resetflag(5);
                resetflag("NAT");
                if (!isflag(5) && isflag(0) && !isflag(NAT)) { $var(r) += ",reset"; }
                if (!isflag(OTHER)) { $var(r) += ",distinct"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "clear,set,reset,distinct")
        #expect(rig.reason(of: rig.request(cseq: 18)) == "clear,set,reset,distinct", "flags start clear per message")
    }

    @Test func namedFlagsDoNotShareBitsWithNumberedFlags() throws {
        let rig = try ScriptRig("""
            route {
                setflag(63);
                setflag(NAT);
                resetflag(NAT);
                if (isflag(63)) { sl_send_reply(299, "separate"); } else { sl_send_reply(299, "shared"); }
            }

            """)
        // Named flags take the highest bits that no numbered flag uses.
        #expect(rig.reason(of: rig.request()) == "separate")
    }

    @Test func maxForwardsProcessing() throws {
        let rig = try ScriptRig("""
            route {
                $var(r) = mf_process_maxfwd_header(10);
                if ($var(r) < 0) {
                    sl_send_reply(483, "Too Many Hops $var(r)");
                    exit;
                }
                append_hf("X-MF: $var(r)\\r\\n");
                forward("udp:@SINK@");
            }

            """)
        rig.send(rig.request(maxForwards: nil))
        let absent = try #require(rig.sink.receive())
        #expect(SIPText.header("Max-Forwards", in: absent) == ["10"], "added with the function's limit")
        #expect(SIPText.header("X-MF", in: absent) == ["2"])

        rig.send(rig.request(maxForwards: "5", cseq: 18))
        let five = try #require(rig.sink.receive())
        #expect(SIPText.header("Max-Forwards", in: five) == ["4"])
        #expect(SIPText.header("X-MF", in: five) == ["1"])

        #expect(rig.reason(of: rig.request(maxForwards: "0", cseq: 19), status: 483) == "Too Many Hops -1")
        #expect(rig.sink.receiveNothing() == nil)
    }

    @Test func forceRportAddsRportForASenderThatDidNotAsk() throws {
        let rig = try ScriptRig("""
            route {
                if (is_method("INVITE")) { force_rport(); }
                forward("udp:@SINK@");
            }

            """)
        let port = rig.client.address.port
        let via = "SIP/2.0/UDP 127.0.0.1:\(port);branch=z9hG4bK-nr"
        rig.send(rig.request(via: via))
        let forced = try #require(rig.sink.receive())
        #expect(SIPText.header("Via", in: forced).last == "\(via);rport=\(port)")
        rig.send(rig.request("OPTIONS", via: via + "2", cseq: 18))
        let plain = try #require(rig.sink.receive())
        #expect(SIPText.header("Via", in: plain).last == via + "2")
    }

    // MARK: - Replies through onreply_route

    @Test func onReplyRouteSeesStatusAndReasonAndCanDropOrEdit() throws {
        let rig = try ScriptRig("""
            route {
                forward("udp:@SINK@");
            }
            onreply_route {
                if ($rs == 183) { drop; }
                if ($rr == "Secret OK" && is_method("INVITE")) { remove_hf("X-Secret"); }
            }

            """)
        rig.send(rig.request())
        let forwarded = try #require(rig.sink.receive())
        let vias = SIPText.header("Via", in: forwarded).joined(separator: ", ")
        func response(_ status: String) -> String {
            "SIP/2.0 \(status)\r\nVia: \(vias)\r\nFrom: \"Alice\" <sip:alice@atlanta.example.com>;tag=a1\r\n"
                + "To: <sip:bob@biloxi.example.com:5062>;tag=b2\r\nCall-ID: call-7@127.0.0.1\r\nCSeq: 17 INVITE\r\n"
                + "X-Secret: s\r\nContent-Length: 0\r\n\r\n"
        }
        rig.sink.send(response("183 Session Progress"), to: rig.proxy)
        #expect(rig.client.receiveNothing() == nil, "dropped in onreply_route")
        rig.sink.send(response("200 Secret OK"), to: rig.proxy)
        let ok = try #require(rig.client.receive())
        #expect(SIPText.startLine(ok) == "SIP/2.0 200 Secret OK")
        #expect(SIPText.header("X-Secret", in: ok).isEmpty)
        rig.sink.send(response("180 Ringing"), to: rig.proxy)
        let ringing = try #require(rig.client.receive())
        #expect(SIPText.startLine(ringing) == "SIP/2.0 180 Ringing")
        #expect(SIPText.header("X-Secret", in: ringing) == ["s"])
    }
}
