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
    /// A timeout update or removal, or an ASYNC_CANCEL request; its completion carries nothing we need.
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
    /// A read, write or poll submitted for a layer above (`Shard.submitRead` …); slot and generation are the
    /// caller's (`OperationID`), and the completion goes to `ShardHandler.operationCompleted`.
    case operation = 9
    /// MSG_RING payload: shard `shard` has written records to its mail queue to this shard (`Shard.send(mail:)`).
    case mail = 10
    /// MSG_RING payload: this shard's mail queue to shard `shard` has room again after it found it full.
    case mailRoom = 11
    /// A multishot accept on a TCP listening socket; slot = listener index, generation = the listener's arm count.
    case accept = 12
    /// A TCP connection's multishot receive, its connect, and a send of its queue's head. For receive and connect,
    /// slot and generation are the connection's (`StreamHandle`); for a send, the send slot's.
    case streamReceive = 13
    case streamConnect = 14
    case streamSend = 15
}

/// Names an operation submitted by a layer above the engine: the caller's slot and its generation, carried in
/// the tag's slot and generation fields, so the caller can drop a completion for a slot it has since reused.
/// The engine gives the values no meaning; callers sharing a shard partition `slot` among themselves (Ops:
/// see `OpsOperation`).
public struct OperationID: Equatable, Hashable, Sendable {
    public var slot: UInt32
    public var generation: UInt16

    @inline(__always)
    public init(slot: UInt32, generation: UInt16) {
        self.slot = slot
        self.generation = generation
    }
}

/// Who owns a wheel-timer payload (`Shard.schedule(after:payload:)`): the handler sees every timer of its
/// shard, so each layer marks its own with a high bit and ignores the others.
///
/// payload, high to low: TM 1 | Ops 1 | rest 62 (the owner's layout, documented beside its encoder).
/// TM's transaction timers set bit 63; Ops' timers set bit 62 and leave bit 63 clear.
public enum TimerPayloadOwner {
    public static let transactions: UInt64 = 1 << 63
    public static let operations: UInt64 = 1 << 62
}

public enum ControlCommand: UInt32, Sendable {
    case stop = 1
    case reportCounters = 2
}
