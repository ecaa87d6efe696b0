import Testing

import Script

/// Whole scripts as users write them, parsed and checked shape by shape.
@Suite struct ParserScriptTests {
    /// After the OpenSIPS 3.x residential default: the spellings, layout and idioms a migrating user brings.
    static let opensips3 = #"""
        #
        # OpenSIPS residential configuration script, 3.x style
        #

        ####### Global Parameters #########

        log_level = 3
        stderror_enabled = no
        syslog_enabled = yes
        syslog_facility = LOG_LOCAL0

        udp_workers = 4

        /* uncomment the following line to enable debugging */
        #debug_mode=yes

        socket = udp:127.0.0.1:5060   # CUSTOMIZE ME
        socket = udp:[::1]:5060

        ####### Modules Section ########

        mpath = "/usr/lib/x86_64-linux-gnu/opensips/modules/"

        loadmodule "signaling.so"
        loadmodule "sl.so"
        loadmodule "tm.so"
        modparam("tm", "fr_timeout", 5)
        modparam("tm", "fr_inv_timeout", 30)
        modparam("tm", "restart_fr_on_each_reply", 0)
        loadmodule "rr.so"
        modparam("rr", "append_fromtag", 0)
        loadmodule "maxfwd.so"
        loadmodule "mi_fifo.so"
        modparam("mi_fifo", "fifo_name", "/run/opensips/opensips_fifo")
        modparam("mi_fifo", "fifo_mode", 0666)
        loadmodule "usrloc.so"
        modparam("usrloc", "nat_bflag", "NAT")
        modparam("usrloc", "working_mode_preset", "single-instance-no-db")
        loadmodule "proto_udp.so"

        ####### Routing Logic ########

        # main request routing logic
        route {
            if (!mf_process_maxfwd_header(10)) {
                send_reply(483, "Too Many Hops");
                exit;
            }

            if (has_totag()) {
                # handle hop-by-hop ACK (no routing required)
                if (is_method("ACK") && t_check_trans()) {
                    t_relay();
                    exit;
                }

                # sequential request within a dialog should
                # take the path determined by record-routing
                if (!loose_route()) {
                    # we do record-routing for all our traffic, so we should not
                    # receive any sequential requests without Route hdr.
                    send_reply(404, "Not here");
                    exit;
                }

                if (is_method("BYE")) {
                    # do accounting even if the transaction fails
                    do_accounting("log", "failed");
                }

                # route it out to whatever destination was set by loose_route()
                # in $du (destination URI).
                route(relay);
                exit;
            }

            # CANCEL processing
            if (is_method("CANCEL")) {
                if (t_check_trans())
                    t_relay();
                exit;
            }

            t_check_trans();

            if (!is_method("REGISTER|MESSAGE")) {
                if (is_myself("$fd")) {
                } else {
                    # if caller is not local, then called number must be local
                    if (!is_myself("$rd")) {
                        send_reply(403, "Relay Forbidden");
                        exit;
                    }
                }
            }

            # preloaded route checking
            if (loose_route()) {
                xlog("L_ERR", "Attempt to route with preloaded Route's [$fu/$tu/$ru/$ci]");
                if (!is_method("ACK"))
                    send_reply(403, "Preload Route denied");
                exit;
            }

            # record routing
            if (!is_method("REGISTER|MESSAGE"))
                record_route();

            $var(caller) = $(hdr(From){nameaddr.uri});
            $avp(attempts) := 0;
            switch ($rm) {
                case "INVITE":
                    $avp(attempts) += 1;
                    break;
                case "OPTIONS":
                    send_reply(200, "OK");
                    exit;
                default:
                    xlog("L_INFO", "$rm from $si:$sp, user $(fu{uri.user}) len $var(caller){s.len}\n");
            }

            if ($rU == NULL) {
                # request with no Username in RURI
                send_reply(484, "Address Incomplete");
                exit;
            }

            route(relay);
        }

        route[relay] {
            # for INVITEs enable some additional helper routes
            if (is_method("INVITE")) {
                t_on_branch("per_branch_ops");
                t_on_reply("handle_nat");
                t_on_failure("missed_call");
            }

            if (!t_relay()) {
                send_reply(500, "Internal Error");
            }
            exit;
        }

        branch_route[per_branch_ops] {
            xlog("new branch at $ru\n");
        }

        onreply_route[handle_nat] {
            xlog("incoming reply\n");
        }

        failure_route[missed_call] {
            if (t_was_cancelled()) {
                exit;
            }
        }

