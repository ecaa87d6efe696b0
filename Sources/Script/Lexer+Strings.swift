/// Quoted strings, pseudo-variables (in code and inside strings) and the raw value of a top-level `name = value`.
extension Lexer {
    // MARK: Strings

    /// `"…"` decodes `\n \r \t \a \" \\ \xHH \ooo` and drops a backslash before a line break; any other backslash
    /// is kept with the byte after it, so regular expressions such as `"^sip:.*@example\.com$"` mean what they
    /// say. `'…'` is taken byte for byte. Both are templates: OpenSIPS does not tell them apart after lexing.
    /// - Precondition: the next byte is `"` or `'`.
    mutating func scanString() throws(CompileError) -> ScriptString {
        let start = location
        let quote = peek()!
        advance()
        let contentStart = cursor
        while true {
            guard let byte = peek() else { throw error("unterminated string (it starts here)", at: start) }
            if byte == quote { break }
            advance(byte == .backslash && quote == .quote && peek(1) != nil ? 2 : 1)
        }
        let contentEnd = cursor.offset
        advance()
        let after = cursor

        // Read the contents twice, bounded by the closing quote: once as text, once as a template.
        limit = contentEnd
        defer {
            cursor = after
            limit = bytes.count
        }
        cursor = contentStart
        let plain = (try? scanStringContents(escapes: quote == .quote, variables: false))
            .flatMap { StringTemplate(parts: $0).literal } ?? ""
        cursor = contentStart
        let template: Result<StringTemplate, CompileError>
        do {
            let parts = try scanStringContents(escapes: quote == .quote, variables: true)
            template = .success(StringTemplate(parts: parts))
        } catch {
            template = .failure(error)
        }
        return ScriptString(plain: plain, template: template)
    }

    /// Literal runs and, when `variables`, pseudo-variables. A `$` that cannot start one (`$` at the end, before a
    /// space, a digit, `|`, `)` …) stays literal: regular expressions end in `$` and OpenSIPS passes them through.
    private mutating func scanStringContents(escapes: Bool, variables: Bool) throws(CompileError) -> [TemplatePart] {
        var parts: [TemplatePart] = []
        var literal: [UInt8] = []
        func flush() {
            if !literal.isEmpty { parts.append(.literal(String(decoding: literal, as: UTF8.self))) }
            literal.removeAll()
        }
        while let byte = peek() {
            if byte == .backslash, escapes, let next = peek(1) {
                decodeEscape(after: next, into: &literal)
            } else if byte == .dollar, variables, let next = peek(1), next.isIdentifierStart || next == .leftParen {
                flush()
                // Cannot be nil: the byte after `$` starts a name or a braced variable.
                parts.append(.variable(try scanVariable(inString: true)!))
            } else {
                literal.append(byte)
                advance()
            }
        }
        flush()
        return parts
    }

    private static let simpleEscapes: [UInt8: UInt8] = [
        UInt8(ascii: "n"): .newline, UInt8(ascii: "r"): .carriageReturn, UInt8(ascii: "t"): .tab,
        UInt8(ascii: "a"): 0x07, .quote: .quote, .backslash: .backslash,
    ]

    /// - Precondition: the next byte is a backslash and `next` the byte after it.
    private mutating func decodeEscape(after next: UInt8, into literal: inout [UInt8]) {
        if let decoded = Lexer.simpleEscapes[next] {
            literal.append(decoded)
            advance(2)
        } else if next == .newline {
            advance(2)
        } else if next == UInt8(ascii: "x"), let high = peek(2)?.hexValue {
            // `\xH` or `\xHH`.
            if let low = peek(3)?.hexValue {
                literal.append(high << 4 | low)
                advance(4)
            } else {
                literal.append(high)
                advance(3)
            }
        } else if let octal = octalEscape() {
            literal.append(octal.value)
            advance(1 + octal.length)
        } else if next == .dollar {
            // `\$` keeps both bytes and the `$` starts no variable: a literal dollar in a regular expression.
            literal.append(contentsOf: [.backslash, .dollar])
            advance(2)
        } else {
            literal.append(.backslash)
            advance()
        }
    }

    /// Two or three octal digits after the backslash; one digit is left alone so `\1` back-references survive.
    private func octalEscape() -> (value: UInt8, length: Int)? {
        func octal(_ ahead: Int) -> Int? {
            guard let b = peek(ahead), b >= UInt8(ascii: "0"), b <= UInt8(ascii: "7") else { return nil }
            return Int(b - UInt8(ascii: "0"))
        }
        guard let a = octal(1), let b = octal(2) else { return nil }
        if let c = octal(3), a * 64 + b * 8 + c <= 0xFF { return (UInt8(a * 64 + b * 8 + c), 3) }
        return (UInt8(a * 8 + b), 2)
    }

    // MARK: Pseudo-variables

