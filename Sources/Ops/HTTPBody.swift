/// A response body as libcurl's write callback hands it over, chunk by chunk: kept in one buffer that grows
/// up to `limit` and is reused transfer after transfer. A chunk that would pass the limit is refused (the
/// callback then returns 0 and libcurl aborts the transfer) and marks the body too large.
///
/// The buffer belongs to the body until `deallocate()`; `bytes` views it until the next `append` or `reset`.
public struct HTTPBody {
    private var buffer: UnsafeMutableRawPointer?
    public private(set) var capacity = 0
    public private(set) var count = 0
    public private(set) var limit = 0
    public private(set) var tooLarge = false

    public init() {}

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: buffer, count: count) }

    /// Empties the body for a new transfer of at most `limit` bytes; the buffer is kept.
    public mutating func reset(limit: Int) {
        count = 0
        tooLarge = false
        self.limit = limit
    }

    /// Appends one chunk; returns `chunk` (accepted) or 0 (refused: past the limit).
    public mutating func append(_ data: UnsafeRawPointer?, _ chunk: Int) -> Int {
        guard chunk >= 0, count + chunk <= limit else {
            tooLarge = true
            return 0
        }
        if count + chunk > capacity {
            let size = min(limit, max(count + chunk, 2 * capacity, 16 * 1024))
            let grown = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            if let buffer {
                grown.copyMemory(from: buffer, byteCount: count)
                buffer.deallocate()
            }
            buffer = grown
            capacity = size
        }
        if chunk > 0, let data { (buffer! + count).copyMemory(from: data, byteCount: chunk) }
        count += chunk
        return chunk
    }

    public mutating func deallocate() {
        buffer?.deallocate()
        buffer = nil
        capacity = 0
        count = 0
    }
}
