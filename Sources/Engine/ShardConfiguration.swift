/// Sizes of a shard's preallocated resources. Everything here is allocated once at start-up.
public struct ShardConfiguration: Sendable {
    /// Submission queue entries; the completion queue gets four times as many.
    public var ringEntries: UInt32 = 2048
    /// Provided receive buffers (a power of two) and their size. A buffer holds the recvmsg header and the
    /// source address (144 bytes) before the datagram, so 9216 fits a 9000-byte jumbo datagram.
    public var receiveBuffers = 1024
    public var receiveBufferBytes = 9216
    /// Concurrent outbound datagrams and the largest datagram the shard sends.
    public var sendSlots = 2048
    public var sendSlotBytes = 9000
    /// Timers a shard can hold at once (nodes are allocated as the live timers first reach a new high: 40 bytes
    /// each). Past it a timer is refused and counted (`timers_full`). A shard at 4,000 calls/s holds ~100,000.
    public var timerCapacity = 1 << 22
    /// SO_RCVBUF / SO_SNDBUF asked of the kernel for each socket.
    public var socketBufferBytes: Int32 = 4 << 20
    /// The share of a core (percent) a shard's thread may want before it is overloaded (`LoadMonitor`); 0 never.
    public var overloadPercent = 90
    /// TCP: connections a shard holds at most (accepted past it are closed at once, counted; also bounded by the
    /// descriptors the process may open), how long one may stay idle, how long a message may take to arrive once
    /// begun (one header byte a second), how long a connect may take, the largest message framed, and the sends
    /// one connection may have waiting (all connections together: half the send slots).
    public var streamConnections = 16_384
    public var streamIdleMilliseconds: UInt64 = 120_000
    public var streamMessageMilliseconds: UInt64 = 10_000
    public var streamConnectMilliseconds: UInt64 = 3_000
    public var streamLargestMessage = 65_535
    public var streamQueuedSends = 256
    /// How long a write may wait for a peer that does not read before its connection is closed.
    public var streamWriteMilliseconds: UInt64 = 10_000

    public init() {}
}
