import Foundation
import Testing

@testable import Script

/// The OpenSIPS forms on a real shard: what the client and the sink receive when a script rewrites the
/// Request-URI, passes route parameters, computes, transforms, and says who the proxy is.
@Suite(.enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimeOpenSIPSTests {
    /// The request as the sink receives it after `script` ran on the rig's default INVITE (plus `extra` headers).
    static func forwarded(_ script: String, extra: String = "", sourceLocation: Testing.SourceLocation = #_sourceLocation)
        throws -> String {
        let rig = try ScriptRig(script)
        rig.send(rig.request(extra: extra))
        return try #require(rig.sink.receive(), sourceLocation: sourceLocation)
    }

    @Test func requestURIRewritesApplyInOrder() throws {
        let request = try Self.forwarded("""
            route {
                rewriteuser("0049301234");
                strip(2);
                prefix("+");
                strip_tail(1);
                rewritehostport("@SINK@");
                forward();
            }

            """)
        #expect(SIPText.startLine(request).hasPrefix("INVITE sip:+4930123@127.0.0.1:"))
        #expect(SIPText.startLine(request).hasSuffix(";transport=udp SIP/2.0"))
    }

    @Test func seturiReplacesTheWholeURIAndRevertUndoesIt() throws {
        let request = try Self.forwarded("""
            route {
                seturi("sip:carol@example.org");
                revert_uri();
                forward("udp:@SINK@");
            }

            """)
        #expect(SIPText.startLine(request) == "INVITE sip:bob@127.0.0.2:5070;transport=udp SIP/2.0")
    }

    @Test func routeParametersArithmeticAndAddresses() throws {
        let request = try Self.forwarded("""
            route {
                $var(x) = 6 * 7;
                $var(f) = 12 & 10 | 1;
                $var(n) = ~0 + 100 % 7 - (1 << 3) / 2;
                if ($si == 127.0.0.1 and $(si{ip.matches,127.0.0.0/8}) == 1) {
                    route(tag, $var(x), "b$var(f)");
                }
                append_hf("X-N: $var(n)\\r\\n");
                forward("udp:@SINK@");
            }
            route[tag] {
                append_hf("X-P: $param(1)-$param(2)-$param(3)\\r\\n");
            }

            """)
        // An unset parameter is NULL, which prints as nothing.
        #expect(SIPText.header("X-P", in: request) == ["42-b9-"])
        #expect(SIPText.header("X-N", in: request) == ["-3"])
    }

    @Test func transformationsOnMessageFields() throws {
        let request = try Self.forwarded("""
            route {
                append_hf("X-S: $(hdr(X-L){s.select,1,;}) $(hdr(X-L){s.select,-1,;}) $(hdr(X-L){s.substr,2,3})\\r\\n");
                append_hf("X-U: $(ru{uri.param,transport}) $(ru{uri.domain}) $(ru{re.subst,/bob/alice/}) $(fU{s.md5})\\r\\n");
                append_hf("X-F: $ft $fn $(hdr(From){nameaddr.uri}) $(hdr(Via){via.transport}) $(hdr(Via){via.param,rport})\\r\\n");
                append_hf("X-R: $(hdr(X-L){re.subst,/([a-z])([0-9])/\\2\\1/g})\\r\\n");
                forward("udp:@SINK@");
            }

            """, extra: "X-L: a1;b2;c3\r\n")
        #expect(SIPText.header("X-S", in: request) == ["b2 c3 ;b2"])
        #expect(SIPText.header("X-U", in: request)
            == ["udp 127.0.0.2 sip:alice@127.0.0.2:5070;transport=udp 6384e2b2184bcbf58eccf10ca7a6563c"])
        #expect(SIPText.header("X-F", in: request) == ["a1 Alice sip:alice@atlanta.example.com UDP "])
        #expect(SIPText.header("X-R", in: request) == ["1a;2b;3c"])
    }

    @Test func socketAndVersionVariables() throws {
        let rig = try ScriptRig("""
            route {
                append_hf("X-S: $socket_in $socket_in(port) $socket_in(proto) $rv $msg.type\\r\\n");
                forward("udp:@SINK@");
            }

            """)
        rig.send(rig.request())
        let request = try #require(rig.sink.receive())
        #expect(SIPText.header("X-S", in: request)
            == ["udp:\(rig.proxy) \(rig.proxy.port) udp SIP/2.0 request"])
    }

    @Test func removeHeadersByGlobAndRegex() throws {
        let request = try Self.forwarded("""
            route {
                remove_hf("X-Drop-*", "g");
                remove_hf("x-gone-[0-9]+", "r");
                forward("udp:@SINK@");
            }

            """, extra: "X-Drop-A: 1\r\nX-Keep: 2\r\nX-Drop-B: 3\r\nX-Gone-42: 4\r\nX-Gone-x: 5\r\n")
        #expect(SIPText.header("X-Drop-A", in: request).isEmpty && SIPText.header("X-Drop-B", in: request).isEmpty)
        #expect(SIPText.header("X-Gone-42", in: request).isEmpty)
        #expect(SIPText.header("X-Keep", in: request) == ["2"])
        #expect(SIPText.header("X-Gone-x", in: request) == ["5"])
    }

    @Test func advertisedAddressServerHeaderAndAliases() throws {
        let rig = try ScriptRig("""
            advertised_address = "203.0.113.9"
            advertised_port = 5099
            alias = sip.example.com
            server_header = "Server: edge-7"
            route {
                if (is_myself("sip:x@sip.example.com") && !is_myself("sip:x@other.example.com")) {
                    if (is_method("OPTIONS")) {
                        sl_send_reply(200, "Mine");
                        exit;
                    }
                    record_route();
                    forward("udp:@SINK@");
                }
            }

            """)
        let reply = try #require(rig.reply(to: rig.request("OPTIONS")))
        #expect(SIPText.startLine(reply) == "SIP/2.0 200 Mine")
        #expect(SIPText.header("Server", in: reply) == ["edge-7"])
        rig.send(rig.request())
        let request = try #require(rig.sink.receive())
        #expect(SIPText.header("Via", in: request).first?.hasPrefix("SIP/2.0/UDP 203.0.113.9:5099;branch=") == true)
        #expect(SIPText.header("Record-Route", in: request) == ["<sip:203.0.113.9:5099;lr>"])
    }

    @Test func appendToReplyAddsLinesToOurReplies() throws {
        let rig = try ScriptRig("""
            route {
                append_to_reply("Contact: <sip:bob@192.0.2.7>");
                append_to_reply("X-Why: moved $rU\\r\\n");
                sl_send_reply(302, "Moved Temporarily");
            }

            """)
        let reply = try #require(rig.reply(to: rig.request()))
        #expect(SIPText.startLine(reply) == "SIP/2.0 302 Moved Temporarily")
        #expect(SIPText.header("Contact", in: reply) == ["<sip:bob@192.0.2.7>"])
        #expect(SIPText.header("X-Why", in: reply) == ["moved bob"])
    }

    @Test func uriModuleParameterFunctions() throws {
        let rig = try ScriptRig("""
            loadmodule "uri.so"
            route {
                if (uri_param("transport", "UDP") && !uri_param("lr") && !has_totag()) {
                    add_uri_param("user=phone");
                    append_hf("X-U: $ru\\r\\n");
                    forward("udp:@SINK@");
                }
            }

            """)
        rig.send(rig.request())
        let request = try #require(rig.sink.receive())
        #expect(SIPText.header("X-U", in: request) == ["sip:bob@127.0.0.2:5070;transport=udp;user=phone"])
    }

    @Test func serverSignatureOffSendsNoServerHeader() throws {
        let rig = try ScriptRig("server_signature = off\nroute {\n    sl_send_reply(404, \"Gone\");\n}\n")
        let reply = try #require(rig.reply(to: rig.request()))
        #expect(SIPText.header("Server", in: reply).isEmpty)
    }

    @Test func maxWhileLoopsBoundsALoop() throws {
        let rig = try ScriptRig("""
            max_while_loops = 5
            route {
                $var(i) = 0;
                while ($var(i) < 100) { $var(i) = $var(i) + 1; }
                sl_send_reply(200, "ran $var(i)");
            }
            error_route {
                sl_send_reply(500, "$err.class $err.rcode $err.rreason");
            }

            """)
        #expect(rig.reason(of: rig.request(), status: 500) == "1 500 Server Internal Error")
    }

    @Test func branchFlagsAndFlagsUnderTheirOpenSIPSNames() throws {
        let rig = try ScriptRig("""
            route {
                setflag(3);
                setbflag(4);
                if (isflagset(3) && isbflagset(4) && !isbflagset(3)) {
                    resetbflag(4);
                    if (!isbflagset(4)) { sl_send_reply(200, "Flags"); exit; }
                }
                sl_send_reply(500, "No");
            }

            """)
        #expect(rig.reason(of: rig.request(), status: 200) == "Flags")
    }

    @Test func slReplyErrorAnswers500AndHasBodyLooksAtTheBody() throws {
        let rig = try ScriptRig("""
            route {
                if (has_body()) { sl_send_reply(200, "Body"); exit; }
                sl_reply_error();
            }

            """)
        #expect(rig.reason(of: rig.request(), status: 500) == "Server Internal Error")
    }
}
