/// Expressions, lowest precedence first: `||` (or `or`), `&&` (or `and`), unary `!`, comparisons, `|`, `^`, `&`,
/// `<< >>`, `+ -`, `* / %`, unary `- ! ~`, primary. The bitwise operators bind tighter than comparisons, as
/// script authors read `$var(flags) & 4 == 4`.
///
/// `!` sits below the comparisons, so `!$var(a) == 1` is `!($var(a) == 1)`; in an operand position
/// (`$var(a) == !f()`) it binds to the operand. A binary expression is located at its operator, where a type
/// error about it is best shown.
extension Parser {
    mutating func parseExpression() throws(CompileError) -> Expression {
        try parseOr()
    }

    private mutating func parseOr() throws(CompileError) -> Expression {
        var left = try parseAnd()
        while current.isPunctuation(.or) || current.isIdentifier("or") {
            let location = current.location
            try advance()
            left = .binary(.or, left, try parseAnd(), location: location)
        }
        return left
    }

    private mutating func parseAnd() throws(CompileError) -> Expression {
        var left = try parseNot()
        while current.isPunctuation(.and) || current.isIdentifier("and") {
            let location = current.location
            try advance()
            left = .binary(.and, left, try parseNot(), location: location)
        }
        return left
    }

    private mutating func parseNot() throws(CompileError) -> Expression {
        guard current.isPunctuation(.not) else { return try parseComparison() }
        let location = current.location
        try enterNesting(at: location)
        defer { nesting -= 1 }
        try advance()
        return .not(try parseNot(), location: location)
    }

    private static let comparisons: [Punctuation: BinaryOperator] = [
        .equal: .equal, .notEqual: .notEqual, .less: .less, .lessOrEqual: .lessOrEqual, .greater: .greater,
        .greaterOrEqual: .greaterOrEqual, .matches: .matches, .notMatches: .notMatches,
    ]

    private mutating func parseComparison() throws(CompileError) -> Expression {
        var left = try parseArithmetic(0)
        while case .punctuation(let p) = current.kind, let op = Parser.comparisons[p] {
            let location = current.location
            try advance()
            left = .binary(op, left, try parseArithmetic(0), location: location)
        }
        return left
    }

    /// The arithmetic and bitwise levels, loosest first; each is left-associative.
    private static let arithmeticLevels: [[Punctuation: BinaryOperator]] = [
        [.bitOr: .bitOr], [.bitXor: .bitXor], [.bitAnd: .bitAnd], [.shiftLeft: .shiftLeft, .shiftRight: .shiftRight],
        [.plus: .plus, .minus: .minus], [.times: .times, .divide: .divide, .modulo: .modulo],
    ]

    private mutating func parseArithmetic(_ level: Int) throws(CompileError) -> Expression {
        guard level < Parser.arithmeticLevels.count else { return try parseUnary() }
        var left = try parseArithmetic(level + 1)
        while case .punctuation(let p) = current.kind, let op = Parser.arithmeticLevels[level][p] {
            let location = current.location
            try advance()
            left = .binary(op, left, try parseArithmetic(level + 1), location: location)
        }
        return left
    }

    /// `-x`; `-5` folds to the integer -5 so that `return -1` and `case -1` carry a literal.
    private mutating func parseUnary() throws(CompileError) -> Expression {
        let location = current.location
        if current.isPunctuation(.minus) {
            try enterNesting(at: location)
            defer { nesting -= 1 }
            try advance()
            let operand = try parseUnary()
            if case .integer(let n, _) = operand { return .integer(-n, location: location) }
            return .negate(operand, location: location)
        }
        if current.isPunctuation(.not) {
            try enterNesting(at: location)
            defer { nesting -= 1 }
            try advance()
            return .not(try parseUnary(), location: location)
        }
        if current.isPunctuation(.bitNot) {
            try enterNesting(at: location)
            defer { nesting -= 1 }
            try advance()
            // ~x is x ^ -1: every bit flipped.
            return .binary(.bitXor, try parseUnary(), .integer(-1, location: location), location: location)
        }
        return try parsePrimary()
    }

    private mutating func parsePrimary() throws(CompileError) -> Expression {
        let location = current.location
        switch current.kind {
        case .string(let s):
            let template = try s.template.get()
            try advance()
            return .string(template, location: location)
        case .integer(let n):
            try advance()
            return .integer(n, location: location)
        case .variable(let pv):
            try advance()
            return .variable(pv)
        case .identifier(let name):
            try advance()
            if current.isPunctuation(.leftParen) { return .call(try parseCall(name: name, at: location)) }
            // OpenSIPS 1.x `msg:len`: the message's length, $ml.
            if name == "msg", current.isPunctuation(.colon) {
                try advance()
                guard current.isIdentifier("len") else { throw error("expected 'len' after 'msg:'", at: current.location) }
                try advance()
                return .variable(PseudoVariable(name: "ml", argument: nil, index: nil, transformations: [], location: location))
            }
            if name == "NULL" || name == "null" { return .null(location: location) }
            return .identifier(name, location: location)
        case .punctuation(.leftParen):
            try enterNesting(at: location)
            defer { nesting -= 1 }
            try advance()
            let inner = try parseExpression()
            try expect(.rightParen, here: "expected ')' to close the parenthesis opened at \(place(location))")
            return inner
        case .end:
            throw error("unexpected end of file: expected an expression", at: location)
        default:
            throw error("expected an expression", at: location)
        }
    }

    /// `name(a, b)`, `name()`, and omitted optional arguments `name(a, , c)` as nil.
    /// - Precondition: the current token is the `(`.
    mutating func parseCall(name: String, at location: SourceLocation) throws(CompileError) -> FunctionCall {
        try advance()
        var arguments: [Expression?] = []
        if current.isPunctuation(.rightParen) {
            try advance()
            return FunctionCall(name: name, arguments: arguments, location: location)
        }
        while true {
            let omitted = current.isPunctuation(.comma) || current.isPunctuation(.rightParen)
            arguments.append(omitted ? nil : try parseExpression())
            if current.isPunctuation(.comma) {
                try advance()
            } else if current.isPunctuation(.rightParen) {
                try advance()
                return FunctionCall(name: name, arguments: arguments, location: location)
            } else {
                throw error("expected ')' to close the argument list", at: current.location)
            }
        }
    }
}
