import Engine
import Glibc
import SIP
import Script
import Synchronization

/// One shard's auth_db: the subscriber rows fetched before a request's route (`RequestPrefetching`), and the
/// nonce counts seen.
///
/// A request carrying Digest credentials is held — its bytes copied — while `SELECT <password_column> FROM
/// <table> WHERE username = … [AND domain = …]` runs on the shard's MariaDB pool (on the ring, with a timeout);
/// then it is routed from the start with the outcome as `current`, which `www_authorize`/`proxy_authorize` read.
/// A retransmission arriving meanwhile is dropped (the held copy will be answered). Nonce counts are kept per
/// shard: a replayed count is refused on the shard that saw it.
final class CredentialsService: RequestPrefetching, DatabaseRunnerDelegate {
    /// The subscriber tables the script's authorize calls name, in order (the first is fetched).
    static let tables = Mutex<[String]>([])

    enum Outcome: Equatable {
        case found(String)
        case notFound
        case failed
    }

    struct Fetched {
        var table: String
        var username: String
        var realm: String
        var outcome: Outcome
    }

    unowned let context: ScriptContext
    unowned let shard: Shard
    var runner: DatabaseRunner!
    /// The credentials of the request being routed, when it was held for them; nil otherwise.
    private(set) var current: Fetched?
    /// Set by an authorize that found the nonce stale, for the challenge that follows in the same route.
    var staleNow = false
    private var serial: UInt32 = UInt32.random(in: 0...UInt32.max)
    private let userColumn, domainColumn, passwordColumn, passwordColumn2: String
    private let useDomain: Bool
    private let timeout: UInt64
    /// auth_db's `credentials_cache` (a ringsip modparam, seconds; 0, the default, keeps none): how long a
    /// subscriber row fetched on this shard is used again without a query. A changed password takes effect
    /// after at most that long.
    private let cacheLifetime: UInt64
    private var cache: [String: (secret: String, until: UInt64)] = [:]
    private var nextCacheSweep: UInt64 = 0

    private struct Held {
        var bytes: [UInt8]
        var source: SocketAddress
        var socketIndex: Int
        var key: String
        var fetched: Fetched
        var done = false
    }

