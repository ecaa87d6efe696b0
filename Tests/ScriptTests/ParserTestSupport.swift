import Foundation
import Testing

import Script

/// Helpers for the parser tests, in a namespace so they cannot collide with the checker's and runtime's.
///
/// `dump` renders the AST as compact text so a test can assert a whole shape in one readable line:
/// strings as `"text"` or `str["text ", $ru]`, omitted arguments as `_`, binary expressions parenthesised,
/// transformations as `{name,arg,…}`.
enum ParserFixture {
    static func parse(_ text: String, file: String = "test.cfg") throws(CompileError) -> ScriptSource {
        try ScriptLoader.parse(text, file: file)
    }

    /// The error `text` fails with, or nil (recorded as a test failure) when it parses.
    static func error(_ text: String, file: String = "test.cfg",
                      sourceLocation: Testing.SourceLocation = #_sourceLocation) -> CompileError? {
        do {
            _ = try ScriptLoader.parse(text, file: file)
            Issue.record("expected a syntax error", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    /// The body of the only route of `text`, dumped.
    static func body(_ text: String) throws(CompileError) -> String {
        let script = try parse(text)
        return script.routes.map { dump($0.body) }.joined(separator: " | ")
    }

    /// `body` of a main route wrapped around `statements`.
    static func statements(_ statements: String) throws(CompileError) -> String {
        try body("route {\n\(statements)\n}\n")
    }

    static func dump(_ route: RouteDefinition) -> String {
        let name = route.name.isEmpty ? "" : "[\(route.name)]"
        var header = route.kind.description + name
        if case .timer(let seconds) = route.kind { header = "timer_route[\(route.name), \(seconds)]" }
        return header + " { " + dump(route.body) + " }"
    }

    static func dump(_ statements: [Statement]) -> String {
        statements.map(dump).joined(separator: " ")
    }

    static func dump(_ statement: Statement) -> String {
        switch statement {
        case .expression(let e): return dump(e) + ";"
        case .assignment(let target, let op, let value, _):
            let symbol = switch op {
            case .assign: "="
            case .assignReplacing: ":="
            case .append: "+="
            }
            return "\(dump(target)) \(symbol) \(dump(value));"
        case .ifElse(let condition, let then, let otherwise, _):
            var text = "if (\(dump(condition))) { \(dump(then)) }"
            if let otherwise { text += " else { \(dump(otherwise)) }" }
            return text
        case .switchCase(let subject, let cases, let defaultBody, _):
            var parts = cases.map { "case \(dump($0.value)): \(dump($0.body))" }
            if let defaultBody { parts.append("default: \(dump(defaultBody))") }
            return "switch (\(dump(subject))) { \(parts.joined(separator: " ")) }"
        case .whileLoop(let condition, let body, _):
            return "while (\(dump(condition))) { \(dump(body)) }"
        case .returnStatement(let value, _):
            return value.map { "return \(dump($0));" } ?? "return;"
        case .exit: return "exit;"
        case .drop: return "drop;"
        case .breakStatement: return "break;"
        }
    }

    static func dump(_ expression: Script.Expression) -> String {
        switch expression {
        case .string(let template, _): return dump(template)
        case .integer(let n, _): return String(n)
        case .variable(let pv): return dump(pv)
        case .null: return "NULL"
        case .identifier(let name, _): return name
        case .call(let call):
            return call.name + "(" + call.arguments.map { $0.map(dump) ?? "_" }.joined(separator: ", ") + ")"
        case .not(let e, _): return "!\(dump(e))"
        case .negate(let e, _): return "-\(dump(e))"
        case .binary(let op, let l, let r, _): return "(\(dump(l)) \(op.rawValue) \(dump(r)))"
        }
    }

    static func dump(_ template: StringTemplate) -> String {
        if let literal = template.literal { return quoted(literal) }
        let parts = template.parts.map { part in
            switch part {
            case .literal(let s): quoted(s)
            case .variable(let pv): dump(pv)
            }
        }
        return "str[" + parts.joined(separator: ", ") + "]"
    }

    static func dump(_ pv: PseudoVariable) -> String {
        var text = "$" + pv.name
        if let argument = pv.argument { text += "(\(argument))" }
        switch pv.index {
        case .position(let i): text += "[\(i)]"
        case .all: text += "[*]"
        case .variable(let index): text += "[\(dump(index))]"
        case nil: break
        }
        for tr in pv.transformations {
            text += "{" + ([tr.name] + tr.arguments).joined(separator: ",") + "}"
        }
        return text
    }

    /// Quotes, backslashes and control characters escaped, so a dump stays on one line and is unambiguous.
    static func quoted(_ s: String) -> String {
        var text = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            default: text.unicodeScalars.append(scalar)
            }
        }
        return text + "\""
    }

    /// A fresh directory under /tmp for include tests, holding `files` (relative path → contents).
    static func directory(with files: [String: String]) throws -> String {
        let root = "/tmp/ringsip-parser-tests-\(UInt64.random(in: 0...UInt64.max))"
        for (path, contents) in files {
            let url = URL(fileURLWithPath: root + "/" + path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(),
                                                    withIntermediateDirectories: true)
            try contents.write(to: url, atomically: false, encoding: .utf8)
        }
        return root
    }

    static func remove(_ directory: String) {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
