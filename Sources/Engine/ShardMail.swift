import Synchronization

/// A one-way byte queue from one shard to another: records of a few hundred bytes that must arrive in order
/// and must not be lost (a registration replicated to every shard). One producer thread, one consumer
/// thread, no lock: the producer publishes `tail` with release ordering after writing a record, the consumer
/// reads up to the `tail` it acquired and publishes `head` once it is done with the bytes.
///
/// Record layout, 8-byte aligned: length u32 | channel u16 | 0 u16 | bytes, padded. A length of
/// `wrapMarker` says the rest of the buffer is unused and the next record starts at offset 0.
///
/// - Invariant: only the producer shard calls `write`, only the consumer shard calls `read`. Positions only
///   grow (wrapping arithmetic on Int is never reached: 2^63 bytes).
final class MailQueue: @unchecked Sendable {
    let capacity: Int
    private let storage: UnsafeMutableRawPointer
    private let head = Atomic<Int>(0)
    private let tail = Atomic<Int>(0)
    /// Set by a producer that found the queue full; the consumer clears it after reading and tells the
    /// producer (`TagKind.mailRoom`) so its backlog moves. Ordered against `head` sequentially consistently,
    /// so either the producer's retry sees the room or the consumer sees the flag.
    let producerWaiting = Atomic<Bool>(false)
    static let headerBytes = 8
    static let wrapMarker = UInt32.max

    /// `capacity` a power of two. The memory is touched only as records reach it.
    init(capacity: Int) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "mail queue capacity must be a power of two")
        self.capacity = capacity
        storage = .allocate(byteCount: capacity, alignment: 8)
    }

    deinit { storage.deallocate() }

    /// Bytes written and not yet read, as the producer sees it (the consumer may have read more since).
    var pendingBytes: Int { tail.load(ordering: .relaxed) - head.load(ordering: .relaxed) }

    /// The largest record a queue takes: a quarter of it, so one large record never waits for an empty queue.
    var largestRecord: Int { capacity / 4 - MailQueue.headerBytes }

    private static func padded(_ count: Int) -> Int { (count + 7) & ~7 }

    /// Producer side. False when the record does not fit now (the consumer is behind): the caller keeps it.
    func write(channel: UInt16, _ bytes: UnsafeRawBufferPointer) -> Bool {
        precondition(bytes.count <= largestRecord, "mail record of \(bytes.count) bytes is larger than the queue allows")
        let start = tail.load(ordering: .relaxed)
        let free = capacity - (start - head.load(ordering: .sequentiallyConsistent))
        let need = MailQueue.headerBytes + MailQueue.padded(bytes.count)
        var offset = start & (capacity - 1)
        var skipped = 0
        if offset + need > capacity {
            // Does not fit before the end: mark the rest unused and start again at 0.
            skipped = capacity - offset
            guard skipped + need <= free else { return false }
            if skipped >= 4 { storage.storeBytes(of: MailQueue.wrapMarker, toByteOffset: offset, as: UInt32.self) }
            offset = 0
        } else {
            guard need <= free else { return false }
        }
        storage.storeBytes(of: UInt32(bytes.count), toByteOffset: offset, as: UInt32.self)
        storage.storeBytes(of: channel, toByteOffset: offset + 4, as: UInt16.self)
        storage.storeBytes(of: UInt16(0), toByteOffset: offset + 6, as: UInt16.self)
        if bytes.count > 0 {
            (storage + offset + MailQueue.headerBytes).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        }
        tail.store(start + skipped + need, ordering: .releasing)
        return true
    }

    /// Consumer side: hands every record published so far to `body`, in order; the bytes are valid only during
    /// the call. Returns how many records it read.
    @discardableResult
    func read(_ body: (UInt16, UnsafeRawBufferPointer) -> Void) -> Int {
        let end = tail.load(ordering: .acquiring)
        var position = head.load(ordering: .relaxed)
        if position == end { return 0 }
        var count = 0
        while position < end {
            let offset = position & (capacity - 1)
            // A gap shorter than a header at the end is skipped without a marker.
            if capacity - offset < MailQueue.headerBytes
                || storage.load(fromByteOffset: offset, as: UInt32.self) == MailQueue.wrapMarker {
                position += capacity - offset
                continue
            }
            let length = Int(storage.load(fromByteOffset: offset, as: UInt32.self))
            let channel = storage.load(fromByteOffset: offset + 4, as: UInt16.self)
            body(channel, UnsafeRawBufferPointer(start: storage + offset + MailQueue.headerBytes, count: length))
            position += MailQueue.headerBytes + MailQueue.padded(length)
            count += 1
        }
        head.store(position, ordering: .sequentiallyConsistent)
        return count
    }
}

/// The mail queues between every ordered pair of shards (`ShardDirectory.mail`).
public final class ShardMailboxes: @unchecked Sendable {
    let count: Int
    private let queues: [MailQueue?]

    /// 1 MiB per ordered pair: a replicated registration is a few hundred bytes, so a queue holds thousands
    /// before its consumer's next turn; the pages are touched only as far as the queue has reached.
    init(count: Int, queueBytes: Int = 1 << 20) {
        self.count = count
        var queues: [MailQueue?] = []
        for from in 0..<count {
            for to in 0..<count { queues.append(from == to ? nil : MailQueue(capacity: queueBytes)) }
        }
        self.queues = queues
    }

    func queue(from: Int, to: Int) -> MailQueue { queues[from * count + to]! }
}