    private var held: [Int: Held] = [:]
    private var heldKeys: Set<String> = []
    private var nextToken = 1
    private var counts: [String: UInt32] = [:]

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        self.shard = shard
        func name(_ parameter: String, _ fallback: String) -> String {
            guard case .string(let value)? = configuration.moduleParameters["auth_db"]?[parameter],
                  !value.isEmpty, value.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return fallback }
            return value
        }
        userColumn = name("user_column", "username")
        domainColumn = name("domain_column", "domain")
        passwordColumn = name("password_column", "ha1")
        passwordColumn2 = name("password_column_2", "ha1b")
        useDomain = configuration.integer("auth_db", "use_domain", default: 0) == 1
        timeout = UInt64(configuration.asyncTimeout ?? 2000)
        cacheLifetime = UInt64(configuration.integer("auth_db", "credentials_cache", default: 0)) * 1000
        if let url = DatabaseModule.url(of: "auth_db", in: configuration),
           var settings = try? DatabaseRunner.Configuration(url: url) {
            settings.connections = configuration.integer("auth_db", "db_connections", default: 4)
            settings.component = .credentials
            runner = DatabaseRunner(shard: shard, configuration: settings, delegate: self)
        }
    }

    func nextSerial() -> UInt32 {
        serial &+= 1
        return serial
    }

    /// The first Digest credentials of the kind a check reads (Authorization for www, Proxy-Authorization for
    /// proxy) whose realm is `realm` (any realm when nil), and the header's index.
    static func credentials(in message: SIPMessage, proxy: Bool, realm: String?) -> (DigestCredentials, Int)? {
        var index = message.firstIndex(of: proxy ? .proxyAuthorization : .authorization)
        while let i = index {
            if !message.isHeaderRemoved(at: i), let digest = DigestCredentials(message.bytes(of: message.header(at: i).value)),
               realm == nil || digest.realm.lowercased() == realm!.lowercased() {
                return (digest, i)
            }
            index = message.nextIndex(sameKindAs: i)
        }
        return nil
    }

    // MARK: - Prefetching

    func prefetch(_ message: SIPMessage, bytes: UnsafeRawBufferPointer, source: SocketAddress, socketIndex: Int,
                  on shard: Shard) -> Bool {
        // Whatever the last request left is not this one's.
        current = nil
        staleNow = false
        guard let runner, let table = Self.tables.withLock({ $0.first }),
              let (digest, _) = Self.credentials(in: message, proxy: false, realm: nil)
                ?? Self.credentials(in: message, proxy: true, realm: nil) else { return false }
        // A retransmission of a request already held: the held copy will be answered.
        let key = message.string(message.callID ?? .absent) + "\u{0}\(message.cseq?.number ?? 0)\u{0}"
            + message.string(message.methodName) + "\u{0}\(source.hostString):\(source.port)"
        if heldKeys.contains(key) { return true }
        if cacheLifetime > 0, let hit = cache[Self.cacheKey(digest, table)] {
            if hit.until > shard.now {
                // Routed now, with the row fetched earlier.
                current = Fetched(table: table, username: digest.username, realm: digest.realm, outcome: .found(hit.secret))
                return false
            }
            cache[Self.cacheKey(digest, table)] = nil
        }
        // Not escapable (not valid in the connection's character set): not fetched; authorize answers -5.
        guard let user = runner.literal(digest.username),
              let realm = runner.literal(digest.realm) else { return false }
        var query = "SELECT \(digest.username.contains("@") ? passwordColumn2 : passwordColumn) FROM \(table) WHERE "
            + "\(userColumn) = \(user)"
        if useDomain { query += " AND \(domainColumn) = \(realm)" }
        let token = nextToken
        nextToken = nextToken == Int(Int32.max) ? 1 : nextToken + 1
        let fetched = Fetched(table: table, username: digest.username, realm: digest.realm, outcome: .failed)
        held[token] = Held(bytes: Array(bytes), source: source, socketIndex: socketIndex, key: key, fetched: fetched)
        heldKeys.insert(key)
        let submitted = query.withUTF8 {
            runner.submit(query: UnsafeRawBufferPointer($0), timeoutMilliseconds: timeout, token: UInt64(token))
        }
        if case .rejected = submitted {
            // The pool is full: route it now, as a database error (the script decides: 500, or a challenge).
            held[token]?.done = true
            context.continueNextTurn(for: self, value: token)
        }
        return true
    }

    func queryCompleted(token: UInt64, _ completion: borrowing DatabaseCompletion, on shard: Shard) {
        let token = Int(token)
        guard held[token] != nil else { return }
        var outcome = Outcome.failed
        if completion.code == .completed {
            if completion.rows > 0 && completion.columns > 0, let value = completion.value(row: 0, column: 0) {
                outcome = .found(String(decoding: value, as: UTF8.self))
            } else {
                outcome = .notFound
            }
        }
        held[token]?.fetched.outcome = outcome
        held[token]?.done = true
        if cacheLifetime > 0, case .found(let secret) = outcome, let fetched = held[token]?.fetched {
            if cache.count >= 100_000 && shard.now >= nextCacheSweep {
                cache = cache.filter { $0.value.until > shard.now }
                nextCacheSweep = shard.now + 1000
            }
            if cache.count < 100_000 {
                cache[fetched.username + "\u{0}" + fetched.realm + "\u{0}" + fetched.table] = (secret, shard.now + cacheLifetime)
            }
        }
        // Routed at the end of the turn, from the loop: never inside the runner's delivery.
        context.continueNextTurn(for: self, value: token)
    }

    func nextTurn(value token: Int, on shard: Shard) {
        guard held[token]?.done == true, let request = held.removeValue(forKey: token) else { return }
        heldKeys.remove(request.key)
        current = request.fetched
        staleNow = false
        defer {
            current = nil
            staleNow = false
        }
        request.bytes.withUnsafeBytes { context.routeHeld?($0, request.source, request.socketIndex) }
    }

    static func cacheKey(_ digest: DigestCredentials, _ table: String) -> String {
        digest.username + "\u{0}" + digest.realm + "\u{0}" + table
    }

    /// Accepts a nonce count only when it is higher than any seen for the nonce on this shard.
    func acceptCount(_ count: UInt32, for nonce: String) -> Bool {
        if let last = counts[nonce], count <= last { return false }
        if counts.count >= 100_000 {
            // Forget the counts of nonces that have expired (their first 8 hex digits): those are refused anyway.
            let now = Int(time(nil))
            counts = counts.filter { key, _ in UInt32(key.prefix(8), radix: 16).map { Int($0) >= now } ?? false }
            if counts.count >= 100_000 { return false }
        }
        counts[nonce] = count
        return true
    }

    // MARK: - ShardService

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        guard let runner, OpsPacking.component(of: id) == .credentials else { return false }
        runner.operationCompleted(id, result: result, flags: flags)
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        guard let runner, OpsPacking.component(ofTimer: payload) == .credentials else { return false }
        runner.timerFired(payload: payload)
        return true
    }

    func stopping(on shard: Shard) {
        runner?.shutdown()
    }
}
