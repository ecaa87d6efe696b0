import Foundation
import Testing

@testable import Script

/// if/else, switch, while, route calls with return codes, and the OpenSIPS truth rule, on a real shard.
@Suite(.enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimeControlFlowTests {
    /// The core library plus functions that return fixed codes, to show the truth rule on any function.
    static var libraryWithFixedCodes: ScriptLibrary {
        var library = ScriptLibrary.core
        library.register(ScriptModule(name: "core", functions: [
            ScriptFunction("zero", module: "core", arguments: 0...0) { _, _ in { _ in 0 } },
            ScriptFunction("minus_three", module: "core", arguments: 0...0) { _, _ in { _ in -3 } },
        ]))
        return library
    }

    @Test func ifElseChainsWithComparisonsAndLogic() throws {
        let rig = try ScriptRig("""
            route {
                if ($cs > 100) {
                    $var(r) = "big";
                } else if ($cs >= 18 && $rm == "BYE") {
                    $var(r) = "bye18+";
                } else if ($cs < 18 || !is_method("BYE")) {
                    $var(r) = "small-or-not-bye";
                } else {
                    $var(r) = "else";
                }
                if ($cs == "17") { $var(r) += ",text17"; }
                if ($cs != 17) { $var(r) += ",not17"; }
                sl_send_reply(299, "$var(r)");
            }

            """)
        #expect(rig.reason(of: rig.request(cseq: 101)) == "big,not17")
        #expect(rig.reason(of: rig.request("BYE", cseq: 18)) == "bye18+,not17")
        #expect(rig.reason(of: rig.request("BYE", cseq: 17)) == "small-or-not-bye,text17")
        #expect(rig.reason(of: rig.request("INVITE", cseq: 18)) == "small-or-not-bye,not17")
    }

    @Test func switchFallsThroughUntilBreakAndRunsDefaultWhenNothingMatches() throws {
        let rig = try ScriptRig("""
            route {
                $var(s) = "";
                switch ($rm) {
                case "INVITE":
                    $var(s) += "i";
                case "BYE":
                    $var(s) += "b";
                    break;
                case "OPTIONS":
                    $var(s) += "o";
                default:
                    $var(s) += "d";
                }
                switch ($cs) {
                case 1:
                    $var(s) += "|one";
                    break;
                case -1:
                    $var(s) += "|minus";
                    break;
                }
                sl_send_reply(299, "$var(s)");
            }

            """)
        #expect(rig.reason(of: rig.request("INVITE", cseq: 1)) == "ib|one")
        #expect(rig.reason(of: rig.request("BYE", cseq: 2)) == "b")
        #expect(rig.reason(of: rig.request("OPTIONS", cseq: 3)) == "od")
        #expect(rig.reason(of: rig.request("FOO", cseq: 4)) == "d")
    }

    @Test func whileLoopsUntilItsConditionFailsOrABreak() throws {
        let rig = try ScriptRig("""
            route {
                $var(i) = 0;
                $var(s) = "";
                while ($var(i) < 5) {
                    $var(i) = $var(i) + 1;
                    $var(s) += "x";
                }
                $var(j) = 0;
                while (1) {
                    $var(j) += 1;
                    if ($var(j) == 3) { break; }
                }
                sl_send_reply(299, "$var(s)|$var(i)|$var(j)");
            }

            """)
        #expect(rig.reason(of: rig.request()) == "xxxxx|5|3")
    }

    @Test func routeReturnCodesReachTheCallerAsRcAndAsTruth() throws {
        let rig = try ScriptRig("""
            route {
                route(check);
                $var(a) = $rc;
                if (route(check)) { $var(b) = "yes"; } else { $var(b) = "no"; }
                $var(c) = route(positive);
                route(plain);
                $var(d) = $rc;
                if (route(positive)) { $var(e) = "yes"; }
                sl_send_reply(299, "$var(a)|$var(b)|$var(c)|$var(d)|$var(e)|$var(inner)");
            }
            route[check] {
                return(-2);
                $var(inner) = "after return";
            }
            route[positive] {
                return(7);
            }
            route[plain] {
                $var(z) = 1;
            }

            """)
        #expect(rig.reason(of: rig.request()) == "-2|no|7|1|yes|")
    }

    @Test func returnZeroExitAndDropInACalledRouteEndTheWholeScript() throws {
        let rig = try ScriptRig("""
            route {
                if (is_method("INVITE")) { route(zero); }
                if (is_method("BYE")) { route(leave); }
                if (is_method("CANCEL")) { route(discard); }
                if (is_method("OPTIONS")) { route(early); }
                sl_send_reply(299, "continued");
            }
            route[zero] {
                return(0);
            }
            route[leave] {
                exit;
            }
            route[discard] {
                drop;
            }
            route[early] {
                return;
                sl_send_reply(500, "after return");
            }

            """)
        rig.send(rig.request("INVITE"))
        rig.send(rig.request("BYE", cseq: 18))
        rig.send(rig.request("CANCEL", cseq: 19))
        #expect(rig.reason(of: rig.request("OPTIONS", cseq: 20)) == "continued", "return; only leaves route[early]")
        #expect(rig.client.receiveNothing() == nil, "INVITE, BYE and CANCEL ended the script before any reply")
    }

    @Test func aFunctionReturningZeroEndsTheScriptAndNegativeIsFalse() throws {
        let rig = try ScriptRig("""
            route {
                if (is_method("INVITE")) {
                    zero();
                    sl_send_reply(500, "after zero()");
                }
                if (is_method("BYE")) {
                    if (zero()) { sl_send_reply(500, "then"); } else { sl_send_reply(500, "else"); }
                    sl_send_reply(500, "after if");
                }
                if (is_method("CANCEL")) {
                    if (!zero()) { sl_send_reply(500, "negated"); }
                    sl_send_reply(500, "after negation");
                }
                if (is_method("OPTIONS")) {
                    minus_three();
                    $var(rc) = $rc;
                    if (minus_three()) { $var(r) = "true"; } else { $var(r) = "false"; }
                    sl_send_reply(299, "$var(rc) $var(r)");
                }
            }

            """, library: Self.libraryWithFixedCodes)
        rig.send(rig.request("INVITE"))
        rig.send(rig.request("BYE", cseq: 18))
        rig.send(rig.request("CANCEL", cseq: 19))
        #expect(rig.reason(of: rig.request("OPTIONS", cseq: 20)) == "-3 false")
        #expect(rig.client.receiveNothing() == nil, "zero() ended the script each time")
    }

    @Test func exitEndsAndDropDiscardsInTheMainRoute() throws {
        let rig = try ScriptRig("""
            route {
                if (is_method("BYE")) { exit; }
                if (is_method("CANCEL")) { drop; }
                sl_send_reply(299, "reached");
            }

            """)
        rig.send(rig.request("BYE"))
        rig.send(rig.request("CANCEL", cseq: 18))
        #expect(rig.reason(of: rig.request("OPTIONS", cseq: 19)) == "reached")
        #expect(rig.client.receiveNothing() == nil)
    }
}

/// What the runtime writes to stderr (xlog, script errors). Serialized: stderr is redirected per test.
@Suite(.serialized, .enabled(if: ScriptRig.canRun, "io_uring unavailable"))
struct RuntimeLogTests {
    @Test func xlogWritesExpandedLinesFilteredByLogLevel() throws {
        let marker = "m\(UInt32.random(in: 0...UInt32.max))"
        var rig: ScriptRig?
        let output = try capturingStderr(own: marker) {
            rig = try ScriptRig("""
                log_level = 2
                route {
                    xlog("L_ERR", "\(marker) error $rm from $si:$sp\\n");
                    xlog("L_NOTICE", "\(marker) notice $ci\\n");
                    xlog("L_INFO", "\(marker) info: hidden at log_level 2\\n");
                    xlog("\(marker) default level is L_ERR for $rU\\n");
                    sl_send_reply(200, "OK");
                }

                """)
            let rig = try #require(rig)
            _ = try #require(rig.reply(to: rig.request()))
        }
        let port = try #require(rig).client.address.port
        let lines = output.split(separator: "\n").filter { $0.contains(marker) }.map(String.init)
        #expect(lines == [
            "\(marker) error INVITE from 127.0.0.1:\(port)",
            "\(marker) notice call-7@127.0.0.1",
            "\(marker) default level is L_ERR for bob",
        ])
    }

    @Test func aLoopThatNeverEndsHitsTheBoundIsReportedAndTheShardKeepsServing() throws {
        var rig: ScriptRig?
        let output = try capturingStderr {
            rig = try ScriptRig("""
                route {
                    if (is_method("OPTIONS")) {
                        sl_send_reply(200, "Still Here");
                        exit;
                    }
                    $var(i) = 0;
                    while ($var(i) >= 0) {
                        $var(i) = $var(i) + 1;
                    }
                    sl_send_reply(299, "unreachable");
                }
                error_route {
                    sl_send_reply(500, "Script Error $var(i)");
                }

                """)
            let rig = try #require(rig)
            #expect(rig.reason(of: rig.request(), status: 500) == "Script Error 10000")
            #expect(rig.reason(of: rig.request("OPTIONS", cseq: 18), status: 200) == "Still Here")
        }
        let errors = output.split(separator: "\n").filter { $0.hasPrefix("ringsipd: script error") }
        #expect(errors == [
            "ringsipd: script error: while loop at runtime.cfg:11:5 ran 10000 times for one message; stopped the script",
        ])
        #expect(rig?.client.receiveNothing() == nil, "\"unreachable\" was never sent")
    }

    @Test func aRuntimeErrorWithoutErrorRouteIsOnlyLogged() throws {
        var rig: ScriptRig?
        let output = try capturingStderr {
            rig = try ScriptRig("""
                route {
                    if (is_method("INVITE")) {
                        while (1) { $var(i) += 1; }
                    }
                    sl_send_reply(200, "Served");
                }

                """)
            let rig = try #require(rig)
            rig.send(rig.request())
            #expect(rig.client.receiveNothing() == nil)
            #expect(rig.reason(of: rig.request("BYE", cseq: 18), status: 200) == "Served")
        }
        #expect(output.contains("ringsipd: script error: while loop at runtime.cfg:7:9 ran 10000 times"))
    }

    @Test func textBeyondTheArenaFailsTheScriptInsteadOfBeingTruncated() throws {
        var rig: ScriptRig?
        let output = try capturingStderr {
            rig = try ScriptRig("""
                route {
                    $var(i) = 0;
                    while ($var(i) < 1000) {
                        $var(x) += "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";
                        $var(i) += 1;
                    }
                    sl_send_reply(299, "$(var(x){s.len})");
                }

                """)
            let rig = try #require(rig)
            rig.send(rig.request())
            // Text past the 64 KiB arena fails the script: no reply with a truncated value.
            #expect(rig.client.receiveNothing() == nil)
        }
        #expect(output.contains("ringsipd: script error: values for one message exceed the 64 KiB arena"))
    }

    @Test func startupRouteRunsOnceAndTimerRouteRunsEverySecondOnShardZero() throws {
        let marker = "m\(UInt32.random(in: 0...UInt32.max))"
        var rig: ScriptRig?
        let output = try capturingStderr(own: marker) {
            rig = try ScriptRig("""
                startup_route {
                    $var(n) = 41;
                    $var(n) += 1;
                    xlog("L_ERR", "\(marker) startup $var(n)\n");
                }
                timer_route[tick, 1] {
                    xlog("L_ERR", "\(marker) tick\n");
                }
                route {
                    sl_send_reply(299, "served");
                }

                """)
            let rig = try #require(rig)
            // Requests are served meanwhile; wait through two timer intervals.
            #expect(rig.reason(of: rig.request()) == "served")
            usleep(2_300_000)
        }
        rig = nil
        let lines = output.split(separator: "\n").filter { $0.hasPrefix(marker) }
        #expect(lines.first == "\(marker) startup 42")
        #expect(lines.filter { $0 == "\(marker) startup 42" }.count == 1)
        // Two intervals passed; a loaded machine may let a third slip in before the rig stops.
        #expect((2...3).contains(lines.filter { $0 == "\(marker) tick" }.count))
    }
}
