import Foundation
import Testing

@testable import SIP

/// The RFC 4475 messages: `../shared/rfc4475` beside the repository root. Missing files are a
/// failure, not a skip: CI always has them.
enum TortureCorpus {
    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // SIPTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root
        .appendingPathComponent("../shared/rfc4475")
        .standardizedFileURL

    static func bytes(_ name: String) throws -> [UInt8] {
        let url = directory.appendingPathComponent(name + ".sip")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw CorpusMissing(path: url.path)
        }
        return [UInt8](data)
    }

    static func names() throws -> [String] {
        let entries = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        return entries.filter { $0.hasSuffix(".sip") }.map { String($0.dropLast(4)) }.sorted()
    }

    struct CorpusMissing: Error, CustomStringConvertible {
        var path: String
        var description: String { "RFC 4475 message missing: \(path)" }
    }
}

/// A message parsed from an owned copy of its bytes, so tests need not nest in `withUnsafeBytes`.
final class Parsed {
    let storage: UnsafeMutableRawBufferPointer
    let message = SIPMessage()
    /// What `parse` threw, if it did.
    let parseError: SIPParseError?

    init(_ bytes: [UInt8]) {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        self.storage = storage
        var caught: SIPParseError?
        do {
            try message.parse(UnsafeRawBufferPointer(rebasing: storage[0..<bytes.count]))
        } catch {
            caught = error
        }
        parseError = caught
    }

    convenience init(_ text: String) {
        self.init(Array(text.utf8))
    }

    convenience init(file name: String) throws {
        self.init(try TortureCorpus.bytes(name))
    }

    deinit { storage.deallocate() }

    var bytes: UnsafeRawBufferPointer { message.bytes }

    func string(_ span: SIPSpan) -> String { message.string(span) }

    /// The span's text with every run of LWS (folds included) collapsed to one SP.
    func unfolded(_ span: SIPSpan) -> String {
        var out: [UInt8] = []
        var inLWS = false
        for c in message.bytes(of: span) {
            if c == 0x20 || c == 0x09 || c == 0x0D || c == 0x0A {
                inLWS = true
                continue
            }
            if inLWS && !out.isEmpty { out.append(0x20) }
            inLWS = false
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }

    func unescaped(_ span: SIPSpan) -> [UInt8] {
        let source = message.bytes(of: span)
        var out = [UInt8](repeating: 0, count: source.count)
        let n = out.withUnsafeMutableBytes { SIPEscaping.unescape(source, into: $0) }
        return Array(out[0..<(n ?? 0)])
    }

    /// What `validate()` throws, or nil.
    func validationError() -> SIPParseError? {
        do {
            try message.validate()
            return nil
        } catch {
            return error
        }
    }

    /// Every value of a kind, as text.
    func values(_ kind: SIPHeaderKind) -> [String] {
        message.values(of: kind).map { string($0) }
    }

    func vias() throws -> [SIPVia] {
        try message.values(of: .via).map { value throws(SIPParseError) in try SIPVia.parse(bytes, value) }
    }

    func firstValue(_ kind: SIPHeaderKind) -> SIPSpan? {
        var values = message.values(of: kind)
        return values.next()
    }

    /// The first value of `kind` parsed as a name-addr (Contact, Route, ...).
    func nameAddr(_ kind: SIPHeaderKind) throws -> SIPNameAddr {
        try SIPNameAddr.parse(bytes, try #require(firstValue(kind)))
    }

    func bytes(of span: SIPSpan) -> [UInt8] { Array(message.bytes(of: span)) }

    func header(_ kind: SIPHeaderKind) -> String? {
        message.firstIndex(of: kind).map { string(message.header(at: $0).value) }
    }
}

/// Builds with a closure over an output buffer and returns the written text.
func build(
    capacity: Int = 4096, _ body: (UnsafeMutableRawBufferPointer) throws(SIPBuildError) -> Int
) throws(SIPBuildError) -> [UInt8] {
    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 1)
    defer { out.deallocate() }
    let n = try body(out)
    return Array(out[0..<n])
}

extension Array where Element == UInt8 {
    var text: String { String(decoding: self, as: UTF8.self) }
}

/// Literal messages in tests are written with LF line ends; SIP wants CRLF.
func crlf(_ text: String) -> String {
    text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
}

/// Keeps test strings at stable addresses for the builders' borrowed pointers.
final class Arena {
    private var blocks: [UnsafeMutableRawBufferPointer] = []

    func bytes(_ text: String) -> UnsafeRawBufferPointer {
        let utf8 = Array(text.utf8)
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: max(utf8.count, 1), alignment: 1)
        utf8.withUnsafeBytes { block.copyMemory(from: $0) }
        blocks.append(block)
        return UnsafeRawBufferPointer(rebasing: block[0..<utf8.count])
    }

    deinit {
        for block in blocks { block.deallocate() }
    }
}
