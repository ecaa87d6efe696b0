import Glibc

/// An errno value, from a syscall's `errno` or a completion's negative `res`. (swift-system's `Errno` would
/// do, but its bundled io_uring header clashes with liburing 2.3's copy in the same Clang module graph.)
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    public var description: String {
        guard let text = strerror(rawValue) else { return "errno \(rawValue)" }
        return "\(String(cString: text)) (errno \(rawValue))"
    }
}
