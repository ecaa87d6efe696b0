import CUring
import Glibc

/// Why the engine cannot use io_uring here, in one sentence a user can act on.
public struct RingUnavailable: Error, CustomStringConvertible {
    public var description: String
}

/// The setup flags a ring was created with, for the start-up log line.
public struct RingFeatures: Sendable, CustomStringConvertible {
    public var flags: UInt32

    public var description: String {
        let names: [(UInt32, String)] = [
            (IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"), (IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"),
            (IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"), (IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"),
            (IORING_SETUP_CQSIZE, "CQSIZE"),
        ]
        let on = names.filter { flags & $0.0 != 0 }.map(\.1)
        return on.isEmpty ? "none" : on.joined(separator: "|")
    }
}

/// One io_uring, used by exactly one thread. The `io_uring` struct lives behind a pointer because
/// `&object.ring` on a class property costs ~28 ns per call in exclusivity checks (shared/NOTES.md).
///
/// - Invariant: only the thread that created the ring (the shard's) submits to it; that is what lets the ring
///   be created with SINGLE_ISSUER|DEFER_TASKRUN.
public final class Ring: @unchecked Sendable {
    public let ring: UnsafeMutablePointer<io_uring>
    public let features: RingFeatures
    public var fd: Int32 { ring.pointee.ring_fd }

    /// Flag sets tried from best to plainest. DEFER_TASKRUN needs SINGLE_ISSUER (alone it is EINVAL);
    /// flags newer than liburing 2.3 (e.g. NO_SQARRAY) are never tried, because 2.3 mis-reads that layout.
    static let flagPreference: [UInt32] = [
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        IORING_SETUP_SUBMIT_ALL,
        0,
    ]

    /// - Parameter entries: submission queue size; the completion queue is four times larger, because one
    ///   multishot receive can post many completions per submission.
    public init(entries: UInt32) throws(RingUnavailable) {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        var lastError: Int32 = 0
        var chosen: UInt32?
        for flags in Ring.flagPreference {
            var params = io_uring_params()
            params.flags = flags | IORING_SETUP_CQSIZE
            params.cq_entries = entries * 4
            let rc = io_uring_queue_init_params(entries, ring, &params)
            if rc == 0 {
                chosen = params.flags
                break
            }
            lastError = -rc
            // Anything but "this flag is not supported" means io_uring itself is unusable: stop trying.
            if lastError != EINVAL { break }
        }
        guard let flags = chosen else {
            ring.deallocate()
            throw Ring.explain(errno: lastError)
        }
        features = RingFeatures(flags: flags)
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    static func explain(errno code: Int32) -> RingUnavailable {
        let disabled = Syscalls.readSysctl("/proc/sys/kernel/io_uring_disabled")
        switch code {
        case ENOSYS:
            return RingUnavailable(description: "io_uring is not available: this kernel was built without it (ENOSYS).")
        case EPERM where disabled == "1" || disabled == "2":
            return RingUnavailable(description:
                "io_uring is disabled on this machine (kernel.io_uring_disabled=\(disabled!)); set it to 0 to run ringsipd.")
        case EPERM:
            return RingUnavailable(description:
                "io_uring is not permitted here (EPERM): a seccomp profile or container policy blocks it.")
        case ENOMEM:
            return RingUnavailable(description:
                "io_uring could not lock memory for its rings (ENOMEM): raise RLIMIT_MEMLOCK or use fewer shards.")
        default:
            return RingUnavailable(description: "io_uring setup failed: \(Errno(rawValue: code)).")
        }
    }

    /// Checks every opcode the engine depends on, before any shard starts.
    public func requireOpcodes() throws(RingUnavailable) {
        guard let probe = io_uring_get_probe_ring(ring) else {
            throw RingUnavailable(description: "io_uring is present but its opcode probe failed; the kernel is too old.")
        }
        defer { io_uring_free_probe(probe) }
        let needed: [(Int32, String)] = [
            (Int32(IORING_OP_RECVMSG.rawValue), "RECVMSG"), (Int32(IORING_OP_SENDMSG.rawValue), "SENDMSG"),
            (Int32(IORING_OP_TIMEOUT.rawValue), "TIMEOUT"), (Int32(IORING_OP_TIMEOUT_REMOVE.rawValue), "TIMEOUT_REMOVE"),
            (Int32(IORING_OP_MSG_RING.rawValue), "MSG_RING"), (Int32(IORING_OP_ASYNC_CANCEL.rawValue), "ASYNC_CANCEL"),
        ]
        let missing = needed.filter { io_uring_opcode_supported(probe, $0.0) == 0 }.map(\.1)
        guard missing.isEmpty else {
            throw RingUnavailable(description:
                "this kernel's io_uring lacks \(missing.joined(separator: ", ")); ringsipd needs Linux 6.0 or newer.")
        }
    }

    /// A free SQE, submitting what is queued first if the queue is full.
    @inline(__always)
    public func sqe() -> UnsafeMutablePointer<io_uring_sqe> {
        if let sqe = io_uring_get_sqe(ring) { return sqe }
        _ = io_uring_submit(ring)
        guard let sqe = io_uring_get_sqe(ring) else {
            preconditionFailure("io_uring submission queue still full right after a submit")
        }
        return sqe
    }
}
