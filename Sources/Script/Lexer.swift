/// Tokens of the routing-script language, lexed from UTF-8 bytes of one file.
///
/// Keywords are not reserved here: `route`, `if`, `exit` come out as identifiers and the parser gives them a
/// meaning by position, as OpenSIPS does (`route` opens a block at top level and is a function in a body).
struct Token {
    enum Kind {
        case identifier(String)
        case integer(Int)
        case string(ScriptString)
        case variable(PseudoVariable)
        case punctuation(Punctuation)
        case end
    }

    var kind: Kind
    var location: SourceLocation
    /// Just after the last byte: where "expected ';' after …" points, like a C compiler does.
    var end: SourceLocation

    func isPunctuation(_ p: Punctuation) -> Bool {
        if case .punctuation(p) = kind { true } else { false }
    }

    var identifier: String? {
        if case .identifier(let name) = kind { name } else { nil }
    }

    func isIdentifier(_ name: String) -> Bool { identifier == name }

    var isEnd: Bool {
        if case .end = kind { true } else { false }
    }
}

enum Punctuation: String {
    case leftBrace = "{", rightBrace = "}", leftParen = "(", rightParen = ")", leftBracket = "[", rightBracket = "]"
    case semicolon = ";", comma = ",", colon = ":"
    case assign = "=", assignReplacing = ":=", plusAssign = "+="
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    case matches = "=~", notMatches = "!~", and = "&&", or = "||", not = "!", plus = "+", minus = "-"
    case times = "*", divide = "/", modulo = "%", bitAnd = "&", bitOr = "|", bitXor = "^", bitNot = "~"
    case shiftLeft = "<<", shiftRight = ">>"
}

/// A quoted string in both readings, because only the parser knows which one the position wants:
/// `modparam`, `loadmodule`, `include_file` and quoted route names take the text as written (a `$` in a
/// `db_url` password is not a variable), while function arguments and conditions take the template.
/// The template's error is kept rather than thrown so that a plain position never trips over it.
struct ScriptString {
    /// Escapes decoded, `$` untouched.
    var plain: String
    var template: Result<StringTemplate, CompileError>
}

/// Where the lexer is; copied to look ahead and restored to back out of a guess.
struct Cursor {
    var offset: Int
    var line: Int
    var lineStart: Int
}

/// One file's bytes and a position in them.
///
/// - Invariant: `cursor.offset <= limit <= bytes.count`; `limit` is the end of the file except while a string's
///   contents are re-read as a template, when it is the closing quote, so nothing scans past it.
struct Lexer {
    let bytes: [UInt8]
    let file: String
    var cursor: Cursor
    var limit: Int

    init(bytes: [UInt8], file: String) {
        self.bytes = bytes
        self.file = file
        // Skip a UTF-8 byte order mark; the first line still starts at column 1.
        let start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        cursor = Cursor(offset: start, line: 1, lineStart: start)
        limit = bytes.count
    }

    // MARK: Positions and errors

    var location: SourceLocation {
        SourceLocation(file: file, line: cursor.line, column: cursor.offset - cursor.lineStart + 1)
    }

    func peek(_ ahead: Int = 0) -> UInt8? {
        let i = cursor.offset + ahead
        return i < limit ? bytes[i] : nil
    }

    mutating func advance() {
        if bytes[cursor.offset] == .newline {
            cursor.line += 1
            cursor.lineStart = cursor.offset + 1
        }
        cursor.offset += 1
    }

    mutating func advance(_ count: Int) {
        for _ in 0..<count { advance() }
    }

    func error(_ message: String, at location: SourceLocation) -> CompileError {
        CompileError(message, at: location, sourceLine: Lexer.lineText(bytes, line: location.line))
    }

