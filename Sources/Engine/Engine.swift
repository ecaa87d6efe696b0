import CUring
import Glibc

/// Why the engine did not start, in one line for the user.
public struct EngineStartError: Error, CustomStringConvertible {
    public var description: String
    /// True when the cause is a listen address (in use, not local, no permission), not the kernel.
    public var isAddressProblem = false
}

/// The shards and their threads. Created and controlled from one thread (the daemon's main thread), which
/// talks to running shards only through MSG_RING commands sent from its own small control ring.
public final class Engine: @unchecked Sendable {
    public let listenAddresses: [SocketAddress]
    /// `listen = tcp:…` addresses: every shard accepts connections on each.
    public let streamListenAddresses: [SocketAddress]
    public let shardCount: Int
    public let cpus: [Int]?
    public private(set) var configuration: ShardConfiguration
    let makeHandler: @Sendable (Int) -> any ShardHandler
    let directory: ShardDirectory
    let gate: StartGate
    private var threads: [pthread_t] = []
    private var controlRing: Ring?
    /// Each shard's counters, stored by its thread just before it exits; read after the threads are joined.
    public var finalCounters: [ShardCounters] { Array(UnsafeBufferPointer(start: exitCounters, count: shardCount)) }
    /// Per shard, written only by that shard's thread: raw memory, since a Swift array written from several
    /// threads is a data race even at distinct indexes.
    private let exitCounters: UnsafeMutablePointer<ShardCounters>
    /// The shards, kept alive until every thread is joined: a shard may still be reading a buffer lent by
    /// another when that one stops, so no shard's memory may go before all have stopped.
    private let liveShards: UnsafeMutablePointer<Unmanaged<Shard>?>
    /// The addresses actually bound (port 0 in `listenAddresses` becomes the port the kernel picked).
    public private(set) var boundAddresses: [SocketAddress] = []
    public private(set) var boundStreamAddresses: [SocketAddress] = []
    public private(set) var features: RingFeatures?
    private var socketsByShard: [[Int32]] = []
    private var listenersByShard: [[Int32]] = []

    /// - Parameter cpus: the CPU each shard is pinned to, by shard index; nil pins shard i to CPU i.
    public init(listen: [SocketAddress], streamListen: [SocketAddress] = [], shards: Int, cpus: [Int]?,
                configuration: ShardConfiguration = .init(), makeHandler: @escaping @Sendable (Int) -> any ShardHandler) {
        precondition(!(listen.isEmpty && streamListen.isEmpty) && shards > 0 && shards <= 255)
        listenAddresses = listen
        streamListenAddresses = streamListen
        shardCount = shards
        self.cpus = cpus
        self.configuration = configuration
        self.makeHandler = makeHandler
        directory = ShardDirectory(count: shards)
        gate = StartGate(expected: shards)
        exitCounters = .allocate(capacity: shards)
        exitCounters.initialize(repeating: ShardCounters(), count: shards)
        liveShards = .allocate(capacity: shards)
        liveShards.initialize(repeating: nil, count: shards)
    }

    deinit {
        exitCounters.deallocate()
        liveShards.deallocate()
    }

    /// Probes io_uring, binds every socket, starts the shard threads and waits until all are serving.
    public func start() throws(EngineStartError) {
        do {
            let probe = try Ring(entries: 8)
            try probe.requireOpcodes()
            features = probe.features
            controlRing = probe
        } catch {
            throw EngineStartError(description: error.description)
        }
        try bindSockets()
        for shard in 0..<shardCount {
            let context = Unmanaged.passRetained(ShardThreadContext(engine: self, index: shard)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, shardThreadMain, context)
            guard rc == 0 else {
                throw EngineStartError(description: "could not start shard thread \(shard): \(Errno(rawValue: rc))")
            }
            threads.append(thread)
        }
        let failures = gate.waitForAll()
        if !failures.isEmpty {
            join()
            closeSockets()
            throw EngineStartError(description: failures[0])
        }
    }

    private func bindSockets() throws(EngineStartError) {
        var bound = listenAddresses
        socketsByShard = Array(repeating: [], count: shardCount)
        for (i, address) in listenAddresses.enumerated() {
            if address.port != 0 && Syscalls.isAddressInUse(address) {
                closeSockets()
                throw EngineStartError(description: "cannot listen on udp:\(address): another process is listening there "
                    + "(is ringsipd already running?)", isAddressProblem: true)
            }
            for shard in 0..<shardCount {
                // With port 0, the first bind picks a port and the other shards join it through SO_REUSEPORT.
                switch Syscalls.boundUDPSocket(bound[i], receiveBufferBytes: configuration.socketBufferBytes) {
                case .success(let fd):
                    socketsByShard[shard].append(fd)
                    if shard == 0, let local = Syscalls.localAddress(of: fd) { bound[i] = local }
                case .failure(let errno):
                    closeSockets()
                    throw EngineStartError(description: "cannot listen on udp:\(address): \(errno)", isAddressProblem: true)
                }
            }
        }
        boundAddresses = bound
        try bindListeners()
    }