        timer_route[gw_update, 300] {
            $var(i) = 0;
            while ($var(i) < 3) {
                $var(i) = $var(i) + 1;
            }
        }
        """#

    @Test func opensips3ScriptGlobalsKeepTheirSpelling() throws {
        let script = try ParserFixture.parse(Self.opensips3, file: "opensips.cfg")
        let globals = script.globals.map { "\($0.name)=\($0.value)" }
        #expect(globals == [
            "log_level=integer(3)", "stderror_enabled=word(\"no\")", "syslog_enabled=word(\"yes\")",
            "syslog_facility=word(\"LOG_LOCAL0\")", "udp_workers=integer(4)",
            "socket=word(\"udp:127.0.0.1:5060\")", "socket=word(\"udp:[::1]:5060\")",
            "mpath=string(\"/usr/lib/x86_64-linux-gnu/opensips/modules/\")",
        ])
        let socket = script.globals[5]
        #expect(socket.location == Script.SourceLocation(file: "opensips.cfg", line: 17, column: 1))
        #expect(socket.valueLocation == Script.SourceLocation(file: "opensips.cfg", line: 17, column: 10))
    }

    @Test func opensips3ScriptModulesAndParameters() throws {
        let script = try ParserFixture.parse(Self.opensips3, file: "opensips.cfg")
        #expect(script.modules.map(\.path) == [
            "signaling.so", "sl.so", "tm.so", "rr.so", "maxfwd.so", "mi_fifo.so", "usrloc.so", "proto_udp.so",
        ])
        #expect(script.modules[2].location == Script.SourceLocation(file: "opensips.cfg", line: 26, column: 1))
        let parameters = script.parameters.map { "\($0.module).\($0.name)=\($0.value)" }
        #expect(parameters == [
            "tm.fr_timeout=integer(5)", "tm.fr_inv_timeout=integer(30)", "tm.restart_fr_on_each_reply=integer(0)",
            "rr.append_fromtag=integer(0)", "mi_fifo.fifo_name=string(\"/run/opensips/opensips_fifo\")",
            "mi_fifo.fifo_mode=integer(438)", "usrloc.nat_bflag=string(\"NAT\")",
            "usrloc.working_mode_preset=string(\"single-instance-no-db\")",
        ])
        #expect(script.parameters[0].valueLocation == Script.SourceLocation(file: "opensips.cfg", line: 27, column: 30))
    }

    @Test func opensips3ScriptRoutes() throws {
        let script = try ParserFixture.parse(Self.opensips3, file: "opensips.cfg")
        #expect(script.routes.map { "\($0.kind)[\($0.name)]" } == [
            "route[]", "route[relay]", "branch_route[per_branch_ops]", "onreply_route[handle_nat]",
            "failure_route[missed_call]", "timer_route[gw_update]",
        ])
        #expect(script.routes[5].kind == .timer(seconds: 300))
        #expect(script.routes[1].location == Script.SourceLocation(file: "opensips.cfg", line: 131, column: 1))
        #expect(ParserFixture.dump(script.routes[5]) == """
            timer_route[gw_update, 300] { $var(i) = 0; while (($var(i) < 3)) { $var(i) = ($var(i) + 1); } }
            """)
        #expect(ParserFixture.dump(script.routes[1]) == """
            route[relay] { if (is_method("INVITE")) { t_on_branch("per_branch_ops"); t_on_reply("handle_nat"); \
            t_on_failure("missed_call"); } if (!t_relay()) { send_reply(500, "Internal Error"); } exit; }
            """)
        #expect(ParserFixture.dump(script.routes[2])
            == #"branch_route[per_branch_ops] { xlog(str["new branch at ", $ru, "\n"]); }"#)
    }

    @Test func opensips3MainRouteStatementByStatement() throws {
        let script = try ParserFixture.parse(Self.opensips3, file: "opensips.cfg")
        let main = script.routes[0].body.map(ParserFixture.dump)
        #expect(main.count == 12)
        #expect(main[0] == #"if (!mf_process_maxfwd_header(10)) { send_reply(483, "Too Many Hops"); exit; }"#)
        #expect(main[1] == """
            if (has_totag()) { if ((is_method("ACK") && t_check_trans())) { t_relay(); exit; } \
            if (!loose_route()) { send_reply(404, "Not here"); exit; } \
            if (is_method("BYE")) { do_accounting("log", "failed"); } route(relay); exit; }
            """)
        #expect(main[2] == #"if (is_method("CANCEL")) { if (t_check_trans()) { t_relay(); } exit; }"#)
        #expect(main[3] == "t_check_trans();")
        #expect(main[4] == """
            if (!is_method("REGISTER|MESSAGE")) { if (is_myself(str[$fd])) {  } else { \
            if (!is_myself(str[$rd])) { send_reply(403, "Relay Forbidden"); exit; } } }
            """)
        #expect(main[5] == """
            if (loose_route()) { xlog("L_ERR", str["Attempt to route with preloaded Route's [", $fu, "/", $tu, "/", \
            $ru, "/", $ci, "]"]); if (!is_method("ACK")) { send_reply(403, "Preload Route denied"); } exit; }
            """)
        #expect(main[6] == #"if (!is_method("REGISTER|MESSAGE")) { record_route(); }"#)
        #expect(main[7] == "$var(caller) = $hdr(From){nameaddr.uri};")
        #expect(main[8] == "$avp(attempts) := 0;")
        #expect(main[9] == """
            switch ($rm) { case "INVITE": $avp(attempts) += 1; break; \
            case "OPTIONS": send_reply(200, "OK"); exit; \
            default: xlog("L_INFO", str[$rm, " from ", $si, ":", $sp, ", user ", $fu{uri.user}, " len ", \
            $var(caller){s.len}, "\\n"]); }
            """)
        #expect(main[10] == #"if (($rU == NULL)) { send_reply(484, "Address Incomplete"); exit; }"#)
        #expect(main[11] == "route(relay);")
    }

    /// OpenSIPS 1.x/2.x: numbered routes, `listen`, `children`, string reply codes, `$avp` indexes, `return(n)`.
    static let opensips2 = #"""
        debug=3
        fork=yes
        log_stderror=no
        children=4
        listen=udp:192.0.2.10:5060
        port=5060
        alias="example.com"
        dns=off
        mpath="/usr/local/lib/opensips/modules/"
        loadmodule "sl.so"
        loadmodule "tm.so"
        loadmodule "textops.so"
        modparam("tm", "fr_timer", -1)

