import CCurl
import Engine
import Glibc

/// Runs HTTP requests (rest_client's `rest_get`, `rest_post`, `rest_put`) with one libcurl multi handle per
/// shard, driven entirely by the shard's ring: libcurl's socket callback turns into one-shot ring polls
/// (re-armed after each event while libcurl still wants the socket, cancelled when it lets go), its timer
/// callback into one timer on the shard's wheel. No curl thread, no blocking connect (give IP addresses or
/// `localhost`: a host name makes libcurl start its resolver thread, which works but is not the ring).
///
/// At most `maximumTransfers` run at once; more wait in a FIFO inside the shard, and once that is full a
/// submission is refused at once (`.queueFull`). Easy handles are pooled per lane (a running transfer's
/// place), and libcurl keeps its connection cache in the multi handle, so connections are reused.
///
/// - Invariant: used only on its shard's thread, and libcurl is entered only from here: `curl_multi_*` are
///   never called from inside a libcurl callback (completions are read with `curl_multi_info_read` after
///   `curl_multi_socket_action` returns, and delivered from there).
/// - Invariant: a socket's poll is identified by fd and a per-fd generation, moved on whenever a poll is
///   cancelled, so the completion of a cancelled poll (or of a closed fd's, when libcurl reuses the number)
///   is dropped, never taken for the current one.
public final class HTTPRunner {
    public struct Configuration: Sendable {
        /// Transfers running at once on this shard (OpenSIPS' `max_async_transfers`).
        public var maximumTransfers = 100
        /// Requests waiting for a free place; beyond it a submission fails with `.queueFull`.
        public var queueCapacity = 1024
        /// The whole transfer, connect included, in milliseconds (`curl_timeout`, default 20 s); a request's
        /// own timeout, when given, replaces it.
        public var curlTimeout: UInt64 = 20_000
        /// Establishing the connection, in milliseconds (`connection_timeout`, default 20 s).
        public var connectionTimeout: UInt64 = 20_000
        /// Bytes of response body kept; a larger response is aborted and reported (`max_transfer_size`,
        /// OpenSIPS' default 10240 KB). Each lane's buffer grows on demand up to it.
        public var maxTransferSize = 10240 * 1024
        /// Check the server's certificate chain and its name (`ssl_verifypeer`, `ssl_verifyhost`).
        public var verifyPeer = true
        public var verifyHost = true
        public init() {}
    }

    enum State: UInt8 { case free, queued, running, delivering }

    struct Slot {
        var state = State.free
        var generation: UInt16 = 0
        var method = HTTPMethod.get
        var token: UInt64 = 0
        /// Absolute deadline (shard milliseconds), 0 for the configured `curlTimeout`.
        var deadline: UInt64 = 0
        /// Set only while queued: the request's deadline on the wheel.
        var timer: TimerHandle?
        /// url, NUL | body | content type, NUL | headers ("Name: value\0" each): copied at submit.
        var input: UnsafeMutableRawPointer?
        var inputCapacity = 0
        var urlLength = 0
        var bodyLength = 0
        var contentTypeLength = 0
        var headersLength = 0
        var lane: Int32 = -1
    }

    /// A running transfer's place: a pooled easy handle and the response buffer its write callback fills.
    /// Lanes live in one allocation that never moves, so libcurl keeps a pointer to its lane (`WRITEDATA`).
    struct Lane {
        var easy: UnsafeMutableRawPointer?
        var body = HTTPBody()
        var headers: UnsafeMutablePointer<curl_slist>?
        var slot: Int32 = -1
    }

    /// One socket libcurl asked to watch; indexed by fd.
    struct Watch {
        /// Poll events libcurl wants now; 0 when none.
        var wanted: Int16 = 0
        /// Events of the poll in flight.
        var armed: Int16 = 0
        var inFlight = false
        var generation: UInt16 = 0
    }

    /// The operation slot of the multi handle's own timer (request timers use their slot index).
    static let multiTimerSlot = Int(UInt32.max)

    public let configuration: Configuration
    unowned let shard: Shard
    unowned let delegate: any HTTPRunnerDelegate
    let capacity: Int
    let slots: UnsafeMutablePointer<Slot>
    let lanes: UnsafeMutablePointer<Lane>
    var freeLanes: [Int32]
    private var lists: SlotLists
    var watches: [Watch] = []
    let multi: UnsafeMutableRawPointer
    var multiTimer: TimerHandle?
    var multiTimerGeneration: UInt16 = 0
    /// Scratch for building "Content-Type: …" header lines.
    var headerScratch: [CChar] = []
    private var isShutDown = false

