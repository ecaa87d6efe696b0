import Glibc
import Testing

import Script

/// Input the checker must refuse with a clear error instead of crashing: nesting deep enough to overflow its
/// stack, a file that is not a script.
@Suite struct CheckerBoundsTests {
    @Test func parenthesesNestedBeyondTheLimitAreRefusedAtTheFirstOneTooDeep() {
        let depth = 100_000
        let script = "route {\n    $var(x) = " + String(repeating: "(", count: depth) + "1"
            + String(repeating: ")", count: depth) + ";\n    exit;\n}\n"
        guard let error = ParserFixture.error(script) else { return }
        // `$var(x) = ` ends at column 14; the route's block is one level, so the 200th parenthesis is one too many.
        #expect(error.description.hasPrefix("test.cfg:2:\(14 + 200): error: nested more than 200 levels deep"),
                "\(error.description.prefix(200))")
    }

    @Test func blocksNestedBeyondTheLimitAreRefused() {
        let depth = 5_000
        let script = "route {\n" + String(repeating: "if (1) {\n", count: depth) + "exit;\n"
            + String(repeating: "}\n", count: depth) + "}\n"
        guard let error = ParserFixture.error(script) else { return }
        #expect(error.description.contains("error: nested more than 200 levels deep"), "\(error.description.prefix(200))")
    }

    @Test func negationsChainedBeyondTheLimitAreRefused() {
        let script = "route {\n    if (" + String(repeating: "!", count: 50_000) + "1) { exit; }\n}\n"
        guard let error = ParserFixture.error(script) else { return }
        #expect(error.description.contains("error: nested more than 200 levels deep"), "\(error.description.prefix(200))")
    }

    @Test func nestingWithinTheLimitStillParses() throws {
        let script = "route {\n    $var(x) = " + String(repeating: "(", count: 150) + "1"
            + String(repeating: ")", count: 150) + ";\n    exit;\n}\n"
        _ = try ParserFixture.parse(script)
    }

    @Test func includingSomethingThatIsNotARegularFileIsRefused() throws {
        var template = Array("/tmp/ringsip-include-XXXXXX.cfg".utf8CString)
        let fd = mkstemps(&template, 4)
        try #require(fd >= 0)
        let path = String(cString: template)
        defer { unlink(path) }
        let text = "include_file \"/dev/zero\"\nroute {\n    exit;\n}\n"
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        do {
            _ = try ScriptProgram.load(path: path)
            Issue.record("/dev/zero was included")
        } catch {
            #expect(error.description.hasPrefix("\(path):1:1: error: cannot read include file '/dev/zero': not a regular file"),
                    "\(error.description)")
        }
    }
}
