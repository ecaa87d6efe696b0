import Glibc

/// Whether a shard is overloaded, and how much new work it should take: how much of a core its thread wanted
/// over the last window — time on a CPU plus time runnable but waiting for one — as a percentage of the
/// window's wall time.
///
/// Wanted time, not used time: on a machine shared with other work a shard can fall behind while it is on a CPU
/// for only half the window, and its socket's queue grows just the same.
///
/// The admitted share of new work follows the load: a window at or past `thresholdPercent` cuts it in
/// proportion (to what would have brought the window to nine tenths of the threshold), a window below
/// `releasePercent` gives back a tenth, and a window between the two keeps it — so a surge is shed down to what
/// the core carries rather than switched off and on a window at a time, and recovery takes about a second.
/// `admits()` spreads the admitted share evenly over the requests that ask.
///
/// A state machine on caller-given clocks: `sample` takes the wall clock and the thread's wanted time, both in
/// nanoseconds, and returns whether the overloaded state changed.
public struct LoadMonitor: Sendable {
    /// 0: never overloaded.
    public let thresholdPercent: Int
    public var releasePercent: Int { thresholdPercent * 5 / 6 }
    /// Wanted time in percent of wall time (above 100 when the thread waited for a CPU as long as it ran), each
    /// window averaged with the one before: one window's spike (a neighbour's burst on a shared machine) does
    /// not shed, a surge does within two windows.
    public private(set) var percent = 0
    private var sampled = false
    private var windowStart: (wall: UInt64, wanted: UInt64)?

    /// How long a window lasts: short enough to shed within a fifth of a second of a surge, long enough that
    /// reading the thread's times is negligible.
    public static let windowNanoseconds: UInt64 = 100_000_000

    public init(thresholdPercent: Int) {
        self.thresholdPercent = thresholdPercent
    }

    /// Whether a window has passed since the last sample began: the caller reads the clocks only then.
    public func due(wallNanoseconds: UInt64) -> Bool {
        guard let start = windowStart else { return true }
        return wallNanoseconds &- start.wall >= Self.windowNanoseconds
    }

    public mutating func sample(wallNanoseconds: UInt64, wantedNanoseconds: UInt64) -> Bool {
        defer { windowStart = (wallNanoseconds, wantedNanoseconds) }
        guard thresholdPercent > 0, let start = windowStart, wallNanoseconds > start.wall,
              wantedNanoseconds >= start.wanted else { return false }
        let wall = wallNanoseconds - start.wall
        let window = Int((wantedNanoseconds - start.wanted) * 100 / wall)
        // A long window (the loop slept through several) is an average already.
        percent = sampled && wall < 2 * Self.windowNanoseconds ? (percent + window) / 2 : window
        sampled = true
        let was = overloaded
        if percent >= thresholdPercent {
            admitted = max(Self.leastAdmitted, admitted * Double(thresholdPercent) * 0.9 / Double(percent))
        } else if percent < releasePercent {
            // A tenth back per window that passed: a shard that was idle for a second sampled only once.
            admitted = min(1, admitted + 0.1 * Double(max(1, wall / Self.windowNanoseconds)))
        }
        return overloaded != was
    }

    /// The share of new work taken (1 when not overloaded).
    public private(set) var admitted: Double = 1
    public var overloaded: Bool { admitted < 1 }
    /// Never shed everything: a trickle of admitted work is what shows the load has passed.
    static let leastAdmitted = 0.02
    private var credit: Double = 0

    /// Whether to take one more piece of new work: always when not overloaded, else `admitted` of them, evenly.
    public mutating func admits() -> Bool {
        guard admitted < 1 else { return true }
        credit += admitted
        guard credit >= 1 else { return false }
        credit -= 1
        return true
    }
}

/// The calling thread's wanted time (nanoseconds on a CPU plus waiting on a run queue), from
/// /proc/thread-self/schedstat, opened on the thread it describes. Without schedstat (a kernel without
/// CONFIG_SCHED_INFO) the thread's CPU time alone.
final class ThreadTimes {
    private let descriptor: Int32
    private let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 96)

    init() {
        descriptor = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC)
    }

    deinit {
        if descriptor >= 0 { close(descriptor) }
        buffer.deallocate()
    }

    var wantedNanoseconds: UInt64 {
        if descriptor >= 0 {
            let count = pread(descriptor, buffer, 95, 0)
            if count > 0 {
                // "<on cpu ns> <run-queue wait ns> <slices>\n"
                var onCPU: UInt64 = 0, waiting: UInt64 = 0, field = 0
                for i in 0..<count {
                    let byte = buffer[i]
                    if byte == UInt8(ascii: " ") {
                        field += 1
                        if field == 2 { break }
                    } else if byte >= 0x30 && byte <= 0x39 {
                        if field == 0 { onCPU = onCPU &* 10 &+ UInt64(byte - 0x30) }
                        else { waiting = waiting &* 10 &+ UInt64(byte - 0x30) }
                    }
                }
                return onCPU &+ waiting
            }
        }
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
