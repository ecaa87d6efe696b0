import Engine
import Glibc

// A running exec: spawning, its ring operations, timeout and termination, reaping and delivery.
extension ExecRunner {
    private func id(_ index: Int, _ channel: Int) -> OperationID {
        OpsPacking.operationID(.exec, slot: index, channel: channel, generation: slots[index].generation)
    }

    private func outputBuffer(_ index: Int, _ channel: Int) -> UnsafeMutableRawPointer {
        output + (2 * Int(slots[index].lane) + channel - Channel.stdout) * configuration.outputLimit
    }

    /// Spawns the child and submits its I/O. Returns the errno when it could not start (the slot is untouched
    /// apart from its state, and holds no lane).
    func start(_ index: Int) -> Errno? {
        let base = slots[index].input!
        let command = base.assumingMemoryBound(to: CChar.self)
        let spawned: Result<ChildProcess, Errno>
        if slots[index].environmentLength > 0 {
            let start = base + slots[index].commandLength + 1 + slots[index].stdinLength
            spawned = withEnvironment(adding: start, count: slots[index].environmentLength) { envp in
                ChildProcess.spawnShell(command: command, environment: envp)
            }
        } else {
            spawned = ChildProcess.spawnShell(command: command, environment: nil)
        }
        let child: ChildProcess
        switch spawned {
        case .success(let c): child = c
        case .failure(let error): return error
        }
        running += 1
        slots[index].state = .running
        slots[index].lane = freeLanes.removeLast()
        slots[index].pid = child.pid
        slots[index].fds = (child.stdin, child.stdout, child.stderr, child.pidfd)
        if slots[index].stdinLength > 0 {
            writeStdin(index)
        } else {
            closeChannel(index, Channel.stdin)
        }
        read(index, Channel.stdout)
        read(index, Channel.stderr)
        shard.submitPoll(fd: child.pidfd, events: Int16(POLLIN), id: id(index, Channel.exit))
        slots[index].inFlight += 1
        return nil
    }

    /// The exec's own entries, then the engine's environment, as one NULL-terminated array in scratch memory.
    private func withEnvironment<R>(adding entries: UnsafeMutableRawPointer, count: Int,
                                    _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        // +1: the NUL copyInput stores after the environment closes its last entry.
        let bytes = UnsafeRawBufferPointer(start: entries, count: count + 1)
        let needed = ChildEnvironment.capacityNeeded(adding: bytes)
        if needed > environmentCapacity {
            environmentScratch.deallocate()
            environmentCapacity = needed
            environmentScratch = .allocate(capacity: environmentCapacity)
        }
        ChildEnvironment.merge(adding: bytes, into: environmentScratch)
        return body(environmentScratch)
    }

    private func writeStdin(_ index: Int) {
        let start = slots[index].input! + slots[index].commandLength + 1 + slots[index].stdinWritten
        let count = slots[index].stdinLength - slots[index].stdinWritten
        shard.submitWrite(fd: slots[index].fds.stdin, from: UnsafeRawBufferPointer(start: start, count: count),
                          id: id(index, Channel.stdin))
        slots[index].inFlight += 1
    }

    private func read(_ index: Int, _ channel: Int) {
        let fd = channel == Channel.stdout ? slots[index].fds.stdout : slots[index].fds.stderr
        let length = channel == Channel.stdout ? slots[index].outputLength.0 : slots[index].outputLength.1
        let room = configuration.outputLimit - length
        // Past the limit, keep draining into the discard buffer: a child blocked on a full pipe never exits.
        let buffer = room > 0 ? UnsafeMutableRawBufferPointer(start: outputBuffer(index, channel) + length, count: room)
            : discard
        shard.submitRead(fd: fd, into: buffer, id: id(index, channel))
        slots[index].inFlight += 1
    }

    private func poll(_ index: Int, _ channel: Int, events: Int32) {
        let fd = channel == Channel.stdin ? slots[index].fds.stdin
            : channel == Channel.stdout ? slots[index].fds.stdout : slots[index].fds.stderr
        slots[index].polling |= 1 << channel
        shard.submitPoll(fd: fd, events: Int16(events), id: id(index, channel))
        slots[index].inFlight += 1
    }

    private func closeChannel(_ index: Int, _ channel: Int) {
        switch channel {
        case Channel.stdin:
            if slots[index].fds.stdin >= 0 { ChildProcess.closeDescriptor(slots[index].fds.stdin) }
            slots[index].fds.stdin = -1
        case Channel.stdout:
            if slots[index].fds.stdout >= 0 { ChildProcess.closeDescriptor(slots[index].fds.stdout) }
            slots[index].fds.stdout = -1
        default:
            if slots[index].fds.stderr >= 0 { ChildProcess.closeDescriptor(slots[index].fds.stderr) }
            slots[index].fds.stderr = -1
        }
    }

    // MARK: - Completions

    /// Forward every `ShardHandler.operationCompleted` whose `OpsPacking.component(of:)` is `.exec`.
    public func operationCompleted(_ operation: OperationID, result: Int32, flags: UInt32) {
        let (index, channel) = OpsPacking.slotAndChannel(of: operation)
        guard index < capacity, slots[index].generation == operation.generation, slots[index].state == .running
        else {
            staleCompletions += 1
            return
        }
        slots[index].inFlight -= 1
        let stopping = slots[index].timedOut || slots[index].cancelled
        let wasPoll = slots[index].polling & (1 << channel) != 0
        slots[index].polling &= ~(1 << channel)
        switch channel {
        case Channel.exit:
            exitObserved(index)
        case Channel.stdin:
            if stopping || (wasPoll && result < 0) {
                closeChannel(index, channel)
            } else if wasPoll {
                writeStdin(index)
            } else if result == -EAGAIN {
                poll(index, channel, events: POLLOUT)
            } else if result > 0 && slots[index].stdinWritten + Int(result) < slots[index].stdinLength {
                slots[index].stdinWritten += Int(result)
                writeStdin(index)
            } else {
                // All written, or the child stopped reading (EPIPE): either way its stdin ends here.
                closeChannel(index, channel)
            }
        default:
            if stopping || (wasPoll && result < 0) {
                closeChannel(index, channel)
            } else if wasPoll {
                read(index, channel)
            } else if result == -EAGAIN {
                poll(index, channel, events: POLLIN)
            } else if result > 0 {
                received(index, channel, Int(result))
                read(index, channel)
            } else {
                // EOF, or a read error: the stream is over either way.
                closeChannel(index, channel)
            }
        }
        if slots[index].inFlight == 0 { finish(index) }
    }

