import CUring
import Glibc

/// One core's worth of the engine: a ring, its sockets (one per listen address, bound with SO_REUSEPORT),
/// provided receive buffers, preallocated sends, and a timer wheel, all used by one pinned thread.
///
/// - Invariant: every method is called on the shard's own thread. Other shards reach it only by MSG_RING.
public final class Shard {
    public let index: Int
    let ring: Ring
    let buffers: BufferRing
    let sends: SendPool
    let wheel: TimerWheel
    let directory: ShardDirectory
    let sockets: [Int32]
    let streams: StreamSet
    public let localAddresses: [SocketAddress]
    public var counters = ShardCounters()
    /// Milliseconds on CLOCK_MONOTONIC, read once per loop turn.
    public private(set) var now: UInt64
    var handler: (any ShardHandler)!
    /// Whether this shard wants more of its core than it may (`ShardConfiguration.overloadPercent`): new work is
    /// then refused by the layers above, cheaply, so what is under way still completes.
    public var overloaded: Bool { load.overloaded }
    /// Whether to take one more piece of new work while overloaded (`LoadMonitor.admits`).
    public func admitsNewWork() -> Bool { load.admits() }
    private var load: LoadMonitor
    private var threadTimes: ThreadTimes?

    /// The recvmsg header every multishot receive is armed with: room for an IPv6 source, no control data.
    private let receiveHeader: UnsafeMutablePointer<msghdr>
    private var receiveGenerations: [UInt16]
    private var activeReceives = 0
    private(set) var stopping = false
    private var stopDeadline = UInt64.max
    private let stopSpec: UnsafeMutablePointer<__kernel_timespec>
    private var wheelArmedAt: UInt64?
    private var wheelGeneration: UInt16 = 0
    private let timeoutSpec: UnsafeMutablePointer<__kernel_timespec>
    private let updateSpec: UnsafeMutablePointer<__kernel_timespec>
    private static let batch = 256
    private let completions: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    /// Work recorded this turn to run at its end (`continueNextTurn`).
    private var continuations = NextTurnQueue()
    /// Mail for other shards (`send(mail:)`): whose queue got records this turn, and records that found a
    /// queue full, kept in order until it has room.
    var mailWakeDue: [Bool]
    var mailBacklog: [[(channel: UInt16, bytes: [UInt8])]]
    var mailPending = false

    /// Creates the shard's ring and buffers. Must run on the shard's own thread: a SINGLE_ISSUER ring belongs
    /// to the thread that creates it, and registering buffers from another thread fails with EEXIST.
    init(index: Int, sockets: [Int32], localAddresses: [SocketAddress], listeners: [Int32] = [],
         streamAddresses: [SocketAddress] = [], directory: ShardDirectory,
         configuration: ShardConfiguration) throws(RingUnavailable) {
        self.index = index
        self.sockets = sockets
        streams = StreamSet(listeners: listeners, listenAddresses: streamAddresses, configuration: configuration)
        self.localAddresses = localAddresses
        self.directory = directory
        ring = try Ring(entries: configuration.ringEntries)
        buffers = try BufferRing(ring: ring, groupID: 1, count: configuration.receiveBuffers,
                                 bufferSize: configuration.receiveBufferBytes)
        sends = SendPool(capacity: configuration.sendSlots, slotBytes: configuration.sendSlotBytes)
        now = Syscalls.monotonicMilliseconds()
        load = LoadMonitor(thresholdPercent: configuration.overloadPercent)
        wheel = TimerWheel(capacity: configuration.timerCapacity, now: now)
        receiveHeader = .allocate(capacity: 1)
        receiveHeader.initialize(to: msghdr())
        receiveHeader.pointee.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
        receiveGenerations = Array(repeating: 0, count: sockets.count)
        timeoutSpec = .allocate(capacity: 1)
        timeoutSpec.initialize(to: __kernel_timespec())
        updateSpec = .allocate(capacity: 1)
        updateSpec.initialize(to: __kernel_timespec())
        stopSpec = .allocate(capacity: 1)
        stopSpec.initialize(to: __kernel_timespec())
        completions = .allocate(capacity: Shard.batch)
        mailWakeDue = Array(repeating: false, count: directory.count)
        mailBacklog = Array(repeating: [], count: directory.count)
        directory.ringFDs[index] = ring.fd
        directory.bufferBases[index] = buffers.base
        directory.bufferSizes[index] = buffers.bufferSize
    }

