/// A TCP connection, carried as the `socketIndex: Int` every layer already keeps from a message's arrival to its
/// answers (`Datagram.socketIndex`, a transaction's socket, a branch's socket). A UDP socket's index is small;
/// a stream handle sets bit 62, so one test tells them apart and nothing above the engine needs a second field.
///
/// socketIndex, high to low: 0 | stream 1 | unused 5 | shard 8 | generation 16 | slot 32.
/// Slot `UInt32.max` is no connection in particular: "over TCP to the destination", which the sending shard
/// meets with a connection it has open to that address, or a new one (`StreamHandle.toward`).
public struct StreamHandle: Equatable, Sendable {
    public let shard: Int
    public let slot: UInt32
    public let generation: UInt16

    static let marker = 1 << 62

    public init(shard: Int, slot: UInt32, generation: UInt16) {
        self.shard = shard
        self.slot = slot
        self.generation = generation
    }

    /// nil for a UDP socket's index.
    @inline(__always)
    public init?(socketIndex: Int) {
        guard socketIndex & StreamHandle.marker != 0 else { return nil }
        shard = (socketIndex >> 48) & 0xFF
        generation = UInt16(truncatingIfNeeded: socketIndex >> 32)
        slot = UInt32(truncatingIfNeeded: socketIndex)
    }

    public var socketIndex: Int {
        StreamHandle.marker | shard << 48 | Int(generation) << 32 | Int(slot)
    }

    /// Whether a socket index names a TCP connection (or TCP toward a destination) rather than a UDP socket.
    @inline(__always)
    public static func isStream(_ socketIndex: Int) -> Bool { socketIndex & marker != 0 }

    /// "Over TCP, to wherever the message is sent": the index a request gets when its next hop asks for TCP.
    public static let toward = StreamHandle(shard: 0, slot: UInt32.max, generation: 0).socketIndex

    /// No connection in particular (`toward`).
    public var isToward: Bool { slot == UInt32.max }
}
