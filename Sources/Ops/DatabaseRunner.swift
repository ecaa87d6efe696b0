import CMariaDB
import Engine
import Glibc

/// Runs MariaDB queries for `avp_db_query` / `sql_query` without ever blocking the shard: Connector/C's
/// non-blocking API (`mysql_real_connect_start`, `mysql_real_query_start`, `mysql_store_result_start` and
/// their `_cont`) with each connection's socket polled on the shard's ring, and every deadline (connect,
/// query, reconnect back-off) on the shard's timer wheel. One runner per shard, with its own pool.
///
/// A query runs on a free connection or waits in a FIFO inside the shard; once that is full a submission
/// is refused at once (`.queueFull`). Never a silent fallback to blocking.
///
/// - A query that times out closes its connection (the server abandons a query whose client is gone) and
///   the connection is replaced at once.
/// - A query that finds its connection dead (`CR_SERVER_GONE_ERROR`, `CR_SERVER_LOST`: the server restarted,
///   or `wait_timeout` closed it) is retried once, on a connection opened after the failure — unless the
///   configuration turns that off (`retriesLostQueries`).
/// - A connection that cannot be opened is retried with exponential back-off
///   (`reconnectMinimumMilliseconds` doubling to `reconnectMaximumMilliseconds`).
///
/// - Invariant: used only on its shard's thread. At most one poll per connection is in flight, named by the
///   connection's generation; closing a connection moves its generation on, so a late poll completion or
///   timer of the old connection is dropped, and the descriptor number (which the next connection may reuse)
///   is never confused.
/// - Note: a submission copies the query into its request slot's grow-only buffer and the result rows into a
///   grow-only scratch area, so in steady state the runner allocates nothing in Swift. Connector/C allocates
///   inside `mysql_store_result` (the MYSQL_RES), once per query.
public final class DatabaseRunner {
    public struct Configuration: Sendable {
        public var url: DatabaseURL
        /// Connections this shard keeps open (and queries running at once).
        public var connections = 4
        /// Queries waiting for a free connection: at most `connections + queueCapacity` queries are in the
        /// runner at once (running or waiting); beyond it a submission fails with `.queueFull`.
        public var queueCapacity = 1024
        /// How long the TCP connect and MariaDB handshake may take before the attempt is abandoned.
        public var connectTimeoutMilliseconds: UInt64 = 3000
        public var reconnectMinimumMilliseconds: UInt64 = 100
        public var reconnectMaximumMilliseconds: UInt64 = 5000
        /// Whose completions and timers are this runner's: `.database`, or `.secondDatabase` for a second
        /// pool on the same shard.
        public var component = OpsComponent.database
        /// A query whose connection is lost (`CR_SERVER_LOST`, `CR_SERVER_GONE_ERROR`) runs once more on a fresh
        /// connection. The server may have run it before the connection went (a MariaDB shutting down finishes
        /// its statements first), so a writer that must not write twice turns this off and handles the failure
        /// itself (acc: `AccStatements.guarded`).
        public var retriesLostQueries = true

        public init(url: DatabaseURL) {
            self.url = url
        }

        /// - Throws: `DatabaseConfigurationError` for a malformed URL or a host that is not an IP address.
        public init(url: String) throws(DatabaseConfigurationError) {
            self.url = try DatabaseURL(url)
        }
    }

    enum ConnectionState: UInt8 {
        /// No MYSQL handle; waiting for the back-off timer (or never opened).
        case down
        case connecting
        case idle
        /// `mysql_real_query_start/_cont` in progress, for `request`.
        case querying
        /// `mysql_store_result_start/_cont` in progress, for `request`.
        case storing
    }

    struct Connection {
        var mysql: UnsafeMutablePointer<MYSQL>?
        var state = ConnectionState.down
        var generation: UInt16 = 0
        /// The connect timeout while connecting, the back-off timer while down.
        var timer: TimerHandle?
        var backoff: UInt64 = 0
        var request: Int32 = -1
        var pollInFlight = false
        /// Which connect this is (runner-wide sequence), so a retried query can insist on a newer connection.
        var serial: UInt64 = 0
    }

    enum RequestState: UInt8 { case free, queued, running, delivering }

