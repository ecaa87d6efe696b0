import CUring
import Glibc

// The process syscalls (spawn, kill, reap), beside Syscalls.swift so that file stays about sockets and the
// ring. None runs per message: only when a script runs exec().

/// A child started by `ChildProcess.spawnShell`: its pid, a pidfd (polls readable once it has exited), and
/// our ends of its standard streams, all close-on-exec and non-blocking, to be read and written on the ring.
///
/// - Invariant: the child leads its own process group (pgid == pid), so `kill(group: true)` also reaches
///   what it started: `/bin/sh -c "a; b"` forks, and killing only the shell would leave `a` holding the pipes.
public struct ChildProcess: Sendable {
    public let pid: pid_t
    public let pidfd: Int32
    /// Our write end of the child's stdin.
    public let stdin: Int32
    /// Our read ends of the child's stdout and stderr.
    public let stdout: Int32
    public let stderr: Int32
}

/// How a reaped child ended.
public enum ChildExit: Equatable, Sendable {
    case exited(status: Int32)
    case signaled(signal: Int32)
}

extension ChildProcess {
    /// Runs `/bin/sh -c command` with pipes for its stdin, stdout and stderr (its 0, 1, 2), an empty signal
    /// mask and default signal dispositions (the engine's threads block SIGINT/SIGTERM/SIGPIPE, and a blocked
    /// or ignored signal survives exec), in a process group of its own.
    ///
    /// - Parameter environment: a NULL-terminated `NAME=value` array, or nil for the engine's own `environ`.
    /// - Note: posix_spawn allocates inside glibc (its file-actions list, a clone stack mapping); that is the
    ///   price of a child process, paid per exec, never per message.
    public static func spawnShell(command: UnsafePointer<CChar>,
                                  environment: UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> Result<ChildProcess, Errno> {
        var stdinPipe: (Int32, Int32) = (-1, -1)
        var stdoutPipe: (Int32, Int32) = (-1, -1)
        var stderrPipe: (Int32, Int32) = (-1, -1)
        func closeAll() {
            for fd in [stdinPipe.0, stdinPipe.1, stdoutPipe.0, stdoutPipe.1, stderrPipe.0, stderrPipe.1] where fd >= 0 {
                close(fd)
            }
        }
        func setNonBlocking(_ fd: Int32) {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        // CLOEXEC from birth: another shard may be spawning at the same moment, and must not inherit these.
        for i in 0..<3 {
            var fds: (Int32, Int32) = (-1, -1)
            let rc = withUnsafeMutableBytes(of: &fds) { CUring_pipe2($0.baseAddress!.assumingMemoryBound(to: Int32.self), O_CLOEXEC) }
            guard rc == 0 else {
                closeAll()
                return .failure(Errno(rawValue: -rc))
            }
            switch i {
            case 0: stdinPipe = fds
            case 1: stdoutPipe = fds
            default: stderrPipe = fds
            }
        }
        // Only our ends are non-blocking: the child expects ordinary blocking streams.
        setNonBlocking(stdinPipe.1)
        setNonBlocking(stdoutPipe.0)
        setNonBlocking(stderrPipe.0)

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // dup2 clears CLOEXEC on the copy (glibc ≥ 2.29 also when source == target), so only 0/1/2 survive exec.
        posix_spawn_file_actions_adddup2(&actions, stdinPipe.0, 0)
        posix_spawn_file_actions_adddup2(&actions, stdoutPipe.1, 1)
        posix_spawn_file_actions_adddup2(&actions, stderrPipe.1, 2)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))

        var pid: pid_t = 0
        let rc = shellPath.withUnsafeBufferPointer { sh in
            dashC.withUnsafeBufferPointer { flag in
                // argv on the stack: no Swift array per spawn.
                withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<CChar>?.self, capacity: 4) { argv in
                    argv[0] = UnsafeMutablePointer(mutating: sh.baseAddress!)
                    argv[1] = UnsafeMutablePointer(mutating: flag.baseAddress!)
                    argv[2] = UnsafeMutablePointer(mutating: command)
                    argv[3] = nil
                    return posix_spawn(&pid, sh.baseAddress!, &actions, &attributes, argv.baseAddress!,
                                       environment.map { UnsafeMutablePointer(mutating: $0) } ?? environ)
                }
            }
        }
        guard rc == 0 else {
            closeAll()
            return .failure(Errno(rawValue: rc))
        }
        // The child holds its ends now; ours of those must go, or we never see EOF on its output.
        close(stdinPipe.0)
        close(stdoutPipe.1)
        close(stderrPipe.1)
        let pidfd = CUring_pidfd_open(pid)
        guard pidfd >= 0 else {
            // Without a pidfd we cannot observe the exit on the ring: undo the spawn.
            _ = Glibc.kill(-pid, SIGKILL)
            var info = siginfo_t()
            _ = waitid(P_PID, id_t(pid), &info, WEXITED)
            close(stdinPipe.1)
            close(stdoutPipe.0)
            close(stderrPipe.0)
            return .failure(Errno(rawValue: -pidfd))
        }
        return .success(ChildProcess(pid: pid, pidfd: pidfd, stdin: stdinPipe.1, stdout: stdoutPipe.0,
                                     stderr: stderrPipe.0))
    }

    private static let shellPath: [CChar] = Array("/bin/sh".utf8CString)
    private static let dashC: [CChar] = Array("-c".utf8CString)

    /// Sends `signal` to the child, or with `group` to its whole process group (what it started too).
    /// ESRCH (already gone) is not an error worth reporting: the caller still reaps.
    @discardableResult
    public static func kill(_ pid: pid_t, signal: Int32, group: Bool = true) -> Errno? {
        Glibc.kill(group ? -pid : pid, signal) == 0 ? nil : Errno(rawValue: errno)
    }

    /// Collects an exited child without blocking (waitid WNOHANG), freeing its process-table entry.
    /// nil while it still runs: call after its pidfd polled readable, then it has exited.
    public static func reap(_ pid: pid_t) -> Result<ChildExit?, Errno> {
        var info = siginfo_t()
        guard waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG) == 0 else { return .failure(Errno(rawValue: errno)) }
        // WNOHANG with nothing to collect leaves si_pid zero.
        guard info._sifields._sigchld.si_pid == pid else { return .success(nil) }
        let status = info._sifields._sigchld.si_status
        return .success(info.si_code == CLD_EXITED ? .exited(status: status) : .signaled(signal: status))
    }

    /// Blocks until the child has exited and collects it. Only for shutdown, after a SIGKILL.
    public static func reapBlocking(_ pid: pid_t) -> ChildExit? {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED) != 0 {
            if errno != EINTR { return nil }
        }
        let status = info._sifields._sigchld.si_status
        return info.si_code == CLD_EXITED ? .exited(status: status) : .signaled(signal: status)
    }

    /// Closes a descriptor the layers above got from the engine (a child's pipe end or pidfd).
    public static func closeDescriptor(_ fd: Int32) {
        Syscalls.closeDescriptor(fd)
    }
}