    deinit {
        receiveHeader.deallocate()
        timeoutSpec.deallocate()
        updateSpec.deallocate()
        stopSpec.deallocate()
        completions.deallocate()
    }

    public var features: RingFeatures { ring.features }
    public var shardCount: Int { directory.count }

    // MARK: - The loop

    /// Runs until a stop command has been received, every receive has been cancelled, every send has
    /// completed and no continuation is left.
    ///
    /// One turn: submit and wait, handle every completion, fire the due timers, then run the continuations
    /// those recorded (`continueNextTurn`). A continuation that records another leaves it for the next turn,
    /// which then does not wait.
    func run() {
        handler.started(on: self)
        // Opened here: /proc/thread-self names the thread that opens it.
        if load.thresholdPercent > 0 { threadTimes = ThreadTimes() }
        for socket in sockets.indices { armReceive(socket) }
        startStreams()
        while !(stopping && (drained || now >= stopDeadline)) {
            buffers.publish()
            if mailPending { flushMail() }
            if !streams.dirty.isEmpty { flushStreams() }
            armWheelTimeout()
            let rc = io_uring_submit_and_wait(ring.ring, continuations.isEmpty && streams.failed.isEmpty ? 1 : 0)
            if rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY {
                preconditionFailure("io_uring_submit_and_wait failed: \(Errno(rawValue: -rc))")
            }
            // Read the clock after the wait, so timers scheduled by handlers count from when work arrived.
            now = Syscalls.monotonicMilliseconds()
            if let threadTimes, load.due(wallNanoseconds: now &* 1_000_000) { sampleLoad(threadTimes) }
            drainCompletions()
            wheel.advance(to: now) { payload in
                if payload == StreamSet.sweepPayload { sweepStreams() } else { handler.timerFired(payload: payload, on: self) }
            }
            if !streams.failed.isEmpty { reportFailedSends() }
            runContinuations()
        }
        if !drained {
            let line = "ringsipd: shard \(index) stopped after \(Shard.stopBoundMilliseconds) ms with work abandoned: "
                + "\(sends.inFlight) sends, \(activeReceives) receives, \(continuations.count) continuations\n"
            _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        }
        counters.sendSlotsInUse = sends.inFlight
        handler.stopping(on: self)
        _ = io_uring_submit(ring.ring)
    }

    /// Once a window (`LoadMonitor.windowNanoseconds`): one pread of the thread's schedstat.
    private func sampleLoad(_ times: ThreadTimes) {
        guard load.sample(wallNanoseconds: now &* 1_000_000, wantedNanoseconds: times.wantedNanoseconds) else { return }
        if load.overloaded { counters.overloads += 1 }
    }

    /// Every receive cancelled, every send completed, no continuation left: the shard may stop.
    private var drained: Bool {
        activeReceives == 0 && sends.inFlight == 0 && continuations.isEmpty && streams.quiet && streams.failed.isEmpty
    }

    /// How long a stop waits for the shard to drain before it gives up on what is left (and says so).
    static let stopBoundMilliseconds: UInt64 = 2000

    /// Records work to run at the end of this turn, after every completion and timer of the turn: the way a
    /// completion hands its result to whatever continues from it (`ShardHandler.continuation`).
    public func continueNextTurn(payload: UInt64, value: Int) {
        continuations.enqueue(NextTurnQueue.Continuation(payload: payload, value: value))
    }

    /// Runs the continuations queued before it started; those they queue wait for the next turn.
    private func runContinuations() {
        var due = continuations.count
        while due > 0, let next = continuations.dequeue() {
            due -= 1
            handler.continuation(payload: next.payload, value: next.value, on: self)
        }
    }

