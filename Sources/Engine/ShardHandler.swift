/// The work a shard does with what it receives. One handler instance per shard, created on the shard's
/// thread, so it may keep per-shard scratch state (a reusable parser, counters) without locks.
/// The shard owns its handler: a handler (or anything it owns, e.g. an ExecRunner) that keeps the shard must
/// keep it `unowned`, or neither is ever freed and the ring's descriptor leaks.
public protocol ShardHandler: AnyObject {
    /// Called for each datagram received by this shard or lent to it by another.
    /// The bytes are valid only during the call: whatever must outlive it is copied into a send buffer.
    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition

    /// Called when a timer scheduled with `Shard.schedule(after:payload:)` fires.
    func timerFired(payload: UInt64, on shard: Shard)

    /// Called when an operation submitted with `Shard.submitRead/submitWrite/submitPoll` completes or is
    /// cancelled. `result` is the kernel's: bytes moved, the poll's revents, or `-errno` (`-ECANCELED` after
    /// `Shard.cancelOperations`). `flags` is the CQE's: `IORING_CQE_F_MORE` set means more completions follow
    /// for the same submission (multishot), so the caller must not reuse its slot yet.
    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard)

    /// Called at the end of the loop turn in which `Shard.continueNextTurn(payload:value:)` recorded it, after
    /// every completion and timer of that turn: never from inside another handler call.
    func continuation(payload: UInt64, value: Int, on shard: Shard)

    /// Called for each record shard `sender` mailed to this one (`Shard.send(mail:channel:to:)`), in the order
    /// sent. The bytes are valid only during the call.
    func mailArrived(from sender: Int, channel: UInt16, _ bytes: UnsafeRawBufferPointer, on shard: Shard)

    /// Called for a message a send could not deliver (a TCP connect refused or timed out, a connection lost before
    /// it was written), once the turn's completions are handled. The bytes are valid only during the call.
    func sendFailed(_ bytes: UnsafeRawBufferPointer, on shard: Shard)

    /// Called once on the shard's thread when every shard is ready, before the first datagram.
    func started(on shard: Shard)

    /// Called once on the shard's thread after its loop has ended (every receive cancelled, every send
    /// completed), before the thread exits: release what the handler holds per shard (live transactions).
    /// Nothing is received after it, and it must not send: no loop turn is left to complete a send.
    func stopping(on shard: Shard)
}

extension ShardHandler {
    public func timerFired(payload: UInt64, on shard: Shard) {}
    public func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {}
    public func continuation(payload: UInt64, value: Int, on shard: Shard) {}
    public func started(on shard: Shard) {}
    public func sendFailed(_ bytes: UnsafeRawBufferPointer, on shard: Shard) {}
    public func mailArrived(from sender: Int, channel: UInt16, _ bytes: UnsafeRawBufferPointer, on shard: Shard) {}
    public func stopping(on shard: Shard) {}
}

/// One received datagram, viewed in place in its provided buffer.
public struct Datagram: ~Copyable {
    public let bytes: UnsafeRawBufferPointer
    public let source: SocketAddress
    /// Index into the shard's sockets (one per listen address) it arrived on.
    public let socketIndex: Int
    /// The shard whose buffer this is, when another shard received it and lent it here.
    public let lender: Int?
    /// Larger than a receive buffer: `bytes` is only its beginning (`parseAndValidate` answers 513).
    public let truncated: Bool

    public init(bytes: UnsafeRawBufferPointer, source: SocketAddress, socketIndex: Int, lender: Int? = nil,
                truncated: Bool = false) {
        self.bytes = bytes
        self.source = source
        self.socketIndex = socketIndex
        self.lender = lender
        self.truncated = truncated
    }
}

public enum Disposition: Equatable {
    /// Finished: the buffer goes back to its ring.
    case done
    /// The datagram belongs to another shard (e.g. a reply for a transaction it owns): lend it there with
    /// MSG_RING. A datagram that was itself lent is never lent again.
    case handOff(toShard: Int)
}
