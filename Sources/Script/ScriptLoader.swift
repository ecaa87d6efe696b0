#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Reads a routing script and turns it into a `ScriptSource`: the front end of the Script module.
public enum ScriptLoader {
    /// Whether `include_file` reads files. Off only in the fuzz target, where a random path must not read the disk.
    nonisolated(unsafe) public static var readsIncludes = true

    /// Reads `path`, follows `include_file`/`import_file` (relative to the including file's directory; an include
    /// cycle is an error), lexes and parses. Throws the first mistake found.
    public static func load(path: String) throws(CompileError) -> ScriptSource {
        let bytes: [UInt8]
        switch readFile(path) {
        case .success(let b): bytes = b
        case .failure(let reason):
            throw CompileError("cannot read script '\(path)': \(reason.message)",
                               at: SourceLocation(file: path, line: 1, column: 1))
        }
        var parser = try Parser(TokenStream(root: Lexer(bytes: bytes, file: path), realPath: realPath(path)))
        return try parser.parseScript()
    }

    /// Parses text (for tests and `--forward`'s one-line script); includes resolve relative to the cwd.
    public static func parse(_ text: String, file: String) throws(CompileError) -> ScriptSource {
        // The text has no directory of its own: "" makes relative include paths resolve against the cwd.
        var parser = try Parser(TokenStream(root: Lexer(bytes: Array(text.utf8), file: file), realPath: nil,
                                            directory: ""))
        return try parser.parseScript()
    }
}

/// The tokens of the main file with included files spliced in where `include_file "path"` stands.
///
/// Includes are expanded here, below the parser, as OpenSIPS expands them in its lexer: an include may stand
/// anywhere a token may, inside a route body too, and needs no `;`.
struct TokenStream {
    struct OpenFile {
        var lexer: Lexer
        /// Canonical path, to recognise a cycle however the include spells it; nil for text given directly.
        var realPath: String?
        /// Directory relative include paths resolve against; "" is the cwd.
        var directory: String
    }

    /// - Invariant: never empty; the last element is the file being read.
    private var open: [OpenFile]
    /// Every file read so far by the name locations use, so an error in any of them can show its line.
    private var sources: [String: [UInt8]]

    init(root: Lexer, realPath: String?, directory: String? = nil) {
        open = [OpenFile(lexer: root, realPath: realPath, directory: directory ?? directoryName(of: root.file))]
        sources = [root.file: root.bytes]
    }

    mutating func next() throws(CompileError) -> Token {
        while true {
            let token = try open[open.count - 1].lexer.next()
            if token.isEnd, open.count > 1 {
                open.removeLast()
                continue
            }
            if let keyword = token.identifier, keyword == "include_file" || keyword == "import_file" {
                try include(keyword: keyword, at: token.location)
                continue
            }
            return token
        }
    }

    /// The value after a top-level `=`, read raw from where the `=` token ended.
    /// - Precondition: the last token returned was that `=`.
    mutating func globalValue() throws(CompileError) -> (GlobalValue, SourceLocation)? {
        try open[open.count - 1].lexer.scanGlobalValue()
    }

    func error(_ message: String, at location: SourceLocation) -> CompileError {
        let line = sources[location.file].flatMap { Lexer.lineText($0, line: location.line) }
        return CompileError(message, at: location, sourceLine: line)
    }

    /// `import_file` is taken as `include_file`: a missing file is an error either way, since a silently skipped
    /// part of a routing script is worse than a refusal to start.
    private mutating func include(keyword: String, at location: SourceLocation) throws(CompileError) {
        let pathToken = try open[open.count - 1].lexer.next()
        guard case .string(let string) = pathToken.kind else {
            throw error("expected a quoted path after '\(keyword)'", at: pathToken.location)
        }
        guard ScriptLoader.readsIncludes else { throw error("includes are not read here", at: location) }
        let including = open[open.count - 1]
        let written = string.plain
        let path = joinPath(including.directory, written)
        let canonical = realPath(path)
        if let canonical, let cycleStart = open.firstIndex(where: { $0.realPath == canonical }) {
            let through = open[(cycleStart + 1)...].map(\.lexer.file)
            let message = "include cycle: \(open[cycleStart].lexer.file) includes itself"
                + (through.isEmpty ? "" : " through " + through.joined(separator: ", "))
            throw error(message, at: location)
        }
        switch readFile(path) {
        case .success(let bytes):
            sources[path] = bytes
            open.append(OpenFile(lexer: Lexer(bytes: bytes, file: path), realPath: canonical,
                                 directory: directoryName(of: path)))
        case .failure(let reason):
            throw error("cannot read include file '\(path)': \(reason.message)", at: location)
        }
    }
}

// MARK: Files, without Foundation

struct FileReadError: Error {
    var message: String
}

/// A script file larger than this is refused: no real script comes near it, and `/dev/zero` or a log file named
/// by mistake would otherwise be read until memory runs out.
let scriptFileLimit = 16 << 20

/// The whole file. Start-up only, so a plain blocking read. Only a regular file, at most `scriptFileLimit` bytes.
func readFile(_ path: String) -> Result<[UInt8], FileReadError> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return .failure(FileReadError(message: String(cString: strerror(errno)))) }
    defer { close(fd) }
    var status = stat()
    guard fstat(fd, &status) == 0 else { return .failure(FileReadError(message: String(cString: strerror(errno)))) }
    guard status.st_mode & S_IFMT == S_IFREG else {
        return .failure(FileReadError(message: "not a regular file"))
    }
    guard status.st_size <= scriptFileLimit else {
        return .failure(FileReadError(message: "larger than \(scriptFileLimit >> 20) MiB: not a script"))
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(FileReadError(message: String(cString: strerror(errno))))
        }
        if n == 0 { return .success(bytes) }
        bytes.append(contentsOf: chunk[0..<n])
        // A file that grows while it is read.
        if bytes.count > scriptFileLimit {
            return .failure(FileReadError(message: "larger than \(scriptFileLimit >> 20) MiB: not a script"))
        }
    }
}

/// The canonical absolute path, or nil when the file does not exist (the read that follows reports why).
func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// `path` relative to `directory` ("" is the cwd); an absolute `path` stands alone.
func joinPath(_ directory: String, _ path: String) -> String {
    if path.hasPrefix("/") || directory.isEmpty { return path }
    return directory.hasSuffix("/") ? directory + path : directory + "/" + path
}

/// Everything before the last `/`: "" for a bare file name, "/" for a file in the root.
func directoryName(of path: String) -> String {
    guard let slash = path.utf8.lastIndex(of: .slash) else { return "" }
    if slash == path.utf8.startIndex { return "/" }
    return String(path.utf8[..<slash])!
}
