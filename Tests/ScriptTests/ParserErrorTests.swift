import Testing

import Script

/// Golden syntax errors: the exact text a user sees, location, message, line and caret.
@Suite struct ParserErrorTests {
    static func expectError(
        _ script: String, _ expected: String, sourceLocation: Testing.SourceLocation = #_sourceLocation
    ) {
        guard let error = ParserFixture.error(script, sourceLocation: sourceLocation) else { return }
        #expect(error.description == expected, sourceLocation: sourceLocation)
        #expect(error.sourceLine != nil, sourceLocation: sourceLocation)
    }

    @Test func missingSemicolonAfterACallPointsJustAfterIt() {
        Self.expectError("route {\n    record_route()\n    route(relay);\n}\n", """
            test.cfg:2:19: error: expected ';' after the function call
                record_route()
                              ^
            """)
    }

    @Test func unterminatedStringPointsAtItsStart() {
        Self.expectError("route {\n  xlog(\"L_INFO\", \"oops);\n}\n", """
            test.cfg:2:18: error: unterminated string (it starts here)
              xlog("L_INFO", "oops);
                             ^
            """)
    }

    /// Every way a string can run off its line is reported on that line: CRLF files, a backslash before the line
    /// break, a second string on the line, a top-level value, the end of the file.
    @Test(arguments: [
        ("route {\r\n    xlog(\"hello);\r\n    exit;\r\n}\r\n", 2, 10),
        ("route {\n    xlog(\"hello\\\n    exit;\n}\n", 2, 10),
        ("route {\n    xlog(\"a\" \"b);\n}\n", 2, 14),
        ("loadmodule \"sl.so\nroute {\n    exit;\n}\n", 1, 12),
        ("listen = \"udp:1.2.3.4\nroute {\n    exit;\n}\n", 1, 10),
        ("route {\n    $var(x) = \"abc\n", 2, 15),
    ])
    func unterminatedStringIsReportedOnItsOwnLine(script: String, line: Int, column: Int) {
        guard let error = CheckerFixture.error(script) else { return }
        #expect(error.message == "unterminated string (it starts here)")
        #expect(error.location.line == line && error.location.column == column, "\(error.location)")
    }

    @Test func unterminatedComment() {
        Self.expectError("children = 4\n  /* disabled:\nroute { }\n", """
            test.cfg:2:3: error: unterminated comment (it starts here)
              /* disabled:
              ^
            """)
    }

    @Test func unknownRouteType() {
        Self.expectError("rout[relay] {\n}\n", """
            test.cfg:1:1: error: unknown route type 'rout'; expected route, branch_route, failure_route, \
            onreply_route, startup_route, timer_route, error_route, local_route or event_route
            rout[relay] {
            ^
            """)
    }

    @Test func missingRouteBody() {
        Self.expectError("route[relay]\n    t_relay();\n", """
            test.cfg:2:5: error: expected '{' to open the route body
                t_relay();
                ^
            """)
    }

    @Test func unexpectedEndOfFileNamesTheOpenBlock() {
        Self.expectError("route {\n  if (a()) {\n    b();\n  \n\n", """
            test.cfg:3:9: error: unexpected end of file: expected '}' to close the block opened at 2:12
                b();
                    ^
            """)
    }

    @Test func elseWithoutIf() {
        Self.expectError("route {\n  if (a()) b(); c();\n  else d();\n}\n", """
            test.cfg:3:3: error: 'else' without 'if'
              else d();
              ^
            """)
    }

    @Test func timerRouteWithoutInterval() {
        Self.expectError("timer_route[refresh] {\n}\n", """
            test.cfg:1:20: error: expected a seconds interval: timer_route[name, seconds]
            timer_route[refresh] {
                               ^
            """)
    }

    @Test func integerTooLarge() {
        Self.expectError("route {\n  f(99999999999999999999);\n}\n", """
            test.cfg:2:5: error: integer 99999999999999999999 is too large
              f(99999999999999999999);
                ^
            """)
    }

    @Test func unexpectedCharacter() {
        Self.expectError("route {\n  $var(a) = b @ c;\n}\n", """
            test.cfg:2:15: error: unexpected character '@'
              $var(a) = b @ c;
                          ^
            """)
    }

    @Test func unclosedArgumentList() {
        Self.expectError("route {\n  sl_send_reply(404 \"Not Found\");\n}\n", """
            test.cfg:2:21: error: expected ')' to close the argument list
              sl_send_reply(404 "Not Found");
                                ^
            """)
    }

    @Test func missingExpression() {
        Self.expectError("route {\n  if ($var(a) == ) exit;\n}\n", """
            test.cfg:2:18: error: expected an expression
              if ($var(a) == ) exit;
                             ^
            """)
    }