    struct Request {
        var state = RequestState.free
        var generation: UInt16 = 0
        var token: UInt64 = 0
        var timer: TimerHandle?
        var query: UnsafeMutableRawPointer?
        var queryCapacity = 0
        var queryLength = 0
        /// Retried after a dead connection: it may run only on a connection whose serial is above `retryAfter`.
        var retried = false
        var retryAfter: UInt64 = 0
    }

    /// Connection timers set this bit in the timer payload's slot field; request timers leave it clear.
    static let connectionTimerBit = 1 << 31

    public let configuration: Configuration
    unowned let shard: Shard
    unowned let delegate: any DatabaseRunnerDelegate
    let connectionCount: Int
    let connections: UnsafeMutablePointer<Connection>
    let capacity: Int
    let requests: UnsafeMutablePointer<Request>
    var lists: SlotLists
    /// NUL-terminated copies of the URL's parts: Connector/C reads them while a connect is suspended.
    let host, user, password, database: UnsafeMutablePointer<CChar>
    var nextSerial: UInt64 = 1
    /// Result cells of the query being delivered.
    let cells = DatabaseResultCells()
    /// True while the delegate is called. The delegate records the result and returns — the script's resume route
    /// runs at the end of the shard's loop turn — so it never calls back into the runner (`submit`, `cancel`
    /// trap if it does): no re-entrancy to guard against.
    var delivering = false

    public var queued: Int { lists.queued }
    /// Queries running on a connection now.
    public internal(set) var running = 0
    /// Completions and timers whose connection or request had moved on (counted, dropped).
    public internal(set) var staleCompletions = 0
    /// Connections opened successfully since the runner started (replacements included).
    public internal(set) var connectsSucceeded = 0
    public internal(set) var connectsFailed = 0

    /// Connector/C's one-time, process-wide set-up (not thread-safe itself; Swift runs this exactly once).
    static let libraryReady: Bool = CMaria_library_init() == 0

    /// Opens the pool's connections at once, without blocking.
    /// - Precondition: created on the shard's thread (in `ShardHandler.started`); the delegate outlives it.
    public init(shard: Shard, configuration: Configuration, delegate: any DatabaseRunnerDelegate) {
        precondition(configuration.connections > 0 && configuration.queueCapacity >= 0)
        precondition(Self.libraryReady, "mysql_library_init failed")
        self.shard = shard
        self.configuration = configuration
        self.delegate = delegate
        connectionCount = configuration.connections
        capacity = configuration.connections + configuration.queueCapacity
        precondition(capacity < OpsPacking.maximumSlots && connectionCount < OpsPacking.maximumSlots)
        connections = .allocate(capacity: connectionCount)
        connections.initialize(repeating: Connection(), count: connectionCount)
        requests = .allocate(capacity: capacity)
        requests.initialize(repeating: Request(), count: capacity)
        lists = SlotLists(capacity: capacity)
        host = strdup(configuration.url.host)
        user = strdup(configuration.url.user)
        password = strdup(configuration.url.password)
        database = strdup(configuration.url.database)
        for c in 0..<connectionCount { connect(c) }
    }

    deinit {
        literalScratch?.deallocate()
        for c in 0..<connectionCount where connections[c].mysql != nil { close(c) }
        for i in 0..<capacity { requests[i].query?.deallocate() }
        connections.deallocate()
        requests.deallocate()
        lists.deallocate()
        free(host)
        free(user)
        free(password)
        free(database)
    }

    /// Connections open and usable now (idle or running a query).
    public var connected: Int {
        (0..<connectionCount).reduce(0) { n, c in
            n + (connections[c].state == .idle || connections[c].state == .querying
                 || connections[c].state == .storing ? 1 : 0)
        }
    }

    // MARK: - Submitting

