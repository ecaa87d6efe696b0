import Glibc

/// A value while a route runs. Text is a view, never a copy: into the received message, into literal
/// storage made at compile time, or into the shard's per-message `Arena`. So producing a value allocates
/// nothing.
///
/// - Invariant: a `.text` view is valid until the arena is reset for the next message (or longer).
public enum ScriptValue {
    case null
    case integer(Int)
    case text(UnsafeRawBufferPointer)

    public static let empty = ScriptValue.text(UnsafeRawBufferPointer(start: nil, count: 0))

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The OpenSIPS truth of a variable: defined and not 0 or empty.
    public var isTrue: Bool {
        switch self {
        case .null: false
        case .integer(let n): n != 0
        case .text(let t): t.count > 0
        }
    }

    /// For logs and tests; allocates.
    public var string: String? {
        switch self {
        case .null: nil
        case .integer(let n): String(n)
        case .text(let t): String(decoding: t, as: UTF8.self)
        }
    }

    /// The integer a value denotes: an integer, or text that is entirely a decimal number (with sign).
    public var integerValue: Int? {
        switch self {
        case .null: return nil
        case .integer(let n): return n
        case .text(let t): return parseDecimal(t)
        }
    }
}

/// A decimal integer spanning all of `bytes`, optionally signed; nil otherwise or on overflow.
func parseDecimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
    guard !bytes.isEmpty else { return nil }
    var i = 0
    var negative = false
    if bytes[0] == UInt8(ascii: "-") || bytes[0] == UInt8(ascii: "+") {
        negative = bytes[0] == UInt8(ascii: "-")
        i = 1
    }
    guard i < bytes.count else { return nil }
    var value = 0
    while i < bytes.count {
        let digit = Int(bytes[i]) - 48
        guard digit >= 0 && digit <= 9 else { return nil }
        let (times, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times.addingReportingOverflow(digit)
        guard !o1 && !o2 else { return nil }
        value = sum
        i += 1
    }
    return negative ? -value : value
}

/// A bump allocator for the text a route produces while handling one message (concatenations, numbers
/// turned to text, `$var` copies). Reset before each message, so it never grows and never frees.
public final class Arena {
    public let capacity: Int
    let base: UnsafeMutableRawPointer
    public private(set) var used = 0
    /// Set when a request did not fit; the route is then failed by the caller, never the shard.
    public private(set) var overflowed = false

    public init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit { base.deallocate() }

    @inline(__always)
    public func reset() {
        used = 0
        overflowed = false
    }

    /// `count` bytes of fresh space, or nil (and `overflowed` set) when the arena is full.
    @inline(__always)
    public func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer? {
        guard count <= capacity - used else {
            overflowed = true
            return nil
        }
        let space = UnsafeMutableRawBufferPointer(start: base + used, count: count)
        used += count
        return space
    }

    /// A copy of `bytes` in the arena (for values that must outlive their source, e.g. `$var`).
    public func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let space = allocate(bytes.count) else { return nil }
        if bytes.count > 0 { space.copyMemory(from: bytes) }
        return UnsafeRawBufferPointer(space)
    }

    /// A copy of `text`'s UTF-8 in the arena: for values modules keep as Strings (a registered Contact).
    public func copy(_ text: String) -> UnsafeRawBufferPointer? {
        var text = text
        return text.withUTF8 { copy(UnsafeRawBufferPointer($0)) }
    }

    /// Starts text that is appended piece by piece at the arena's end; finish with `end(_:)`.
    /// Nothing else may allocate from the arena in between.
    @inline(__always)
    public func begin() -> ArenaText { ArenaText(start: used) }

    @inline(__always)
    public func append(_ text: inout ArenaText, _ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0, let space = allocate(bytes.count) else { return }
        space.copyMemory(from: bytes)
        text.count += bytes.count
    }

    public func append(_ text: inout ArenaText, _ value: ScriptValue) {
        switch value {
        case .null: break
        case .text(let t): append(&text, t)
        case .integer(let n): appendDecimal(&text, n)
        }
    }

    public func appendDecimal(_ text: inout ArenaText, _ number: Int) {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { scratch in
            var n = number.magnitude
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(48 + n % 10)
                n /= 10
            } while n > 0
            if number < 0 {
                i -= 1
                scratch[i] = UInt8(ascii: "-")
            }
            append(&text, UnsafeRawBufferPointer(rebasing: scratch[i...]))
        }
    }

    @inline(__always)
    public func end(_ text: ArenaText) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + text.start, count: text.count)
    }
}

public struct ArenaText {
    let start: Int
    var count = 0
}

/// Bytes kept for the life of the compiled script: literals, header names, regex sources.
/// Deliberately never freed: a script is compiled once per process.
public func permanentBytes(_ text: String) -> UnsafeRawBufferPointer {
    let bytes = Array(text.utf8)
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
    storage.copyBytes(from: bytes)
    return UnsafeRawBufferPointer(rebasing: storage[0..<bytes.count])
}

@inline(__always)
func bytesEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
}

@inline(__always)
public func bytesEqualIgnoringCase(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    for i in 0..<a.count where asciiLower(a[i]) != asciiLower(b[i]) { return false }
    return true
}

@inline(__always)
func asciiLower(_ c: UInt8) -> UInt8 { c &- 0x41 < 26 ? c | 0x20 : c }

/// Compares two values the way OpenSIPS scripts expect: numbers numerically when both sides are numbers,
/// otherwise as bytes. Returns <0, 0, >0; nil when either side is NULL (only == / != are then meaningful).
func compareValues(_ a: ScriptValue, _ b: ScriptValue) -> Int? {
    if a.isNull || b.isNull { return nil }
    if case .integer(let x) = a, let y = b.integerValue { return x < y ? -1 : (x > y ? 1 : 0) }
    if case .integer(let y) = b, let x = a.integerValue { return x < y ? -1 : (x > y ? 1 : 0) }
    guard case .text(let x) = a, case .text(let y) = b else {
        // One number, one non-numeric text: never equal; order numbers first.
        if case .integer = a { return -1 }
        return 1
    }
    let n = min(x.count, y.count)
    if n > 0 {
        let c = memcmp(x.baseAddress!, y.baseAddress!, n)
        if c != 0 { return Int(c) }
    }
    return x.count - y.count
}

// Safety: a value is only used on the shard thread that produced it; the one shared constant (`empty`)
// points at nothing.
extension ScriptValue: @unchecked Sendable {}
