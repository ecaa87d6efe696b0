import Engine
import Glibc

/// Runs `exec(command[, stdin[, stdout[, stderr[, env]]]])` as OpenSIPS' exec module does (`/bin/sh -c`),
/// entirely on the shard's ring: stdin written then closed, stdout and stderr read to EOF, the exit observed
/// by polling a pidfd and collected with waitid, so the shard never blocks on a child. One runner per shard.
///
/// At most `maximumChildren` children run at once; more wait in a FIFO inside the shard, and once that is full
/// a submission is refused at once (`.queueFull`). Never a silent fallback to blocking.
///
/// - Invariant: used only on its shard's thread. A slot (with its buffers) is reused only after every ring
///   operation it submitted has completed, so the kernel never writes into a buffer that belongs to another
///   exec; the generation drops anything that arrives later.
/// - Note: in steady state a submission allocates nothing in Swift: slots, queue links, output buffers and
///   the environment scratch are preallocated, and a slot's input storage only grows (to the largest
///   command + stdin + env it has carried). posix_spawn allocates inside glibc, once per child.
public final class ExecRunner {
    public struct Configuration: Sendable {
        /// Children running at once on this shard.
        public var maximumChildren = 64
        /// Execs waiting for a free place; beyond it a submission fails with `.queueFull`.
        public var queueCapacity = 1024
        /// Bytes kept of each of stdout and stderr; more is read and dropped, and reported as truncated.
        public var outputLimit = 64 * 1024
        public init() {}
    }

    enum State: UInt8 { case free, queued, running, delivering }

    /// Channels of a running exec, the low bits of its operation ids.
    enum Channel {
        static let stdin = 0, stdout = 1, stderr = 2, exit = 3
    }

    struct Slot {
        var state = State.free
        var generation: UInt16 = 0
        var token: UInt64 = 0
        var timer: TimerHandle?
        /// command, NUL | stdin | environment ("NAME=value\0" each): the caller's bytes, copied at submit.
        var input: UnsafeMutableRawPointer?
        var inputCapacity = 0
        var commandLength = 0
        var stdinLength = 0
        var environmentLength = 0
        // While running:
        var lane: Int32 = -1
        var pid: pid_t = 0
        var fds: (stdin: Int32, stdout: Int32, stderr: Int32, pidfd: Int32) = (-1, -1, -1, -1)
        var stdinWritten = 0
        var outputLength: (Int, Int) = (0, 0)
        var truncated: (Bool, Bool) = (false, false)
        /// Ring operations submitted and not yet completed; the slot is finished only at zero.
        var inFlight = 0
        /// Per channel bit: the operation in flight is a readiness poll (after EAGAIN), not the I/O itself.
        var polling: UInt8 = 0
        var exit: ChildExit?
        var exitKnown = false
        var timedOut = false
        var cancelled = false
    }

    public let configuration: Configuration
    unowned let shard: Shard
    unowned let delegate: any ExecRunnerDelegate
    let capacity: Int
    let slots: UnsafeMutablePointer<Slot>
    private var lists: SlotLists
    /// Output buffers, one pair per running child ("lane"): lane i's stdout at 2i·limit, stderr after it.
    let output: UnsafeMutableRawPointer
    var freeLanes: [Int32]
    /// Where output beyond the limit is read to and dropped; shared, since nobody reads it.
    let discard: UnsafeMutableRawBufferPointer
    /// The environment array handed to posix_spawn when an exec adds variables; grows only.
    var environmentScratch: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    var environmentCapacity: Int

    /// Children running now (each holds a lane until its last ring operation completes).
    public internal(set) var running = 0
    public var queued: Int { lists.queued }
    /// Completions and timers whose slot had moved on (counted, dropped).
    public internal(set) var staleCompletions = 0

