/// The 64-bit `user_data` every submission carries, so a completion can be dispatched without a lookup.
///
/// user_data, high to low: kind 8 | shard 8 | generation 16 | slot 32.
/// Kind 0 is never issued, so a zeroed completion never decodes as ours.
/// A MSG_RING's payload arrives as the target ring's `cqe.user_data`, so cross-shard messages are tags too;
/// their `kind` says how the other fields are read (see `TagKind`).
public struct Tag: Equatable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    @inline(__always)
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    @inline(__always)
    public init(kind: TagKind, shard: Int, generation: UInt16, slot: UInt32) {
        precondition(shard >= 0 && shard < 256, "shard index \(shard) does not fit the tag's 8 bits")
        rawValue = UInt64(kind.rawValue) << 56 | UInt64(shard) << 48 | UInt64(generation) << 32 | UInt64(slot)
    }

    /// nil for kinds this build does not know, e.g. a zeroed or corrupted completion.
    public var kind: TagKind? { TagKind(rawValue: UInt8(truncatingIfNeeded: rawValue >> 56)) }
    public var shard: Int { Int(UInt8(truncatingIfNeeded: rawValue >> 48)) }
    public var generation: UInt16 { UInt16(truncatingIfNeeded: rawValue >> 32) }
    public var slot: UInt32 { UInt32(truncatingIfNeeded: rawValue) }

    public var description: String {
        "Tag(\(kind.map { "\($0)" } ?? "unknown"), shard \(shard), gen \(generation), slot \(slot))"
    }
}

public enum TagKind: UInt8, Sendable {
    /// A multishot recvmsg; slot = socket index, generation = the socket's arm count.
    case receive = 1
    /// A sendmsg; slot = send slot, generation = the slot's generation.
    case send = 2
    /// The shard's single timer-wheel timeout; slot = 0, generation = arm count.
    case wheelTimeout = 3
    /// A timeout update or removal; its completion carries nothing we need.
    case timeoutUpdate = 4
    /// MSG_RING payload: a datagram lent by shard `shard`; slot = provided-buffer id,
    /// generation = socket index it arrived on, `cqe.res` = the recvmsg result length.
    case handoff = 5
    /// MSG_RING payload: shard `shard` is done with a lent buffer; slot = buffer id. The owner recycles it.
    case handoffRelease = 6
    /// MSG_RING payload from the control thread; slot = `ControlCommand`.
    case control = 7
    /// The sender's own completion of a MSG_RING submission (only failures arrive: CQE_SKIP_SUCCESS).
    case messageSent = 8
}

public enum ControlCommand: UInt32, Sendable {
    case stop = 1
    case reportCounters = 2
}