    private func received(_ index: Int, _ channel: Int, _ count: Int) {
        if channel == Channel.stdout {
            if slots[index].outputLength.0 == configuration.outputLimit { slots[index].truncated.0 = true }
            else { slots[index].outputLength.0 += count }
        } else {
            if slots[index].outputLength.1 == configuration.outputLimit { slots[index].truncated.1 = true }
            else { slots[index].outputLength.1 += count }
        }
    }

    /// The pidfd polled readable: the child has exited; collect it now, so no zombie outlives this turn.
    private func exitObserved(_ index: Int) {
        switch ChildProcess.reap(slots[index].pid) {
        case .success(let exit?):
            slots[index].exit = exit
            slots[index].exitKnown = true
        case .success(nil):
            // Not exited after all (a poll error): watch again.
            shard.submitPoll(fd: slots[index].fds.pidfd, events: Int16(POLLIN), id: id(index, Channel.exit))
            slots[index].inFlight += 1
        case .failure:
            // ECHILD: someone else collected it (SIGCHLD ignored); nothing left to wait for.
            slots[index].exitKnown = true
        }
    }

    // MARK: - Timeout and termination

    /// Forward every `ShardHandler.timerFired` whose `OpsPacking.component(ofTimer:)` is `.exec`.
    public func timerFired(payload: UInt64) {
        let (index, generation) = OpsPacking.slotAndGeneration(ofTimer: payload)
        guard index < capacity, slots[index].generation == generation else {
            staleCompletions += 1
            return
        }
        slots[index].timer = nil
        switch slots[index].state {
        case .queued:
            dequeue(index)
            deliverWithoutRunning(index, code: .timeout)
        case .running:
            slots[index].timedOut = true
            terminate(index)
        case .free, .delivering:
            staleCompletions += 1
        }
    }

    /// Kills the child's process group and cancels its pipe I/O; the pidfd poll stays, so it is still reaped
    /// before the slot finishes.
    func terminate(_ index: Int) {
        if let timer = slots[index].timer {
            shard.cancel(timer)
            slots[index].timer = nil
        }
        if !slots[index].exitKnown { ChildProcess.kill(slots[index].pid, signal: SIGKILL) }
        // A grandchild that left the group could hold a pipe open forever; cancelled reads end regardless.
        for channel in Channel.stdin...Channel.stderr {
            shard.cancelOperations(id: id(index, channel))
        }
    }

    /// Every operation of the exec has completed: report it, free its lane and slot, start the next queued.
    private func finish(_ index: Int) {
        if let timer = slots[index].timer { shard.cancel(timer) }
        closeChannel(index, Channel.stdin)
        closeChannel(index, Channel.stdout)
        closeChannel(index, Channel.stderr)
        ChildProcess.closeDescriptor(slots[index].fds.pidfd)
        slots[index].fds.pidfd = -1
        if !slots[index].cancelled {
            slots[index].state = .delivering
            let completion = ExecCompletion(
                code: slots[index].timedOut ? .timeout : .completed, exit: slots[index].exit,
                stdout: UnsafeRawBufferPointer(start: outputBuffer(index, Channel.stdout), count: slots[index].outputLength.0),
                stderr: UnsafeRawBufferPointer(start: outputBuffer(index, Channel.stderr), count: slots[index].outputLength.1),
                stdoutTruncated: slots[index].truncated.0, stderrTruncated: slots[index].truncated.1)
            delegate.execCompleted(token: slots[index].token, completion, on: shard)
        }
        freeLanes.append(slots[index].lane)
        running -= 1
        release(index)
        pump()
    }

    // MARK: - Shutdown

    /// Ends every exec without reporting it: children killed and reaped (blocking, bounded by SIGKILL), pipes
    /// closed, the queue emptied. For `ShardHandler.stopping`, when no loop turn is left to finish them on the
    /// ring. Their pending reads then see EOF (the writers are dead) and the ring's teardown cancels the rest.
    public func shutdown() {
        for index in 0..<capacity {
            switch slots[index].state {
            case .queued:
                if let timer = slots[index].timer { shard.cancel(timer) }
                dequeue(index)
                release(index)
            case .running:
                if !slots[index].exitKnown {
                    ChildProcess.kill(slots[index].pid, signal: SIGKILL)
                    _ = ChildProcess.reapBlocking(slots[index].pid)
                    slots[index].exitKnown = true
                }
                if let timer = slots[index].timer { shard.cancel(timer) }
                slots[index].timer = nil
                closeChannel(index, Channel.stdin)
                closeChannel(index, Channel.stdout)
                closeChannel(index, Channel.stderr)
                ChildProcess.closeDescriptor(slots[index].fds.pidfd)
                slots[index].fds.pidfd = -1
                running -= 1
                // The slot stays out of the free list: its ring operations never complete now.
                slots[index].cancelled = true
                slots[index].state = .delivering
            case .free, .delivering:
                continue
            }
        }
    }
}
