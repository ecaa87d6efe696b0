import FuzzReplay
import Ops

/// What the MariaDB and HTTP runners keep of bytes from outside: a result set's cells as Connector/C hands them
/// over (any lengths, NULLs, a buffer that must grow) read back through `DatabaseCompletion.value`, and a
/// response body as libcurl's write callback delivers it (chunks of any size against a limit). The input drives
/// the shapes and supplies the bytes; each is checked against a plain model. MariaDB's and libcurl's own parsers
/// are theirs: what is fuzzed here is everything ringsip does with what they return.
///
/// Built with `-sanitize=fuzzer,address -DFUZZING` (`make fuzz`), a libFuzzer target; built normally, a replayer.
enum FuzzResults {
    static func run(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= 2 else { return }
        let half = bytes.count / 2
        database(UnsafeRawBufferPointer(rebasing: bytes[0..<half]))
        http(UnsafeRawBufferPointer(rebasing: bytes[half...]))
    }

    /// A byte reader that wraps around, so short inputs still make long cells.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var at = 0
        mutating func next() -> UInt8 {
            defer { at += 1 }
            return bytes[at % bytes.count]
        }
        var done: Bool { at >= bytes.count }
    }

    static func database(_ bytes: UnsafeRawBufferPointer) {
        var input = Reader(bytes: bytes)
        let columns = Int(input.next() % 8) + 1
        let cells = DatabaseResultCells(capacity: 16)
        for _ in 0..<2 {  // twice: the second result reuses the grown buffer
            var expected: [[UInt8]?] = []
            while !input.done {
                let control = input.next()
                // A NULL, mostly short cells, now and then a long one (up to 63 × 64 bytes).
                if control & 0x80 != 0 {
                    expected.append(nil)
                    continue
                }
                let count = control & 0x40 != 0 ? Int(control & 0x3F) * 64 : Int(control & 0x3F)
                expected.append((0..<count).map { _ in input.next() })
            }
            // Connector/C returns whole rows only.
            let rows = expected.count / columns
            expected.removeLast(expected.count - rows * columns)
            cells.removeAll()
            for cell in expected {
                guard let cell else {
                    cells.append(nil, count: 0)
                    continue
                }
                cell.withUnsafeBytes { cells.append($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: cell.count) }
            }
            cells.withCompletion(code: .completed, rows: rows, columns: columns) { completion in
                for row in 0..<rows {
                    for column in 0..<columns {
                        let value = completion.value(row: row, column: column)
                        let want = expected[row * columns + column]
                        precondition((value == nil) == (want == nil), "NULL-ness changed")
                        if let value, let want { precondition(value.elementsEqual(want), "a cell's bytes changed") }
                    }
                }
            }
            input.at = 1
        }
    }

    static func http(_ bytes: UnsafeRawBufferPointer) {
        var input = Reader(bytes: bytes)
        var body = HTTPBody()
        defer { body.deallocate() }
        for _ in 0..<2 {  // two transfers on one lane
            let limit = Int(input.next()) << 8 | Int(input.next())
            body.reset(limit: limit)
            var model: [UInt8] = []
            var refused = false
            while !input.done {
                let size = Int(input.next()) * (input.next() & 1 == 0 ? 1 : 97)
                let chunk = (0..<size).map { _ in input.next() }
                let taken = chunk.withUnsafeBytes { body.append($0.baseAddress, size) }
                if model.count + size <= limit {
                    precondition(taken == size, "a chunk within the limit was refused")
                    model += chunk
                } else {
                    precondition(taken == 0, "a chunk past the limit was taken")
                    refused = true
                }
            }
            precondition(body.tooLarge == refused && body.count == model.count && body.count <= limit)
            precondition(body.bytes.elementsEqual(model), "the body differs from its chunks")
            input.at = 0
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzResults(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    FuzzResults.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_cdecl("fuzz_results_main")
public func fuzzEntry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runLibFuzzer(argc, argv, fuzzResults)
}
#else
@main
struct FuzzResultsReplay {
    static func main() { FuzzReplay.replay(CommandLine.arguments.dropFirst(), FuzzResults.run) }
}
#endif