    public internal(set) var running = 0
    public var queued: Int { lists.queued }
    /// Sockets libcurl has asked the ring to watch right now.
    public internal(set) var watchedSockets = 0
    /// Completions and timers whose slot or socket had moved on (counted, dropped).
    public internal(set) var staleCompletions = 0

    /// libcurl's global state, set up once per process (thread-safe in libcurl ≥ 7.84).
    private static let globalInit: Int32 = {
        // CURL_GLOBAL_ALL (SSL | WIN32): a macro expression Swift does not import.
        Int32(curl_global_init(3).rawValue)
    }()

    /// - Precondition: created on the shard's thread (in `ShardHandler.started`), and the delegate outlives it.
    public init(shard: Shard, configuration: Configuration = .init(), delegate: any HTTPRunnerDelegate) {
        precondition(configuration.maximumTransfers > 0 && configuration.queueCapacity >= 0)
        precondition(configuration.maxTransferSize > 0)
        let initialized = HTTPRunner.globalInit
        precondition(initialized == 0, "curl_global_init failed: \(initialized)")
        self.shard = shard
        self.configuration = configuration
        self.delegate = delegate
        capacity = configuration.maximumTransfers + configuration.queueCapacity
        precondition(capacity < OpsPacking.maximumSlots)
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        lists = SlotLists(capacity: capacity)
        lanes = .allocate(capacity: configuration.maximumTransfers)
        lanes.initialize(repeating: Lane(), count: configuration.maximumTransfers)
        freeLanes = (0..<Int32(configuration.maximumTransfers)).reversed()
        guard let multi = curl_multi_init() else { preconditionFailure("curl_multi_init failed") }
        self.multi = multi
        let context = Unmanaged.passUnretained(self).toOpaque()
        _ = CCurl_multi_setopt_socket_function(multi) { _, fd, what, context, _ in
            Unmanaged<HTTPRunner>.fromOpaque(context!).takeUnretainedValue().socketChanged(fd, what: what)
            return 0
        }
        _ = CCurl_multi_setopt_ptr(multi, CURLMOPT_SOCKETDATA, context)
        _ = CCurl_multi_setopt_timer_function(multi) { _, milliseconds, context in
            Unmanaged<HTTPRunner>.fromOpaque(context!).takeUnretainedValue().timerChanged(milliseconds)
            return 0
        }
        _ = CCurl_multi_setopt_ptr(multi, CURLMOPT_TIMERDATA, context)
    }

    deinit {
        // Without `shutdown()` (a runner dropped before its shard stopped, or with it): the shard may be gone
        // already, so libcurl is cleaned up without a word to it.
        if !isShutDown { tearDown(touchingShard: false) }
        for i in 0..<capacity { slots[i].input?.deallocate() }
        for i in 0..<configuration.maximumTransfers { lanes[i].body.deallocate() }
        slots.deallocate()
        lists.deallocate()
        lanes.deallocate()
    }

    // MARK: - Submitting

    /// Sends `method url` with `body` (POST, PUT), a Content-Type when `contentType` is not empty, extra
    /// `headers` ("Name: value\0" entries, as rest_append_hf collects them), and a timeout for the whole
    /// request, queue included (0: `curlTimeout`). The bytes are copied; the delegate later gets `token`
    /// back with the outcome.
    public func submit(method: HTTPMethod, url: UnsafeRawBufferPointer,
                       body: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                       contentType: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                       headers: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                       timeoutMilliseconds: UInt64 = 0, token: UInt64) -> HTTPSubmission {
        guard !isShutDown else { return .rejected(.failed) }
        let startsNow = running < configuration.maximumTransfers
        guard startsNow || queued < configuration.queueCapacity, let index = lists.takeFree() else {
            return .rejected(.queueFull)
        }
        slots[index].token = token
        slots[index].method = method
        slots[index].deadline = timeoutMilliseconds > 0 ? shard.now + timeoutMilliseconds : 0
        copyInput(into: index, url: url, body: body, contentType: contentType, headers: headers)
        let handle = HTTPHandle(slot: Int32(index), generation: slots[index].generation)
        if startsNow {
            guard start(index) else {
                release(index)
                return .rejected(.failed)
            }
        } else {
            if timeoutMilliseconds > 0 {
                let payload = OpsPacking.timerPayload(.http, slot: index, generation: slots[index].generation)
                guard let timer = shard.schedule(after: timeoutMilliseconds, payload: payload) else {
                    release(index)
                    return .rejected(.failed)
                }
                slots[index].timer = timer
            }
            enqueue(index)
        }
        return .accepted(handle)
    }

