import Testing

import Engine
@testable import Script

/// What OpenSIPS scripts of every version write in their global section and modparams, and the language forms
/// they use: accepted (with one warning naming each knob without effect), applied where they have a meaning,
/// and refused with a precise error otherwise.
@Suite struct OpenSIPSCompatibilityTests {
    static func check(_ script: String, library: ScriptLibrary = .core,
                      sourceLocation: Testing.SourceLocation = #_sourceLocation) -> ScriptProgram? {
        do {
            return try ScriptProgram.parse(script, file: "test.cfg", library: library)
        } catch {
            Issue.record("expected the script to pass: \(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    static func error(_ script: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> String {
        CheckerFixture.error(script, sourceLocation: sourceLocation)?.description ?? ""
    }

    // MARK: - Globals

    @Test func tuningGlobalsAreAcceptedWithOneWarningEach() throws {
        let program = try #require(Self.check("""
            log_level = 3
            xlog_level = 2
            log_stderror = no
            log_facility = LOG_LOCAL0
            children = 4
            udp_workers = 4
            timer_workers = 2
            auto_scaling_profile = PROFILE_UDP
            disable_dns_blacklist = yes
            dns_try_ipv6 = no
            tcp_children = 8
            mpath = "/usr/lib/opensips/modules/"
            route { exit; }

            """))
        let named = ["log_stderror", "log_facility", "children", "udp_workers", "timer_workers", "auto_scaling_profile",
                     "disable_dns_blacklist", "dns_try_ipv6", "tcp_children", "mpath"]
        #expect(program.warnings.count == named.count)
        for (warning, name) in zip(program.warnings, named) {
            #expect(warning.contains("warning: '\(name)' is accepted but has no effect in ringsip: "))
        }
        #expect(program.configuration.xlogLevel == 2)
        #expect(program.configuration.logLevel == 3)
    }

    @Test func globalsWithAMeaningAreApplied() throws {
        let program = try #require(Self.check("""
            port = 5080
            listen = udp:127.0.0.1
            alias = sip.example.com
            alias = "proxy.example.com:5070"
            advertised_address = "203.0.113.7"
            advertised_port = 5099
            server_header = "Server: edge-7"
            max_while_loops = 50
            debug = 6
            route { exit; }

            """))
        let c = program.configuration
        #expect(c.listen.map(\.description) == ["127.0.0.1:5080"])
        #expect(c.identity.aliases.map(\.host) == ["sip.example.com", "proxy.example.com"])
        #expect(c.identity.aliases.map(\.port) == [nil, 5070])
        #expect(c.identity.advertised == AdvertisedAddress(host: "203.0.113.7", port: 5099))
        #expect(c.identity.server == "edge-7")
        #expect(c.maxWhileLoops == 50)
        #expect(c.logLevel == 4, "1.x debug levels above 4 mean 'all of it'")
        #expect(program.warnings.isEmpty)
    }

    @Test func serverSignatureNoRemovesTheServerHeader() throws {
        let program = try #require(Self.check("server_signature = no\nroute { exit; }\n"))
        #expect(program.configuration.identity.server == nil)
    }

    @Test func socketFormsResolveAtStart() throws {
        let program = try #require(Self.check("""
            socket = udp:localhost:5070 use_workers 2
            listen = udp:127.0.0.1:5071 as 198.51.100.1:5060
            listen = 127.0.0.2
            route { exit; }

            """))
        let c = program.configuration
        #expect(c.listen.map(\.description).contains("127.0.0.1:5070"))
        #expect(c.listen.map(\.description).contains("127.0.0.1:5071"))
        #expect(c.listen.map(\.description).contains("127.0.0.2:5060"))
        #expect(c.identity.advertisedBySocket.map(\.advertised) == [AdvertisedAddress(host: "198.51.100.1", port: 5060)])
        #expect(program.warnings.count == 1)
        #expect(program.warnings.first?.contains("'use_workers 2' on a socket is accepted but has no effect") == true)
    }

    @Test func anInterfaceNameListensOnItsAddresses() throws {
        let program = try #require(Self.check("listen = udp:lo:5072\nroute { exit; }\n"))
        #expect(program.configuration.listen.map(\.description).contains("127.0.0.1:5072"))
    }

    @Test func otherTransportsAreNamedNotCalledBadAddresses() {
        #expect(Self.error("socket = hep_udp:127.0.0.1:9060\nroute { exit; }\n").hasPrefix(
            "test.cfg:1:10: error: transport 'hep_udp' in 'hep_udp:127.0.0.1:9060' is not supported yet: ringsip serves udp and tcp"))
        #expect(Self.error("listen = tls:127.0.0.1:5061\nroute { exit; }\n").contains("transport 'tls'"))
    }

    @Test func tcpSocketsAndTheirKnobsAreTaken() throws {
        let program = try #require(Self.check("""
            socket = tcp:127.0.0.1:5060
            listen = udp:127.0.0.1:5060
            tcp_connection_lifetime = 300
            tcp_max_connections = 4096
            tcp_connect_timeout = 500
            tcp_max_msg_time = 5
            loadmodule "proto_tcp.so"
            modparam("proto_tcp", "tcp_port", 5060)
            modparam("proto_tcp", "tcp_send_timeout", 2000)
            route { exit; }

            """))
        #expect(program.configuration.streamListen.map(\.description) == ["127.0.0.1:5060"])
        #expect(program.configuration.listen.map(\.description) == ["127.0.0.1:5060"])
        #expect(program.configuration.tcpConnectionLifetime == 300 && program.configuration.tcpMaxConnections == 4096)
        #expect(program.configuration.tcpConnectTimeout == 500 && program.configuration.tcpMaxMessageTime == 5)
        #expect(program.warnings.count == 1 && program.warnings[0].contains("'tcp_port'"))
    }

    @Test func anUnknownGlobalSuggestsOnlyACloseName() {
        #expect(Self.error("advertized_address = 1.2.3.4\nroute { exit; }\n").hasPrefix(
            "test.cfg:1:1: error: unknown global parameter 'advertized_address' (did you mean 'advertised_address'?)"))
        #expect(Self.error("frobnicate = 1\nroute { exit; }\n").hasPrefix(
            "test.cfg:1:1: error: unknown global parameter 'frobnicate'\n"))
    }

    @Test func aNameThatDoesNotResolveFailsAtItsLine() {
        #expect(Self.error("listen = udp:no-such-host.invalid:5060\nroute { exit; }\n").hasPrefix(
            "test.cfg:1:10: error: 'no-such-host.invalid' in 'udp:no-such-host.invalid:5060': not an address"))
    }

    @Test func aBracedGlobalValueMaySpanLines() throws {
        let program = try #require(Self.check("""
            dst_blacklist = gw_block:{
                ( udp , 10.0.0.0/8 , 5060 , "" )
            }
            route { exit; }

            """))
        #expect(program.warnings.first?.contains("'dst_blacklist' is accepted but has no effect") == true)
    }

    // MARK: - Modules and modparams

    @Test func managementModulesAndTheirParametersAreAcceptedWithWarnings() throws {
        let program = try #require(Self.check("""
            loadmodule "mi_fifo.so"
            modparam("mi_fifo", "fifo_name", "/tmp/opensips_fifo")
            modparam("mi_fifo", "fifo_mode", 0666)
            loadmodule "httpd.so"
            loadmodule "mi_http.so"
            loadmodule "proto_udp.so"
            modparam("proto_udp", "udp_port", 5060)
            route { exit; }

            """))
        #expect(program.warnings.count == 6)
        #expect(program.warnings[0].contains("module 'mi_fifo' is accepted but has no effect: ringsip has no management interface"))
        #expect(program.warnings.contains { $0.contains("parameter 'fifo_mode' of module 'mi_fifo' is accepted but has no effect") })
        #expect(program.warnings.contains { $0.contains("parameter 'udp_port' of module 'proto_udp' is accepted") })
    }

    @Test func tmKnobsOfEveryVersionAreAccepted() throws {
        let program = try #require(Self.check("""
            loadmodule "tm.so"
            modparam("tm", "fr_timer", 7)
            modparam("tm", "fr_inv_timer", 40)
            modparam("tm", "restart_fr_on_each_reply", no)
            modparam("tm", "auto_100trying", 0)
            modparam("tm", "onreply_avp_mode", 1)
            modparam("tm", "pass_provisional_replies", 1)
            route { exit; }

            """))
        let c = program.configuration
        #expect(c.optionalInteger("tm", "fr_timer") == 7)
        #expect(c.optionalInteger("tm", "restart_fr_on_each_reply") == 0)
        #expect(program.warnings.count == 2)
        #expect(program.warnings[0].contains("parameter 'onreply_avp_mode' of module 'tm' is accepted but has no effect"))
    }

    @Test func oneModparamMaySetSeveralModules() throws {
        let program = try #require(Self.check("""
            loadmodule "rr.so"
            modparam("rr|usrloc", "append_fromtag", 1)
            route { exit; }

            """))
        #expect(program.configuration.optionalInteger("rr", "append_fromtag") == 1)
    }

    @Test func aMissingModuleSaysWhatToDoInstead() {
        #expect(Self.error("loadmodule \"rtpproxy.so\"\nroute { exit; }\n").hasPrefix(
            "test.cfg:1:1: error: module 'rtpproxy' is not provided by ringsip: ringsip does not drive media relays yet"))
        // No distant guess: 'xcap' is not 'exec'.
        let xcap = Self.error("loadmodule \"xcap.so\"\nroute { exit; }\n")
        #expect(xcap.hasPrefix("test.cfg:1:1: error: module 'xcap' is not provided by ringsip; it provides: "))
        #expect(!xcap.contains("did you mean"))
    }

    @Test func suggestionsAreTheSameOnEveryRunAndOnlyClose() {
        let candidates = ["T1_timer", "T2_timer", "fr_timeout", "fr_inv_timeout", "wt_timer"]
        #expect(ScriptCompiler.suggestion(for: "fr_timeot", among: candidates) == "fr_timeout")
        #expect(ScriptCompiler.suggestion(for: "fr_timeot", among: candidates.reversed()) == "fr_timeout")
        #expect(ScriptCompiler.suggestion(for: "T3_timer", among: candidates) == "T1_timer", "ties go to the first by name")
        #expect(ScriptCompiler.suggestion(for: "fr_timer", among: ["T1_timer"]) == nil)
        #expect(ScriptCompiler.suggestion(for: "relya", among: ["relay", "reply"]) == "relay", "a swap is one slip")
        #expect(ScriptCompiler.suggestion(for: "uri", among: ["rr", "sl", "tm"]) == nil)
        #expect(ScriptCompiler.suggestion(for: "uac", among: ["uri"]) == nil, "two slips in a short name")
        #expect(ScriptCompiler.suggestion(for: "rpl", among: ["reply"]) == "reply", "letters left out")
    }

    @Test func aModparamWithoutItsParenthesisIsReportedOnItsLine() {
        #expect(Self.error("loadmodule \"tm.so\"\nmodparam(\"tm\", \"fr_timeout\", 5\nroute { exit; }\n").hasPrefix(
            "test.cfg:2:31: error: expected ')' to close modparam"))
    }

    // MARK: - Language forms

    @Test func arithmeticBitwiseAndWordOperatorsParse() throws {
        _ = try #require(Self.check("""
            route {
                $var(a) = (7 * 6 - 2) / 4 % 7;
                $var(b) = $var(a) & 3 | 8 ^ 1;
                $var(c) = ~$var(b) << 2 >> 1;
                if ($var(a) == 3 and $var(b) & 1 or $var(c) > 0) { exit; }
            }

            """))
    }

    @Test func divisionByAConstantZeroIsRefused() {
        #expect(Self.error("route {\n    $var(a) = 5 / 0;\n}\n").hasPrefix("test.cfg:2:19: error: division by zero"))
    }

    @Test func unquotedAddressesAndLegacyKeywordsParse() throws {
        _ = try #require(Self.check("""
            route {
                if ($si == 10.0.0.1 || src_ip == 192.168.1.10) { exit; }
                if ($(si{ip.matches,10.0.0.0/8}) == 1) { exit; }
                if (msg:len >= 2048) { exit; }
            }

            """))
    }

    @Test func routeParametersAndVariableIndexes() throws {
        _ = try #require(Self.check("""
            route {
                route(check, "a", $var(x) + 1);
                $var(i) = 0;
                xlog("$(avp(list)[$var(i)]) of $(avp(list)[*])");
            }
            route[check] {
                xlog("$param(1) $param(2)");
            }

            """))
        #expect(Self.error("route {\n    xlog(\"$param(17)\");\n}\n").hasPrefix(
            "test.cfg:2:11: error: $param takes a position from 1 to 16"))
    }

    @Test func localAndEventRoutesAreCheckedAndSaidNeverToRun() throws {
        let program = try #require(Self.check("""
            route { exit; }
            local_route { xlog("local $rm"); }
            event_route[E_UL_CONTACT_INSERT, async] { xlog("event"); }

            """))
        #expect(program.warnings.count == 2)
        #expect(program.warnings[0].contains("local_route is checked but never runs"))
        #expect(program.warnings[1].contains("event_route[E_UL_CONTACT_INSERT] is checked but never runs"))
    }

    @Test func aScriptWithoutAMainRouteIsAcceptedWithAWarning() throws {
        let program = try #require(Self.check("timer_route[tick, 60] { xlog(\"tick\"); }\n"))
        #expect(program.warnings == ["test.cfg: warning: the script has no main route: every request is dropped "
            + "(counted in 'dropped'); add route { … } to handle them"])
    }

    @Test func anAsyncResumeRouteMayBeItsOwnRoute() throws {
        _ = try #require(Self.check("""
            loadmodule "cfgutils.so"
            loadmodule "tm.so"
            route {
                route(again);
            }
            route[again] {
                if ($var(n) < 3) {
                    $var(n) = $var(n) + 1;
                    async(sleep(1), again);
                }
            }

            """))
    }

    @Test func dottedPseudoVariablesAreNamedWhenUnknown() {
        #expect(Self.error("route {\n    xlog(\"$err.clas\");\n}\n").hasPrefix(
            "test.cfg:2:11: error: unknown pseudo-variable '$err.clas' (did you mean '$err.class'?)"))
    }

    @Test func emptyArgumentsAreErrorsNotCrashes() {
        #expect(Self.error("route {\n    xlog(\"L_INFO\", );\n}\n").hasPrefix(
            "test.cfg:2:5: error: xlog needs the text to log as its last argument"))
        #expect(Self.error("route {\n    xlog(, \"x\");\n}\n").hasPrefix("test.cfg:2:5: error: argument 1 of 'xlog' is required"))
        #expect(Self.error("route {\n    log(\"L_ERR\", );\n}\n").hasPrefix("test.cfg:2:5: error: log needs the text"))
        #expect(Self.error("route {\n    route(x, );\n}\nroute[x] { exit; }\n").hasPrefix(
            "test.cfg:2:5: error: parameter 1 of route(x, …) is empty"))
    }

    @Test func xlogLevelsInEverySpelling() throws {
        _ = try #require(Self.check("""
            route {
                xlog("L_ERROR", "e");
                xlog("L_WARNING", "w");
                xlog("3", "i");
                $var(level) = "L_DBG";
                xlog("$var(level)", "d");
            }

            """))
    }

    @Test func newFunctionsAreKnown() throws {
        _ = try #require(Self.check("""
            loadmodule "sl.so"
            loadmodule "sipmsgops.so"
            route {
                setbflag(1);
                if (isbflagset(1) && isflagset(2)) { resetbflag(1); }
                seturi("sip:a@10.0.0.1");
                rewritehostport("10.0.0.2:5080");
                rewriteuser("bob");
                strip(2);
                prefix("00");
                strip_tail(1);
                log(1, "legacy log\\n");
                if (has_body("application/sdp")) { remove_hf("X-.*", "r"); }
                remove_hf("P-*", "g");
                sl_reply_error();
            }

            """))
    }
}