    /// `$name`, `$name(argument)`, then `[index]` and `{transformation}`s; or the braced `$(name(arg)[i]{tr})`.
    /// Returns nil, having consumed only the `$`, when no name follows an unbraced `$`.
    ///
    /// Unbraced, OpenSIPS has no transformations; they are accepted when they look like one (`{s.len}`), so
    /// `"$var(x){s.len}"` works and `"{$ru}"` or `"$ru{x}"` stay text. Inside a string an unbraced index must look
    /// like one too (`"$ru[1]"`); in code `[` after a variable can only be an index, so it must be valid.
    /// - Precondition: the next byte is `$`.
    mutating func scanVariable(inString: Bool) throws(CompileError) -> PseudoVariable? {
        let start = location
        advance()
        if peek() == .leftParen {
            advance()
            guard let b = peek(), b.isIdentifierStart else {
                throw error("expected a pseudo-variable name after '$('", at: location)
            }
            let pv = try scanVariableBody(start: start, braced: true, inString: inString)
            guard peek() == .rightParen else {
                throw error("expected ')' to close the '$(' opened at \(start.line):\(start.column)", at: location)
            }
            advance()
            return pv
        }
        guard let b = peek(), b.isIdentifierStart else { return nil }
        return try scanVariableBody(start: start, braced: false, inString: inString)
    }

    private mutating func scanVariableBody(
        start: SourceLocation, braced: Bool, inString: Bool
    ) throws(CompileError) -> PseudoVariable {
        var name = scanName()
        // OpenSIPS 3.x names have dots ($err.class, $msg.type); inside a string only the families that exist take
        // one, so "$fd.example" stays $fd and text.
        while peek() == .dot, let b = peek(1), b.isIdentifierStart, braced || !inString || Lexer.dottedFamilies.contains(name) {
            advance()
            name += "." + scanName()
        }
        var pv = PseudoVariable(name: name, argument: nil, index: nil, transformations: [], location: start)
        if peek() == .leftParen {
            pv.argument = try scanArgument(of: name)
        }
        if peek() == .leftBracket {
            if braced || !inString {
                pv.index = try scanIndex(of: name)
            } else {
                pv.index = attempt { (lexer: inout Lexer) throws(CompileError) in try lexer.scanIndex(of: name) }
            }
        }
        while peek() == .leftBrace {
            if braced {
                pv.transformations.append(try scanTransformation())
            } else if let transformation = attempt({ (lexer: inout Lexer) throws(CompileError) in
                try lexer.scanTransformation()
            }) {
                pv.transformations.append(transformation)
            } else {
                break
            }
        }
        return pv
    }

    static let dottedFamilies: Set<String> = ["err", "msg", "socket_in", "socket_out", "b2b_logic"]

    /// Runs `body`; on an error puts the cursor back and returns nil. For shapes that may be plain text.
    private mutating func attempt<T>(_ body: (inout Lexer) throws(CompileError) -> T) -> T? {
        let saved = cursor
        do {
            return try body(&self)
        } catch {
            cursor = saved
            return nil
        }
    }

    /// The text between `(` and its matching `)`, trimmed. It stays on one line: an unclosed `(` would otherwise
    /// swallow the rest of the file and be reported far from the mistake.
    private mutating func scanArgument(of name: String) throws(CompileError) -> String {
        let open = location
        advance()
        let start = cursor.offset
        var depth = 1
        while true {
            guard let b = peek(), b != .newline else {
                throw error("expected ')' to close the argument of '$\(name)' (it starts here)", at: open)
            }
            if b == .leftParen { depth += 1 }
            if b == .rightParen {
                depth -= 1
                if depth == 0 { break }
            }
            advance()
        }
        let text = bytes[start..<cursor.offset]
        advance()
        return String(decoding: text.trimmingSpaces(), as: UTF8.self)
    }

    /// `[2]`, `[-1]`, `[*]`.
    private mutating func scanIndex(of name: String) throws(CompileError) -> PseudoVariableIndex {
        advance()
        let index: PseudoVariableIndex
        if peek() == .asterisk {
            advance()
            index = .all
        } else if peek() == .dollar {
            let at = location
            guard let variable = try scanVariable(inString: false) else {
                throw error("expected a pseudo-variable name after '$'", at: at)
            }
            index = .variable(variable)
        } else {
            let negative = peek() == .minus
            if negative { advance() }
            guard let b = peek(), b.isDigit else {
                throw error("expected an integer, '*' or a $variable as the index of '$\(name)'", at: location)
            }
            let value = try scanInteger()
            index = .position(negative ? -value : value)
        }
        guard peek() == .rightBracket else {
            throw error("expected ']' to close the index of '$\(name)'", at: location)
        }
        advance()
        return index
    }

