import Engine

/// What a database query ended with; the script layer puts `rawValue` in `$rc`.
///
/// OpenSIPS' avp_db_query returns 1 on success and a negative code on failure; ringsip keeps 1 for a query the
/// server ran (with or without rows: `DatabaseCompletion.rows` says how many) and gives each failure its own
/// negative code.
public enum DatabaseCode: Int32, Sendable {
    /// The server ran the query; the result set (possibly empty, or none for INSERT/UPDATE) is in the completion.
    case completed = 1
    /// The server refused it (syntax, unknown table, permission…): `DatabaseCompletion.message` holds the
    /// server's text and `errorNumber` its number. Also a connection lost twice (first try and its retry).
    case failed = -1
    /// Its timeout expired, waiting in the queue or running; a running query's connection was closed (the
    /// server abandons the query when it drops) and is replaced.
    case timeout = -2
    /// Every connection is busy and the wait queue is full: refused at once.
    case queueFull = -3
}

/// The outcome of `DatabaseRunner.submit`.
public enum DatabaseSubmission: Equatable, Sendable {
    /// The query runs or waits for a free connection; the delegate hears of it exactly once, unless cancelled.
    case accepted(DatabaseHandle)
    /// Refused at once (`.queueFull`, or `.failed` when the shard's timer wheel is full); no delegate call follows.
    case rejected(DatabaseCode)
}

/// Names one submitted query: its request slot and that slot's generation, so a late cancel does nothing.
public struct DatabaseHandle: Equatable, Sendable {
    public let slot: Int32
    public let generation: UInt16

    public init(slot: Int32, generation: UInt16) {
        self.slot = slot
        self.generation = generation
    }
}

/// One finished query, seen by the delegate.
///
/// - Invariant: every pointer (`message`, the values) points into the runner's scratch memory or the
///   connection's MYSQL handle, valid only during the delegate call; whatever must outlive it is copied.
public struct DatabaseCompletion: ~Copyable {
    public let code: DatabaseCode
    /// The server's (or Connector/C's, 2000–2999) error number when `code == .failed`, else 0.
    public let errorNumber: UInt32
    /// The error text when `code == .failed`, empty otherwise.
    public let message: UnsafeRawBufferPointer
    /// Rows and columns of the result set; 0 × 0 when the statement returns none (INSERT, UPDATE…).
    public let rows: Int
    public let columns: Int
    /// mysql_affected_rows for statements without a result set.
    public let affectedRows: UInt64
    /// Per cell, row-major: (offset into `values`, length), length -1 for SQL NULL.
    let cells: UnsafePointer<Int>?
    let values: UnsafeRawPointer?

    /// The bytes of one cell, nil when it is SQL NULL (an empty string is an empty, non-nil buffer).
    /// - Precondition: `row < rows`, `column < columns`.
    public func value(row: Int, column: Int) -> UnsafeRawBufferPointer? {
        precondition(row >= 0 && row < rows && column >= 0 && column < columns)
        let cell = 2 * (row * columns + column)
        let length = cells![cell + 1]
        if length < 0 { return nil }
        return UnsafeRawBufferPointer(start: values.map { $0 + cells![cell] }, count: length)
    }
}

/// Receives finished queries, on the shard's thread. The delegate may submit or cancel from inside the call
/// (a submission made there starts once the call has returned).
public protocol DatabaseRunnerDelegate: AnyObject {
    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard)
}

/// A `db_url` that cannot be used, found at configuration time.
public struct DatabaseConfigurationError: Error, Equatable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// `mysql://user:password@IP[:port]/database`, as OpenSIPS' db_url. The host must be an IPv4 or IPv6 address
/// (IPv6 in brackets): Connector/C resolves a host name with a blocking getaddrinfo, which would stall the
/// shard. user, password and database may be percent-encoded.
public struct DatabaseURL: Equatable, Sendable {
    public var user: String
    public var password: String
    public var host: String
    public var port: UInt32
    public var database: String

    public init(_ text: String) throws(DatabaseConfigurationError) {
        let scheme = "mysql://"
        guard text.hasPrefix(scheme) else {
            throw DatabaseConfigurationError(reason: "db_url must start with mysql://: \(text)")
        }
        var rest = Substring(text.dropFirst(scheme.count))
        guard let at = rest.lastIndex(of: "@") else {
            throw DatabaseConfigurationError(reason: "db_url needs user[:password]@address: \(text)")
        }
        let credentials = rest[..<at]
        rest = rest[rest.index(after: at)...]
        if let colon = credentials.firstIndex(of: ":") {
            user = try Self.decode(credentials[..<colon])
            password = try Self.decode(credentials[credentials.index(after: colon)...])
        } else {
            user = try Self.decode(credentials)
            password = ""
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw DatabaseConfigurationError(reason: "db_url needs /database after the address: \(text)")
        }
        var authority = rest[..<slash]
        database = try Self.decode(rest[rest.index(after: slash)...])
        guard !database.isEmpty else {
            throw DatabaseConfigurationError(reason: "db_url names no database: \(text)")
        }
        port = 3306
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw DatabaseConfigurationError(reason: "db_url has an unclosed [ in its address: \(text)")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            authority = authority[authority.index(after: close)...]
            if authority.hasPrefix(":") { port = try Self.port(authority.dropFirst(), text) }
            else if !authority.isEmpty { throw DatabaseConfigurationError(reason: "db_url: junk after ]: \(text)") }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            port = try Self.port(authority[authority.index(after: colon)...], text)
        } else {
            host = String(authority)
        }
        guard SocketAddress(numericHost: host, port: UInt16(port)) != nil else {
            throw DatabaseConfigurationError(reason: "db_url host must be an IP address, not \"\(host)\" (a name "
                + "would be resolved with a blocking lookup on the shard): \(text)")
        }
    }

    private static func port(_ text: Substring, _ url: String) throws(DatabaseConfigurationError) -> UInt32 {
        guard let port = UInt32(text), port > 0, port < 65536 else {
            throw DatabaseConfigurationError(reason: "db_url has a bad port \"\(text)\": \(url)")
        }
        return port
    }

    private static func decode(_ text: Substring) throws(DatabaseConfigurationError) -> String {
        var bytes: [UInt8] = []
        var utf8 = text.utf8[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%") {
                let hex = utf8.prefix(2)
                guard hex.count == 2, let value = UInt8(String(decoding: hex, as: UTF8.self), radix: 16) else {
                    throw DatabaseConfigurationError(reason: "db_url has a bad %-escape in \"\(text)\"")
                }
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
