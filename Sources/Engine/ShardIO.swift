/// What the transaction layer needs from a shard: its clock, its timer wheel, its sends and counters, and the
/// addresses it listens on. `Shard` is the one the daemon runs; a test drives TM with one of its own (a virtual
/// clock on a `TimerWheel`, sends recorded), so the proxy core is tested without a ring.
///
/// - Invariant: used only on the shard's own thread, like the shard.
public protocol ShardIO: AnyObject {
    /// Milliseconds on the shard's monotonic clock, read once per loop turn.
    var now: UInt64 { get }
    var counters: ShardCounters { get set }
    var localAddresses: [SocketAddress] { get }
    /// Schedules `payload` to come back as a timer in `milliseconds`; nil when the wheel is full.
    func schedule(after milliseconds: UInt64, payload: UInt64) -> TimerHandle?
    @discardableResult
    func cancel(_ timer: TimerHandle) -> Bool
    /// The largest datagram `makeDatagram` can hold.
    var datagramCapacity: Int { get }
    /// A send buffer to fill, or nil when every send slot is in flight.
    func makeDatagram() -> OutboundDatagram?
    func send(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress, socketIndex: Int)
    func discard(_ datagram: OutboundDatagram)
    /// The socket to send to `destination` from (`preferred` when its family matches); nil when none fits.
    func socketIndex(for destination: SocketAddress, preferring preferred: Int) -> Int?
    /// Addresses the shard accepts TCP connections on.
    var streamListenAddresses: [SocketAddress] { get }
}

extension ShardIO {
    public var streamListenAddresses: [SocketAddress] { [] }

    /// The local address a message arrived on or leaves from: a UDP socket's, or for a TCP connection (or TCP
    /// toward a destination) the first TCP listen address (the first UDP one when there is none).
    public func localAddress(ofSocket socketIndex: Int) -> SocketAddress? {
        if StreamHandle.isStream(socketIndex) { return streamListenAddresses.first ?? localAddresses.first }
        return socketIndex < localAddresses.count ? localAddresses[socketIndex] : localAddresses.first
    }
}

extension Shard: ShardIO {}
