/// Storage for the bytes a transaction must keep after the receive buffer has gone back to the ring: the
/// request it forwards (to retransmit it and to build CANCEL and ACK), the last response it sent.
///
/// Size classes of 512 B to 16 KiB, each a free list of blocks carved from large chunks; blocks are reused,
/// never returned to the system, so in steady state storing a message allocates nothing. A shard's memory
/// for messages is bounded by its transaction limit times the blocks a transaction holds.
///
/// The free lists are intrusive (a free block's first word points at the next free block), so releasing a
/// block never allocates either; only growing by a chunk does, as the live set first reaches a new high.
/// - Invariant: a block is either on its class's free list or held by exactly one `StoredMessage`.
public final class MessageStore {
    static let classSizes = [512, 1024, 2048, 4096, 8192, 16384]
    static let blocksPerChunk = 64

    /// Head of each class's free list (nil when empty).
    private var freeHeads: [UnsafeMutableRawPointer?]
    /// The chunks, chained through their first word, to free them at the end.
    private var chunkHead: UnsafeMutableRawPointer?
    public private(set) var blocksInUse = 0
    /// Bytes obtained from the system so far (what the store will hold on to).
    public private(set) var reservedBytes = 0

    public init() {
        freeHeads = Array(repeating: nil, count: MessageStore.classSizes.count)
    }

    deinit {
        var chunk = chunkHead
        while let current = chunk {
            chunk = current.load(as: UnsafeMutableRawPointer?.self)
            current.deallocate()
        }
    }

    /// The largest message the store holds; a bigger one cannot be kept by a transaction.
    public static var largest: Int { classSizes.last! }

    /// A copy of `bytes`, or nil when it is larger than `largest`.
    public func store(_ bytes: UnsafeRawBufferPointer) -> StoredMessage? {
        guard let block = allocate(bytes.count) else { return nil }
        if bytes.count > 0 { block.bytes.copyMemory(from: bytes) }
        return StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: bytes.count)
    }

    /// A block of at least `count` bytes to write into; `commit` the length written.
    public func allocate(_ count: Int) -> (bytes: UnsafeMutableRawBufferPointer, sizeClass: UInt8)? {
        guard let sizeClass = MessageStore.classSizes.firstIndex(where: { $0 >= max(count, 1) }) else { return nil }
        if freeHeads[sizeClass] == nil { grow(sizeClass) }
        let block = freeHeads[sizeClass]!
        freeHeads[sizeClass] = block.load(as: UnsafeMutableRawPointer?.self)
        blocksInUse += 1
        return (UnsafeMutableRawBufferPointer(start: block, count: MessageStore.classSizes[sizeClass]), UInt8(sizeClass))
    }

    public func release(_ message: StoredMessage) {
        let sizeClass = Int(message.sizeClass)
        message.block.storeBytes(of: freeHeads[sizeClass], as: UnsafeMutableRawPointer?.self)
        freeHeads[sizeClass] = message.block
        blocksInUse -= 1
    }

    /// Carves a chunk into blocks. The chunk's first 64 bytes chain it to the others (for deinit).
    private func grow(_ sizeClass: Int) {
        let size = MessageStore.classSizes[sizeClass]
        let bytes = 64 + size * MessageStore.blocksPerChunk
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        chunk.storeBytes(of: chunkHead, as: UnsafeMutableRawPointer?.self)
        chunkHead = chunk
        reservedBytes += bytes
        for i in 0..<MessageStore.blocksPerChunk {
            let block = chunk + 64 + i * size
            block.storeBytes(of: freeHeads[sizeClass], as: UnsafeMutableRawPointer?.self)
            freeHeads[sizeClass] = block
        }
    }
}

/// A message held in a `MessageStore` block. A plain value: the owner (a transaction slot) releases it
/// exactly once.
public struct StoredMessage {
    let block: UnsafeMutableRawPointer
    let sizeClass: UInt8
    public let count: Int

    public init(block: UnsafeMutableRawPointer, sizeClass: UInt8, count: Int) {
        self.block = block
        self.sizeClass = sizeClass
        self.count = count
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: block, count: count) }
}
