import Foundation
import Testing

@testable import Script

/// `loose_route()` against the examples of RFC 3261 §16.12.1. ringsip plays one proxy of each example; the
/// other elements it sends to are sinks on loopback, so their URIs carry `127.0.0.1:port` where the RFC has a
/// name (elements ringsip never contacts keep the RFC's names). Each test asserts the Request-URI, the Route
/// set and which sink got the request.
@Suite(.enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimeLooseRoutingTests {
    /// A stateless proxy as the examples need it: in-dialog requests follow their Route set; initial requests are
    /// record-routed and go to `next` (the RFC's DNS lookup of the target domain), after an optional location
    /// lookup given by the test in an X-Location header.
    static func proxyScript(next: String = "forward(\"udp:@SINK0@\")") -> String {
        """
        route {
            if (loose_route()) {
                if (!forward()) { sl_send_reply(503, "No Next Hop"); }
                exit;
            }
            if ($hdr(X-Location) != NULL) { $ru = $hdr(X-Location); }
            record_route();
            \(next);
        }

        """
    }

    static func dialogRequest(_ method: String, _ uri: String, routes: [String], via: String,
                              extra: String = "") -> String {
        "\(method) \(uri) SIP/2.0\r\nVia: \(via)\r\nMax-Forwards: 70\r\n"
            + routes.map { "Route: \($0)\r\n" }.joined()
            + "From: <sip:caller@u1.example.com>;tag=9fxced76sl\r\nTo: <sip:callee@domain.com>;tag=314159\r\n"
            + "Call-ID: 3848276298220188511@u1.example.com\r\nCSeq: 2 \(method)\r\n\(extra)Content-Length: 0\r\n\r\n"
    }

    func clientVia(_ rig: ScriptRig) -> String {
        "SIP/2.0/UDP 127.0.0.1:\(rig.client.address.port);branch=z9hG4bKnashds8;rport"
    }

    // MARK: - §16.12.1.1 Basic SIP Trapezoid (U1 -> P1 -> P2 -> U2)

    @Test func trapezoidP1RecordRoutesTheInviteAndSendsItToP2() throws {
        // ringsip is P1; sink 0 is P2.
        let rig = try ScriptRig(Self.proxyScript())
        rig.send("INVITE sip:callee@domain.com SIP/2.0\r\nVia: \(clientVia(rig))\r\nMax-Forwards: 70\r\n"
            + "From: <sip:caller@u1.example.com>;tag=9fxced76sl\r\nTo: <sip:callee@domain.com>\r\n"
            + "Call-ID: 3848276298220188511@u1.example.com\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@u1.example.com>\r\n"
            + "Content-Length: 0\r\n\r\n")
        let atP2 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atP2) == "INVITE sip:callee@domain.com SIP/2.0")
        #expect(SIPText.values("Record-Route", in: atP2) == ["<sip:\(rig.proxy);lr>"])
        #expect(SIPText.header("Route", in: atP2).isEmpty)
        #expect(SIPText.header("Contact", in: atP2) == ["<sip:caller@u1.example.com>"])
    }

    @Test func trapezoidP2RewritesTheRequestURIAndAddsItsRecordRouteAboveP1s() throws {
        // ringsip is P2; its location service (X-Location) gives U2, sink 0.
        let rig = try ScriptRig(Self.proxyScript(next: "forward()"))
        let u2 = "sip:callee@\(rig.sink.address)"
        rig.send("INVITE sip:callee@domain.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:\(rig.client.address.port);"
            + "branch=z9hG4bK-p1;rport\r\nVia: SIP/2.0/UDP u1.example.com;branch=z9hG4bKnashds8\r\nMax-Forwards: 69\r\n"
            + "Record-Route: <sip:p1.example.com;lr>\r\n"
            + "From: <sip:caller@u1.example.com>;tag=9fxced76sl\r\nTo: <sip:callee@domain.com>\r\n"
            + "Call-ID: 3848276298220188511@u1.example.com\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@u1.example.com>\r\n"
            + "X-Location: \(u2)\r\nContent-Length: 0\r\n\r\n")
        let atU2 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atU2) == "INVITE \(u2) SIP/2.0")
        #expect(SIPText.values("Record-Route", in: atU2) == ["<sip:\(rig.proxy);lr>", "<sip:p1.example.com;lr>"])
    }

    @Test func trapezoidP1PopsItsRouteAndSendsTheByeToP2() throws {
        // ringsip is P1; sink 0 is P2. U1's route set: P1, P2.
        let rig = try ScriptRig(Self.proxyScript(), sinks: ["127.0.0.1", "127.0.0.1"])
        let p2 = "<sip:\(rig.sinks[0].address);lr>"
        rig.send(Self.dialogRequest("BYE", "sip:callee@u2.domain.com", routes: ["<sip:\(rig.proxy);lr>,\(p2)"],
                                    via: clientVia(rig)))
        let atP2 = try #require(rig.sinks[0].receive())
        #expect(SIPText.startLine(atP2) == "BYE sip:callee@u2.domain.com SIP/2.0")
        #expect(SIPText.values("Route", in: atP2) == [p2])
        #expect(SIPText.header("Record-Route", in: atP2).isEmpty)
        #expect(rig.sinks[1].receiveNothing() == nil)
    }

    @Test func trapezoidP2PopsTheLastRouteAndSendsTheByeToTheRequestURI() throws {
        // ringsip is P2; sink 0 is U2.
        let rig = try ScriptRig(Self.proxyScript(next: "forward(\"udp:192.0.2.1:9\")"))
        let u2 = "sip:callee@\(rig.sink.address)"
        rig.send(Self.dialogRequest("BYE", u2, routes: ["<sip:\(rig.proxy);lr>"], via: clientVia(rig)))
        let atU2 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atU2) == "BYE \(u2) SIP/2.0")
        #expect(SIPText.header("Route", in: atU2).isEmpty)
    }

    // MARK: - §16.12.1.2 Traversing a Strict-Routing Proxy (U1 -> P1 -> P2 -> P3 -> P4 -> U2; P3 strict)

    @Test func strictRoutingP4AddressesTheByeToP3AndMovesTheRequestURIToTheEndOfTheRouteSet() throws {
        // ringsip is P4; sink 0 is P3 (a strict router: no ;lr).
        let rig = try ScriptRig(Self.proxyScript(next: "forward(\"udp:192.0.2.1:9\")"))
        let p3 = "sip:\(rig.sink.address)"
        rig.send(Self.dialogRequest("BYE", "sip:caller@u1.example.com", routes: [
            "<sip:\(rig.proxy);lr>", "<\(p3)>", "<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>",
        ], via: clientVia(rig)))
        let atP3 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atP3) == "BYE \(p3) SIP/2.0")
        #expect(SIPText.values("Route", in: atP3)
            == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>", "<sip:caller@u1.example.com>"])
    }

    @Test func strictRoutingP2RestoresTheRequestURIFromTheLastRoute() throws {
        // ringsip is P2; the strict router P3 sent the BYE to P2's Record-Route URI. Sink 0 is P1.
        let rig = try ScriptRig(Self.proxyScript(next: "forward(\"udp:192.0.2.1:9\")"))
        let p1 = "<sip:\(rig.sink.address);lr>"
        rig.send(Self.dialogRequest("BYE", "sip:\(rig.proxy);lr", routes: [p1, "<sip:caller@u1.example.com>"],
                                    via: clientVia(rig)))
        let atP1 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atP1) == "BYE sip:caller@u1.example.com SIP/2.0")
        #expect(SIPText.values("Route", in: atP1) == [p1])
    }

    @Test func strictRoutingP1PopsItsRouteAndDeliversToU1() throws {
        // ringsip is P1; sink 0 is U1.
        let rig = try ScriptRig(Self.proxyScript(next: "forward(\"udp:192.0.2.1:9\")"))
        let u1 = "sip:caller@\(rig.sink.address)"
        rig.send(Self.dialogRequest("BYE", u1, routes: ["<sip:\(rig.proxy);lr>"], via: clientVia(rig)))
        let atU1 = try #require(rig.sink.receive())
        #expect(SIPText.startLine(atU1) == "BYE \(u1) SIP/2.0")
        #expect(SIPText.header("Route", in: atU1).isEmpty)
    }

    @Test func looseRouteIsFalseWithoutRouteHeaders() throws {
        let rig = try ScriptRig("route {\n    if (loose_route()) { sl_send_reply(299, \"routed\"); } else { sl_send_reply(299, \"$rc\"); }\n}\n")
        #expect(rig.reason(of: rig.request()) == "-1")
        let inDialog = "<sip:bob@biloxi.example.com:5062>;tag=b2"
        #expect(rig.reason(of: rig.request(to: inDialog, extra: "Route: <sip:\(rig.proxy);lr>\r\n", cseq: 18)) == "routed")
        // Outside a dialog, a Route naming only us was preloaded (an outbound proxy): removed, but not "routed".
        #expect(rig.reason(of: rig.request(extra: "Route: <sip:\(rig.proxy);lr>\r\n", cseq: 19)) == "-1")
        #expect(rig.reason(of: rig.request(extra: "Route: <sip:\(rig.proxy);lr>, <sip:192.0.2.9;lr>\r\n", cseq: 20))
                == "routed")
    }

    @Test func aPreloadedRouteToUsIsRemovedBeforeTheRequestIsRelayed() throws {
        let rig = try ScriptRig("route {\n    loose_route();\n    forward();\n}\n")
        let uri = "sip:bob@\(rig.sink.address)"
        rig.send(rig.request(uri: uri, extra: "Route: <sip:\(rig.proxy);lr>\r\n"))
        let relayed = try #require(rig.sink.receive())
        #expect(SIPText.startLine(relayed) == "INVITE \(uri) SIP/2.0")
        #expect(SIPText.header("Route", in: relayed).isEmpty)
    }

    // MARK: - §16.12.1.3 Rewriting Record-Route Header Field Values (U1 -> P1 -> U2, P1 between two spaces)

    @Test func gatewayBetweenTwoAddressesRoutesTheDialogBothWays() throws {
        // ringsip is P1 listening on a "left" (127.0.0.1) and a "right" (127.0.0.2) address; U1 is the client on
        // the left, U2 is sink 0 on the right.
        let rig = try ScriptRig(Self.proxyScript(next: "forward()"), sinks: ["127.0.0.2"],
                                listen: ["127.0.0.1", "127.0.0.2"])
        let left = rig.engine.boundAddresses[0], right = rig.engine.boundAddresses[1]
        let u2 = "sip:callee@\(rig.sink.address)"
        rig.send("INVITE sip:callee@gateway.leftprivatespace.com SIP/2.0\r\nVia: \(clientVia(rig))\r\n"
            + "Max-Forwards: 70\r\nFrom: <sip:caller@u1.leftprivatespace.com>;tag=9fxced76sl\r\n"
            + "To: <sip:callee@gateway.leftprivatespace.com>\r\nCall-ID: 3848276298220188511@u1.leftprivatespace.com\r\n"
            + "CSeq: 1 INVITE\r\nContact: <sip:caller@u1.leftprivatespace.com>\r\nX-Location: \(u2)\r\n"
            + "Content-Length: 0\r\n\r\n")
        let invite = try #require(rig.sink.receive())
        #expect(SIPText.startLine(invite) == "INVITE \(u2) SIP/2.0")
        // ringsip sends from the address the request arrived on and record-routes that address (the RFC's P1
        // record-routes its right-hand address and rewrites the value in the 200 OK; see the report).
        #expect(SIPText.values("Record-Route", in: invite) == ["<sip:\(left);lr>"])
        #expect(SIPText.header("Via", in: invite).first?.hasPrefix("SIP/2.0/UDP \(left);") == true)

        // U1's BYE, along the route set it learned.
        rig.send(Self.dialogRequest("BYE", u2, routes: ["<sip:\(left);lr>"], via: clientVia(rig)))
        let bye = try #require(rig.sink.receive())
        #expect(SIPText.startLine(bye) == "BYE \(u2) SIP/2.0")
        #expect(SIPText.header("Route", in: bye).isEmpty)

        // U2's BYE to the right-hand address: that address is ours too, so its Route is popped.
        let u1 = "sip:caller@\(rig.client.address)"
        rig.sink.send(Self.dialogRequest("BYE", u1, routes: ["<sip:\(right);lr>"],
                                         via: "SIP/2.0/UDP \(rig.sink.address);branch=z9hG4bK-u2bye;rport"),
                      to: right)
        let reverse = try #require(rig.client.receive())
        #expect(SIPText.startLine(reverse) == "BYE \(u1) SIP/2.0")
        #expect(SIPText.header("Route", in: reverse).isEmpty)
        #expect(SIPText.header("Via", in: reverse).first?.hasPrefix("SIP/2.0/UDP \(right);") == true)
    }
}