    private func drainCompletions() {
        while true {
            let n = Int(io_uring_peek_batch_cqe(ring.ring, completions, UInt32(Shard.batch)))
            if n == 0 { return }
            if directory.count > 1 { pollMail() }
            for i in 0..<n {
                let cqe = completions[i]!.pointee
                dispatch(tag: Tag(rawValue: cqe.user_data), result: cqe.res, flags: cqe.flags)
            }
            io_uring_cq_advance(ring.ring, UInt32(n))
        }
    }

    private func dispatch(tag: Tag, result: Int32, flags: UInt32) {
        switch tag.kind {
        case .receive: receiveCompleted(tag: tag, result: result, flags: flags)
        case .send: sendCompleted(tag: tag, result: result)
        case .wheelTimeout:
            if tag.generation == wheelGeneration { wheelArmedAt = nil } else { counters.staleCompletions += 1 }
        case .timeoutUpdate, .messageSent:
            // A MSG_RING only completes here when it failed (CQE_SKIP_SUCCESS): the target ring is gone.
            if tag.kind == .messageSent && result < 0 {
                counters.dropped += 1
                // A lost wake-up must not leave mail waiting: the next turn tries the backlog again.
                mailPending = true
            }
        case .handoff: lentDatagramArrived(tag: tag, result: result)
        case .handoffRelease: buffers.recycle(ReceivedBuffer(id: UInt16(truncatingIfNeeded: tag.slot)))
        case .control: control(ControlCommand(rawValue: tag.slot))
        case .operation:
            handler.operationCompleted(OperationID(slot: tag.slot, generation: tag.generation), result: result,
                                       flags: flags, on: self)
        case .mail: mailArrived(from: tag.shard)
        case .mailRoom: mailRoomArrived(at: tag.shard)
        case .accept: acceptCompleted(tag: tag, result: result, flags: flags)
        case .streamReceive: streamReceiveCompleted(tag: tag, result: result, flags: flags)
        case .streamConnect: streamConnectCompleted(tag: tag, result: result)
        case .streamSend: streamSendCompleted(tag: tag, result: result)
        case nil: counters.staleCompletions += 1
        }
    }

    private func control(_ command: ControlCommand?) {
        switch command {
        case .stop:
            guard !stopping else { return }
            stopping = true
            stopDeadline = now + Shard.stopBoundMilliseconds
            // Wakes the loop at the deadline even when nothing else completes (its completion is ignored).
            stopSpec.pointee = __kernel_timespec(tv_sec: Int64(Shard.stopBoundMilliseconds / 1000),
                                                 tv_nsec: Int64(Shard.stopBoundMilliseconds % 1000) * 1_000_000)
            let timeout = ring.sqe()
            io_uring_prep_timeout(timeout, stopSpec, 0, 0)
            timeout.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
            for socket in sockets.indices where receiveGenerations[socket] & 1 == 1 {
                let sqe = ring.sqe()
                io_uring_prep_cancel64(sqe, receiveTag(socket).rawValue, 0)
                sqe.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
            }
            stopStreams()
        case .reportCounters:
            counters.sendSlotsInUse = sends.inFlight
            let line = counters.line(label: "shard \(index)") + "\n"
            _ = line.withCString { write(STDOUT_FILENO, $0, strlen($0)) }
        case nil:
            counters.staleCompletions += 1
        }
    }

    // MARK: - Receive

    /// A socket's receive generation is odd while its multishot receive is armed.
    private func receiveTag(_ socket: Int) -> Tag {
        Tag(kind: .receive, shard: index, generation: receiveGenerations[socket], slot: UInt32(socket))
    }

    private func armReceive(_ socket: Int) {
        receiveGenerations[socket] &+= 1
        if receiveGenerations[socket] & 1 == 0 { receiveGenerations[socket] &+= 1 }
        let sqe = ring.sqe()
        io_uring_prep_recvmsg_multishot(sqe, sockets[socket], receiveHeader, 0)
        sqe.pointee.flags |= CUring_IOSQE_BUFFER_SELECT
        sqe.pointee.buf_group = buffers.groupID
        sqe.pointee.user_data = receiveTag(socket).rawValue
        activeReceives += 1
    }

