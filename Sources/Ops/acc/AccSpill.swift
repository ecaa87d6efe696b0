import Glibc

/// A shard's append-only file of accounting rows MariaDB has not taken yet (`<spill_dir>/acc-<shard>.spill`), and
/// how far they have been replayed (`acc-<shard>.offset`), so a restart replays only what was not written.
///
/// One line per row: the statement head (`INSERT INTO t (c, …) VALUES `), a tab, the values tuple. The values are
/// escaped by the connector (`mysql_real_escape_string` turns CR and LF into `\r`, `\n`), so a row never holds a
/// raw newline; a tab inside a value is harmless (only the first tab splits).
///
/// Appends collect in memory and reach the file at `flush` (the writer's 250 ms tick, and before any replay read),
/// so a shard spilling 2000 rows a second makes a few writes a second, not one per row.
/// - Invariant: `replayed <= fileSize`; everything before `replayed` is in MariaDB (or the rejected file).
final class AccSpill {
    struct Line {
        var head: String
        var values: String
        /// Written with a leading '?': the row may be in the table already (`AccStatements.guarded`).
        var uncertain = false
        /// File offset just after this line: where replay stands once it is written.
        var end: Int
    }

    let path: String
    private let offsetPath: String
    private let fd: Int32
    private(set) var fileSize: Int
    private(set) var replayed: Int
    private var buffer: [UInt8] = []

    /// Opens (creating) the shard's spill file and reads how far it was replayed. Nil with the reason when the
    /// directory cannot be made or the file opened.
    static func open(directory: String, shard: Int) -> Result<AccSpill, SpillError> {
        if mkdir(directory, 0o750) != 0 && errno != EEXIST {
            return .failure(SpillError(reason: "cannot create \(directory): \(String(cString: strerror(errno)))"))
        }
        let path = "\(directory)/acc-\(shard).spill"
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else {
            return .failure(SpillError(reason: "cannot open \(path): \(String(cString: strerror(errno)))"))
        }
        return .success(AccSpill(path: path, fd: fd))
    }

    struct SpillError: Error { var reason: String }

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
        offsetPath = String(path.dropLast(".spill".count)) + ".offset"
        var status = stat()
        fileSize = fstat(fd, &status) == 0 ? Int(status.st_size) : 0
        replayed = 0
        if let text = Self.readSmallFile(offsetPath), let offset = Int(text.trimming(" \t\r\n")),
           offset >= 0 && offset <= fileSize {
            replayed = offset
        }
    }

    deinit {
        flush()
        close(fd)
    }

    /// Rows not yet replayed, in the file or waiting to be written to it.
    var hasRows: Bool { replayed < fileSize || !buffer.isEmpty }

    func append(head: String, values: String, uncertain: Bool = false) {
        if uncertain { buffer.append(UInt8(ascii: "?")) }
        buffer.append(contentsOf: head.utf8)
        buffer.append(UInt8(ascii: "\t"))
        buffer.append(contentsOf: values.utf8)
        buffer.append(UInt8(ascii: "\n"))
    }

    /// Writes what `append` collected to the end of the file and syncs it. A failed write keeps the rows in memory
    /// (the next flush tries again) and says why.
    @discardableResult
    func flush() -> String? {
        guard !buffer.isEmpty else { return nil }
        var written = 0
        let failure: String? = buffer.withUnsafeBytes { bytes in
            while written < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + written, bytes.count - written, off_t(fileSize + written))
                if n < 0 {
                    if errno == EINTR { continue }
                    return String(cString: strerror(errno))
                }
                written += n
            }
            return nil
        }
        fileSize += written
        buffer.removeFirst(written)
        _ = fdatasync(fd)
        return failure
    }

    /// Up to `limit` rows from where replay stands (flushing first).
    func read(limit: Int) -> [Line] {
        flush()
        guard replayed < fileSize else { return [] }
        let want = min(fileSize - replayed, 1 << 20)
        var chunk = [UInt8](repeating: 0, count: want)
        let got = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, off_t(replayed)) }
        guard got > 0 else { return [] }
        var lines: [Line] = []
        var start = 0
        for i in 0..<got where chunk[i] == UInt8(ascii: "\n") {
            let line = chunk[start..<i]
            if let tab = line.firstIndex(of: UInt8(ascii: "\t")) {
                let uncertain = chunk[start] == UInt8(ascii: "?")
                lines.append(Line(head: String(decoding: chunk[(start + (uncertain ? 1 : 0))..<tab], as: UTF8.self),
                                  values: String(decoding: chunk[(tab + 1)..<i], as: UTF8.self), uncertain: uncertain,
                                  end: replayed + i + 1))
            }
            start = i + 1
            if lines.count == limit { break }
        }
        // A line longer than the 1 MiB read (no newline in it) cannot be a row this writer made: skip past it.
        // A shorter read without a newline is a row still being written (a flush cut short): it waits.
        if lines.isEmpty && start == 0 && got == want && want == 1 << 20 {
            lines.append(Line(head: "", values: "", end: replayed + got))
        }
        return lines
    }

    /// Replay has written everything before `offset`: remember it; once all is replayed, empty the file.
    func replayed(through offset: Int) {
        replayed = max(replayed, min(offset, fileSize))
        if replayed == fileSize && buffer.isEmpty {
            _ = ftruncate(fd, 0)
            fileSize = 0
            replayed = 0
        }
        let text = "\(replayed)\n"
        let file = Glibc.open(offsetPath + ".new", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard file >= 0 else { return }
        _ = text.withCString { Glibc.write(file, $0, strlen($0)) }
        _ = fdatasync(file)
        close(file)
        _ = rename(offsetPath + ".new", offsetPath)
    }

    private static func readSmallFile(_ path: String) -> String? {
        let file = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let n = bytes.withUnsafeMutableBytes { Glibc.read(file, $0.baseAddress, 64) }
        return n > 0 ? String(decoding: bytes[0..<n], as: UTF8.self) : nil
    }
}

/// An append-only text file beside the spill file, one line per record acc could not deliver and keeps for a
/// person to look at (`acc-<shard>.rejected`: rows the server refused; `acc-<shard>.radius-lost`: RADIUS records
/// that could not wait). Opened, with its directory, at the first line.
final class AccSideFile {
    let path: String
    private var fd: Int32 = -1

    init(path: String) { self.path = path }

    deinit { if fd >= 0 { close(fd) } }

    /// False when the line could not be written: the caller logs it whole instead.
    func append(_ line: String) -> Bool {
        if fd < 0 {
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if !directory.isEmpty { _ = mkdir(directory, 0o750) }
            fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else { return false }
        }
        let text = line.hasSuffix("\n") ? line : line + "\n"
        return text.withCString { write(fd, $0, strlen($0)) } > 0
    }
}
