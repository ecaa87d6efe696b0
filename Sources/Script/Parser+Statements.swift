/// Statements inside route bodies.
extension Parser {
    /// One statement. Returns none for `;`, and the statements of a nested `{ … }` spliced in: the script language
    /// has no block scope, so a bare block only groups.
    mutating func parseStatement() throws(CompileError) -> [Statement] {
        switch current.kind {
        case .punctuation(.semicolon):
            try advance()
            return []
        case .punctuation(.leftBrace):
            return try parseBlock()
        case .variable(let target):
            return [try parseAssignment(target)]
        case .identifier(let name):
            return [try parseKeywordOrCall(name)]
        case .end:
            throw error("unexpected end of file: expected a statement", at: current.location)
        default:
            throw error("expected a statement", at: current.location)
        }
    }

    private mutating func parseKeywordOrCall(_ name: String) throws(CompileError) -> Statement {
        let location = current.location
        switch name {
        case "if":
            return try parseIf()
        case "else":
            throw error("'else' without 'if'", at: location)
        case "switch":
            return try parseSwitch()
        case "while":
            try advance()
            let condition = try parseCondition(after: "while")
            return .whileLoop(condition: condition, body: try parseBody(), location: location)
        case "case", "default":
            throw error("'\(name)' outside a switch", at: location)
        case "return":
            try advance()
            let value = try parseReturnValue()
            try expect(.semicolon, after: "expected ';' after 'return'")
            return .returnStatement(value, location: location)
        case "exit", "drop", "break":
            try advance()
            // `exit()` and `drop()` are spelled both ways in the wild.
            if name != "break", current.isPunctuation(.leftParen) {
                try advance()
                try expect(.rightParen, here: "expected ')' after '\(name)('")
            }
            try expect(.semicolon, after: "expected ';' after '\(name)'")
            return switch name {
            case "exit": .exit(location: location)
            case "drop": .drop(location: location)
            default: .breakStatement(location: location)
            }
        default:
            try advance()
            guard current.isPunctuation(.leftParen) else {
                throw error("'\(name)' is not a statement; a function call needs parentheses: \(name)()",
                            at: location)
            }
            let call = try parseCall(name: name, at: location)
            try expect(.semicolon, after: "expected ';' after the function call")
            return .expression(.call(call))
        }
    }

    /// `return;`, `return();`, `return(n);`, `return n;`, `return -1;`.
    private mutating func parseReturnValue() throws(CompileError) -> Expression? {
        if current.isPunctuation(.semicolon) { return nil }
        if current.isPunctuation(.leftParen) {
            let open = current.location
            try advance()
            if current.isPunctuation(.rightParen) {
                try advance()
                return nil
            }
            let value = try parseExpression()
            try expect(.rightParen, here: "expected ')' to close the parenthesis opened at \(place(open))")
            return value
        }
        return try parseExpression()
    }

    /// `(condition)` after `if`, `while`, `switch`.
    private mutating func parseCondition(after keyword: String) throws(CompileError) -> Expression {
        try expect(.leftParen, after: "expected '(' after '\(keyword)'")
        let condition = try parseExpression()
        try expect(.rightParen, here: "expected ')' to close the condition of '\(keyword)'")
        return condition
    }

    /// A `{ block }` or a single statement, as the body of `if`, `else` and `while`.
    private mutating func parseBody() throws(CompileError) -> [Statement] {
        current.isPunctuation(.leftBrace) ? try parseBlock() : try parseStatement()
    }

    /// `if (c) s`, `if (c) { … } else if (d) { … } else { … }`. An `else` binds to the nearest `if`.
    private mutating func parseIf() throws(CompileError) -> Statement {
        let location = current.location
        try advance()
        let condition = try parseCondition(after: "if")
        let then = try parseBody()
        var otherwise: [Statement]? = nil
        if current.isIdentifier("else") {
            try advance()
            otherwise = current.isIdentifier("if") ? [try parseIf()] : try parseBody()
        }
        return .ifElse(condition: condition, then: then, otherwise: otherwise, location: location)
    }

    /// `switch (subject) { case "a": … break; case 2: … default: … }`. A case body runs to the next `case`,
    /// `default` or the closing brace; falling through without `break` is the runtime's business.
    private mutating func parseSwitch() throws(CompileError) -> Statement {
        let location = current.location
        try advance()
        let subject = try parseCondition(after: "switch")
        guard current.isPunctuation(.leftBrace) else {
            throw error("expected '{' to open the switch body", at: current.location)
        }
        let open = current.location
        try advance()
        var cases: [SwitchCase] = []
        var defaultBody: [Statement]? = nil
        while !current.isPunctuation(.rightBrace) {
            let caseLocation = current.location
            if current.isIdentifier("case") {
                try advance()
                let value = try parseCaseValue()
                try expect(.colon, after: "expected ':' after the case value")
                cases.append(SwitchCase(value: value, body: try parseCaseBody(), location: caseLocation))
            } else if current.isIdentifier("default") {
                guard defaultBody == nil else { throw error("a switch has only one 'default'", at: caseLocation) }
                try advance()
                try expect(.colon, after: "expected ':' after 'default'")
                defaultBody = try parseCaseBody()
            } else if current.isEnd {
                throw error("unexpected end of file: expected '}' to close the block opened at \(place(open))",
                            at: current.location)
            } else {
                throw error("expected 'case' or 'default' in the switch body", at: current.location)
            }
        }
        try advance()
        return .switchCase(subject: subject, cases: cases, defaultBody: defaultBody, location: location)
    }

    /// A string or an integer (also negative).
    private mutating func parseCaseValue() throws(CompileError) -> Expression {
        let location = current.location
        let negative = current.isPunctuation(.minus)
        if negative { try advance() }
        let value: Expression
        switch current.kind {
        case .string(let s) where !negative:
            value = .string(try s.template.get(), location: location)
        case .integer(let n):
            value = .integer(negative ? -n : n, location: location)
        default:
            throw error("expected a string or an integer after 'case'", at: current.location)
        }
        try advance()
        return value
    }

    private mutating func parseCaseBody() throws(CompileError) -> [Statement] {
        var body: [Statement] = []
        while !(current.isIdentifier("case") || current.isIdentifier("default") || current.isPunctuation(.rightBrace)
            || current.isEnd)
        {
            body += try parseStatement()
        }
        return body
    }

    /// `$var(x) = value;`, `:=`, `+=`.
    private mutating func parseAssignment(_ target: PseudoVariable) throws(CompileError) -> Statement {
        try advance()
        let op: AssignmentOperator
        switch current.kind {
        case .punctuation(.assign): op = .assign
        case .punctuation(.assignReplacing): op = .assignReplacing
        case .punctuation(.plusAssign): op = .append
        default:
            throw error("expected '=', ':=' or '+=' after '\(target.spelling)'", at: previousEnd)
        }
        try advance()
        let value = try parseExpression()
        try expect(.semicolon, after: "expected ';' after the assignment")
        return .assignment(target: target, op: op, value: value, location: target.location)
    }
}

extension PseudoVariable {
    /// `$name(argument)`, for messages.
    var spelling: String { "$" + name + (argument.map { "(\($0))" } ?? "") }
}