        route[0] {
            if (!mf_process_maxfwd_header("10")) {
                sl_send_reply("483", "Too Many Hops");
                exit;
            };
            if (uri == myself) {
                route(1);
            } else if ($rU =~ "^\+?[0-9]+$") {
                $avp(dst)[1] = "sip:" + $rU + "@gw.example.com";
                return(2);
            } else {
                sl_send_reply("404", "Not Found");
                drop();
            };
        }

        route[1] {
            t_on_failure("2");
            if (!t_relay()) { sl_reply_error(); };
            return -1;
        }

        failure_route[2] {
            if ($(avp(dst)[-1]) != NULL && $T_reply_code >= 500) {
                append_branch();
                t_relay();
            }
        }

        onreply_route {
            xlog('reply $rs\n');
        }
        """#

    @Test func opensips2ScriptGlobals() throws {
        let script = try ParserFixture.parse(Self.opensips2)
        #expect(script.globals.map { "\($0.name)=\($0.value)" } == [
            "debug=integer(3)", "fork=word(\"yes\")", "log_stderror=word(\"no\")", "children=integer(4)",
            "listen=word(\"udp:192.0.2.10:5060\")", "port=integer(5060)", "alias=string(\"example.com\")",
            "dns=word(\"off\")", "mpath=string(\"/usr/local/lib/opensips/modules/\")",
        ])
        #expect(script.modules.map(\.path) == ["sl.so", "tm.so", "textops.so"])
        #expect(script.parameters.map { "\($0.name)=\($0.value)" } == ["fr_timer=integer(-1)"])
    }

    @Test func opensips2ScriptRoutes() throws {
        let script = try ParserFixture.parse(Self.opensips2)
        #expect(script.routes.map(ParserFixture.dump) == [
            """
            route[0] { if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; } \
            if ((uri == myself)) { route(1); } else { if (($rU =~ "^\\\\+?[0-9]+$")) { \
            $avp(dst)[1] = (("sip:" + $rU) + "@gw.example.com"); return 2; } else { \
            sl_send_reply("404", "Not Found"); drop; } } }
            """,
            #"route[1] { t_on_failure("2"); if (!t_relay()) { sl_reply_error(); } return -1; }"#,
            """
            failure_route[2] { if ((($avp(dst)[-1] != NULL) && ($T_reply_code >= 500))) { append_branch(); \
            t_relay(); } }
            """,
            // Single quotes are raw, as in OpenSIPS: the backslash stays.
            #"onreply_route { xlog(str["reply ", $rs, "\\n"]); }"#,
        ])
    }
}
