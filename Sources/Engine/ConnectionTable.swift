import Glibc

/// One TCP connection of a shard: its descriptor, the ring operations it has in flight, the bytes of a message
/// not yet whole, and the sends waiting their turn (a stream's writes must not overlap: one in flight at a time).
struct Connection {
    enum State: UInt8 { case free, connecting, open, closing }

    var fd: Int32 = -1
    var generation: UInt16 = 1
    var state = State.free
    var peer = SocketAddress(ipv4: (0, 0, 0, 0), port: 0)
    var receiveArmed = false
    var connectInFlight = false
    /// A write of the queue's first `writing` messages is in flight.
    var sending = false
    var writing = 0
    /// On the shard's list of connections to write before the turn's submit (`Shard.flushStreams`).
    var flushDue = false
    /// Send slots waiting, linked through `SendPool.streamNext`; -1: none.
    var queueHead: Int32 = -1
    var queueTail: Int32 = -1
    var queued = 0
    /// When a byte last arrived or a send completed (idle timeout), and when the message now in `partial`
    /// began (a message that takes too long to arrive: one header byte a second).
    var lastActivity: UInt64 = 0
    var partialSince: UInt64 = 0
    /// The start of a message a read did not finish, allocated only when one is left over (most reads hold
    /// whole messages, which are parsed in the receive buffer).
    var partial: UnsafeMutableRawBufferPointer?
    var partialCount = 0
    /// The whole length of the message in `partial` once its headers have arrived (0: not known yet).
    var awaiting = 0
    /// When the queue's first message became first: one not written whole for long is a peer that stopped reading.
    var headSince: UInt64 = 0
    /// The peer closed its side: close once the queue is written.
    var closeAfterFlush = false
    /// Opened here (a connect), not accepted: only accepted ones are announced to the other shards.
    var outbound = false

    /// No ring operation still refers to the socket: it may be closed.
    var quiet: Bool { !receiveArmed && !connectInFlight && !sending }
}

/// A shard's connections, in slots addressed by `StreamHandle` (slot and generation), and found by the peer's
/// address for reuse (a request to an address we hold a connection with goes over it, as in OpenSIPS).
///
/// - Invariant: a slot's generation changes when it is freed, so a handle or a completion from an earlier use
///   no longer matches. Slots are created as the live count first reaches a new high, up to `capacity`.
struct ConnectionTable {
    private(set) var slots: [Connection] = []
    private var free: [UInt32] = []
    private var byPeer: [SocketAddress: UInt32] = [:]
    let capacity: Int
    private(set) var live = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    subscript(slot: UInt32) -> Connection {
        get { slots[Int(slot)] }
        _modify { yield &slots[Int(slot)] }
    }

    /// The slot of a handle's connection while it is the same connection, not closing, and with a peer at `host`
    /// (any port: a reply goes to the Via's port, not the connection's): a handle kept long (a dialog's) whose
    /// slot was reused 65,536 times since must not reach someone else.
    func usable(_ handle: StreamHandle, host: SocketAddress) -> UInt32? {
        let i = Int(handle.slot)
        guard i < slots.count, slots[i].generation == handle.generation,
              slots[i].state == .open || slots[i].state == .connecting,
              slots[i].peer.hasSameHost(as: host) else { return nil }
        return handle.slot
    }

    /// A connection to `peer` that can still carry messages.
    func connection(to peer: SocketAddress) -> UInt32? {
        guard let slot = byPeer[peer], slots[Int(slot)].state == .open || slots[Int(slot)].state == .connecting else {
            return nil
        }
        return slot
    }

    /// A slot for a new connection; nil at `capacity`.
    mutating func add(fd: Int32, peer: SocketAddress, state: Connection.State, now: UInt64) -> UInt32? {
        let slot: UInt32
        if let reused = free.popLast() {
            slot = reused
        } else {
            guard slots.count < capacity else { return nil }
            slots.append(Connection())
            slot = UInt32(slots.count - 1)
        }
        slots[Int(slot)].fd = fd
        slots[Int(slot)].state = state
        slots[Int(slot)].peer = peer
        slots[Int(slot)].lastActivity = now
        // The newest connection to an address is the one reused for it.
        byPeer[peer] = slot
        live += 1
        return slot
    }

    /// Frees a slot whose socket is closed and whose queue is empty.
    mutating func remove(_ slot: UInt32) {
        let i = Int(slot)
        precondition(slots[i].state != .free && slots[i].quiet && slots[i].queued == 0)
        if byPeer[slots[i].peer] == slot { byPeer[slots[i].peer] = nil }
        slots[i].partial?.deallocate()
        let generation = slots[i].generation
        slots[i] = Connection()
        slots[i].generation = generation == UInt16.max ? 1 : generation + 1
        free.append(slot)
        live -= 1
    }
}