    private func receiveCompleted(tag: Tag, result: Int32, flags: UInt32) {
        let socket = Int(tag.slot)
        guard socket < sockets.count, tag.generation == receiveGenerations[socket] else {
            counters.staleCompletions += 1
            if flags & IORING_CQE_F_BUFFER != 0 {
                buffers.recycle(ReceivedBuffer(id: UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT)))
            }
            return
        }
        if flags & IORING_CQE_F_BUFFER != 0 {
            let lease = ReceivedBuffer(id: UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT))
            if result > 0 {
                deliver(lease, length: result, socket: socket)
            } else {
                buffers.recycle(lease)
            }
        } else if result == -ENOBUFS {
            // Every buffer is in use; the socket buffer keeps the datagrams until we re-arm below.
            counters.bufferExhaustion += 1
        }
        if flags & IORING_CQE_F_MORE == 0 {
            activeReceives -= 1
            receiveGenerations[socket] &+= 1
            if !stopping { armReceive(socket) }
        }
    }

    private func deliver(_ lease: consuming ReceivedBuffer, length: Int32, socket: Int) {
        let base = buffers.address(of: lease.id)
        guard let view = ReceivedView(buffer: base, length: length, header: receiveHeader) else {
            counters.dropped += 1
            buffers.recycle(lease)
            return
        }
        counters.received += 1
        let datagram = Datagram(bytes: view.payload, source: view.source, socketIndex: socket, truncated: view.truncated)
        switch handler.handle(datagram, on: self) {
        case .done:
            buffers.recycle(lease)
        case .handOff(let target) where target != index && target >= 0 && target < directory.count:
            lend(lease, length: length, socket: socket, to: target)
        case .handOff:
            buffers.recycle(lease)
        }
    }

    // MARK: - Cross-shard hand-off

    private func lend(_ lease: consuming ReceivedBuffer, length: Int32, socket: Int, to target: Int) {
        let payload = Tag(kind: .handoff, shard: index, generation: UInt16(socket), slot: UInt32(lease.id))
        lease.forget()
        counters.handoffs += 1
        post(payload, result: UInt32(length), to: target)
    }

    /// Sends a tag to another shard's ring; it arrives there as a completion whose user_data is `payload`.
    func post(_ payload: Tag, result: UInt32, to target: Int) {
        let sqe = ring.sqe()
        io_uring_prep_msg_ring(sqe, directory.ringFDs[target], result, payload.rawValue, 0)
        sqe.pointee.flags |= CUring_IOSQE_CQE_SKIP_SUCCESS
        sqe.pointee.user_data = Tag(kind: .messageSent, shard: index, generation: 0, slot: UInt32(target)).rawValue
    }

    private func lentDatagramArrived(tag: Tag, result: Int32) {
        let lender = tag.shard
        guard lender < directory.count, lender != index, let base = directory.bufferBases[lender] else {
            counters.staleCompletions += 1
            return
        }
        let buffer = base + Int(tag.slot) * directory.bufferSizes[lender]
        let socket = Int(tag.generation)
        if let view = ReceivedView(buffer: buffer, length: result, header: receiveHeader), socket < sockets.count {
            let datagram = Datagram(bytes: view.payload, source: view.source, socketIndex: socket, lender: lender,
                                    truncated: view.truncated)
            _ = handler.handle(datagram, on: self)
        } else {
            counters.dropped += 1
        }
        // The buffer belongs to the lender's ring: only the lender may recycle it.
        post(Tag(kind: .handoffRelease, shard: index, generation: 0, slot: tag.slot), result: 0, to: lender)
    }

    // MARK: - Send

    /// The largest datagram a send buffer holds.
    public var datagramCapacity: Int { sends.slotBytes }

    /// A send buffer to fill, or nil when every send slot is in flight (the caller counts a drop).
    @inline(__always)
    public func makeDatagram() -> OutboundDatagram? {
        sends.acquire()
    }

    /// Queues `length` bytes of `datagram` for `destination` from the socket at `socketIndex`.
    /// Submitted with the rest of this loop turn's work.
    public func send(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress, socketIndex: Int) {
        precondition(length <= datagram.buffer.count)
        if let stream = StreamHandle(socketIndex: socketIndex) {
            sendOnStream(datagram, length: length, to: destination, handle: stream)
            return
        }
        let header = sends.prepare(datagram, length: length, to: destination)
        let sqe = ring.sqe()
        io_uring_prep_sendmsg(sqe, sockets[socketIndex], header, 0)
        sqe.pointee.user_data = Tag(kind: .send, shard: index, generation: datagram.generation,
                                    slot: UInt32(datagram.slot)).rawValue
    }

    /// Returns an unused send buffer.
    public func discard(_ datagram: OutboundDatagram) {
        _ = sends.release(slot: UInt32(datagram.slot), generation: datagram.generation)
    }

    private func sendCompleted(tag: Tag, result: Int32) {
        guard sends.release(slot: tag.slot, generation: tag.generation) else {
            counters.staleCompletions += 1
            return
        }
        if result >= 0 { counters.sent += 1 } else { counters.sendErrors += 1 }
    }

    /// The socket to send to `destination` from: `preferred` when its family matches, else the first socket
    /// of the destination's family; nil when no listen address has that family.
    public func socketIndex(for destination: SocketAddress, preferring preferred: Int) -> Int? {
        if preferred < localAddresses.count && localAddresses[preferred].family == destination.family {
            return preferred
        }
        return localAddresses.firstIndex { $0.family == destination.family }
    }

    // MARK: - Timers

    /// Schedules `handler.timerFired(payload:)` in `milliseconds`; nil when the wheel is full.
    public func schedule(after milliseconds: UInt64, payload: UInt64) -> TimerHandle? {
        let handle = wheel.schedule(at: now + milliseconds, payload: payload)
        if handle == nil { counters.timersFull += 1 }
        return handle
    }

    @discardableResult
    public func cancel(_ timer: TimerHandle) -> Bool {
        wheel.cancel(timer)
    }

    /// Keeps exactly one ring timeout armed at the wheel's next deadline: a new one when none is armed, an
    /// in-place update when an earlier timer was added since.
    private func armWheelTimeout() {
        guard let next = wheel.nextDeadline else { return }
        if let armed = wheelArmedAt {
            guard next < armed else { return }
            updateSpec.pointee = Shard.timespec(milliseconds: next)
            let sqe = ring.sqe()
            let target = Tag(kind: .wheelTimeout, shard: index, generation: wheelGeneration, slot: 0)
            io_uring_prep_timeout_update(sqe, updateSpec, target.rawValue, IORING_TIMEOUT_ABS)
            sqe.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
        } else {
            wheelGeneration &+= 1
            timeoutSpec.pointee = Shard.timespec(milliseconds: next)
            let sqe = ring.sqe()
            io_uring_prep_timeout(sqe, timeoutSpec, 0, IORING_TIMEOUT_ABS)
            sqe.pointee.user_data = Tag(kind: .wheelTimeout, shard: index, generation: wheelGeneration, slot: 0).rawValue
        }
        wheelArmedAt = next
    }

    private static func timespec(milliseconds: UInt64) -> __kernel_timespec {
        __kernel_timespec(tv_sec: Int64(milliseconds / 1000), tv_nsec: Int64(milliseconds % 1000) * 1_000_000)
    }
}

/// The parts of a provided buffer filled by a recvmsg completion.
struct ReceivedView {
    let payload: UnsafeRawBufferPointer
    let source: SocketAddress
    /// The datagram was larger than the buffer and arrived cut short (MSG_TRUNC): `payload` is its first part.
    let truncated: Bool

    init?(buffer: UnsafeMutableRawPointer, length: Int32, header: UnsafeMutablePointer<msghdr>) {
        guard let out = io_uring_recvmsg_validate(buffer, length, header),
              let source = SocketAddress(raw: io_uring_recvmsg_name(out), length: Int(out.pointee.namelen))
        else { return nil }
        truncated = out.pointee.flags & UInt32(MSG_TRUNC) != 0
        let start = io_uring_recvmsg_payload(out, header)!
        let count = Int(io_uring_recvmsg_payload_length(out, length, header))
        payload = UnsafeRawBufferPointer(start: start, count: count)
        self.source = source
    }
}
