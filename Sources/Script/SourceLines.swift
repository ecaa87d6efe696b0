import Glibc

/// The text of script lines, for the caret under a compile error. Files are read again on demand (errors
/// are rare; keeping every line of every file in memory is not worth it); text given directly (tests,
/// one-line scripts) is kept.
public final class SourceLines: @unchecked Sendable {
    private var texts: [String: [Substring]] = [:]

    public init() {}

    public func register(file: String, text: String) {
        texts[file] = text.split(separator: "\n", omittingEmptySubsequences: false)
    }

    public func line(_ location: SourceLocation) -> String? {
        if texts[location.file] == nil, let text = SourceLines.read(location.file) {
            register(file: location.file, text: text)
        }
        guard let lines = texts[location.file], location.line >= 1, location.line <= lines.count else { return nil }
        var line = lines[location.line - 1]
        if line.hasSuffix("\r") { line.removeLast() }
        return String(line)
    }

    static func read(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