    /// `{s.len}`, `{param.value,name}`, `{s.substr,0,5}`: a dotted name, then comma-separated arguments kept as
    /// written (not trimmed: `{s.select,1, }` splits at a space). Commas inside nested `( )` or `{ }` do not split.
    private mutating func scanTransformation() throws(CompileError) -> Transformation {
        let open = location
        advance()
        guard let b = peek(), b.isIdentifierStart else {
            throw error("expected a transformation name such as 's.len' after '{'", at: location)
        }
        var name = scanName()
        while peek() == .dot, let b = peek(1), b.isIdentifierStart || b.isDigit {
            advance()
            name += "." + scanName()
        }
        guard name.utf8.contains(.dot) else {
            throw error("expected a transformation name such as 's.len' after '{'", at: open)
        }
        var arguments: [String] = []
        let unclosed = "expected '}' to close the transformation '{\(name)' (it starts here)"
        if peek() == .comma {
            advance()
            var argumentStart = cursor.offset
            var depth = 0
            while true {
                guard let b = peek(), b != .newline else { throw error(unclosed, at: open) }
                if depth == 0, b == .comma || b == .rightBrace {
                    arguments.append(String(decoding: bytes[argumentStart..<cursor.offset], as: UTF8.self))
                    if b == .rightBrace { break }
                    argumentStart = cursor.offset + 1
                } else if b == .leftBrace || b == .leftParen {
                    depth += 1
                } else if b == .rightBrace || b == .rightParen {
                    depth -= 1
                }
                advance()
            }
        }
        guard peek() == .rightBrace else { throw error(unclosed, at: open) }
        advance()
        return Transformation(name: name, arguments: arguments, location: open)
    }

    // MARK: Global values

    /// The value after `=` in a top-level `name = value`, on the same line: a quoted string (as text), an integer
    /// (also negative) or unquoted words of letters, digits and `_ . : [ ] / - * @` (`udp:[::1]:5060`), the rest
    /// of the line's words joined by single spaces for the checker to split (`udp:10.0.0.1:5060 as 192.0.2.1`).
    /// Returns nil, consuming nothing but spaces, when none of those follows.
    mutating func scanGlobalValue() throws(CompileError) -> (GlobalValue, SourceLocation)? {
        while peek() == .space || peek() == .tab { advance() }
        let start = location
        guard let first = peek() else { return nil }
        if first == .quote || first == .apostrophe {
            return (.string(try scanString().plain), start)
        }
        guard first.isGlobalWordByte else { return nil }
        let saved = cursor
        let negative = first == .minus
        if negative { advance() }
        if let digit = peek(), digit.isDigit {
            // A number only if nothing word-like follows it: `5060` is an integer, `10.0.0.1` a word.
            do {
                let value = try scanInteger()
                if !(peek()?.isGlobalWordByte ?? false) { return (.integer(negative ? -value : value), start) }
            } catch {
                if !(peek()?.isGlobalWordByte ?? false) { throw error }
            }
        }
        cursor = saved
        var words = [try scanGlobalWordOrGroup()]
        // More words on the same line belong to the value: `socket = udp:10.0.0.1:5060 as 203.0.113.1:5060`.
        while true {
            let before = cursor
            while peek() == .space || peek() == .tab { advance() }
            guard let b = peek(), b.isGlobalWordByte || b == .leftBrace else {
                cursor = before
                break
            }
            words.append(try scanGlobalWordOrGroup())
        }
        return (.word(words.joined(separator: " ")), start)
    }

    /// A word, or a braced group as written (`dst_blacklist = name:{ ( tcp, 10.0.0.0/8, 5060, "" ) }`), which may
    /// span lines.
    private mutating func scanGlobalWordOrGroup() throws(CompileError) -> String {
        guard peek() == .leftBrace else {
            var word = scanGlobalWord()
            if peek() == .leftBrace { word += try scanGlobalWordOrGroup() }
            return word
        }
        let open = location
        let start = cursor.offset
        var depth = 0
        repeat {
            guard let b = peek() else { throw error("expected '}' to close the '{' opened here", at: open) }
            if b == .leftBrace { depth += 1 }
            if b == .rightBrace { depth -= 1 }
            advance()
        } while depth > 0
        return String(decoding: bytes[start..<cursor.offset], as: UTF8.self)
    }

    private mutating func scanGlobalWord() -> String {
        let wordStart = cursor.offset
        while let b = peek(), b.isGlobalWordByte { advance() }
        return String(decoding: bytes[wordStart..<cursor.offset], as: UTF8.self)
    }
}

extension UInt8 {
    var isGlobalWordByte: Bool {
        isIdentifierStart || isDigit || self == .dot || self == .colon || self == .leftBracket
            || self == .rightBracket || self == .slash || self == .minus || self == .asterisk
            || self == UInt8(ascii: "@")
    }
}

extension ArraySlice<UInt8> {
    func trimmingSpaces() -> ArraySlice<UInt8> {
        var slice = self
        while let b = slice.first, b == .space || b == .tab { slice = slice.dropFirst() }
        while let b = slice.last, b == .space || b == .tab { slice = slice.dropLast() }
        return slice
    }
}