    /// - Precondition: created on the shard's thread (in `ShardHandler.started`), and the delegate outlives it.
    public init(shard: Shard, configuration: Configuration = .init(), delegate: any ExecRunnerDelegate) {
        precondition(configuration.maximumChildren > 0 && configuration.queueCapacity >= 0)
        precondition(configuration.outputLimit > 0)
        self.shard = shard
        self.configuration = configuration
        self.delegate = delegate
        capacity = configuration.maximumChildren + configuration.queueCapacity
        precondition(capacity < OpsPacking.maximumSlots)
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: Slot(), count: capacity)
        lists = SlotLists(capacity: capacity)
        output = .allocate(byteCount: 2 * configuration.outputLimit * configuration.maximumChildren, alignment: 16)
        freeLanes = (0..<Int32(configuration.maximumChildren)).reversed()
        discard = .allocate(byteCount: 16 * 1024, alignment: 16)
        environmentCapacity = 256
        environmentScratch = .allocate(capacity: environmentCapacity)
    }

    deinit {
        for i in 0..<capacity { slots[i].input?.deallocate() }
        slots.deallocate()
        lists.deallocate()
        output.deallocate()
        discard.deallocate()
        environmentScratch.deallocate()
    }

    // MARK: - Submitting

    /// Runs `/bin/sh -c command`, feeding it `stdin`, with `environment` ("NAME=value\0" entries, added to the
    /// engine's own environment) and a timeout (0: none — the script layer always gives one). The bytes are
    /// copied; the delegate later gets `token` back with the outcome.
    public func submit(command: UnsafeRawBufferPointer, stdin: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                       environment: UnsafeRawBufferPointer = .init(start: nil, count: 0),
                       timeoutMilliseconds: UInt64, token: UInt64) -> ExecSubmission {
        let startsNow = running < configuration.maximumChildren
        guard startsNow || queued < configuration.queueCapacity, let index = lists.takeFree() else {
            return .rejected(.queueFull, errno: nil)
        }
        slots[index].token = token
        copyInput(into: index, command: command, stdin: stdin, environment: environment)
        if timeoutMilliseconds > 0 {
            let payload = OpsPacking.timerPayload(.exec, slot: index, generation: slots[index].generation)
            guard let timer = shard.schedule(after: timeoutMilliseconds, payload: payload) else {
                release(index)
                return .rejected(.failed, errno: nil)
            }
            slots[index].timer = timer
        }
        let handle = ExecHandle(slot: Int32(index), generation: slots[index].generation)
        if startsNow {
            if let error = start(index) {
                if let timer = slots[index].timer { shard.cancel(timer) }
                release(index)
                return .rejected(.failed, errno: error)
            }
        } else {
            enqueue(index)
        }
        return .accepted(handle)
    }

    /// Stops an exec without reporting it (the caller gave up on it, e.g. its suspension timed out): a queued
    /// one leaves the queue, a running one's process group is killed and the child still reaped. A handle
    /// whose exec already finished is ignored.
    public func cancel(_ handle: ExecHandle) {
        let index = Int(handle.slot)
        guard index >= 0, index < capacity, slots[index].generation == handle.generation else { return }
        switch slots[index].state {
        case .queued:
            if let timer = slots[index].timer { shard.cancel(timer) }
            dequeue(index)
            release(index)
        case .running:
            slots[index].cancelled = true
            terminate(index)
        case .free, .delivering:
            return
        }
    }

    private func copyInput(into index: Int, command: UnsafeRawBufferPointer, stdin: UnsafeRawBufferPointer,
                           environment: UnsafeRawBufferPointer) {
        // One trailing NUL after the command and one after the environment, in case its last entry lacks it.
        let needed = command.count + 1 + stdin.count + environment.count + 1
        if slots[index].inputCapacity < needed {
            slots[index].input?.deallocate()
            let size = max(needed, 256)
            slots[index].input = .allocate(byteCount: size, alignment: 8)
            slots[index].inputCapacity = size
        }
        let base = slots[index].input!
        if command.count > 0 { base.copyMemory(from: command.baseAddress!, byteCount: command.count) }
        base.storeBytes(of: 0, toByteOffset: command.count, as: UInt8.self)
        if stdin.count > 0 { (base + command.count + 1).copyMemory(from: stdin.baseAddress!, byteCount: stdin.count) }
        let environmentStart = command.count + 1 + stdin.count
        if environment.count > 0 {
            (base + environmentStart).copyMemory(from: environment.baseAddress!, byteCount: environment.count)
        }
        base.storeBytes(of: 0, toByteOffset: environmentStart + environment.count, as: UInt8.self)
        slots[index].commandLength = command.count
        slots[index].stdinLength = stdin.count
        slots[index].environmentLength = environment.count
    }

    // MARK: - Queue and slots

    private func enqueue(_ index: Int) {
        slots[index].state = .queued
        lists.enqueue(index)
    }

    func dequeue(_ index: Int) {
        lists.dequeue(index)
    }

    /// Returns a slot to the free list; its generation moves on, so late completions and handles miss it.
    func release(_ index: Int) {
        let input = slots[index].input, inputCapacity = slots[index].inputCapacity
        let generation = slots[index].generation &+ 1
        slots[index] = Slot()
        slots[index].input = input
        slots[index].inputCapacity = inputCapacity
        slots[index].generation = generation
        lists.putFree(index)
    }

    /// Starts queued execs while there is room. A spawn failure is reported and the next one tried.
    func pump() {
        while running < configuration.maximumChildren, let index = lists.dequeueFirst() {
            if start(index) != nil {
                deliverWithoutRunning(index, code: .failed)
            }
        }
    }

    /// Reports an exec that never ran (failed to spawn from the queue, or timed out while queued).
    func deliverWithoutRunning(_ index: Int, code: ExecCode) {
        if let timer = slots[index].timer { shard.cancel(timer) }
        slots[index].state = .delivering
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        let completion = ExecCompletion(code: code, exit: nil, stdout: empty, stderr: empty,
                                        stdoutTruncated: false, stderrTruncated: false)
        delegate.execCompleted(token: slots[index].token, completion, on: shard)
        release(index)
    }
}
