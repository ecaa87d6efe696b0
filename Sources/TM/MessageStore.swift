import Engine

/// Storage for the bytes a transaction must keep after the receive buffer has gone back to the ring: the
/// request it forwards (to retransmit it and to build CANCEL and ACK), the last response it sent.
///
/// Size classes of 384 B to 16 KiB, each a free list of blocks carved from large chunks; blocks are reused,
/// never returned to the system, so in steady state storing a message allocates nothing. A shard's memory
/// for messages is bounded by its transaction limit times the blocks a transaction holds.
///
/// The free lists are intrusive (a free block's first word points at the next free block), so releasing a
/// block never allocates either; only growing by a chunk does, as the live set first reaches a new high.
/// - Invariant: a block is either on its class's free list or held by exactly one `StoredMessage`.
public final class MessageStore {
    /// The message classes: what a transaction keeps fits the largest. Steps of about 1.5×, not 2×: a ringing
    /// INVITE transaction keeps three messages of 500–800 bytes, and in powers of two each took a 1 KiB block
    /// (perf/capacity: 4,303 bytes per live transaction). Multiples of 64, so every block is cache-line aligned.
    public static let messageClasses = [384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 16384]
    /// Bytes a chunk is carved from at least (a class gets at least one block a chunk, at most 64).
    static let chunkBytes = 1 << 20
    static let maximumBlocksPerChunk = 64

    private let classSizes: [Int]
    private let linkSize = MemoryLayout<UnsafeMutableRawPointer?>.size

    /// Head of each class's free list (nil when empty).
    private var freeHeads: [UnsafeMutableRawPointer?]
    /// The chunks, chained through their first word, to free them at the end.
    private var chunkHead: UnsafeMutableRawPointer?
    public private(set) var blocksInUse = 0
    /// Bytes obtained from the system so far (what the store will hold on to).
    public private(set) var reservedBytes = 0

    /// `classSizes` ascending; the default holds messages. A store of larger classes (an operation's outputs)
    /// carves fewer of its big blocks per chunk.
    public init(classSizes: [Int] = MessageStore.messageClasses) {
        precondition(!classSizes.isEmpty && classSizes == classSizes.sorted())
        self.classSizes = classSizes
        freeHeads = Array(repeating: nil, count: classSizes.count)
    }

    deinit {
        var chunk = chunkHead
        while let current = chunk {
            chunk = current.load(as: UnsafeMutableRawPointer?.self)
            current.deallocate()
        }
    }

    /// The largest message the store holds; a bigger one cannot be kept by a transaction.
    public static var largest: Int { messageClasses.last! }

    /// The largest block this store hands out.
    public var largestBlock: Int { classSizes.last! }

    /// A copy of `bytes`, or nil when it is larger than `largest`.
    public func store(_ bytes: UnsafeRawBufferPointer) -> StoredMessage? {
        guard let block = allocate(bytes.count) else { return nil }
        if bytes.count > 0 { block.bytes.copyMemory(from: bytes) }
        return StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: bytes.count)
    }

    /// A block of at least `count` bytes to write into; `commit` the length written.
    public func allocate(_ count: Int) -> (bytes: UnsafeMutableRawBufferPointer, sizeClass: UInt8)? {
        guard let sizeClass = sizeClass(for: count) else { return nil }
        return allocate(inClass: sizeClass)
    }

    /// The smallest class that holds `count` bytes; nil past the largest.
    private func sizeClass(for count: Int) -> Int? {
        classSizes.firstIndex { $0 >= max(count, 1) }
    }

    private func allocate(inClass sizeClass: Int) -> (bytes: UnsafeMutableRawBufferPointer, sizeClass: UInt8) {
        if freeHeads[sizeClass] == nil { grow(sizeClass) }
        let block = freeHeads[sizeClass]!
        freeHeads[sizeClass] = block.load(as: UnsafeMutableRawPointer?.self)
        AddressSanitizer.unpoison(block, count: classSizes[sizeClass])
        blocksInUse += 1
        return (UnsafeMutableRawBufferPointer(start: block, count: classSizes[sizeClass]), UInt8(sizeClass))
    }

    /// The `count` bytes written into `block` as a stored message in the smallest class that holds them. A block
    /// taken with room to spare (a forwarded request may grow by up to 1 KiB, a reply is sized from its request)
    /// is copied down and given back — it stays warm for the next build — so a transaction keeps what its messages
    /// need, not what they might have needed.
    public func commit(_ block: (bytes: UnsafeMutableRawBufferPointer, sizeClass: UInt8), count: Int) -> StoredMessage {
        let written = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: count)
        guard let tight = sizeClass(for: count), tight < Int(block.sizeClass) else { return written }
        let smaller = allocate(inClass: tight)
        if count > 0 { smaller.bytes.copyMemory(from: UnsafeRawBufferPointer(rebasing: block.bytes[0..<count])) }
        release(written)
        return StoredMessage(block: smaller.bytes.baseAddress!, sizeClass: smaller.sizeClass, count: count)
    }

    public func release(_ message: StoredMessage) {
        let sizeClass = Int(message.sizeClass)
        #if DEBUG
        // A reader still viewing a released block sees this pattern instead of plausible old bytes, so a
        // use after release shows in every debug test run.
        message.block.initializeMemory(as: UInt8.self, repeating: 0xDB, count: classSizes[sizeClass])
        #endif
        message.block.storeBytes(of: freeHeads[sizeClass], as: UnsafeMutableRawPointer?.self)
        freeHeads[sizeClass] = message.block
        // All but the free-list link, which the store itself reads.
        AddressSanitizer.poison(message.block + linkSize, count: classSizes[sizeClass] - linkSize)
        blocksInUse -= 1
    }

    /// Carves a chunk into blocks. The chunk's first 64 bytes chain it to the others (for deinit).
    private func grow(_ sizeClass: Int) {
        let size = classSizes[sizeClass]
        let blocksPerChunk = min(MessageStore.maximumBlocksPerChunk, max(1, MessageStore.chunkBytes / size))
        let bytes = 64 + size * blocksPerChunk
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        chunk.storeBytes(of: chunkHead, as: UnsafeMutableRawPointer?.self)
        chunkHead = chunk
        reservedBytes += bytes
        for i in 0..<blocksPerChunk {
            let block = chunk + 64 + i * size
            block.storeBytes(of: freeHeads[sizeClass], as: UnsafeMutableRawPointer?.self)
            freeHeads[sizeClass] = block
            AddressSanitizer.poison(block + linkSize, count: size - linkSize)
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
