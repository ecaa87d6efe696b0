/// A result set copied out of Connector/C's rows as they are fetched: every cell's bytes packed into one buffer
/// that grows as needed and is kept query after query, and per cell, row-major, (offset, length) with length
/// -1 for SQL NULL. What `DatabaseCompletion.value` reads back.
///
/// Owns its buffer; a completion made by `withCompletion` views it only during the call.
public final class DatabaseResultCells {
    private var cells: [Int] = []
    private var values: UnsafeMutableRawPointer
    public private(set) var capacity: Int
    public private(set) var used = 0

    public init(capacity: Int = 4096) {
        precondition(capacity > 0)
        self.capacity = capacity
        values = .allocate(byteCount: capacity, alignment: 16)
        cells.reserveCapacity(256)
    }

    deinit { values.deallocate() }

    /// Cells appended since the last `removeAll`.
    public var count: Int { cells.count / 2 }

    public func removeAll() {
        cells.removeAll(keepingCapacity: true)
        used = 0
    }

    /// One cell: `count` bytes at `bytes`, or SQL NULL when `bytes` is nil.
    public func append(_ bytes: UnsafeRawPointer?, count: Int) {
        guard let bytes else {
            cells.append(0)
            cells.append(-1)
            return
        }
        precondition(count >= 0)
        if used + count > capacity {
            var grown = capacity * 2
            while grown < used + count { grown *= 2 }
            let larger = UnsafeMutableRawPointer.allocate(byteCount: grown, alignment: 16)
            larger.copyMemory(from: values, byteCount: used)
            values.deallocate()
            values = larger
            capacity = grown
        }
        (values + used).copyMemory(from: bytes, byteCount: count)
        cells.append(used)
        cells.append(count)
        used += count
    }

    /// A completion over these cells, valid during `body`.
    /// - Precondition: `rows * columns == count` when there are rows.
    public func withCompletion<R>(code: DatabaseCode, errorNumber: UInt32 = 0,
                                  message: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                                  rows: Int, columns: Int, affectedRows: UInt64 = 0,
                                  _ body: (borrowing DatabaseCompletion) -> R) -> R {
        precondition(rows == 0 || rows * columns == count)
        return cells.withUnsafeBufferPointer { cells in
            body(DatabaseCompletion(code: code, errorNumber: errorNumber, message: message, rows: rows, columns: columns,
                                    affectedRows: affectedRows, cells: cells.baseAddress, values: UnsafeRawPointer(values)))
        }
    }
}