    /// Runs `query` (one statement, not NUL-terminated, copied) with a timeout (0: none — the script layer
    /// always gives one). The delegate later gets `token` back with the outcome.
    public func submit(query: UnsafeRawBufferPointer, timeoutMilliseconds: UInt64, token: UInt64) -> DatabaseSubmission {
        precondition(!delivering, "DatabaseRunner.submit called from inside its delegate")
        // Slots are `connections + queueCapacity`: a free slot means a free connection or room in the queue
        // (counted while connections are still opening, too).
        guard let index = lists.takeFree() else { return .rejected(.queueFull) }
        requests[index].token = token
        if requests[index].queryCapacity < query.count {
            requests[index].query?.deallocate()
            let size = max(query.count, 256)
            requests[index].query = .allocate(byteCount: size, alignment: 8)
            requests[index].queryCapacity = size
        }
        if query.count > 0 { requests[index].query!.copyMemory(from: query.baseAddress!, byteCount: query.count) }
        requests[index].queryLength = query.count
        if timeoutMilliseconds > 0 {
            let payload = OpsPacking.timerPayload(configuration.component, slot: index, generation: requests[index].generation)
            guard let timer = shard.schedule(after: timeoutMilliseconds, payload: payload) else {
                release(index)
                return .rejected(.failed)
            }
            requests[index].timer = timer
        }
        let handle = DatabaseHandle(slot: Int32(index), generation: requests[index].generation)
        enqueue(index, atFront: false)
        // Started here: a query that fails as it starts is delivered inside `submit`, which the script's
        // delegate takes (it only records the result; the resume route runs at the end of the loop turn).
        pump()
        return .accepted(handle)
    }

    /// Stops a query without reporting it (its suspension gave up): a queued one leaves the queue, a running
    /// one's connection is closed and replaced. A handle whose query already finished is ignored.
    public func cancel(_ handle: DatabaseHandle) {
        precondition(!delivering, "DatabaseRunner.cancel called from inside its delegate")
        let index = Int(handle.slot)
        guard index >= 0, index < capacity, requests[index].generation == handle.generation else { return }
        switch requests[index].state {
        case .queued:
            dequeue(index)
            release(index)
        case .running:
            guard let c = connectionRunning(index) else { return }
            connections[c].request = -1
            running -= 1
            release(index)
            replace(c)
            pump()
        case .free, .delivering:
            return
        }
    }