    /// The text of line `line` (counting from 1) without its line break, for the caret display.
    static func lineText(_ bytes: [UInt8], line: Int) -> String? {
        var start = 0
        var current = 1
        while current < line {
            guard let i = bytes[start...].firstIndex(of: .newline) else { return nil }
            start = i + 1
            current += 1
        }
        var end = bytes[start...].firstIndex(of: .newline) ?? bytes.count
        if end > start, bytes[end - 1] == .carriageReturn { end -= 1 }
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    /// Where end of file is reported: just after the last visible character, so the caret lands on text (what
    /// was left open is usually right before it) rather than on an empty line after the final line break.
    var endLocation: SourceLocation {
        var end = bytes.count
        while end > 0, [.newline, .carriageReturn, .space, .tab].contains(bytes[end - 1]) {
            end -= 1
        }
        var line = 1
        var lineStart = 0
        for i in 0..<end where bytes[i] == .newline {
            line += 1
            lineStart = i + 1
        }
        return SourceLocation(file: file, line: line, column: end - lineStart + 1)
    }

    // MARK: Tokens

    mutating func next() throws(CompileError) -> Token {
        try skipTrivia()
        let start = location
        guard let byte = peek() else {
            let end = endLocation
            return Token(kind: .end, location: end, end: end)
        }
        let kind: Token.Kind
        switch byte {
        case _ where byte.isIdentifierStart:
            kind = .identifier(scanName())
        case _ where byte.isDigit:
            if let address = scanAddressLiteral() {
                kind = .string(ScriptString(plain: address, template: .success(StringTemplate(parts: [.literal(address)]))))
            } else {
                kind = .integer(try scanInteger())
            }
        case .quote, .apostrophe:
            kind = .string(try scanString())
        case .dollar:
            guard let pv = try scanVariable(inString: false) else {
                throw error("expected a pseudo-variable name after '$'", at: start)
            }
            kind = .variable(pv)
        default:
            kind = .punctuation(try scanPunctuation(start))
        }
        return Token(kind: kind, location: start, end: location)
    }

    /// Spaces, line breaks, `# …` and `/* … */` comments (nested, as OpenSIPS nests them) and a backslash
    /// before a line break (a continued line).
    mutating func skipTrivia() throws(CompileError) {
        while let byte = peek() {
            switch byte {
            case .space, .tab, .newline, .carriageReturn, .formFeed:
                advance()
            case .backslash where peek(1) == .newline:
                advance(2)
            case .hash:
                while let b = peek(), b != .newline { advance() }
            case .slash where peek(1) == .asterisk:
                let start = location
                advance(2)
                var depth = 1
                while depth > 0 {
                    guard let b = peek() else { throw error("unterminated comment (it starts here)", at: start) }
                    if b == .asterisk, peek(1) == .slash {
                        depth -= 1
                        advance(2)
                    } else if b == .slash, peek(1) == .asterisk {
                        depth += 1
                        advance(2)
                    } else {
                        advance()
                    }
                }
            default:
                return
            }
        }
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`.
    /// - Precondition: the next byte is an identifier start.
    mutating func scanName() -> String {
        let start = cursor.offset
        while let b = peek(), b.isIdentifierStart || b.isDigit { advance() }
        return String(decoding: bytes[start..<cursor.offset], as: UTF8.self)
    }

    /// Decimal, `0x` hexadecimal, and `0`-prefixed octal as OpenSIPS reads them (`fifo_mode` is written `0666`).
    /// - Precondition: the next byte is a digit.
    mutating func scanInteger() throws(CompileError) -> Int {
        let start = location
        let first = cursor.offset
        var radix = 10
        if peek() == .zero, let x = peek(1), x | 0x20 == UInt8(ascii: "x"), peek(2)?.hexValue != nil {
            radix = 16
            advance(2)
        } else if peek() == .zero, peek(1)?.isDigit == true {
            radix = 8
            advance()
        }
        let digitsStart = cursor.offset
        while let b = peek(), radix == 16 ? b.hexValue != nil : b.isDigit { advance() }
        let text = String(decoding: bytes[first..<cursor.offset], as: UTF8.self)
        var value = 0
        for b in bytes[digitsStart..<cursor.offset] {
            let digit = Int(b.hexValue!)
            guard digit < radix else { throw error("integer \(text) is not a valid octal number", at: start) }
            let (shifted, o1) = value.multipliedReportingOverflow(by: radix)
            let (sum, o2) = shifted.addingReportingOverflow(digit)
            guard !o1, !o2 else { throw error("integer \(text) is too large", at: start) }
            value = sum
        }
        return value
    }

    /// An unquoted IPv4 address or network, as OpenSIPS scripts compare them: `$si == 10.0.0.1`,
    /// `$si == 10.0.0.0/8`. Read as a string literal; nil (nothing consumed) when the digits are a plain number.
    mutating func scanAddressLiteral() -> String? {
        var length = 0
        var dots = 0
        while let b = peek(length), b.isDigit || (b == .dot && peek(length + 1)?.isDigit == true) {
            if b == .dot { dots += 1 }
            length += 1
        }
        guard dots == 3 else { return nil }
        if peek(length) == .slash, peek(length + 1)?.isDigit == true {
            length += 1
            while peek(length)?.isDigit == true { length += 1 }
        }
        if let b = peek(length), b.isIdentifierStart || b == .dot { return nil }
        let text = String(decoding: bytes[cursor.offset..<(cursor.offset + length)], as: UTF8.self)
        advance(length)
        return text
    }

    mutating func scanPunctuation(_ start: SourceLocation) throws(CompileError) -> Punctuation {
        let byte = peek()!
        let second = peek(1)
        // Two-byte operators first, so `==` is never `=` `=`.
        let pairs: [(UInt8, UInt8, Punctuation)] = [
            (.colon, .equals, .assignReplacing), (.plus, .equals, .plusAssign), (.equals, .equals, .equal),
            (.equals, .tilde, .matches), (.bang, .equals, .notEqual), (.bang, .tilde, .notMatches),
            (.less, .equals, .lessOrEqual), (.greater, .equals, .greaterOrEqual),
            (.ampersand, .ampersand, .and), (.pipe, .pipe, .or), (.less, .less, .shiftLeft),
            (.greater, .greater, .shiftRight),
        ]
        for (a, b, p) in pairs where byte == a && second == b {
            advance(2)
            return p
        }
        if let p = Punctuation(rawValue: String(UnicodeScalar(byte))), byte < 0x80 {
            advance()
            return p
        }
        throw error(unexpectedCharacterMessage(), at: start)
    }

    func unexpectedCharacterMessage() -> String {
        let byte = peek()!
        switch byte {
        case 0x21...0x7E: return "unexpected character '\(Character(UnicodeScalar(byte)))'"
        case 0x80...:
            // Show the whole UTF-8 sequence, e.g. a typographic quote pasted from a web page.
            var end = cursor.offset + 1
            while end < limit, bytes[end] & 0xC0 == 0x80 { end += 1 }
            return "unexpected character '\(String(decoding: bytes[cursor.offset..<end], as: UTF8.self))'"
        default:
            return "unexpected control character 0x\(String(byte, radix: 16, uppercase: true))"
        }
    }
}

extension UInt8 {
    static let newline = UInt8(ascii: "\n"), carriageReturn = UInt8(ascii: "\r"), tab = UInt8(ascii: "\t")
    static let formFeed: UInt8 = 0x0C, space = UInt8(ascii: " "), backslash = UInt8(ascii: "\\")
    static let hash = UInt8(ascii: "#"), slash = UInt8(ascii: "/"), asterisk = UInt8(ascii: "*")
    static let quote = UInt8(ascii: "\""), apostrophe = UInt8(ascii: "'"), dollar = UInt8(ascii: "$")
    static let colon = UInt8(ascii: ":"), equals = UInt8(ascii: "="), plus = UInt8(ascii: "+")
    static let minus = UInt8(ascii: "-"), tilde = UInt8(ascii: "~"), bang = UInt8(ascii: "!")
    static let less = UInt8(ascii: "<"), greater = UInt8(ascii: ">"), ampersand = UInt8(ascii: "&")
    static let pipe = UInt8(ascii: "|"), zero = UInt8(ascii: "0"), comma = UInt8(ascii: ",")
    static let leftParen = UInt8(ascii: "("), rightParen = UInt8(ascii: ")")
    static let leftBracket = UInt8(ascii: "["), rightBracket = UInt8(ascii: "]")
    static let leftBrace = UInt8(ascii: "{"), rightBrace = UInt8(ascii: "}"), dot = UInt8(ascii: ".")

    var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }

    var isIdentifierStart: Bool {
        let lower = self | 0x20
        return (lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "z")) || self == UInt8(ascii: "_")
    }

    var hexValue: UInt8? {
        if isDigit { return self - UInt8(ascii: "0") }
        let lower = self | 0x20
        if lower >= UInt8(ascii: "a") && lower <= UInt8(ascii: "f") { return lower - UInt8(ascii: "a") + 10 }
        return nil
    }
}