    private func bindListeners() throws(EngineStartError) {
        var bound = streamListenAddresses
        listenersByShard = Array(repeating: [], count: shardCount)
        if !bound.isEmpty {
            // Each shard's cap within what the process may open, leaving room for everything else it opens.
            let descriptors = Syscalls.raiseDescriptorLimit()
            let perShard = max(16, (descriptors - 512) / shardCount)
            configuration.streamConnections = min(configuration.streamConnections, perShard)
        }
        for (i, address) in streamListenAddresses.enumerated() {
            if address.port != 0 && Syscalls.isAddressInUse(address, stream: true) {
                closeSockets()
                throw EngineStartError(description: "cannot listen on tcp:\(address): another process is listening there "
                    + "(is ringsipd already running?)", isAddressProblem: true)
            }
            for shard in 0..<shardCount {
                switch Syscalls.listeningTCPSocket(bound[i], backlog: 1024) {
                case .success(let fd):
                    listenersByShard[shard].append(fd)
                    if shard == 0, let local = Syscalls.localAddress(of: fd) { bound[i] = local }
                case .failure(let errno):
                    closeSockets()
                    throw EngineStartError(description: "cannot listen on tcp:\(address): \(errno)", isAddressProblem: true)
                }
            }
        }
        boundStreamAddresses = bound
    }

    private func closeSockets() {
        for fds in socketsByShard + listenersByShard { for fd in fds { Syscalls.closeDescriptor(fd) } }
        socketsByShard = []
        listenersByShard = []
    }

    fileprivate func runShard(_ index: Int) {
        if let cpus, index < cpus.count, let error = Syscalls.pinCurrentThread(to: cpus[index]) {
            _ = gate.arrive(failure: "cannot pin shard \(index) to CPU \(cpus[index]): \(error)")
            return
        }
        if cpus == nil, let error = Syscalls.pinCurrentThread(to: index % Syscalls.onlineCPUCount()) {
            _ = gate.arrive(failure: "cannot pin shard \(index) to CPU \(index): \(error)")
            return
        }
        let shard: Shard
        do {
            shard = try Shard(index: index, sockets: socketsByShard[index], localAddresses: boundAddresses,
                              listeners: listenersByShard[index], streamAddresses: boundStreamAddresses,
                              directory: directory, configuration: configuration)
        } catch {
            _ = gate.arrive(failure: error.description)
            return
        }
        shard.handler = makeHandler(index)
        guard gate.arrive(failure: nil) else { return }
        liveShards[index] = Unmanaged.passRetained(shard)
        shard.run()
        exitCounters[index] = shard.counters
    }

    /// Asks every shard to print its counters line (on its own thread, from its own state).
    public func requestCounters() {
        command(.reportCounters)
    }

    /// Stops receiving, lets in-flight sends finish, joins the shard threads and closes the sockets.
    public func stop() {
        command(.stop)
        join()
        closeSockets()
    }

    private func command(_ command: ControlCommand) {
        for shard in 0..<shardCount {
            post(Tag(kind: .control, shard: shard, generation: 0, slot: command.rawValue), result: 0, toShard: shard)
        }
    }

    /// Delivers `payload` to a shard's ring as a completion, from the control ring. Tests also use it to
    /// forge completions (e.g. a stale send tag) against a live shard.
    func post(_ payload: Tag, result: UInt32, toShard shard: Int) {
        guard let control = controlRing, threads.count == shardCount else { return }
        let sqe = control.sqe()
        io_uring_prep_msg_ring(sqe, directory.ringFDs[shard], result, payload.rawValue, 0)
        sqe.pointee.user_data = payload.rawValue
        _ = io_uring_submit_and_wait(control.ring, 1)
        var cqe: UnsafeMutablePointer<io_uring_cqe>?
        if io_uring_wait_cqe(control.ring, &cqe) == 0 { io_uring_cqe_seen(control.ring, cqe) }
    }

    private func join() {
        for thread in threads { pthread_join(thread, nil) }
        threads = []
        for i in 0..<shardCount {
            liveShards[i]?.release()
            liveShards[i] = nil
        }
    }
}

private final class ShardThreadContext {
    let engine: Engine
    let index: Int
    init(engine: Engine, index: Int) {
        self.engine = engine
        self.index = index
    }
}

/// A plain function rather than a closure literal: a closure passed to pthread_create from top-level code
/// crashed with SIGILL under Swift 6 (shared/NOTES.md).
private func shardThreadMain(_ raw: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let context = Unmanaged<ShardThreadContext>.fromOpaque(raw!).takeRetainedValue()
    context.engine.runShard(context.index)
    return nil
}
