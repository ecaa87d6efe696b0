/// The SQL acc writes, and the form it retries with when it cannot know whether a row was written.
enum AccStatements {
    /// `head` (`INSERT INTO t (a, b) VALUES `) and one `values` tuple (`('x', FROM_UNIXTIME(1))`) as an INSERT that
    /// writes nothing when an equal row is there already (`<=>`: NULLs compare equal):
    /// `INSERT INTO t (a, b) SELECT 'x', FROM_UNIXTIME(1) FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM t WHERE
    /// a <=> 'x' AND b <=> FROM_UNIXTIME(1))`. A row whose batch lost its connection mid-statement may have been
    /// committed: it is sent again in this form, so it is not written twice. Nil when the text is not acc's own.
    static func guarded(head: String, values: String) -> String? {
        let prefix = "INSERT INTO "
        guard head.hasPrefix(prefix), let open = head.firstIndex(of: "("), let close = head.lastIndex(of: ")"),
              open < close else { return nil }
        let table = head[head.index(head.startIndex, offsetBy: prefix.count)..<open].trimming(" ")
        let columns = head[head.index(after: open)..<close].split(separator: ",").map { $0.trimming(" ") }
        guard let fields = fields(of: values), fields.count == columns.count, !columns.isEmpty else { return nil }
        let conditions = zip(columns, fields).map { "\($0) <=> \($1)" }.joined(separator: " AND ")
        return "INSERT INTO \(table) (\(columns.joined(separator: ", "))) SELECT \(fields.joined(separator: ", ")) "
            + "FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM \(table) WHERE \(conditions))"
    }

    /// The top-level fields of a tuple acc wrote: quoted literals (with the connector's backslash escapes), numbers,
    /// NULL, function calls. Nil when the parentheses or quotes do not close.
    static func fields(of tuple: String) -> [String]? {
        let bytes = Array(tuple.utf8)
        guard bytes.first == UInt8(ascii: "("), bytes.last == UInt8(ascii: ")") else { return nil }
        var fields: [String] = []
        var start = 1, depth = 0, quoted = false, escaped = false
        for i in 1..<(bytes.count - 1) {
            let byte = bytes[i]
            if quoted {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "'") { quoted = false }
                continue
            }
            switch byte {
            case UInt8(ascii: "'"): quoted = true
            case UInt8(ascii: "("): depth += 1
            case UInt8(ascii: ")"):
                depth -= 1
                if depth < 0 { return nil }
            case UInt8(ascii: ",") where depth == 0:
                fields.append(String(decoding: bytes[start..<i], as: UTF8.self).trimming(" "))
                start = i + 1
            default: break
            }
        }
        guard !quoted, depth == 0 else { return nil }
        fields.append(String(decoding: bytes[start..<(bytes.count - 1)], as: UTF8.self).trimming(" "))
        return fields
    }
}
