import Engine
import SIP
import TM

/// What an async() in a branch_route or an onreply_route keeps until its resume route runs: the branch not
/// yet sent, or the response not yet relayed. A transaction can have several at once (each branch of a fork,
/// a 180 and then the 200), so each lives in a block of its own in `ScriptContext.heldWork`, named by its
/// suspension — not in the transaction's single suspension slot, which request and failure routes use.
///
/// Layout: kind u8 (1 a response, 2 a branch) | forced u8 (0 none, else 1 + its transport) | 0 u16 |
/// state length u32 | then i32 | 0 u32 | socket index i64 (a TCP connection's handle is 64 bits) |
/// source (a SocketAddress) | forced destination (a SocketAddress) | state | the response's bytes.
struct HeldWork {
    enum Kind: UInt8 {
        case reply = 1
        case branch = 2
    }

    private static let addressSize = MemoryLayout<SocketAddress>.size
    private static let header = 24 + 2 * addressSize

    let kind: Kind
    /// Where the response came from (a reply), or the request (a branch): `$si` and friends.
    let source: SocketAddress
    let socketIndex: Int
    /// A branch's destination forced by t_relay's argument; nil: the branch's `$du`/`$ru` decide.
    let forced: NextHop?
    /// A response held by the unnamed onreply_route: the transaction's `t_on_reply` route, which still has to
    /// run on it after the resume route; -1 for none.
    let thenRoute: Int
    /// The script's state at the async() (`captureState`).
    let state: UnsafeRawBufferPointer
    /// The response (a reply hold); empty for a branch.
    let response: UnsafeRawBufferPointer

    /// Copies everything into one block of `store`; nil when it does not fit.
    static func keep(_ kind: Kind, source: SocketAddress, socketIndex: Int, forced: NextHop?, thenRoute: Int,
                     state: UnsafeRawBufferPointer, response: UnsafeRawBufferPointer,
                     in store: MessageStore) -> StoredMessage? {
        let count = header + state.count + response.count
        guard let block = store.allocate(count) else { return nil }
        let bytes = block.bytes
        bytes.storeBytes(of: kind.rawValue, toByteOffset: 0, as: UInt8.self)
        bytes.storeBytes(of: forced.map { 1 + $0.transport.rawValue } ?? 0, toByteOffset: 1, as: UInt8.self)
        bytes.storeBytes(of: UInt16(0), toByteOffset: 2, as: UInt16.self)
        bytes.storeBytes(of: UInt32(state.count), toByteOffset: 4, as: UInt32.self)
        bytes.storeBytes(of: Int32(truncatingIfNeeded: thenRoute), toByteOffset: 8, as: Int32.self)
        bytes.storeBytes(of: UInt32(0), toByteOffset: 12, as: UInt32.self)
        bytes.storeBytes(of: Int64(socketIndex), toByteOffset: 16, as: Int64.self)
        withUnsafeBytes(of: source) { copy($0, into: bytes, at: 24) }
        if let forced { withUnsafeBytes(of: forced.address) { copy($0, into: bytes, at: 24 + addressSize) } }
        copy(state, into: bytes, at: header)
        copy(response, into: bytes, at: header + state.count)
        return StoredMessage(block: bytes.baseAddress!, sizeClass: block.sizeClass, count: count)
    }

    /// The views point into `kept`, valid until it is released.
    init?(_ kept: StoredMessage) {
        let bytes = kept.bytes
        guard bytes.count >= Self.header, let kind = Kind(rawValue: bytes[0]) else { return nil }
        self.kind = kind
        socketIndex = Int(bytes.loadUnaligned(fromByteOffset: 16, as: Int64.self))
        let stateCount = Int(bytes.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard Self.header + stateCount <= bytes.count else { return nil }
        thenRoute = Int(bytes.loadUnaligned(fromByteOffset: 8, as: Int32.self))
        source = bytes.loadUnaligned(fromByteOffset: 24, as: SocketAddress.self)
        forced = bytes[1] == 0 ? nil : NextHop(
            address: bytes.loadUnaligned(fromByteOffset: 24 + Self.addressSize, as: SocketAddress.self),
            transport: SIPTransport(rawValue: bytes[1] - 1) ?? .udp)
        state = UnsafeRawBufferPointer(rebasing: bytes[Self.header..<Self.header + stateCount])
        response = UnsafeRawBufferPointer(rebasing: bytes[(Self.header + stateCount)...])
    }

    private static func copy(_ from: UnsafeRawBufferPointer, into bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        guard from.count > 0 else { return }
        (bytes.baseAddress! + offset).copyMemory(from: from.baseAddress!, byteCount: from.count)
    }
}
