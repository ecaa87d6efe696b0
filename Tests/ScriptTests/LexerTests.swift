import Testing

import Script

/// Strings, pseudo-variables, numbers and comments, seen through the statements that hold them.
@Suite struct LexerTests {
    static func argument(_ text: String) throws -> String {
        try ParserFixture.statements("f(\(text));").dropFirst(2).dropLast(2).description
    }

    @Test func doubleQuotedEscapesAreDecoded() throws {
        #expect(try Self.argument(#""a\tb\r\n\"q\" \\ \x41\101""#) == #""a\tb\r\n\"q\" \\ AA""#)
    }

    @Test func unknownEscapesKeepTheBackslashSoRegularExpressionsSurvive() throws {
        #expect(try Self.argument(#""^sip:.*@example\.com$""#) == #""^sip:.*@example\\.com$""#)
        // One octal digit is a back-reference for subst, not a byte.
        #expect(try Self.argument(#""/^(.*)$/\1/""#) == #""/^(.*)$/\\1/""#)
    }

    @Test func backslashNewlineContinuesTheString() throws {
        #expect(try Self.argument("\"one \\\ntwo\"") == #""one two""#)
    }

    @Test func singleQuotedStringsAreRawButStillTemplates() throws {
        #expect(try Self.argument(#"'a\n"b" $ru'"#) == #"str["a\\n\"b\" ", $ru]"#)
    }

    @Test func hashAndCommentMarkersInsideStringsAreText() throws {
        #expect(try Self.argument(##""# not /* a comment */""##) == ##""# not /* a comment */""##)
    }

    @Test func dollarThatStartsNoVariableStaysLiteral() throws {
        #expect(try Self.argument(#""cost: $ 5, $5, end$""#) == #""cost: $ 5, $5, end$""#)
        #expect(try Self.argument(#""^(a|b$)|c\$""#) == #""^(a|b$)|c\\$""#)
    }

    @Test func variablesInsideStringsBecomeTemplateParts() throws {
        #expect(try Self.argument(#""$ru is $var(x){s.len} and $(avp(y)[1]{s.int})!""#)
            == #"str[$ru, " is ", $var(x){s.len}, " and ", $avp(y)[1]{s.int}, "!"]"#)
    }

    @Test func bracesAfterAVariableInAStringAreTextUnlessTheyLookLikeATransformation() throws {
        #expect(try Self.argument(#""{$ru}{x} $rU{not one} $rU[a]""#)
            == #"str["{", $ru, "}{x} ", $rU, "{not one} ", $rU, "[a]"]"#)
    }

    @Test func variableForms() throws {
        let body = try ParserFixture.statements("""
            $var(x) = $hdr( From );
            $avp(a)[*] = $(hdr(Via)[-1]);
            $var(y) = $(avp(z)[2]{s.substr,0,5}{s.len});
            $var(p) = $(ct{param.value,expires});
            $var(s) = $(var(t){s.select,1, });
            $var(j) = $json(obj/key(1));
            $T_reply_code = $rc;
            """)
        #expect(body == """
            $var(x) = $hdr(From); $avp(a)[*] = $hdr(Via)[-1]; $var(y) = $avp(z)[2]{s.substr,0,5}{s.len}; \
            $var(p) = $ct{param.value,expires}; $var(s) = $var(t){s.select,1, }; $var(j) = $json(obj/key(1)); \
            $T_reply_code = $rc;
            """)
    }

    @Test func variableLocationsPointAtTheDollar() throws {
        let script = try ParserFixture.parse("route {\n  xlog(\"x $ru\n $(var(a){s.len})\");\n}\n")
        guard case .expression(.call(let call)) = script.routes[0].body[0],
            case .string(let template, let location)? = call.arguments[0]
        else {
            Issue.record("expected xlog with a string")
            return
        }
        #expect(location == Script.SourceLocation(file: "test.cfg", line: 2, column: 8))
        let variables = template.parts.compactMap { part -> PseudoVariable? in
            if case .variable(let pv) = part { pv } else { nil }
        }
        #expect(variables.map(\.location.description) == ["test.cfg:2:11", "test.cfg:3:2"])
        #expect(variables[1].transformations.map(\.location.description) == ["test.cfg:3:10"])
    }

    @Test func integersInDecimalHexAndOctal() throws {
        #expect(try ParserFixture.statements("f(0, 42, 0x1F, 0666, -7, - 8);") == "f(0, 42, 31, 438, -7, -8);")
        #expect(try ParserFixture.statements("f(9223372036854775807);") == "f(9223372036854775807);")
    }

    @Test func commentsOfBothKindsNestAndSpanLines() throws {
        let body = try ParserFixture.statements("""
            a(); # b();
            /* c();
               /* nested */ d();
            */ e(); /**/ f() /* inline */ ;
            """)
        #expect(body == "a(); e(); f();")
    }

    @Test func lineContinuationAndCarriageReturnsAreWhitespace() throws {
        #expect(try ParserFixture.statements("a(\\\n1);\r\nb();\r\n") == "a(1); b();")
    }

    @Test func tokensNeedNoSpaces() throws {
        #expect(try ParserFixture.statements("if($var(a)!=1&&!b()||$var(c)=~\"x\"){$var(d)+=-1;}")
            == #"if (((($var(a) != 1) && !b()) || ($var(c) =~ "x"))) { $var(d) += -1; }"#)
    }

    @Test func byteOrderMarkIsSkipped() throws {
        let script = try ParserFixture.parse("\u{FEFF}children = 2\n")
        #expect(script.globals.first?.value == .integer(2))
        #expect(script.globals.first?.location == Script.SourceLocation(file: "test.cfg", line: 1, column: 1))
    }

    @Test func globalValues() throws {
        let script = try ParserFixture.parse("""
            a = -1
            b=udp:*:5060
            c = "quoted # not a comment $ru"
            d = 10.0.0.1 # a comment
            e = /var/run/x-y_z@host
            f = 'single'
            g = 0x10
            socket = udp:10.0.0.1:5060   as  203.0.113.1:5060 # NAT
            h = x
            """)
        #expect(script.globals.map { "\($0.name)=\($0.value)" } == [
            "a=integer(-1)", "b=word(\"udp:*:5060\")", "c=string(\"quoted # not a comment $ru\")",
            "d=word(\"10.0.0.1\")", "e=word(\"/var/run/x-y_z@host\")", "f=string(\"single\")", "g=integer(16)",
            "socket=word(\"udp:10.0.0.1:5060 as 203.0.113.1:5060\")", "h=word(\"x\")",
        ])
    }
}
