import Foundation
import Testing

import Script

/// `include_file` / `import_file`: splicing, relative paths, missing files, cycles. Real files under /tmp.
@Suite struct ParserIncludeTests {
    @Test func includesAreSplicedInPlaceAndResolvedAgainstTheIncludingFile() throws {
        let root = try ParserFixture.directory(with: [
            "etc/main.cfg": """
                children = 2
                include_file "conf.d/modules.cfg"
                route {
                    include_file "conf.d/checks.cfg"
                    route(relay);
                }
                import_file "/ABSOLUTE/routes/relay.cfg"
                """,
            "etc/conf.d/modules.cfg": "loadmodule \"tm.so\"\ninclude_file \"params.cfg\"\n",
            "etc/conf.d/params.cfg": "modparam(\"tm\", \"fr_timeout\", 5)",
            "etc/conf.d/checks.cfg": "if (!mf_process_maxfwd_header(10)) {\n    exit;\n}\n",
            "routes/relay.cfg": "route[relay] {\n    t_relay();\n}\n",
        ])
        defer { ParserFixture.remove(root) }
        try rewrite(root + "/etc/main.cfg", replacing: "/ABSOLUTE", with: root)

        let script = try ScriptLoader.load(path: root + "/etc/main.cfg")
        #expect(script.globals.map(\.name) == ["children"])
        #expect(script.modules.map(\.path) == ["tm.so"])
        #expect(script.modules[0].location.description == root + "/etc/conf.d/modules.cfg:1:1")
        #expect(script.parameters.map(\.name) == ["fr_timeout"])
        #expect(script.parameters[0].location.file == root + "/etc/conf.d/params.cfg")
        #expect(script.routes.map(ParserFixture.dump) == [
            "route { if (!mf_process_maxfwd_header(10)) { exit; } route(relay); }",
            "route[relay] { t_relay(); }",
        ])
        #expect(script.routes[0].location.file == root + "/etc/main.cfg")
        #expect(script.routes[1].location.file == root + "/routes/relay.cfg")
    }

    @Test func anErrorInAnIncludedFileShowsThatFileAndLine() throws {
        let root = try ParserFixture.directory(with: [
            "main.cfg": "route {\n    include_file \"bad.cfg\"\n}\n",
            "bad.cfg": "f(1)\ng();\n",
        ])
        defer { ParserFixture.remove(root) }
        #expect(throws: CompileError.self) { try ScriptLoader.load(path: root + "/main.cfg") }
        do {
            _ = try ScriptLoader.load(path: root + "/main.cfg")
        } catch {
            #expect(error.description == """
                \(root)/bad.cfg:1:5: error: expected ';' after the function call
                f(1)
                    ^
                """)
        }
    }

    @Test func aBlockLeftOpenInAnIncludedFileIsReportedAtTheEndOfTheMainFile() throws {
        let root = try ParserFixture.directory(with: [
            "main.cfg": "include_file \"open.cfg\"\nchildren = 1\n",
            "open.cfg": "route {\n",
        ])
        defer { ParserFixture.remove(root) }
        do {
            _ = try ScriptLoader.load(path: root + "/main.cfg")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == """
                \(root)/main.cfg:2:1: error: 'children' is not a statement; a function call needs parentheses: children()
                children = 1
                ^
                """)
        }
    }

    @Test func missingIncludeFile() throws {
        let root = try ParserFixture.directory(with: ["main.cfg": "children = 1\n  include_file \"x.cfg\"\n"])
        defer { ParserFixture.remove(root) }
        do {
            _ = try ScriptLoader.load(path: root + "/main.cfg")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == """
                \(root)/main.cfg:2:3: error: cannot read include file '\(root)/x.cfg': No such file or directory
                  include_file "x.cfg"
                  ^
                """)
        }
    }

    @Test func missingMainFile() {
        do {
            _ = try ScriptLoader.load(path: "/nonexistent/ringsip.cfg")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "/nonexistent/ringsip.cfg:1:1: error: "
                + "cannot read script '/nonexistent/ringsip.cfg': No such file or directory")
        }
    }

    @Test func includeCycleThroughAnotherFile() throws {
        let root = try ParserFixture.directory(with: [
            "a.cfg": "children = 1\ninclude_file \"b.cfg\"\n",
            "b.cfg": "include_file \"sub/../a.cfg\"\n",
            "sub/.keep": "",
        ])
        defer { ParserFixture.remove(root) }
        do {
            _ = try ScriptLoader.load(path: root + "/a.cfg")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == """
                \(root)/b.cfg:1:1: error: include cycle: \(root)/a.cfg includes itself through \(root)/b.cfg
                include_file "sub/../a.cfg"
                ^
                """)
        }
    }

    @Test func fileIncludingItself() throws {
        let root = try ParserFixture.directory(with: ["a.cfg": "route {\n  import_file \"a.cfg\"\n}\n"])
        defer { ParserFixture.remove(root) }
        do {
            _ = try ScriptLoader.load(path: root + "/a.cfg")
            Issue.record("expected an error")
        } catch {
            #expect(error.message == "include cycle: \(root)/a.cfg includes itself")
        }
    }

    @Test func theSameFileTwiceIsNotACycle() throws {
        let root = try ParserFixture.directory(with: [
            "main.cfg": "route {\n  include_file \"log.cfg\"\n  include_file \"log.cfg\"\n}\n",
            "log.cfg": "xlog(\"here\\n\");\n",
        ])
        defer { ParserFixture.remove(root) }
        #expect(ParserFixture.dump(try ScriptLoader.load(path: root + "/main.cfg").routes[0]) ==
            #"route { xlog("here\n"); xlog("here\n"); }"#)
    }

    @Test func parsedTextResolvesIncludesAgainstTheWorkingDirectory() throws {
        let root = try ParserFixture.directory(with: ["inc.cfg": "children = 3\n"])
        defer { ParserFixture.remove(root) }
        // A relative path names a file under the cwd; an absolute one works anywhere.
        let script = try ScriptLoader.parse("include_file \"\(root)/inc.cfg\"\n", file: "<command line>")
        #expect(script.globals.first?.value == .integer(3))
        guard let error = ParserFixture.error("include_file \"no-such-ringsip-file.cfg\"", file: "<command line>") else {
            return
        }
        #expect(error.message == "cannot read include file 'no-such-ringsip-file.cfg': No such file or directory")
    }

    @Test func includeNeedsAQuotedPath() {
        guard let error = ParserFixture.error("include_file conf.cfg\n") else { return }
        #expect(error.description == """
            test.cfg:1:14: error: expected a quoted path after 'include_file'
            include_file conf.cfg
                         ^
            """)
    }

    private func rewrite(_ path: String, replacing: String, with replacement: String) throws {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        try text.replacingOccurrences(of: replacing, with: replacement).write(toFile: path, atomically: false,
                                                                               encoding: .utf8)
    }
}
