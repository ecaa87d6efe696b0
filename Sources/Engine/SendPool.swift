import CUring
import Glibc

/// Preallocated outbound datagrams: each slot owns a buffer, an iovec, a msghdr and a destination address,
/// all stable in memory while the kernel reads them, so a send allocates nothing.
///
/// - Invariant: a slot is either free (on the free stack) or in flight with exactly one SQE carrying
///   `Tag(.send, shard, generation, slot)`; its generation advances when it is freed, so a late completion
///   for an earlier use is recognised as stale and dropped.
final class SendPool {
    let capacity: Int
    let slotBytes: Int
    private let buffers: UnsafeMutableRawPointer
    let headers: UnsafeMutablePointer<msghdr>
    private let vectors: UnsafeMutablePointer<iovec>
    private let addresses: UnsafeMutablePointer<sockaddr_storage>
    private let generations: UnsafeMutablePointer<UInt16>
    private let freeStack: UnsafeMutablePointer<Int32>
    private var freeCount: Int
    /// For a slot sent on a TCP connection: the next slot queued on the same connection (-1: none), the bytes
    /// the kernel has taken so far (a stream send may be partial), and the connection's slot.
    let streamNext: UnsafeMutablePointer<Int32>
    let streamSent: UnsafeMutablePointer<Int32>
    let streamConnection: UnsafeMutablePointer<UInt32>
    /// The shard that mailed the message here to be written (-1: this one's own), told if it cannot be delivered.
    let streamOrigin: UnsafeMutablePointer<Int16>
    var inFlight: Int { capacity - freeCount }

    init(capacity: Int, slotBytes: Int) {
        self.capacity = capacity
        self.slotBytes = slotBytes
        buffers = .allocate(byteCount: capacity * slotBytes, alignment: 64)
        headers = .allocate(capacity: capacity)
        vectors = .allocate(capacity: capacity)
        addresses = .allocate(capacity: capacity)
        generations = .allocate(capacity: capacity)
        generations.initialize(repeating: 1, count: capacity)
        freeStack = .allocate(capacity: capacity)
        streamNext = .allocate(capacity: capacity)
        streamNext.initialize(repeating: -1, count: capacity)
        streamSent = .allocate(capacity: capacity)
        streamSent.initialize(repeating: 0, count: capacity)
        streamConnection = .allocate(capacity: capacity)
        streamOrigin = .allocate(capacity: capacity)
        streamOrigin.initialize(repeating: -1, count: capacity)
        streamConnection.initialize(repeating: 0, count: capacity)
        for i in 0..<capacity {
            freeStack[i] = Int32(capacity - 1 - i)
            vectors[i] = iovec(iov_base: buffers + i * slotBytes, iov_len: 0)
            addresses[i] = sockaddr_storage()
            headers[i] = msghdr()
            headers[i].msg_name = UnsafeMutableRawPointer(addresses + i)
            headers[i].msg_iov = vectors + i
            headers[i].msg_iovlen = 1
        }
        freeCount = capacity
    }

    deinit {
        buffers.deallocate()
        headers.deallocate()
        vectors.deallocate()
        addresses.deallocate()
        generations.deallocate()
        freeStack.deallocate()
        streamNext.deallocate()
        streamSent.deallocate()
        streamConnection.deallocate()
        streamOrigin.deallocate()
    }

    @inline(__always)
    func acquire() -> OutboundDatagram? {
        guard freeCount > 0 else { return nil }
        freeCount -= 1
        let slot = freeStack[freeCount]
        let buffer = UnsafeMutableRawBufferPointer(start: buffers + Int(slot) * slotBytes, count: slotBytes)
        return OutboundDatagram(slot: slot, generation: generations[Int(slot)], buffer: buffer)
    }

    /// Fills the slot's msghdr for a send of `length` bytes to `destination`.
    @inline(__always)
    func prepare(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress) -> UnsafeMutablePointer<msghdr> {
        let i = Int(datagram.slot)
        destination.write(to: addresses + i)
        vectors[i].iov_len = length
        headers[i].msg_namelen = destination.length
        return headers + i
    }

    /// Sets a slot up to be written to a stream: `length` bytes, none taken yet, queued on `connection`.
    func prepareStream(slot: Int32, length: Int, connection: UInt32, origin: Int) {
        let i = Int(slot)
        vectors[i].iov_len = length
        streamSent[i] = 0
        streamNext[i] = -1
        streamConnection[i] = connection
        streamOrigin[i] = Int16(origin)
    }

    /// What is left to write of a slot queued on a stream.
    func unsent(slot: Int32) -> (start: UnsafeMutableRawPointer, count: Int) {
        let i = Int(slot)
        let sent = Int(streamSent[i])
        return (buffers + i * slotBytes + sent, vectors[i].iov_len - sent)
    }

    func generation(of slot: Int32) -> UInt16 { generations[Int(slot)] }

    /// The whole message a slot prepared for a stream holds.
    func streamMessage(slot: Int32) -> UnsafeRawBufferPointer {
        let i = Int(slot)
        return UnsafeRawBufferPointer(start: buffers + i * slotBytes, count: vectors[i].iov_len)
    }

    /// Frees a slot whose completion carries `generation`; false (and nothing freed) when it is stale.
    @inline(__always)
    func release(slot: UInt32, generation: UInt16) -> Bool {
        let i = Int(slot)
        guard i < capacity, generations[i] == generation else { return false }
        generations[i] = generation == UInt16.max ? 1 : generation + 1
        freeStack[freeCount] = Int32(slot)
        freeCount += 1
        return true
    }
}

/// A send buffer lent to a handler between `Shard.makeDatagram()` and `Shard.send` / `Shard.discard`.
public struct OutboundDatagram {
    let slot: Int32
    let generation: UInt16
    /// Where the handler writes the datagram.
    public let buffer: UnsafeMutableRawBufferPointer

    init(slot: Int32, generation: UInt16, buffer: UnsafeMutableRawBufferPointer) {
        self.slot = slot
        self.generation = generation
        self.buffer = buffer
    }

    /// A buffer that belongs to no send pool, for a `ShardIO` without a ring (tests): its owner keeps it.
    public init(unpooled buffer: UnsafeMutableRawBufferPointer) {
        self.init(slot: -1, generation: 0, buffer: buffer)
    }
}
