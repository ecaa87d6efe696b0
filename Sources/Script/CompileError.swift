/// The one error of the Script module: a mistake in a routing script, found at start-up.
///
/// Printed as the compiler convention users know, with the offending line and a caret:
/// ```
/// etc/ringsip.cfg:12:5: error: unknown function 'sl_send_replyy' (did you mean 'sl_send_reply'?)
///     sl_send_replyy(404, "Not Here");
///     ^
/// ```
public struct CompileError: Error, Sendable, CustomStringConvertible {
    public var location: SourceLocation
    /// What is wrong and what was expected, one sentence without a trailing period.
    public var message: String
    /// The source line the location points into (without its line break); nil when unavailable.
    public var sourceLine: String?

    public init(_ message: String, at location: SourceLocation, sourceLine: String? = nil) {
        self.message = message
        self.location = location
        self.sourceLine = sourceLine
    }

    public var description: String {
        var text = "\(location): error: \(message)"
        if let sourceLine {
            text += "\n" + sourceLine + "\n"
            // Keep tabs so the caret lines up under the same column in a terminal.
            var caret = ""
            for (i, character) in sourceLine.utf8.enumerated() where i < location.column - 1 {
                caret += character == UInt8(ascii: "\t") ? "\t" : " "
            }
            text += caret + "^"
        }
        return text
    }
}