    /// Escapes `bytes` for use inside a quoted SQL string literal (`'…'`) with `mysql_real_escape_string`, on an
    /// open connection of the pool, so the server's character set and `NO_BACKSLASH_ESCAPES` are honoured.
    /// With no connection open, `mysql_escape_string` (utf8mb4 is ASCII-transparent, so quotes and
    /// backslashes are still escaped). Writes a NUL after the result.
    /// - Returns: the escaped length (without the NUL), or nil when `out` is smaller than
    ///   `2 * bytes.count + 1` or the input is not valid in the connection's character set.
    /// `text` as a quoted SQL string literal (`'…'`, escaped as `escape` does); nil when it is longer than 64 KiB or
    /// not valid in the connection's character set.
    public func literal(_ text: String) -> String? {
        var out: [UInt8] = []
        guard appendLiteral(text, to: &out) else { return nil }
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends `text` as a quoted SQL string literal to `out`; false (nothing appended) when it is longer than
    /// 64 KiB or not valid in the connection's character set.
    public func appendLiteral(_ text: String, to out: inout [UInt8]) -> Bool {
        var text = text
        let scratch = literalBuffer()
        guard let length = text.withUTF8({ escape(UnsafeRawBufferPointer($0), into: scratch) }) else { return false }
        out.append(UInt8(ascii: "'"))
        out.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<length]))
        out.append(UInt8(ascii: "'"))
        return true
    }

    /// Room for any one field escaped (twice its bytes, plus a NUL): no field of a datagram is longer than 64 KiB.
    /// Made at the first literal: most runners never quote text.
    private var literalScratch: UnsafeMutableRawBufferPointer?

    private func literalBuffer() -> UnsafeMutableRawBufferPointer {
        if let scratch = literalScratch { return scratch }
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * 65_536 + 1, alignment: 8)
        literalScratch = scratch
        return scratch
    }

    public func escape(_ bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int? {
        guard out.count >= 2 * bytes.count + 1, let to = out.baseAddress?.assumingMemoryBound(to: CChar.self)
        else { return nil }
        guard bytes.count > 0, let from = bytes.baseAddress?.assumingMemoryBound(to: CChar.self) else {
            to[0] = 0
            return 0
        }
        let length: UInt
        if let c = (0..<connectionCount).first(where: {
            connections[$0].state == .idle || connections[$0].state == .querying || connections[$0].state == .storing
        }) {
            length = mysql_real_escape_string(connections[c].mysql, to, from, UInt(bytes.count))
        } else {
            length = mysql_escape_string(to, from, UInt(bytes.count))
        }
        return length == UInt.max ? nil : Int(length)
    }

    // MARK: - Queue and requests

    func enqueue(_ index: Int, atFront: Bool) {
        requests[index].state = .queued
        lists.enqueue(index, atFront: atFront)
    }

    func dequeue(_ index: Int) {
        lists.dequeue(index)
    }

    /// Returns a request slot to the free list; its generation moves on, so late timers and handles miss it.
    func release(_ index: Int) {
        if let timer = requests[index].timer { shard.cancel(timer) }
        let query = requests[index].query, queryCapacity = requests[index].queryCapacity
        let generation = requests[index].generation &+ 1
        requests[index] = Request()
        requests[index].query = query
        requests[index].queryCapacity = queryCapacity
        requests[index].generation = generation
        lists.putFree(index)
    }

    func connectionRunning(_ index: Int) -> Int? {
        (0..<connectionCount).first { connections[$0].request == Int32(index) }
    }

    /// An idle connection that may run `request` (nil: any request), or nil.
    func idleConnection(for request: Int?) -> Int? {
        (0..<connectionCount).first { c in
            connections[c].state == .idle
                && (request.map { !requests[$0].retried || connections[c].serial > requests[$0].retryAfter } ?? true)
        }
    }

    /// Starts queued queries on idle connections, oldest first (a retried query skips connections as old as
    /// the one it failed on).
    func pump() {
        var cursor = lists.firstQueued
        while let index = cursor {
            if let c = idleConnection(for: index) {
                dequeue(index)
                startQuery(c, index)
                // A query can end inside startQuery (a dead connection fails at once), which re-queues or
                // delivers and pumps again: the queue may have changed under the cursor, so walk it anew.
                cursor = lists.firstQueued
            } else if idleConnection(for: nil) == nil {
                return
            } else {
                cursor = lists.queued(after: index)
            }
        }
    }

    // MARK: - Timers

    /// Forward every `ShardHandler.timerFired` whose `OpsPacking.component(ofTimer:)` is `configuration.component`.
    public func timerFired(payload: UInt64) {
        let (slot, generation) = OpsPacking.slotAndGeneration(ofTimer: payload)
        if slot & Self.connectionTimerBit != 0 {
            let c = slot & ~Self.connectionTimerBit
            guard c < connectionCount, connections[c].generation == generation, connections[c].timer != nil else {
                staleCompletions += 1
                return
            }
            connections[c].timer = nil
            switch connections[c].state {
            case .connecting:
                close(c)
                connectFailed(c)
            case .down:
                connect(c)
            case .idle, .querying, .storing:
                staleCompletions += 1
            }
            return
        }
        guard slot < capacity, requests[slot].generation == generation else {
            staleCompletions += 1
            return
        }
        requests[slot].timer = nil
        switch requests[slot].state {
        case .queued:
            dequeue(slot)
            deliverWithoutResult(slot, code: .timeout)
            pump()
        case .running:
            // The server abandons a query whose client is gone: closing the connection is the cancel.
            if let c = connectionRunning(slot) {
                connections[c].request = -1
                running -= 1
                close(c)
                deliverWithoutResult(slot, code: .timeout)
                if connections[c].state == .down && connections[c].mysql == nil && connections[c].timer == nil {
                    connect(c)
                }
            } else {
                deliverWithoutResult(slot, code: .timeout)
            }
            pump()
        case .free, .delivering:
            staleCompletions += 1
        }
    }

    // MARK: - Shutdown

    /// Closes every connection and drops every query without reporting it. For `ShardHandler.stopping`.
    public func shutdown() {
        for c in 0..<connectionCount {
            if connections[c].request >= 0 {
                let index = Int(connections[c].request)
                running -= 1
                release(index)
            }
            close(c)
        }
        while let index = lists.dequeueFirst() {
            release(index)
        }
    }
}
