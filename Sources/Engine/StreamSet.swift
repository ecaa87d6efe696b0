import CUring
import Glibc

/// A shard's TCP side: its listening sockets (one per `listen = tcp:…` address, bound with SO_REUSEPORT on every
/// shard), its connections, and the limits that keep a bad client from taking more than its share.
///
/// - Invariant: used only on the shard's thread, like the shard.
final class StreamSet {
    let listeners: [Int32]
    let listenAddresses: [SocketAddress]
    var acceptGenerations: [UInt16]
    var activeAccepts = 0
    var table: ConnectionTable
    let idleMilliseconds: UInt64
    let writeMilliseconds: UInt64
    let connectMilliseconds: UInt64
    /// Listeners whose accept failed for want of descriptors: armed again by the next sweep.
    var acceptPaused: [Bool]
    /// Connections other shards accepted, by peer address (their `streamPeerChannel` mail).
    var remotePeers: [SocketAddress: Int] = [:]
    /// Messages queued on all connections: at most half the send slots.
    var queuedTotal = 0
    /// Each connection slot's address for its connect, stable until the connect is submitted.
    let connectAddresses: UnsafeMutablePointer<sockaddr_in6>
    /// A partial-message buffer larger than this is freed once it empties.
    static let keptPartialBytes = 8192
    let messageMilliseconds: UInt64
    let largestMessage: Int
    let queueLimit: Int
    /// Every connect's link timeout: copied by the kernel when the connect is submitted.
    let connectTimeout: UnsafeMutablePointer<__kernel_timespec>
    /// Send slots whose message could not be delivered, kept until the turn's completions are handled and then
    /// reported to the handler (`ShardHandler.sendFailed`): never from inside the send that failed.
    var failed: [Int32] = []
    var reporting: [Int32] = []
    /// Connections with messages queued since the last flush (`Shard.flushStreams`).
    var dirty: [UInt32] = []
    /// Each write's header and vectors, by the send slot at the head of what it writes (a slot heads at most one
    /// write at a time). Pages are touched only as far as the slots in use reach.
    let headers: UnsafeMutablePointer<msghdr>
    let vectors: UnsafeMutablePointer<iovec>
    static let vectorsPerWrite = 64
    /// The idle sweep is on the wheel (only while there are connections: an idle shard is not woken).
    var sweepArmed = false

    init(listeners: [Int32], listenAddresses: [SocketAddress], configuration: ShardConfiguration) {
        headers = .allocate(capacity: configuration.sendSlots)
        vectors = .allocate(capacity: configuration.sendSlots * StreamSet.vectorsPerWrite)
        self.listeners = listeners
        self.listenAddresses = listenAddresses
        acceptGenerations = Array(repeating: 0, count: listeners.count)
        acceptPaused = Array(repeating: false, count: listeners.count)
        writeMilliseconds = configuration.streamWriteMilliseconds
        connectMilliseconds = configuration.streamConnectMilliseconds
        connectAddresses = .allocate(capacity: configuration.streamConnections)
        table = ConnectionTable(capacity: configuration.streamConnections)
        idleMilliseconds = configuration.streamIdleMilliseconds
        messageMilliseconds = configuration.streamMessageMilliseconds
        largestMessage = configuration.streamLargestMessage
        queueLimit = configuration.streamQueuedSends
        let timeout = configuration.streamConnectMilliseconds
        connectTimeout = .allocate(capacity: 1)
        connectTimeout.initialize(to: __kernel_timespec(tv_sec: Int64(timeout / 1000),
                                                        tv_nsec: Int64(timeout % 1000) * 1_000_000))
        failed.reserveCapacity(64)
        reporting.reserveCapacity(64)
        dirty.reserveCapacity(64)
    }

    deinit {
        headers.deallocate()
        vectors.deallocate()
        connectTimeout.deallocate()
        connectAddresses.deallocate()
    }

    /// No accept armed and no connection left: the shard may stop.
    var quiet: Bool { activeAccepts == 0 && table.live == 0 }

    /// The wheel payload of the sweep: bit 61 alone, which neither TM (bit 63) nor Ops (bit 62) nor a timer
    /// route (a small index) sets.
    static let sweepPayload: UInt64 = 1 << 61
    static let sweepMilliseconds: UInt64 = 1000

    /// A partial message's buffer, grown to hold `needed` bytes (doubling from 2 KiB); false past the largest
    /// message plus one read (the stream is then closed).
    func reserve(_ slot: UInt32, _ needed: Int, readBytes: Int) -> Bool {
        guard needed <= largestMessage + readBytes else { return false }
        let current = table[slot].partial?.count ?? 0
        guard needed > current else { return true }
        var size = max(current * 2, 2048)
        while size < needed { size *= 2 }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        if let old = table[slot].partial {
            grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: old[0..<table[slot].partialCount]))
            old.deallocate()
        }
        table[slot].partial = grown
        return true
    }
}
