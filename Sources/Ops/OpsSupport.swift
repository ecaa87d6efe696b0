import Engine
import SIP

extension StringProtocol {
    /// Without the leading and trailing characters in `set`, compared by Unicode scalar (so a "\r\n" is two).
    func trimming(_ set: String) -> String {
        let scalars = Array(unicodeScalars)
        let drop = Array(set.unicodeScalars)
        guard let first = scalars.firstIndex(where: { !drop.contains($0) }),
              let last = scalars.lastIndex(where: { !drop.contains($0) }) else { return "" }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[first...last])
        return String(out)
    }
}

extension SIPMessage {
    /// The From and To tags and the Call-ID as Strings (empty when absent): for state a module keeps past the
    /// message (dialogs, accounting records). They allocate.
    var fromTagText: String { from.map { string($0.tag) } ?? "" }
    var toTagText: String { to.map { string($0.tag) } ?? "" }
    var callIDText: String { callID.map { string($0) } ?? "" }
}

/// Counts failures of one kind and says which to log: the first, then every 1000th, so a database or server that
/// is down does not flood the log.
struct FailureCount {
    private(set) var count = 0

    /// Counts one; true when this one is logged.
    mutating func add() -> Bool {
        count += 1
        return count == 1 || count % 1000 == 0
    }
}

/// Whether a writer may send to a server that failed: freely while it answers; after a failure one probe at a
/// time, after a back-off that doubles from 250 ms to 5 s and starts again at the next success.
struct ProbeBackoff {
    private(set) var healthy = true
    private var retryAt: UInt64 = 0
    private var delay: UInt64 = 250

    /// `idle`: nothing of the writer's is in flight, so a probe may go.
    func maySend(now: UInt64, idle: Bool) -> Bool { healthy || (idle && now >= retryAt) }

    mutating func succeeded() {
        healthy = true
        delay = 250
    }

    mutating func failed(now: UInt64) {
        if !healthy { delay = min(delay * 2, 5_000) }
        healthy = false
        retryAt = now + delay
    }
}

extension Shard {
    /// Sends a request a module makes itself (a keep-alive OPTIONS, a dialog's BYE) from the listening socket
    /// nearest `socket`, or on `socket`'s TCP connection; false when there is no send slot or socket for it, or it
    /// does not fit a datagram.
    @discardableResult
    func sendOwn(_ bytes: [UInt8], to destination: SocketAddress, preferring socket: Int) -> Bool {
        let index = StreamHandle.isStream(socket) ? socket : socketIndex(for: destination, preferring: socket)
        guard let index, let out = makeDatagram() else { return false }
        guard bytes.count <= out.buffer.count else {
            discard(out)
            return false
        }
        bytes.withUnsafeBytes { out.buffer.copyMemory(from: $0) }
        send(out, length: bytes.count, to: destination, socketIndex: index)
        return true
    }
}
