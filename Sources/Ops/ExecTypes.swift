import Engine

/// What an `exec()` ended with; the script layer puts `rawValue` in `$rc`.
///
/// OpenSIPS' exec returns 1 once the command ran and its output was read, whatever its exit status, and -1
/// when it could not run (modules/exec/exec.c, `exec_sync`); ringsip keeps that, so existing scripts read the
/// same `$rc`, and reports the exit status or signal beside it (`ExecCompletion.exit`).
public enum ExecCode: Int32, Sendable {
    /// The command ran to the end: it exited (any status) or was killed by a signal not ours.
    case completed = 1
    /// It could not run: pipes, pidfd or posix_spawn failed, or the shard's timer wheel was full.
    case failed = -1
    /// Its timeout expired: the child's process group was killed with SIGKILL and reaped.
    case timeout = -2
    /// The shard already runs its maximum of children and its wait queue is full: refused at once.
    case queueFull = -3
}

/// The outcome of `ExecRunner.submit`.
public enum ExecSubmission: Equatable, Sendable {
    /// The child runs (or waits in the shard's queue for a free place); the delegate hears of it exactly once,
    /// unless it is cancelled first.
    case accepted(ExecHandle)
    /// Refused at once (`.queueFull`, `.failed`); no delegate call follows. `errno` says why it failed.
    case rejected(ExecCode, errno: Errno?)
}

/// Names one submitted exec: its operation slot and that slot's generation, so a late cancel of an exec that
/// has finished (its slot since reused) does nothing.
public struct ExecHandle: Equatable, Sendable {
    let slot: Int32
    let generation: UInt16

    init(slot: Int32, generation: UInt16) {
        self.slot = slot
        self.generation = generation
    }
}

/// One finished exec, seen by the delegate.
///
/// - Invariant: `stdout` and `stderr` point into the runner's per-child buffers and are valid only during
///   the delegate call; whatever must outlive it is copied.
public struct ExecCompletion: ~Copyable {
    public let code: ExecCode
    /// How the child ended; nil when it never ran (timed out in the queue, spawn failed).
    public let exit: ChildExit?
    public let stdout: UnsafeRawBufferPointer
    public let stderr: UnsafeRawBufferPointer
    /// More output arrived than the buffer holds (`ExecRunner.Configuration.outputLimit`); the rest was read
    /// and dropped, so the child never blocks on a full pipe.
    public let stdoutTruncated: Bool
    public let stderrTruncated: Bool
}

/// Receives finished execs, on the shard's thread. The delegate may submit or cancel from inside the call.
public protocol ExecRunnerDelegate: AnyObject {
    func execCompleted(token: UInt64, _ completion: borrowing ExecCompletion, on shard: Shard)
}