    /// Abandons a request without reporting it (its suspension gave up): a queued one leaves the queue, a
    /// running one's easy handle is removed from the multi handle, which aborts the transfer. A handle whose
    /// request already finished is ignored.
    /// - Precondition: not called from inside a libcurl callback (the delegate call is not one).
    public func cancel(_ handle: HTTPHandle) {
        let index = Int(handle.slot)
        guard index >= 0, index < capacity, slots[index].generation == handle.generation else { return }
        switch slots[index].state {
        case .queued:
            if let timer = slots[index].timer { shard.cancel(timer) }
            dequeue(index)
            release(index)
        case .running:
            let lane = Int(slots[index].lane)
            curl_multi_remove_handle(multi, lanes[lane].easy)
            releaseLane(lane)
            release(index)
            pump()
        case .free, .delivering:
            return
        }
    }

    private func copyInput(into index: Int, url: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer,
                           contentType: UnsafeRawBufferPointer, headers: UnsafeRawBufferPointer) {
        let needed = url.count + 1 + body.count + contentType.count + 1 + headers.count + 1
        if slots[index].inputCapacity < needed {
            slots[index].input?.deallocate()
            let size = max(needed, 256)
            slots[index].input = .allocate(byteCount: size, alignment: 8)
            slots[index].inputCapacity = size
        }
        var cursor = slots[index].input!
        for (part, terminated) in [(url, true), (body, false), (contentType, true), (headers, true)] {
            if part.count > 0 { cursor.copyMemory(from: part.baseAddress!, byteCount: part.count) }
            cursor += part.count
            if terminated {
                cursor.storeBytes(of: 0, as: UInt8.self)
                cursor += 1
            }
        }
        slots[index].urlLength = url.count
        slots[index].bodyLength = body.count
        slots[index].contentTypeLength = contentType.count
        slots[index].headersLength = headers.count
    }

    // MARK: - Queue and slots

    private func enqueue(_ index: Int) {
        slots[index].state = .queued
        lists.enqueue(index)
    }

    private func dequeue(_ index: Int) {
        lists.dequeue(index)
    }

    /// Returns a slot to the free list; its generation moves on, so late timers and handles miss it.
    private func release(_ index: Int) {
        let input = slots[index].input, inputCapacity = slots[index].inputCapacity
        let generation = slots[index].generation &+ 1
        slots[index] = Slot()
        slots[index].input = input
        slots[index].inputCapacity = inputCapacity
        slots[index].generation = generation
        lists.putFree(index)
    }

    /// Starts queued requests while there is room; one that cannot start is reported and the next tried.
    private func pump() {
        while running < configuration.maximumTransfers, let index = lists.dequeueFirst() {
            if let timer = slots[index].timer { shard.cancel(timer) }
            slots[index].timer = nil
            if slots[index].deadline > 0 && slots[index].deadline <= shard.now {
                deliverWithoutRunning(index, code: .transferTimeout)
            } else if !start(index) {
                deliverWithoutRunning(index, code: .failed)
            }
        }
    }

    /// Reports a request that never ran (timed out in the queue, or libcurl refused it).
    private func deliverWithoutRunning(_ index: Int, code: HTTPCode) {
        if let timer = slots[index].timer { shard.cancel(timer) }
        slots[index].state = .delivering
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        let completion = HTTPCompletion(code: code, status: 0, contentType: empty, body: empty, bodyTooLarge: false,
                                        curlCode: 0)
        let token = slots[index].token
        release(index)
        delegate.httpCompleted(token: token, completion, on: shard)
    }

    /// A queued request's deadline passed before a lane came free.
    func queuedRequestExpired(_ index: Int, generation: UInt16) {
        guard index < capacity, slots[index].generation == generation, slots[index].state == .queued else {
            staleCompletions += 1
            return
        }
        slots[index].timer = nil
        dequeue(index)
        deliverWithoutRunning(index, code: .transferTimeout)
    }

    // MARK: - Starting a transfer

