import CUring
import Glibc

/// A provided-buffer ring: the kernel picks a free buffer for each datagram a multishot receive delivers,
/// and the shard hands it back with `recycle` once the datagram is processed (or its borrower releases it).
///
/// liburing 2.3 has no `io_uring_setup_buf_ring`, so the ring memory is allocated and registered by hand.
/// - Invariant: a buffer id is either owned by the kernel (in the ring) or leased to exactly one
///   `ReceivedBuffer`; `recycle` consumes the lease, so the same id cannot be returned twice.
public final class BufferRing: @unchecked Sendable {
    public let groupID: UInt16
    public let count: Int
    public let bufferSize: Int
    /// The memory of all buffers, `count * bufferSize` bytes; other shards read lent buffers through it.
    public let base: UnsafeMutableRawPointer
    let ringMemory: UnsafeMutablePointer<io_uring_buf_ring>
    let mask: Int32
    var pendingAdvance: Int32 = 0

    /// - Precondition: `count` is a power of two no larger than 32768 (the kernel's limit per group).
    init(ring: Ring, groupID: UInt16, count: Int, bufferSize: Int) throws(RingUnavailable) {
        precondition(count > 0 && count & (count - 1) == 0 && count <= 32768)
        self.groupID = groupID
        self.count = count
        self.bufferSize = bufferSize
        let ringBytes = count * MemoryLayout<io_uring_buf>.stride
        ringMemory = Syscalls.pageAlignedAllocation(bytes: ringBytes).assumingMemoryBound(to: io_uring_buf_ring.self)
        base = Syscalls.pageAlignedAllocation(bytes: count * bufferSize)
        var registration = io_uring_buf_reg()
        registration.ring_addr = UInt64(UInt(bitPattern: ringMemory))
        registration.ring_entries = UInt32(count)
        registration.bgid = groupID
        let rc = io_uring_register_buf_ring(ring.ring, &registration, 0)
        guard rc == 0 else {
            free(ringMemory)
            free(base)
            throw RingUnavailable(description:
                "this kernel cannot register provided-buffer rings (\(Errno(rawValue: -rc))); ringsipd needs Linux 5.19 or newer.")
        }
        mask = io_uring_buf_ring_mask(UInt32(count))
        io_uring_buf_ring_init(ringMemory)
        for id in 0..<count { add(id: UInt16(id)) }
        publish()
    }

    deinit {
        free(ringMemory)
        free(base)
    }

    @inline(__always)
    public func address(of id: UInt16) -> UnsafeMutableRawPointer {
        base + Int(id) * bufferSize
    }

    @inline(__always)
    func add(id: UInt16) {
        io_uring_buf_ring_add(ringMemory, address(of: id), UInt32(bufferSize), id, mask, pendingAdvance)
        pendingAdvance += 1
    }

    /// Gives a buffer back to the kernel. Visible to it at the next `publish`, once per loop turn.
    @inline(__always)
    func recycle(_ lease: consuming ReceivedBuffer) {
        add(id: lease.id)
        lease.forget()
    }

    /// Makes every recycled buffer visible to the kernel with one store-release.
    @inline(__always)
    func publish() {
        guard pendingAdvance > 0 else { return }
        io_uring_buf_ring_advance(ringMemory, pendingAdvance)
        pendingAdvance = 0
    }
}

/// The lease on one provided buffer, from the completion that filled it until it is recycled.
/// `~Copyable` so the compiler rejects recycling it twice; dropping it without recycling is a leak that
/// `deinit` reports in debug builds.
public struct ReceivedBuffer: ~Copyable {
    public let id: UInt16

    init(id: UInt16) { self.id = id }

    consuming func forget() { discard self }

    deinit {
        assertionFailure("provided buffer \(id) dropped without being recycled")
    }
}
