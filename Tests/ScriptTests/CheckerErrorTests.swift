import Testing

@testable import Script

/// Golden check errors: the exact text a user sees for each kind of mistake the checker catches after
/// parsing, with file:line:col, the message, the source line and the caret.
@Suite struct CheckerErrorTests {
    static func expectError(_ script: String, _ expected: String, library: ScriptLibrary = .core,
                            sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        guard let error = CheckerFixture.error(script, library: library, sourceLocation: sourceLocation) else { return }
        #expect(error.description == expected, sourceLocation: sourceLocation)
    }

    // MARK: - Functions

    @Test func unknownFunctionSuggestsTheClosestName() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_replyy(404, \"Not Here\");\n}\n", """
            test.cfg:3:5: error: unknown function 'sl_send_replyy' (did you mean 'sl_send_reply'?)
                sl_send_replyy(404, "Not Here");
                ^
            """)
    }

    @Test func unknownFunctionInAConditionWithoutACloseName() {
        Self.expectError("route {\n    if (lookup_user()) { exit; }\n}\n", """
            test.cfg:2:9: error: unknown function 'lookup_user': ringsip does not provide it
                if (lookup_user()) { exit; }
                    ^
            """)
    }

    @Test func wrongArgumentCount() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_reply(404);\n}\n", """
            test.cfg:3:5: error: function 'sl_send_reply' takes 2 arguments, not 1
                sl_send_reply(404);
                ^
            """)
    }

    @Test func wrongArgumentCountForARangeOfArguments() {
        Self.expectError("route {\n    xlog(\"L_INFO\", \"a\", \"b\");\n}\n", """
            test.cfg:2:5: error: function 'xlog' takes 1 to 2 arguments, not 3
                xlog("L_INFO", "a", "b");
                ^
            """)
    }

    @Test func omittedRequiredArgument() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_reply(, \"x\");\n}\n", """
            test.cfg:3:5: error: argument 1 of 'sl_send_reply' is required
                sl_send_reply(, "x");
                ^
            """)
    }

    @Test func forwardOverATransportRingsipDoesNotHave() {
        Self.expectError("route {\n    forward(\"tls:127.0.0.1:5061\");\n}\n", """
            test.cfg:2:13: error: forward(): 'tls:127.0.0.1:5061' is not a destination ringsip can use; \
            expected udp:IP:PORT, tcp:IP:PORT, IP:PORT or sip:IP:PORT with a numeric IP
                forward("tls:127.0.0.1:5061");
                        ^
            """)
    }

    @Test func functionFromAModuleNotLoaded() {
        Self.expectError("route {\n    record_route();\n}\n", """
            test.cfg:2:5: error: function 'record_route' comes from module 'rr', which is not loaded \
            (add: loadmodule "rr.so")
                record_route();
                ^
            """)
    }

    @Test func functionNotAllowedInThisRouteKind() {
        Self.expectError("""
            loadmodule "sl.so"
            route {
                exit;
            }
            onreply_route {
                sl_send_reply(200, "OK");
            }

            """, """
            test.cfg:6:5: error: function 'sl_send_reply' cannot be used in onreply_route
                sl_send_reply(200, "OK");
                ^
            """)
    }

    @Test func forwardToAHostName() {
        Self.expectError("route {\n    forward(\"udp:proxy.example.com:5060\");\n}\n", """
            test.cfg:2:13: error: forward(): 'udp:proxy.example.com:5060' is not a destination ringsip can use; \
            expected udp:IP:PORT, tcp:IP:PORT, IP:PORT or sip:IP:PORT with a numeric IP
                forward("udp:proxy.example.com:5060");
                        ^
            """)
    }

    @Test func replyCodeBelowRange() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_reply(99, \"Low\");\n}\n", """
            test.cfg:3:19: error: reply code 99 is not between 100 and 699
                sl_send_reply(99, "Low");
                              ^
            """)
    }

    @Test func replyCodeAboveRange() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_reply(700, \"High\");\n}\n", """
            test.cfg:3:19: error: reply code 700 is not between 100 and 699
                sl_send_reply(700, "High");
                              ^
            """)
    }

    @Test func replyCodeNotANumber() {
        Self.expectError("loadmodule \"sl.so\"\nroute {\n    sl_send_reply(\"abc\", \"x\");\n}\n", """
            test.cfg:3:19: error: reply code must be an integer, not "abc"
                sl_send_reply("abc", "x");
                              ^
            """)
    }

    @Test func xlogUnknownLevel() {
        Self.expectError("route {\n    xlog(\"L_INFOO\", \"hello\\n\");\n}\n", """
            test.cfg:2:10: error: xlog level must be one of L_ALERT, L_CRIT, L_CRITICAL, L_DBG, L_DEBUG, L_ERR, \
            L_ERROR, L_INFO, L_NOTICE, L_WARN, L_WARNING or a number from -3 to 4
                xlog("L_INFOO", "hello\\n");
                     ^
            """)
    }

    @Test func flagOutOfRange() {
        Self.expectError("route {\n    setflag(64);\n}\n", """
            test.cfg:2:13: error: flag 64 is out of range; flags are 0 to 63
                setflag(64);
                        ^
            """)
    }

    @Test func flagOutOfRangeGivenAsAStringPointsAtTheArgument() {
        Self.expectError("route {\n    isflag(\"70\");\n}\n", """
            test.cfg:2:12: error: flag 70 is out of range; flags are 0 to 63
                isflag("70");
                       ^
            """)
    }

    @Test func emptyFlagName() {
        Self.expectError("route {\n    setflag(\"\");\n}\n", """
            test.cfg:2:13: error: expected a flag number or name
                setflag("");
                        ^
            """)
    }

    @Test func maxForwardsLimitOutOfRange() {
        Self.expectError("loadmodule \"maxfwd.so\"\nroute {\n    mf_process_maxfwd_header(300);\n}\n", """
            test.cfg:3:5: error: mf_process_maxfwd_header takes a number from 1 to 255
                mf_process_maxfwd_header(300);
                ^
            """)
    }

    @Test func isMethodNeedsAConstant() {
        Self.expectError("loadmodule \"sipmsgops.so\"\nroute {\n    if (is_method($rm)) { exit; }\n}\n", """
            test.cfg:3:9: error: is_method takes a constant list of methods, e.g. "INVITE,BYE"
                if (is_method($rm)) { exit; }
                    ^
            """)
    }

    @Test func removingAHeaderTheProxyNeeds() {
        Self.expectError("loadmodule \"textops.so\"\nroute {\n    remove_hf(\"Via\");\n}\n", """
            test.cfg:3:5: error: remove_hf cannot remove Via: the proxy needs it
                remove_hf("Via");
                ^
            """)
    }

    // MARK: - Routes

    @Test func unknownRouteSuggestsTheClosestName() {
        Self.expectError("route {\n    route(relya);\n}\nroute[relay] {\n    exit;\n}\n", """
            test.cfg:2:11: error: unknown route 'relya' (did you mean 'relay'?)
                route(relya);
                      ^
            """)
    }

    @Test func unknownFailureRouteSuggestsTheClosestName() {
        Self.expectError("""
            loadmodule "tm.so"
            route {
                t_on_failure("missed_cal");
            }
            failure_route[missed_call] {
                exit;
            }

            """, """
            test.cfg:3:18: error: unknown failure_route 'missed_cal' (did you mean 'missed_call'?)
                t_on_failure("missed_cal");
                             ^
            """, library: CheckerFixture.libraryWithFailureRoutes)
    }

    @Test func aRequestRouteIsNotAFailureRoute() {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    t_on_failure(\"relay\");\n}\nroute[relay] {\n    exit;\n}\n", """
            test.cfg:3:18: error: unknown failure_route 'relay'
                t_on_failure("relay");
                             ^
            """, library: CheckerFixture.libraryWithFailureRoutes)
    }

    @Test func routeDefinedTwice() {
        Self.expectError("route {\n    exit;\n}\nroute[relay] {\n    exit;\n}\nroute[relay] {\n    drop;\n}\n", """
            test.cfg:7:1: error: route[relay] is defined twice (first at test.cfg:4:1)
            route[relay] {
            ^
            """)
    }

    @Test func mainRouteDefinedTwice() {
        Self.expectError("route {\n    exit;\n}\nroute {\n    exit;\n}\n", """
            test.cfg:4:1: error: route is defined twice (first at test.cfg:1:1)
            route {
            ^
            """)
    }

    @Test func routeRecursionThroughAnotherRoute() {
        Self.expectError("route {\n    route(a);\n}\nroute[a] {\n    route(b);\n}\nroute[b] {\n    route(a);\n}\n", """
            test.cfg:4:1: error: route recursion has no bound: route[a] → route[b] → route[a]
            route[a] {
            ^
            """)
    }

    @Test func routeCallingItself() {
        Self.expectError("route {\n    route(again);\n}\nroute[again] {\n    if ($var(n) < 3) { route(again); }\n}\n", """
            test.cfg:4:1: error: route recursion has no bound: route[again] → route[again]
            route[again] {
            ^
            """)
    }

    @Test func routeCallsNestedDeeperThanTheLimit() {
        var script = "route {\n    route(r1);\n}\n"
        for i in 1...65 { script += "route[r\(i)] {\n    route(r\(i + 1));\n}\n" }
        script += "route[r66] {\n    exit;\n}\n"
        Self.expectError(script, """
            test.cfg:7:1: error: route calls nest 65 deep from here; the limit is 64
            route[r2] {
            ^
            """)
    }

    @Test func routeCallWithAnEmptyParameter() {
        Self.expectError("route {\n    route(relay, 1, );\n}\nroute[relay] {\n    exit;\n}\n", """
            test.cfg:2:5: error: parameter 2 of route(relay, …) is empty
                route(relay, 1, );
                ^
            """)
    }

    @Test func missingMainRouteIsAWarning() throws {
        let program = try ScriptProgram.parse("route[relay] {\n    exit;\n}\n", file: "test.cfg")
        #expect(program.warnings == ["test.cfg: warning: the script has no main route: every request is dropped "
            + "(counted in 'dropped'); add route { … } to handle them"])
    }

    @Test func aScriptWithoutRoutesIsAWarningNamingTheFile() throws {
        let program = try ScriptProgram.parse("listen = udp:127.0.0.1:5060\n", file: "test.cfg")
        #expect(program.warnings.count == 1)
        #expect(program.warnings.first?.hasPrefix("test.cfg: warning: the script has no main route") == true)
    }

    @Test func returnValueNotAnInteger() {
        Self.expectError("route {\n    return(\"x\");\n}\n", """
            test.cfg:2:12: error: return value must be an integer, not "x"
                return("x");
                       ^
            """)
    }

    // MARK: - Expressions

    @Test func badRegularExpression() {
        Self.expectError("route {\n    if ($ru =~ \"sip:(abc\") { exit; }\n}\n", """
            test.cfg:2:16: error: bad regular expression "sip:(abc": Unmatched ( or \\(
                if ($ru =~ "sip:(abc") { exit; }
                           ^
            """)
    }

    @Test func regularExpressionNotALiteral() {
        Self.expectError("route {\n    if ($ru !~ $var(pattern)) { exit; }\n}\n", """
            test.cfg:2:16: error: the right side of '!~' must be a literal regular expression
                if ($ru !~ $var(pattern)) { exit; }
                           ^
            """)
    }

    @Test func myselfOutsideAComparison() {
        Self.expectError("route {\n    $var(me) = myself;\n}\n", """
            test.cfg:2:16: error: 'myself' can only be compared with == or != (e.g. uri == myself)
                $var(me) = myself;
                           ^
            """)
    }

    @Test func bareWordThatIsNotAValue() {
        Self.expectError("route {\n    if (caller == \"x\") { exit; }\n}\n", """
            test.cfg:2:9: error: unknown name 'caller'; expected a value, a $variable or a function call
                if (caller == "x") { exit; }
                    ^
            """)
    }

    @Test func subtractingText() {
        Self.expectError("route {\n    $var(x) = 1 - \"a\";\n}\n", """
            test.cfg:2:19: error: right side of '-' must be an integer, not "a"
                $var(x) = 1 - "a";
                              ^
            """)
    }

    // MARK: - Variables and transformations

    @Test func assignmentToAReadOnlyVariable() {
        Self.expectError("route {\n    $fu = \"sip:x@y\";\n}\n", """
            test.cfg:2:5: error: cannot assign to $fu: it is read-only
                $fu = "sip:x@y";
                ^
            """)
    }

    @Test func assignmentToAHeader() {
        Self.expectError("route {\n    $hdr(X-Tag) = 1;\n}\n", """
            test.cfg:2:5: error: cannot assign to $hdr: it is read-only
                $hdr(X-Tag) = 1;
                ^
            """)
    }

    @Test func assignmentToATransformedVariable() {
        Self.expectError("route {\n    $ru{s.len} = 1;\n}\n", """
            test.cfg:2:5: error: cannot assign to a transformed variable
                $ru{s.len} = 1;
                ^
            """)
    }

    @Test func requestURIAssignmentInOnReplyRoute() {
        Self.expectError("route {\n    exit;\n}\nonreply_route {\n    $ru = \"sip:x@127.0.0.1\";\n}\n", """
            test.cfg:5:5: error: $ru can only be set in a route that handles a request
                $ru = "sip:x@127.0.0.1";
                ^
            """)
    }

    @Test func unknownPseudoVariableSuggestsTheClosestName() {
        Self.expectError("route {\n    if ($cii == \"x\") { exit; }\n}\n", """
            test.cfg:2:9: error: unknown pseudo-variable '$cii' (did you mean '$ci'?)
                if ($cii == "x") { exit; }
                    ^
            """)
    }

    @Test func unknownPseudoVariableInsideAString() {
        Self.expectError("route {\n    xlog(\"L_INFO\", \"from $gateway(x)\\n\");\n}\n", """
            test.cfg:2:26: error: unknown pseudo-variable '$gateway'
                xlog("L_INFO", "from $gateway(x)\\n");
                                     ^
            """)
    }

    @Test func assignmentToAnUnknownPseudoVariable() {
        Self.expectError("route {\n    $x = 1;\n}\n", """
            test.cfg:2:5: error: unknown pseudo-variable '$x'
                $x = 1;
                ^
            """)
    }

    @Test func varWithoutAName() {
        Self.expectError("route {\n    $var = 1;\n}\n", """
            test.cfg:2:5: error: $var needs a name: $var(name)
                $var = 1;
                ^
            """)
    }

    @Test func readingVarWithAnEmptyName() {
        Self.expectError("route {\n    $avp(a) = $var();\n}\n", """
            test.cfg:2:15: error: $var needs a name: $var(name)
                $avp(a) = $var();
                          ^
            """)
    }

    @Test func hdrWithoutAName() {
        Self.expectError("route {\n    $var(x) = $hdr();\n}\n", """
            test.cfg:2:15: error: $hdr needs a header name: $hdr(name)
                $var(x) = $hdr();
                          ^
            """)
    }

    @Test func argumentToAFieldThatTakesNone() {
        Self.expectError("route {\n    $var(x) = $ci(1);\n}\n", """
            test.cfg:2:15: error: $ci takes no argument
                $var(x) = $ci(1);
                          ^
            """)
    }

    @Test func messageFieldInARouteWithoutAMessage() {
        Self.expectError("startup_route {\n    xlog(\"$ru\");\n}\nroute {\n    exit;\n}\n", """
            test.cfg:2:11: error: $ru refers to the message, and startup_route has none
                xlog("$ru");
                      ^
            """)
    }

    @Test func unknownTransformationSuggestsTheClosestName() {
        Self.expectError("route {\n    $var(n) = $ru{s.lenn};\n}\n", """
            test.cfg:2:18: error: unknown transformation '{s.lenn}' (did you mean '{s.len}'?)
                $var(n) = $ru{s.lenn};
                             ^
            """)
    }

    @Test func transformationWithArgumentsItDoesNotTake() {
        Self.expectError("route {\n    $var(x) = $ru{s.len,3};\n}\n", """
            test.cfg:2:18: error: transformation {s.len} takes no arguments
                $var(x) = $ru{s.len,3};
                             ^
            """)
    }

    @Test func paramValueWithoutAName() {
        Self.expectError("route {\n    $var(x) = $var(y){param.value};\n}\n", """
            test.cfg:2:22: error: transformation {param.value,name} needs the parameter name
                $var(x) = $var(y){param.value};
                                 ^
            """)
    }

    // MARK: - Global section

    @Test func tRelayFlagsOutsideWhatRingsipKnowsAreRefused() {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    t_relay(\"udp:127.0.0.1:5070\", 0x10);\n}\n", """
            test.cfg:3:35: error: t_relay flags 0x10: ringsip knows 0x01 (no 100 Trying) and 0x02 (no automatic negative reply)
                t_relay("udp:127.0.0.1:5070", 0x10);
                                              ^
            """)
    }

    @Test func asyncOfAnOperationThatCannotRunAsynchronously() {
        Self.expectError("loadmodule \"tm.so\"\nloadmodule \"cfgutils.so\"\nroute {\n    async(t_relay(), next);\n}\nroute[next] {\n    exit;\n}\n", """
            test.cfg:4:11: error: 't_relay' cannot run asynchronously; ringsip's async operations are: sleep, usleep
                async(t_relay(), next);
                      ^
            """)
    }

    @Test func asyncWithoutTransactions() {
        Self.expectError("loadmodule \"cfgutils.so\"\nroute {\n    async(usleep(10), next);\n}\nroute[next] {\n    exit;\n}\n", """
            test.cfg:3:5: error: async() suspends a transaction: load the tm module (loadmodule "tm.so")
                async(usleep(10), next);
                ^
            """)
    }

    @Test func asyncToAnUnknownResumeRoute() {
        Self.expectError("loadmodule \"tm.so\"\nloadmodule \"cfgutils.so\"\nroute {\n    async(usleep(10), nxt);\n}\nroute[next] {\n    exit;\n}\n", """
            test.cfg:4:23: error: unknown route 'nxt' (did you mean 'next'?)
                async(usleep(10), nxt);
                                  ^
            """)
    }

    @Test func asyncOutsideTheRoutesOfATransaction() {
        Self.expectError("loadmodule \"tm.so\"\nloadmodule \"cfgutils.so\"\nroute {\n    exit;\n}\nstartup_route {\n    async(usleep(10), next);\n}\nroute[next] {\n    exit;\n}\n", """
            test.cfg:7:5: error: async() suspends a transaction: it belongs in a request, branch, failure or onreply route
                async(usleep(10), next);
                ^
            """)
    }

    @Test func moduleFarFromAnyKnownListsWhatRingsipProvides() {
        Self.expectError("loadmodule \"xcap.so\"\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: module 'xcap' is not provided by ringsip; it provides: cfgutils, maxfwd, proto_tcp, proto_udp, rr, signaling, sipmsgops, sl, textops, tm, uri, xlog
            loadmodule "xcap.so"
            ^
            """)
    }

    @Test func unknownModule() {
        Self.expectError("loadmodule \"tmx.so\"\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: module 'tmx' is not provided by ringsip (did you mean 'tm.so'?)
            loadmodule "tmx.so"
            ^
            """)
    }

    @Test func unknownModuleByPathSuggestsTheClosestName() {
        Self.expectError("loadmodule \"/usr/lib/opensips/modules/sll.so\"\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: module 'sll' is not provided by ringsip (did you mean 'sl.so'?)
            loadmodule "/usr/lib/opensips/modules/sll.so"
            ^
            """)
    }

    @Test func modparamForAnUnknownParameter() {
        Self.expectError("loadmodule \"rr.so\"\nmodparam(\"rr\", \"append_fromtags\", 1)\nroute {\n    exit;\n}\n", """
            test.cfg:2:1: error: module 'rr' has no parameter 'append_fromtags' (did you mean 'append_fromtag'?)
            modparam("rr", "append_fromtags", 1)
            ^
            """)
    }

    @Test func aTimerThatWouldOverflowIsRefusedWithItsRange() {
        Self.expectError("loadmodule \"tm.so\"\nmodparam(\"tm\", \"fr_timeout\", 9223372036854775807)\nroute {\n    exit;\n}\n", """
            test.cfg:2:30: error: parameter 'fr_timeout' of module 'tm' must be from 1 to 86400 seconds, not 9223372036854775807
            modparam("tm", "fr_timeout", 9223372036854775807)
                                         ^
            """)
    }

    @Test func aTableOfNoTransactionsAndAT1OfZeroAreRefused() {
        Self.expectError("loadmodule \"tm.so\"\nmodparam(\"tm\", \"max_transactions\", 0)\nroute {\n    exit;\n}\n", """
            test.cfg:2:36: error: parameter 'max_transactions' of module 'tm' must be from 1 to 1000000, not 0
            modparam("tm", "max_transactions", 0)
                                               ^
            """)
        Self.expectError("loadmodule \"tm.so\"\nmodparam(\"tm\", \"T1_timer\", 0)\nroute {\n    exit;\n}\n", """
            test.cfg:2:28: error: parameter 'T1_timer' of module 'tm' must be from 1 to 600000 ms, not 0
            modparam("tm", "T1_timer", 0)
                                       ^
            """)
    }

    @Test func aNegativeCountIsRefusedByTheDefaultRange() {
        Self.expectError("loadmodule \"maxfwd.so\"\nmodparam(\"maxfwd\", \"max_limit\", -1)\nroute {\n    exit;\n}\n", """
            test.cfg:2:33: error: parameter 'max_limit' of module 'maxfwd' must be from 0 to 2147483647, not -1
            modparam("maxfwd", "max_limit", -1)
                                            ^
            """)
    }

    @Test func modparamForAModuleWithoutParameters() {
        Self.expectError("loadmodule \"sipmsgops.so\"\nmodparam(\"sipmsgops\", \"x\", 1)\nroute {\n    exit;\n}\n", """
            test.cfg:2:1: error: module 'sipmsgops' has no parameter 'x'; it has none
            modparam("sipmsgops", "x", 1)
            ^
            """)
    }

    @Test func modparamOfTheWrongType() {
        Self.expectError("loadmodule \"rr.so\"\nmodparam(\"rr\", \"append_fromtag\", \"yes\")\nroute {\n    exit;\n}\n", """
            test.cfg:2:34: error: parameter 'append_fromtag' of module 'rr' must be an integer
            modparam("rr", "append_fromtag", "yes")
                                             ^
            """)
    }

    @Test func modparamForAModuleNotLoaded() {
        Self.expectError("modparam(\"rr\", \"append_fromtag\", 1)\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: modparam for module 'rr', which is not loaded (add: loadmodule "rr.so")
            modparam("rr", "append_fromtag", 1)
            ^
            """)
    }

    @Test func modparamForAnUnknownModule() {
        Self.expectError("modparam(\"nosuch\", \"x\", 1)\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: modparam for unknown module 'nosuch'
            modparam("nosuch", "x", 1)
            ^
            """)
    }

    @Test func unknownGlobalParameter() {
        Self.expectError("listn = udp:127.0.0.1:5060\nroute {\n    exit;\n}\n", """
            test.cfg:1:1: error: unknown global parameter 'listn' (did you mean 'listen'?)
            listn = udp:127.0.0.1:5060
            ^
            """)
    }

    @Test func listenPortOutOfRange() {
        Self.expectError("listen = udp:127.0.0.1:99999\nroute {\n    exit;\n}\n", """
            test.cfg:1:10: error: bad port '99999' in 'udp:127.0.0.1:99999' (expected 1-65535)
            listen = udp:127.0.0.1:99999
                     ^
            """)
    }

    @Test func listenOnAHostName() {
        // .invalid never resolves (RFC 6761); a name that does is listened on (OpenSIPSCompatibilityTests).
        Self.expectError("listen = udp:ringsip.invalid:5060\nroute {\n    exit;\n}\n", """
            test.cfg:1:10: error: 'ringsip.invalid' in 'udp:ringsip.invalid:5060': not an address, an interface or a \
            name that resolves (Name or service not known)
            listen = udp:ringsip.invalid:5060
                     ^
            """)
    }

    @Test func logLevelOutOfRange() {
        Self.expectError("log_level = 10\nroute {\n    exit;\n}\n", """
            test.cfg:1:13: error: log_level must be an integer from -3 (alert) to 4 (debug)
            log_level = 10
                        ^
            """)
    }

    // MARK: - From the parser (one is enough here: ParserErrorTests has the rest)

    @Test func unterminatedString() {
        Self.expectError("route {\n    xlog(\"L_INFO\", \"oops);\n}\n", """
            test.cfg:2:20: error: unterminated string (it starts here)
                xlog("L_INFO", "oops);
                               ^
            """)
    }
}

/// What a valid script yields: no error, and warnings for what ringsip accepts but ignores.
@Suite struct CheckerAcceptanceTests {
    @Test func defaultConfigurationIsValid() throws {
        let program = try ScriptProgram.load(path: "etc/ringsip.cfg")
        #expect(program.warnings.isEmpty)
        #expect(program.configuration.loadedModules == ["sl", "rr", "maxfwd", "sipmsgops"])
        #expect(program.configuration.listen.map(\.description) == ["127.0.0.1:5060"])
    }

    @Test func ignoredGlobalsAreWarnedAboutWithTheirLocation() throws {
        let program = try ScriptProgram.parse("children = 4\nmpath = \"/usr/lib/opensips\"\nroute {\n    exit;\n}\n",
                                              file: "test.cfg")
        #expect(program.warnings == [
            "test.cfg:1:1: warning: 'children' is accepted but has no effect in ringsip: ringsip runs one shard per CPU "
                + "(--shards, --cpus) instead of worker processes",
            "test.cfg:2:1: warning: 'mpath' is accepted but has no effect in ringsip: modules are built in",
        ])
    }

    @Test func everyFeatureTheRuntimeTestsUseChecks() throws {
        let program = try ScriptProgram.parse("""
            log_level = 4
            loadmodule "sl.so"
            loadmodule "signaling.so"
            loadmodule "rr.so"
            loadmodule "maxfwd.so"
            loadmodule "textops.so"
            loadmodule "proto_udp.so"
            modparam("maxfwd", "max_limit", "70")
            route {
                $var(t) = $time(%Y);
                $var(h) = $(hdr(X)[-1]{s.len});
                $var(p) = $var(x){param.value,b};
                $avp(a) := NULL;
                $(avp(a)[*]) = NULL;
                setflag(RELAYED);
                if (isflag(RELAYED) && !isflag(3)) { resetflag(RELAYED); }
                switch ($rm) {
                case "INVITE":
                    break;
                case -1:
                default:
                    send_reply(404, "x");
                }
                route(r);
            }
            route[r] {
                return(-2);
            }
            onreply_route {
                if ($rs >= 300 || is_method("CANCEL")) { drop; }
            }
            error_route {
                sl_send_reply(500, "Script Error");
            }
            """, file: "test.cfg")
        #expect(program.configuration.logLevel == 4)
        #expect(program.configuration.integer("maxfwd", "max_limit", default: 0) == 70)
        #expect(program.source.routes.count == 4)
    }
}
