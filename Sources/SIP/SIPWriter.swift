/// Why a builder wrote nothing usable.
public enum SIPBuildError: Error, Sendable, Equatable {
    /// The message does not fit in the send buffer.
    case bufferTooSmall
    /// Max-Forwards is 0: the proxy answers 483 (RFC 3261 §16.3 step 3) instead of forwarding.
    case maxForwardsExhausted
    /// A field the builder must rewrite (Max-Forwards, the top Via) does not parse: call
    /// `validate()` before building.
    case malformedMessage
}

/// Appends bytes to a caller-provided send buffer. Running out of room is sticky and reported once
/// by `finish()`, so the writing code needs no error handling per piece.
public struct SIPWriter {
    public let buffer: UnsafeMutableRawBufferPointer
    public private(set) var count = 0
    public private(set) var overflowed = false

    public init(_ buffer: UnsafeMutableRawBufferPointer) {
        self.buffer = buffer
    }

    public mutating func write(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        guard n > 0 else { return }
        guard !overflowed, n <= buffer.count - count, let base = buffer.baseAddress else {
            overflowed = true
            return
        }
        (base + count).copyMemory(from: bytes.baseAddress!, byteCount: n)
        count += n
    }

    public mutating func write(_ literal: StaticString) {
        write(UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    public mutating func write(byte: UInt8) {
        guard !overflowed, count < buffer.count else {
            overflowed = true
            return
        }
        buffer[count] = byte
        count += 1
    }

    /// A non-negative integer in decimal, written straight into the buffer from its last digit.
    public mutating func write(decimal value: Int) {
        precondition(value >= 0, "negative value")
        var n = 1
        var v = value / 10
        while v > 0 {
            n += 1
            v /= 10
        }
        guard !overflowed, n <= buffer.count - count else {
            overflowed = true
            return
        }
        v = value
        var i = count + n - 1
        repeat {
            buffer[i] = UInt8(truncatingIfNeeded: v % 10) + 0x30
            v /= 10
            i -= 1
        } while v > 0
        count += n
    }

    /// `value` as exactly `digits` lower-case hex digits (the low ones).
    public mutating func write(hex value: UInt64, digits: Int = 16) {
        precondition(digits > 0 && digits <= 16)
        var shift = (digits - 1) * 4
        while shift >= 0 {
            let nibble = UInt8(truncatingIfNeeded: value >> UInt64(shift)) & 0xF
            write(byte: nibble < 10 ? 0x30 + nibble : 0x61 + nibble - 10)
            shift -= 4
        }
    }

    /// The number of bytes written, or `.bufferTooSmall`.
    public func finish() throws(SIPBuildError) -> Int {
        if overflowed { throw .bufferTooSmall }
        return count
    }

    mutating func write(_ source: UnsafeRawBufferPointer, _ span: SIPSpan) {
        guard span.isPresent, span.upper > span.lower else { return }
        write(UnsafeRawBufferPointer(rebasing: source[span.lower..<span.upper]))
    }

    mutating func write(_ source: UnsafeRawBufferPointer, _ lower: Int, _ upper: Int) {
        guard upper > lower else { return }
        write(UnsafeRawBufferPointer(rebasing: source[lower..<upper]))
    }

    mutating func writeCRLF() {
        write(byte: 0x0D)
        write(byte: 0x0A)
    }
}
