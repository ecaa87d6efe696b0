import Foundation
import Glibc
import Testing

@testable import Script

/// Pseudo-variables and transformations read from real requests on a real shard. Each value is read back
/// as the reason phrase of `sl_send_reply(299, "…")`.
@Suite(.enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimePseudoVariableTests {
    /// The request every case reads, with repeated and extension headers.
    static func standardRequest(_ rig: ScriptRig) -> String {
        rig.request(extra: "User-Agent: ringsip-tests/1.0\r\nX-Multi: one\r\nx-multi: two\r\nX-Multi: three\r\n")
    }

    static let fields: [(String, String)] = [
        ("$ru", "sip:bob@127.0.0.2:5070;transport=udp"),
        ("$rU", "bob"),
        ("$rd", "127.0.0.2"),
        ("$rp", "5070"),
        ("$fu", "sip:alice@atlanta.example.com"),
        ("$fU", "alice"),
        ("$fd", "atlanta.example.com"),
        ("$tu", "sip:bob@biloxi.example.com:5062"),
        ("$tU", "bob"),
        ("$ci", "call-7@127.0.0.1"),
        ("$cs", "17"),
        ("$rm", "INVITE"),
        ("$ua", "ringsip-tests/1.0"),
        ("$pr", "udp"),
        ("[$du]", "[]"),
        ("[$rs][$rr]", "[][]"),
        ("$hdr(X-Multi)", "one"),
        ("$hdr(X-Multi)[1]", "two"),
        ("$hdr(X-Multi)[-1]", "three"),
        ("$hdr(X-MULTI)[2]", "three"),
        ("[$hdr(X-Multi)[3]]", "[]"),
        ("$(hdr(X-Multi)[*])", "one, two, three"),
        ("$hdr(CSeq)", "17 INVITE"),
        ("$hdr(f)", "\"Alice\" <sip:alice@atlanta.example.com>;tag=a1"),
        ("[$hdr(X-Absent)]", "[]"),
        ("$(ru{uri.user})", "bob"),
        ("$(ru{uri.host})", "127.0.0.2"),
        ("$(tu{uri.port})", "5062"),
        ("$(fu{uri.user}{s.toupper})", "ALICE"),
        ("$(rm{s.tolower})", "invite"),
        ("$(ua{s.toupper})", "RINGSIP-TESTS/1.0"),
        ("$(ci{s.len})", "16"),
        ("$(ru{param.value,transport})", "udp"),
        ("$(hdr(From){param.value,tag})", "a1"),
        ("$(hdr(CSeq){s.int})", "17"),
    ]

    @Test(arguments: fields)
    func fieldOfTheReceivedRequest(_ expression: String, _ expected: String) throws {
        let rig = try ScriptRig("route {\n    sl_send_reply(299, \"\(expression)\");\n}\n")
        #expect(rig.reason(of: Self.standardRequest(rig)) == expected)
    }

    @Test func sourceAndReceivingAddresses() throws {
        let rig = try ScriptRig("route {\n    sl_send_reply(299, \"$si|$sp|$Ri|$Rp\");\n}\n")
        #expect(rig.reason(of: rig.request()) == "127.0.0.1|\(rig.client.address.port)|127.0.0.1|\(rig.proxy.port)")
    }

    @Test func messageLengthAndBuffer() throws {
        let rig = try ScriptRig("""
            route {
                if ($mb =~ "^INVITE sip:bob@127[.]0[.]0[.]2:5070;transport=udp SIP/2[.]0\\r\\n" && $mb =~ "x-multi: two") {
                    sl_send_reply(299, "$ml|$(mb{s.len})");
                    exit;
                }
                sl_send_reply(500, "no match");
            }

            """)
        let request = Self.standardRequest(rig)
        let length = request.utf8.count
        #expect(rig.reason(of: request) == "\(length)|\(length)")
    }

    @Test func timeAndTimestamp() throws {
        let rig = try ScriptRig("route {\n    sl_send_reply(299, \"$time(%Y)|$Ts\");\n}\n")
        let before = time(nil)
        let parts = try #require(rig.reason(of: rig.request())).split(separator: "|")
        let after = time(nil)
        var now = before
        var calendar = tm()
        localtime_r(&now, &calendar)
        #expect(parts.count == 2)
        #expect(parts.first == "\(calendar.tm_year + 1900)"[...])
        let stamp = try #require(Int(parts.last ?? ""))
        #expect(stamp >= before && stamp <= after)
    }

    @Test func returnCodeOfTheLastFunction() throws {
        let rig = try ScriptRig("""
            route {
                is_method("INVITE");
                $var(a) = $rc;
                is_method("BYE");
                sl_send_reply(299, "$var(a)|$rc|$retcode");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "1|-1|-1")
    }

    @Test func scriptVariablesHoldTextAndIntegersAndStartEmptyForEachMessage() throws {
        let rig = try ScriptRig("""
            route {
                $var(first) = $var(x);
                $var(x) = "a";
                $var(x) = $var(x) + "b";
                $var(x) += "c";
                $var(n) = 40;
                $var(n) = $var(n) + 2;
                $var(n) += 1;
                $var(m) = 5 - 7;
                $var(c) = $rU + $cs;
                $var(num) = "42abc";
                $var(k) = $var(num){s.int} + 1;
                $var(len) = $var(x){s.len};
                sl_send_reply(299, "[$var(first)]$var(x)|$var(n)|$var(m)|$var(c)|$var(k)|$var(len)|[$var(unset)]");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "[]abc|43|-2|bob17|43|3|[]")
        #expect(rig.reason(of: rig.request(cseq: 18)) == "[]abc|43|-2|bob18|43|3|[]", "$var starts empty per message")
    }

    @Test func parameterValueOfAVariable() throws {
        let rig = try ScriptRig("""
            route {
                $var(p) = "a=1;b=2; lr ;c = three";
                sl_send_reply(299, "$(var(p){param.value,b})|[$(var(p){param.value,lr})]|$(var(p){param.value,C})|[$(var(p){param.value,d})]");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "2|[]|three|[]")
    }

    @Test func avpsStackNewestFirst() throws {
        let rig = try ScriptRig("""
            route {
                $avp(x) = 1;
                $avp(x) = "two";
                $avp(x) = 3;
                $var(stack) = $avp(x) + "," + $(avp(x)[1]) + "," + $(avp(x)[2]) + "," + $(avp(x)[-1]);
                $avp(x) = NULL;
                $var(popped) = $avp(x);
                $avp(x) := "only";
                $var(replaced) = $avp(x) + "," + $(avp(x)[1]);
                $(avp(x)[*]) = NULL;
                sl_send_reply(299, "$var(stack)|$var(popped)|$var(replaced)|[$avp(x)]");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "3,two,1,1|two|only,|[]")
    }

    @Test func destinationURIIsNullUntilSetAndThenSteersForward() throws {
        let rig = try ScriptRig("""
            route {
                if ($du != NULL) { sl_send_reply(500, "du set too early"); exit; }
                $du = "sip:@SINK@;lr";
                append_hf("X-DU: $du\\r\\n");
                forward();
            }

            """)
        rig.send(rig.request())
        let forwarded = try #require(rig.sink.receive())
        #expect(SIPText.header("X-DU", in: forwarded) == ["sip:\(rig.sink.address);lr"])
        #expect(SIPText.startLine(forwarded) == "INVITE sip:bob@127.0.0.2:5070;transport=udp SIP/2.0")
    }

    @Test func requestURIPartsCanBeRewritten() throws {
        let rig = try ScriptRig("""
            route {
                if (is_method("INVITE")) {
                    $rU = "carol";
                    $rd = "127.0.0.1";
                    $rp = @SINKPORT@;
                    append_hf("X-Parts: $rU $rd $rp\\r\\n");
                } else if (is_method("OPTIONS")) {
                    $rU = NULL;
                    $rp = NULL;
                    append_hf("X-Parts: [$rU] $ru\\r\\n");
                    forward("udp:@SINK@");
                    exit;
                } else {
                    $ru = "sip:dave@@SINK@;user=phone";
                }
                forward();
            }

            """)
        let sinkPort = rig.sink.address.port
        rig.send(rig.request())
        let invite = try #require(rig.sink.receive())
        #expect(SIPText.startLine(invite) == "INVITE sip:carol@127.0.0.1:\(sinkPort);transport=udp SIP/2.0")
        #expect(SIPText.header("X-Parts", in: invite) == ["carol 127.0.0.1 \(sinkPort)"])

        rig.send(rig.request("OPTIONS", cseq: 18))
        let options = try #require(rig.sink.receive())
        #expect(SIPText.startLine(options) == "OPTIONS sip:127.0.0.2;transport=udp SIP/2.0")
        #expect(SIPText.header("X-Parts", in: options) == ["[] sip:127.0.0.2;transport=udp"])

        rig.send(rig.request("BYE", cseq: 19))
        let bye = try #require(rig.sink.receive())
        #expect(SIPText.startLine(bye) == "BYE sip:dave@\(rig.sink.address);user=phone SIP/2.0")
    }

    @Test func emptyRequestUserComparesEqualToNull() throws {
        let rig = try ScriptRig("""
            route {
                if ($rU == NULL) { sl_send_reply(299, "no user"); } else { sl_send_reply(299, "user $rU"); }
            }

            """)
        #expect(rig.reason(of: rig.request("OPTIONS", uri: "sip:127.0.0.2:5070")) == "no user")
        #expect(rig.reason(of: rig.request("OPTIONS", uri: "sip:ping@127.0.0.2:5070", cseq: 18)) == "user ping")
    }
}