    @Test func missingGlobalValue() {
        Self.expectError("log_level =   # no value\nchildren = 4\n", """
            test.cfg:1:12: error: expected a value after '='
            log_level =   # no value
                       ^
            """)
    }

    @Test func bareIdentifierIsNotAStatement() {
        Self.expectError("route {\n  record_route;\n}\n", """
            test.cfg:2:3: error: 'record_route' is not a statement; a function call needs parentheses: record_route()
              record_route;
              ^
            """)
    }

    @Test func assignmentNeedsAnAssignmentOperator() {
        Self.expectError("route {\n  $var(x) == 1;\n}\n", """
            test.cfg:2:10: error: expected '=', ':=' or '+=' after '$var(x)'
              $var(x) == 1;
                     ^
            """)
    }

    @Test func badIndexOfAVariable() {
        Self.expectError("route {\n  $var(i) = $(avp(x)[i]);\n}\n", """
            test.cfg:2:22: error: expected an integer, '*' or a $variable as the index of '$avp'
              $var(i) = $(avp(x)[i]);
                                 ^
            """)
    }

    @Test func unclosedBracedVariable() {
        Self.expectError("route {\n  xlog(\"$(ru{s.len}\");\n}\n", """
            test.cfg:2:20: error: expected ')' to close the '$(' opened at 2:9
              xlog("$(ru{s.len}");
                               ^
            """)
    }

    @Test func unclosedVariableArgumentStopsAtTheLineEnd() {
        Self.expectError("route {\n  $var(x = 1;\n  exit;\n}\n", """
            test.cfg:2:7: error: expected ')' to close the argument of '$var' (it starts here)
              $var(x = 1;
                  ^
            """)
    }

    @Test func dollarWithoutAName() {
        Self.expectError("route {\n  $ = 1;\n}\n", """
            test.cfg:2:3: error: expected a pseudo-variable name after '$'
              $ = 1;
              ^
            """)
    }

    @Test func caseOutsideASwitchAndDuplicateDefault() {
        Self.expectError("route {\n  case 1: exit;\n}\n", """
            test.cfg:2:3: error: 'case' outside a switch
              case 1: exit;
              ^
            """)
        Self.expectError("route {\n  switch ($rm) {\n  default: exit;\n  default: drop;\n  }\n}\n", """
            test.cfg:4:3: error: a switch has only one 'default'
              default: drop;
              ^
            """)
    }

    @Test func globalWithoutEquals() {
        Self.expectError("children 4\n", """
            test.cfg:1:9: error: expected '=' after 'children'
            children 4
                    ^
            """)
    }

    @Test func statementOutsideARoute() {
        Self.expectError("children = 4\nxlog(\"hello\\n\");\n", """
            test.cfg:2:1: error: a call to 'xlog' outside a route; statements belong in a route block
            xlog("hello\\n");
            ^
            """)
    }

    @Test func badModparamValue() {
        Self.expectError("modparam(\"tm\", \"fr_timeout\", maybe)\n", """
            test.cfg:1:30: error: expected a string, an integer or yes/no as the parameter value
            modparam("tm", "fr_timeout", maybe)
                                         ^
            """)
    }

    @Test func startupRouteTakesNoName() {
        Self.expectError("startup_route[init] { }\n", """
            test.cfg:1:14: error: 'startup_route' takes no name
            startup_route[init] { }
                         ^
            """)
    }

    @Test func caretKeepsTabsSoItLinesUp() {
        Self.expectError("route {\n\tif (a() {\n\t}\n}\n", """
            test.cfg:2:10: error: expected ')' to close the condition of 'if'
            \tif (a() {
            \t        ^
            """)
    }

    @Test func errorInTheMiddleOfALongScriptCountsLines() {
        let script = String(repeating: "# comment\n", count: 40) + "route {\n  f(1,, 2);\n  g(1 2);\n}\n"
        guard let error = ParserFixture.error(script) else { return }
        #expect(error.location == Script.SourceLocation(file: "test.cfg", line: 43, column: 7))
        #expect(error.sourceLine == "  g(1 2);")
    }

    @Test func badTransformationInAFunctionArgumentIsReportedAtItsBrace() {
        Self.expectError("route {\n  xlog(\"a $(hdr(X){bogus})\");\n}\n", """
            test.cfg:2:19: error: expected a transformation name such as 's.len' after '{'
              xlog("a $(hdr(X){bogus})");
                              ^
            """)
    }

    @Test func aDollarInAModparamStringIsText() throws {
        let script = try ParserFixture.parse(#"modparam("db", "db_url", "mysql://u:pa$(ss@host/db")"#)
        #expect(script.parameters.first?.value == .string("mysql://u:pa$(ss@host/db"))
    }
}