    /// Configures a pooled easy handle for the slot's request and adds it to the multi handle; false when
    /// libcurl refused it (the slot is then untouched apart from its state, and holds no lane).
    private func start(_ index: Int) -> Bool {
        let lane = Int(freeLanes.removeLast())
        if lanes[lane].easy == nil {
            guard let easy = curl_easy_init() else {
                freeLanes.append(Int32(lane))
                return false
            }
            lanes[lane].easy = easy
        } else {
            curl_easy_reset(lanes[lane].easy)
        }
        let easy = lanes[lane].easy
        lanes[lane].slot = Int32(index)
        lanes[lane].body.reset(limit: configuration.maxTransferSize)
        let input = slots[index].input!
        let bodyStart = input + slots[index].urlLength + 1
        let contentTypeStart = bodyStart + slots[index].bodyLength
        let headersStart = contentTypeStart + slots[index].contentTypeLength + 1

        var ok = CCurl_easy_setopt_ptr(easy, CURLOPT_URL, input) == CURLE_OK
        _ = CCurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = CCurl_easy_setopt_ptr(easy, CURLOPT_PRIVATE, UnsafeRawPointer(bitPattern: lane + 1))
        _ = CCurl_easy_setopt_write_function(easy) { data, size, count, context in
            HTTPRunner.append(data, size * count, to: context!.assumingMemoryBound(to: Lane.self))
        }
        _ = CCurl_easy_setopt_ptr(easy, CURLOPT_WRITEDATA, lanes + lane)
        _ = CCurl_easy_setopt_off_t(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(configuration.maxTransferSize))
        Self.applyTLS(easy, configuration)
        var timeout = configuration.curlTimeout
        if slots[index].deadline > 0 { timeout = slots[index].deadline > shard.now ? slots[index].deadline - shard.now : 1 }
        _ = CCurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(timeout))
        _ = CCurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(min(configuration.connectionTimeout, timeout)))
        switch slots[index].method {
        case .get:
            _ = CCurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case .post, .put:
            _ = CCurl_easy_setopt_ptr(easy, CURLOPT_POSTFIELDS, bodyStart)
            _ = CCurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(slots[index].bodyLength))
            if slots[index].method == .put {
                ok = ok && "PUT".withCString { CCurl_easy_setopt_ptr(easy, CURLOPT_CUSTOMREQUEST, $0) } == CURLE_OK
            }
        }
        lanes[lane].headers = buildHeaders(index, contentType: contentTypeStart, headers: headersStart)
        if lanes[lane].headers != nil {
            _ = CCurl_easy_setopt_ptr(easy, CURLOPT_HTTPHEADER, lanes[lane].headers)
        }
        slots[index].state = .running
        slots[index].lane = Int32(lane)
        running += 1
        guard ok, curl_multi_add_handle(multi, easy) == CURLM_OK else {
            releaseLane(lane)
            slots[index].state = .free
            slots[index].lane = -1
            return false
        }
        return true
    }

    /// The request's header list: its Content-Type, "Expect:" (no 100-continue round trip, as OpenSIPS'
    /// default), then the caller's own lines. libcurl copies each line.
    private func buildHeaders(_ index: Int, contentType: UnsafeMutableRawPointer,
                              headers: UnsafeMutableRawPointer) -> UnsafeMutablePointer<curl_slist>? {
        Self.headerList(method: slots[index].method,
                        contentType: UnsafeRawBufferPointer(start: contentType, count: slots[index].contentTypeLength),
                        headers: UnsafeRawBufferPointer(start: headers, count: slots[index].headersLength),
                        scratch: &headerScratch)
    }

    /// A request's header list, for the ring's transfers and the blocking ones alike: its Content-Type (when
    /// it has one), "Expect:" on a body, then the `"Name: value\0"` entries rest_append_hf collected.
    static func headerList(method: HTTPMethod, contentType: UnsafeRawBufferPointer, headers: UnsafeRawBufferPointer,
                           scratch: inout [CChar]) -> UnsafeMutablePointer<curl_slist>? {
        var list: UnsafeMutablePointer<curl_slist>?
        if contentType.count > 0 {
            // Byte by byte into the reused scratch: no temporary arrays per request.
            scratch.removeAll(keepingCapacity: true)
            for byte in "Content-Type: ".utf8 { scratch.append(CChar(bitPattern: byte)) }
            for byte in contentType { scratch.append(CChar(bitPattern: byte)) }
            scratch.append(0)
            list = curl_slist_append(list, scratch)
        }
        if method != .get { list = curl_slist_append(list, "Expect:") }
        guard let base = headers.baseAddress else { return list }
        var offset = 0
        while offset < headers.count {
            let line = (base + offset).assumingMemoryBound(to: CChar.self)
            let lineLength = strnlen(line, headers.count - offset)
            if lineLength > 0 { list = curl_slist_append(list, line) }
            offset += lineLength + 1
        }
        return list
    }

    /// OpenSIPS' rest_client codes for a finished transfer (a timeout with no connect time is a connect timeout).
    static func code(of result: CURLcode, easy: UnsafeMutableRawPointer?) -> HTTPCode {
        switch result {
        case CURLE_OK: return .success
        case CURLE_COULDNT_CONNECT: return .refused
        case CURLE_OPERATION_TIMEDOUT:
            var connectTime = 0.0
            _ = CCurl_easy_getinfo_double(easy, CURLINFO_CONNECT_TIME, &connectTime)
            return connectTime == 0 ? .connectTimeout : .transferTimeout
        default: return .failed
        }
    }

    /// TLS checks as the rest_client modparams set them.
    static func applyTLS(_ easy: UnsafeMutableRawPointer?, _ configuration: Configuration) {
        _ = CCurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, configuration.verifyPeer ? 1 : 0)
        _ = CCurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, configuration.verifyHost ? 2 : 0)
    }

    /// libcurl's write callback: keeps the body up to the lane's limit; beyond it returns 0, which makes
    /// libcurl abort the transfer with CURLE_WRITE_ERROR.
    private static func append(_ data: UnsafeMutablePointer<CChar>?, _ count: Int,
                               to lane: UnsafeMutablePointer<Lane>) -> Int {
        lane.pointee.body.append(data, count)
    }

    /// Frees a lane's per-request state (header list); the easy handle and body buffer stay for reuse.
    private func releaseLane(_ lane: Int) {
        if let headers = lanes[lane].headers { curl_slist_free_all(headers) }
        lanes[lane].headers = nil
        lanes[lane].slot = -1
        lanes[lane].body.reset(limit: 0)
        running -= 1
        freeLanes.append(Int32(lane))
    }

    // MARK: - Finishing

    /// Reports every transfer libcurl has finished. Called after each `curl_multi_socket_action`.
    func drainFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE else { continue }
            let easy = message.pointee.easy_handle
            let result = message.pointee.data.result
            var laneTag: UnsafeMutablePointer<CChar>?
            _ = CCurl_easy_getinfo_ptr(easy, CURLINFO_PRIVATE, &laneTag)
            let lane = Int(bitPattern: laneTag) - 1
            precondition(lane >= 0 && lane < configuration.maximumTransfers && lanes[lane].easy == easy)
            finish(lane, result: result)
        }
    }

    private func finish(_ lane: Int, result: CURLcode) {
        let index = Int(lanes[lane].slot)
        let easy = lanes[lane].easy
        var status = 0
        _ = CCurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var contentType: UnsafeMutablePointer<CChar>?
        _ = CCurl_easy_getinfo_ptr(easy, CURLINFO_CONTENT_TYPE, &contentType)
        let tooLarge = lanes[lane].body.tooLarge || result == CURLE_FILESIZE_EXCEEDED
        let code = Self.code(of: result, easy: easy)
        curl_multi_remove_handle(multi, easy)
        slots[index].state = .delivering
        let completion = HTTPCompletion(
            code: code, status: status,
            contentType: UnsafeRawBufferPointer(start: contentType, count: contentType.map { strlen($0) } ?? 0),
            body: lanes[lane].body.bytes,
            bodyTooLarge: tooLarge, curlCode: Int32(result.rawValue))
        delegate.httpCompleted(token: slots[index].token, completion, on: shard)
        releaseLane(lane)
        release(index)
        pump()
    }

    // MARK: - Shutdown

    /// Ends every request without reporting it and closes libcurl's connections. For `ShardHandler.stopping`.
    public func shutdown() {
        guard !isShutDown else { return }
        for index in 0..<capacity where slots[index].state == .queued {
            if let timer = slots[index].timer { shard.cancel(timer) }
            dequeue(index)
            release(index)
        }
        tearDown(touchingShard: true)
    }

    private func tearDown(touchingShard: Bool) {
        isShutDown = true
        if !touchingShard {
            _ = CCurl_multi_setopt_socket_function(multi, nil)
            _ = CCurl_multi_setopt_timer_function(multi, nil)
        }
        for lane in 0..<configuration.maximumTransfers where lanes[lane].easy != nil {
            if lanes[lane].slot >= 0 {
                curl_multi_remove_handle(multi, lanes[lane].easy)
                releaseLane(lane)
            }
        }
        if touchingShard, let timer = multiTimer { shard.cancel(timer) }
        multiTimer = nil
        // Cleanup closes the cached connections and would report each socket's removal: nothing is left to
        // poll, and this may run inside deinit, so the callbacks go first.
        _ = CCurl_multi_setopt_socket_function(multi, nil)
        _ = CCurl_multi_setopt_timer_function(multi, nil)
        curl_multi_cleanup(multi)
        for lane in 0..<configuration.maximumTransfers where lanes[lane].easy != nil {
            curl_easy_cleanup(lanes[lane].easy)
            lanes[lane].easy = nil
        }
    }
}
