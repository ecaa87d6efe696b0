import Testing

import Script

/// Statement forms, expression precedence and route headers.
@Suite struct ParserStatementTests {
    @Test func exitDropBreakAndReturnInEverySpelling() throws {
        let body = "exit; exit(); drop; drop(); return; return(); return(1); return 2; return -1;"
        #expect(try ParserFixture.statements(body)
            == "exit; exit; drop; drop; return; return; return 1; return 2; return -1;")
    }

    @Test func ifWithoutBracesAndElseIfChains() throws {
        let body = try ParserFixture.statements("""
            if (a()) b(); else if (c()) { d(); } else e();
            if (f()) if (g()) h(); else i();
            """)
        #expect(body == """
            if (a()) { b(); } else { if (c()) { d(); } else { e(); } } \
            if (f()) { if (g()) { h(); } else { i(); } }
            """)
    }

    @Test func emptyStatementsAndNestedBlocksAreFlattened() throws {
        #expect(try ParserFixture.statements(";; { a(); { b(); } }; if (x()) { }; c();")
            == "a(); b(); if (x()) {  } c();")
    }

    @Test func switchWithStringIntegerNegativeAndDefaultCases() throws {
        let body = try ParserFixture.statements("""
            switch ($var(x)) {
                case "a":
                case 2:
                    f();
                    break;
                case -1: g();
                default:
                    h();
            }
            """)
        #expect(body == #"switch ($var(x)) { case "a":  case 2: f(); break; case -1: g(); default: h(); }"#)
    }

    @Test func whileLoop() throws {
        #expect(try ParserFixture.statements("while ($var(i) < 10) $var(i) = $var(i) + 1;")
            == "while (($var(i) < 10)) { $var(i) = ($var(i) + 1); }")
    }

    @Test func assignmentOperators() throws {
        #expect(try ParserFixture.statements(#"$var(a) = 1; $avp(b) := "x"; $avp(b) += $var(a); $du = NULL;"#)
            == #"$var(a) = 1; $avp(b) := "x"; $avp(b) += $var(a); $du = NULL;"#)
    }

    @Test func precedenceFromOrDownToUnaryMinus() throws {
        #expect(try ParserFixture.statements("f(a || b && c == d + e - -g);")
            == "f((a || (b && (c == ((d + e) - -g)))));")
        // `!` is below the comparisons, as the grammar of the brief says; in operand position it binds tightly.
        #expect(try ParserFixture.statements("f(!$var(a) == 1, $var(a) == !b(), !a && !b, !!a);")
            == "f(!($var(a) == 1), ($var(a) == !b()), (!a && !b), !!a);")
        #expect(try ParserFixture.statements("f((a || b) && c, -(1), -$var(x));") == "f(((a || b) && c), -1, -$var(x));")
    }

    @Test func allComparisonOperators() throws {
        #expect(try ParserFixture.statements("f(a == 1, a != 1, a < 1, a <= 1, a > 1, a >= 1, a =~ \"r\", a !~ \"r\");")
            == #"f((a == 1), (a != 1), (a < 1), (a <= 1), (a > 1), (a >= 1), (a =~ "r"), (a !~ "r"));"#)
    }

    @Test func callArgumentsMayBeEmptyOmittedOrNested() throws {
        let body = #"f(); g(1, , $var(x)); h(,); i(a, ); async(rest_get("u", $var(b)), resume);"#
        #expect(try ParserFixture.statements(body)
            == "f(); g(1, _, $var(x)); h(_, _); i(a, _); async(rest_get(\"u\", $var(b)), resume);")
    }

    @Test func identifiersAndNullInExpressions() throws {
        #expect(try ParserFixture.statements("if (uri == myself && src_ip != NULL) setflag(NAT);")
            == "if (((uri == myself) && (src_ip != NULL))) { setflag(NAT); }")
    }

    @Test func keywordsAreOnlyKeywordsInTheirPlace() throws {
        // `route` is a block at top level and a function in a body.
        #expect(try ParserFixture.statements("route(relay); route(\"quoted\"); route(1);")
            == #"route(relay); route("quoted"); route(1);"#)
    }

    @Test func routeHeaders() throws {
        let script = try ParserFixture.parse("""
            route { }
            route[main] { }
            route["quoted name"] { }
            route[2] { }
            branch_route[b] { }
            failure_route[1] { }
            onreply_route { }
            onreply_route[r] { }
            startup_route { }
            timer_route[t, 60] { }
            error_route { }
            """)
        #expect(script.routes.map { ParserFixture.dump($0) } == [
            "route {  }", "route[main] {  }", "route[quoted name] {  }", "route[2] {  }", "branch_route[b] {  }",
            "failure_route[1] {  }", "onreply_route {  }", "onreply_route[r] {  }", "startup_route {  }",
            "timer_route[t, 60] {  }", "error_route {  }",
        ])
    }

    @Test func statementLocations() throws {
        let script = try ParserFixture.parse("route {\n  if (a()) {\n    $var(x) = 1 + 2;\n  }\n  exit;\n}\n")
        let body = script.routes[0].body
        guard case .ifElse(let condition, let then, _, let ifLocation) = body[0],
            case .assignment(_, _, let value, let assignmentLocation) = then[0],
            case .exit(let exitLocation) = body[1]
        else {
            Issue.record("unexpected shape")
            return
        }
        #expect(ifLocation.description == "test.cfg:2:3")
        #expect(condition.location.description == "test.cfg:2:7")
        #expect(assignmentLocation.description == "test.cfg:3:5")
        #expect(value.location.description == "test.cfg:3:17")
        #expect(exitLocation.description == "test.cfg:5:3")
    }

    @Test func topLevelSemicolonsAreTolerated() throws {
        let script = try ParserFixture.parse("loadmodule \"tm.so\";\nmodparam(\"tm\", \"x\", \"y\");\n;route { }")
        #expect(script.modules.count == 1 && script.parameters.count == 1 && script.routes.count == 1)
    }

    @Test func oneLineForwardScript() throws {
        #expect(try ParserFixture.body("route { forward(\"udp:10.0.0.2:5060\"); }") == #"forward("udp:10.0.0.2:5060");"#)
    }
}
