import CMariaDB
import Engine
import Glibc

/// The pool's connections on the ring: opening them (a non-blocking connect driven by polls), running a query
/// and storing its result, and handing each result to the delegate.
extension DatabaseRunner {
    // MARK: - Connections

    func id(_ c: Int) -> OperationID {
        OpsPacking.operationID(configuration.component, slot: c, channel: 0, generation: connections[c].generation)
    }

    func connectionTimer(_ c: Int, after milliseconds: UInt64) {
        let payload = OpsPacking.timerPayload(configuration.component, slot: Self.connectionTimerBit | c,
                                              generation: connections[c].generation)
        connections[c].timer = shard.schedule(after: milliseconds, payload: payload)
    }

    func cancelConnectionTimer(_ c: Int) {
        if let timer = connections[c].timer { shard.cancel(timer) }
        connections[c].timer = nil
    }

    /// Opens connection `c`: a fresh MYSQL handle in non-blocking mode, the connect started, its timeout set.
    func connect(_ c: Int) {
        precondition(connections[c].mysql == nil)
        guard let mysql = mysql_init(nil) else {
            connectFailed(c)
            return
        }
        _ = mysql_options(mysql, MYSQL_OPT_NONBLOCK, nil)
        _ = mysql_options(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        connections[c].mysql = mysql
        connections[c].state = .connecting
        connectionTimer(c, after: configuration.connectTimeoutMilliseconds)
        var result: UnsafeMutablePointer<MYSQL>?
        let status = mysql_real_connect_start(&result, mysql, host, user, password, database,
                                              configuration.url.port, nil, 0)
        if status != 0 { wait(c, status) } else { connectEnded(c, succeeded: result != nil) }
    }

    func connectEnded(_ c: Int, succeeded: Bool) {
        cancelConnectionTimer(c)
        guard succeeded else {
            close(c)
            connectFailed(c)
            return
        }
        connections[c].state = .idle
        connections[c].backoff = 0
        connections[c].serial = nextSerial
        nextSerial += 1
        connectsSucceeded += 1
        pump()
    }

    /// The connect failed or timed out: try again after the back-off, doubled each time up to the maximum.
    func connectFailed(_ c: Int) {
        connectsFailed += 1
        connections[c].state = .down
        let backoff = connections[c].backoff == 0 ? configuration.reconnectMinimumMilliseconds
            : min(connections[c].backoff * 2, configuration.reconnectMaximumMilliseconds)
        connections[c].backoff = backoff
        connectionTimer(c, after: backoff)
    }

    /// Closes connection `c` at once, whatever it is doing. The socket is shut down first, so `mysql_close`'s
    /// COM_QUIT fails at once instead of waiting on a stuck peer; a poll in flight is cancelled, and the
    /// generation moves on so its completion is dropped.
    func close(_ c: Int) {
        cancelConnectionTimer(c)
        if let mysql = connections[c].mysql {
            let socket = mysql_get_socket(mysql)
            if socket >= 0 { _ = Glibc.shutdown(socket, Int32(SHUT_RDWR)) }
            if connections[c].pollInFlight { shard.cancelOperations(id: id(c)) }
            // Aborts a suspended non-blocking call too (Connector/C frees its coroutine).
            mysql_close(mysql)
        }
        connections[c].mysql = nil
        connections[c].pollInFlight = false
        connections[c].generation &+= 1
        connections[c].state = .down
        connections[c].request = -1
    }

    /// Closes connection `c` and opens a new one at once (after a timeout, a cancel or a lost server).
    func replace(_ c: Int) {
        close(c)
        connect(c)
    }

    /// Polls the connection's socket for what Connector/C waits on (`MYSQL_WAIT_READ/WRITE/EXCEPT`). Its own
    /// `MYSQL_WAIT_TIMEOUT` is not used: every deadline is on the wheel.
    func wait(_ c: Int, _ status: Int32) {
        var events: Int32 = 0
        if status & MYSQL_WAIT_READ != 0 { events |= Int32(POLLIN) }
        if status & MYSQL_WAIT_WRITE != 0 { events |= Int32(POLLOUT) }
        if status & MYSQL_WAIT_EXCEPT != 0 { events |= Int32(POLLPRI) }
        if events == 0 { events = Int32(POLLIN) }
        connections[c].pollInFlight = true
        shard.submitPoll(fd: mysql_get_socket(connections[c].mysql), events: Int16(events), id: id(c))
    }

    // MARK: - Completions

    /// Forward every `ShardHandler.operationCompleted` whose `OpsPacking.component(of:)` is `configuration.component`.
    public func operationCompleted(_ operation: OperationID, result: Int32, flags: UInt32) {
        let (c, _) = OpsPacking.slotAndChannel(of: operation)
        guard c < connectionCount, connections[c].generation == operation.generation, connections[c].pollInFlight
        else {
            staleCompletions += 1
            return
        }
        connections[c].pollInFlight = false
        var ready: Int32 = 0
        if result < 0 {
            // The poll itself failed: let Connector/C try its I/O and find the error.
            ready = MYSQL_WAIT_READ | MYSQL_WAIT_WRITE
        } else {
            if result & Int32(POLLIN | POLLHUP | POLLERR) != 0 { ready |= MYSQL_WAIT_READ }
            if result & Int32(POLLOUT | POLLHUP | POLLERR) != 0 { ready |= MYSQL_WAIT_WRITE }
            if result & Int32(POLLPRI) != 0 { ready |= MYSQL_WAIT_EXCEPT }
        }
        let mysql = connections[c].mysql
        switch connections[c].state {
        case .connecting:
            var connected: UnsafeMutablePointer<MYSQL>?
            let status = mysql_real_connect_cont(&connected, mysql, ready)
            if status != 0 { wait(c, status) } else { connectEnded(c, succeeded: connected != nil) }
        case .querying:
            var error: Int32 = 0
            let status = mysql_real_query_cont(&error, mysql, ready)
            if status != 0 { wait(c, status) } else { queryEnded(c, error: error) }
        case .storing:
            var result: UnsafeMutablePointer<MYSQL_RES>?
            let status = mysql_store_result_cont(&result, mysql, ready)
            if status != 0 { wait(c, status) } else { storeEnded(c, result) }
        case .down, .idle:
            staleCompletions += 1
        }
    }

    func startQuery(_ c: Int, _ index: Int) {
        requests[index].state = .running
        connections[c].request = Int32(index)
        connections[c].state = .querying
        running += 1
        var error: Int32 = 0
        let status = mysql_real_query_start(&error, connections[c].mysql,
                                            requests[index].query?.assumingMemoryBound(to: CChar.self),
                                            UInt(requests[index].queryLength))
        if status != 0 { wait(c, status) } else { queryEnded(c, error: error) }
    }

    func queryEnded(_ c: Int, error: Int32) {
        guard error == 0 else {
            failed(c)
            return
        }
        connections[c].state = .storing
        var result: UnsafeMutablePointer<MYSQL_RES>?
        let status = mysql_store_result_start(&result, connections[c].mysql)
        if status != 0 { wait(c, status) } else { storeEnded(c, result) }
    }

    func storeEnded(_ c: Int, _ result: UnsafeMutablePointer<MYSQL_RES>?) {
        let mysql = connections[c].mysql
        guard let result else {
            // No result set: a statement without one (INSERT…), or an error while reading it.
            if mysql_field_count(mysql) != 0 || mysql_errno(mysql) != 0 {
                failed(c)
            } else {
                finish(c, code: .completed, errorNumber: 0, rows: 0, columns: 0, affectedRows: mysql_affected_rows(mysql))
            }
            return
        }
        // After mysql_store_result the rows are in memory: fetching them never touches the socket.
        let columns = Int(mysql_num_fields(result))
        var rows = 0
        cells.removeAll()
        while let row = mysql_fetch_row(result) {
            let lengths = mysql_fetch_lengths(result)!
            for column in 0..<columns { cells.append(row[column], count: Int(lengths[column])) }
            rows += 1
        }
        mysql_free_result(result)
        finish(c, code: .completed, errorNumber: 0, rows: rows, columns: columns, affectedRows: 0)
    }

    /// Whether a client error means the connection is gone (the query may run again on a fresh one), not
    /// that the server refused the query.
    static func isConnectionLost(_ number: UInt32) -> Bool {
        number == UInt32(CR_SERVER_GONE_ERROR) || number == UInt32(CR_SERVER_LOST)
            || number == UInt32(CR_SERVER_LOST_EXTENDED)
    }

    /// The query failed on connection `c`: a lost connection retries it once on a fresh one; otherwise the
    /// server's error is reported. Either way a lost connection is replaced.
    func failed(_ c: Int) {
        let number = mysql_errno(connections[c].mysql)
        let lost = Self.isConnectionLost(number)
        let index = Int(connections[c].request)
        if lost && !requests[index].retried && configuration.retriesLostQueries {
            requests[index].retried = true
            requests[index].retryAfter = connections[c].serial
            running -= 1
            enqueue(index, atFront: true)
            replace(c)
            pump()
            return
        }
        finish(c, code: .failed, errorNumber: number, rows: 0, columns: 0, affectedRows: 0, replacing: lost)
    }

    /// Reports the query of connection `c`, frees its request, and gives the connection (if still open and
    /// healthy) its next query.
    func finish(_ c: Int, code: DatabaseCode, errorNumber: UInt32, rows: Int, columns: Int,
                        affectedRows: UInt64, replacing: Bool = false) {
        let index = Int(connections[c].request)
        connections[c].request = -1
        running -= 1
        if let timer = requests[index].timer { shard.cancel(timer) }
        requests[index].timer = nil
        requests[index].state = .delivering
        var message = UnsafeRawBufferPointer(start: nil, count: 0)
        if code == .failed, let text = mysql_error(connections[c].mysql) {
            message = UnsafeRawBufferPointer(start: text, count: strlen(text))
        }
        delivering = true
        cells.withCompletion(code: code, errorNumber: errorNumber, message: message, rows: rows, columns: columns,
                             affectedRows: affectedRows) { completion in
            delegate.queryCompleted(token: requests[index].token, completion, on: shard)
        }
        delivering = false
        release(index)
        // The error text lived in the handle: only now may a lost connection be closed.
        if replacing {
            replace(c)
        } else if connections[c].state == .querying || connections[c].state == .storing {
            connections[c].state = .idle
        }
        pump()
    }

    /// Reports a query that never reached a server, or whose connection was given up (timeout).
    func deliverWithoutResult(_ index: Int, code: DatabaseCode) {
        if let timer = requests[index].timer { shard.cancel(timer) }
        requests[index].timer = nil
        requests[index].state = .delivering
        delivering = true
        let completion = DatabaseCompletion(code: code, errorNumber: 0, message: .init(start: nil, count: 0), rows: 0,
                                            columns: 0, affectedRows: 0, cells: nil, values: nil)
        delegate.queryCompleted(token: requests[index].token, completion, on: shard)
        delivering = false
        release(index)
    }
}
