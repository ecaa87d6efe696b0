import Engine
import Glibc
import Script

/// `exec(…)` called outside `async()`: runs the command and waits for it on the shard's thread, as
/// OpenSIPS' exec does. The whole shard stops meanwhile, so the check warns at every such call site;
/// `async(exec(…), route)` is the way that does not block.
enum SynchronousExec {
    /// Each of stdout and stderr is kept up to this much, in the per-message arena (64 KiB in all).
    static let outputLimit = 8 << 10

    @Sendable static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        compiler.warn("exec() outside async() blocks the whole shard until the command ends; "
            + "async(exec(…), resume_route) does not", at: call.location)
        let command = try compiler.value(call.arguments[0]!)
        let stdin = try call.arguments.count > 1 ? call.arguments[1].map { (e: Expression) throws(CompileError) in
            try compiler.value(e)
        } : nil
        let out = try compiler.outputTarget(call.arguments.count > 2 ? call.arguments[2] : nil, what: "exec's stdout")
        let err = try compiler.outputTarget(call.arguments.count > 3 ? call.arguments[3] : nil, what: "exec's stderr")
        let environment = try compiler.inputAVP(call.arguments.count > 4 ? call.arguments[4] : nil,
                                                what: "exec's environment")
        // As async: modparam("exec", "timeout", ms), else the operation's 10 s; past it the child is killed.
        var limit: UInt64 = 10_000
        if let ms = compiler.configuration.optionalInteger("exec", "timeout"), ms > 0 { limit = UInt64(ms) }
        return { context in
            guard case .text(let text) = command(context) else { return -1 }
            var input = UnsafeRawBufferPointer(start: nil, count: 0)
            if let stdin, case .text(let bytes) = stdin(context) { input = bytes }
            return run(text, stdin: input, environment: environment, out: out, err: err, timeout: limit,
                       context: context)
        }
    }

    /// 1 it ran (its exit status is not the result, as in OpenSIPS), -1 it could not run, -2 it was still running
    /// after `timeout` ms and was killed (its process group, as the async path does).
    static func run(_ command: UnsafeRawBufferPointer, stdin: UnsafeRawBufferPointer, environment: Int?,
                    out: Int?, err: Int?, timeout: UInt64, context: ScriptContext) -> Int {
        let arena = context.arena
        var nulTerminated = arena.begin()
        arena.append(&nulTerminated, command)
        guard let nul = arena.allocate(1) else { return -1 }
        nul[0] = 0
        let commandText = arena.end(nulTerminated)
        guard let base = commandText.baseAddress ?? UnsafeRawPointer(nul.baseAddress) else { return -1 }
        var envp: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        if let environment {
            guard let entries = ExecEnvironment.entries(avp: environment, context: context) else { return -1 }
            let pointers = ChildEnvironment.capacityNeeded(adding: entries)
            guard let array = arena.allocate(pointers * MemoryLayout<UnsafeMutablePointer<CChar>?>.stride + 8) else {
                return -1
            }
            // The arena's bytes are not pointer-aligned: round up inside the 8 spare bytes.
            let aligned = array.baseAddress!.alignedUp(for: UnsafeMutablePointer<CChar>?.self)
            envp = aligned.bindMemory(to: UnsafeMutablePointer<CChar>?.self, capacity: pointers)
            ChildEnvironment.merge(adding: entries, into: envp!)
        }
        guard case .success(let child) = ChildProcess.spawnShell(command: base.assumingMemoryBound(to: CChar.self),
                                                                  environment: envp) else { return -1 }
        // Output goes straight into the arena (what the $avps will point at), each capped.
        guard let outSpace = arena.allocate(outputLimit), let errSpace = arena.allocate(outputLimit) else {
            _ = ChildProcess.kill(child.pid, signal: SIGKILL)
            _ = ChildProcess.reapBlocking(child.pid)
            return -1
        }
        var written = 0, outCount = 0, errCount = 0
        var stdinOpen = true, stdoutOpen = true, stderrOpen = true
        if stdin.count == 0 { close(child.stdin); stdinOpen = false }
        var discard = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let deadline = MonotonicClock.milliseconds() + timeout
        var timedOut = false
        while stdinOpen || stdoutOpen || stderrOpen {
            let now = MonotonicClock.milliseconds()
            if now >= deadline {
                timedOut = true
                _ = ChildProcess.kill(child.pid, signal: SIGKILL)
                break
            }
            var fds = (pollfd(fd: stdinOpen ? child.stdin : -1, events: Int16(POLLOUT), revents: 0),
                       pollfd(fd: stdoutOpen ? child.stdout : -1, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stderrOpen ? child.stderr : -1, events: Int16(POLLIN), revents: 0))
            let ready = withUnsafeMutablePointer(to: &fds) {
                $0.withMemoryRebound(to: pollfd.self, capacity: 3) { poll($0, 3, Int32(clamping: deadline - now)) }
            }
            if ready < 0 { if errno == EINTR { continue } else { break } }
            if stdinOpen && fds.0.revents != 0 {
                let n = write(child.stdin, stdin.baseAddress! + written, stdin.count - written)
                if n > 0 { written += n }
                if n < 0 && errno != EAGAIN || written == stdin.count { close(child.stdin); stdinOpen = false }
            }
            if stdoutOpen && fds.1.revents != 0 {
                stdoutOpen = drain(child.stdout, into: outSpace, count: &outCount, discard: &discard)
            }
            if stderrOpen && fds.2.revents != 0 {
                stderrOpen = drain(child.stderr, into: errSpace, count: &errCount, discard: &discard)
            }
        }
        if stdinOpen { close(child.stdin) }
        close(child.stdout)
        close(child.stderr)
        _ = ChildProcess.reapBlocking(child.pid)
        close(child.pidfd)
        if timedOut { return -2 }
        if let out { context.writeOutput(out, .text(UnsafeRawBufferPointer(rebasing: outSpace[0..<outCount]))) }
        if let err { context.writeOutput(err, .text(UnsafeRawBufferPointer(rebasing: errSpace[0..<errCount]))) }
        return 1
    }

    /// Reads what is there; false at end of file. Beyond the cap the output is read and dropped, so the
    /// child never blocks on a full pipe.
    private static func drain(_ fd: Int32, into space: UnsafeMutableRawBufferPointer, count: inout Int,
                              discard: inout (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)) -> Bool {
        let n: Int
        if count < space.count {
            n = read(fd, space.baseAddress! + count, space.count - count)
            if n > 0 { count += n }
        } else {
            n = withUnsafeMutableBytes(of: &discard) { read(fd, $0.baseAddress, $0.count) }
        }
        return n > 0 || (n < 0 && errno == EAGAIN)
    }
}
