/// What the registrars of a daemon's shards tell each other (`ShardService.mailArrived`): each shard keeps a
/// full copy of the location table, so `lookup` reads it where the call arrived, without a hop; every change
/// is made by the AOR's owner shard (`LocationService.owner`) and sent to the others as the AOR's whole
/// binding list, which replaces theirs. A shard that is not the owner asks the owner to make a change.
///
/// Layout: kind u8 | then per kind. Strings are u16 length | UTF-8; numbers little-endian.
/// - `.bindings`: aor | count u16 | per binding: contact, callID, path, received, userAgent, instance (strings) |
///   expires u64 | modified u64 | branchFlags u64 | cseq u32 | q i32 | regID i32 | socket u64 (a TCP connection's handle is 64 bits).
/// - `.register`: a `RegisterRequest` (the fields of `.bindings`' request, then its contacts).
/// - `.remove`: aor | has contact u8 | contact.
enum LocationMail {
    enum Kind: UInt8 {
        case bindings = 1
        case register = 2
        case remove = 3
    }

    case bindings(aor: String, [Binding])
    case register(RegisterRequest, now: UInt64)
    case remove(aor: String, contact: String?)

    func encoded() -> [UInt8] {
        var out = MailWriter()
        switch self {
        case .bindings(let aor, let bindings):
            out.byte(Kind.bindings.rawValue)
            out.string(aor)
            out.u16(bindings.count)
            for b in bindings {
                for text in [b.contact, b.callID, b.path, b.received, b.userAgent, b.instance] { out.string(text) }
                out.u64(b.expires)
                out.u64(b.modified)
                out.u64(b.branchFlags)
                out.u32(UInt64(b.cseq))
                out.i32(b.q)
                out.i32(b.regID)
                out.u64(UInt64(bitPattern: Int64(b.socket)))
            }
        case .register(let r, let now):
            out.byte(Kind.register.rawValue)
            out.u64(now)
            for text in [r.aor, r.callID, r.path, r.received, r.userAgent] { out.string(text) }
            out.byte(r.wildcard ? 1 : 0)
            out.u32(UInt64(r.cseq))
            out.u64(UInt64(bitPattern: Int64(r.socket)))
            out.u64(r.branchFlags)
            out.i32(r.maxContacts)
            out.u16(r.contacts.count)
            for c in r.contacts {
                out.string(c.contact)
                out.string(c.instance)
                out.i32(c.expiresSeconds)
                out.i32(c.q)
                out.i32(c.regID)
            }
        case .remove(let aor, let contact):
            out.byte(Kind.remove.rawValue)
            out.string(aor)
            out.byte(contact == nil ? 0 : 1)
            out.string(contact ?? "")
        }
        return out.bytes
    }

    /// Nil for a record that does not decode (never expected: both ends are this build).
    static func decode(_ bytes: UnsafeRawBufferPointer) -> LocationMail? {
        var r = MailReader(bytes: bytes)
        switch r.byte().flatMap(Kind.init(rawValue:)) {
        case .bindings:
            guard let aor = r.string(), let count = r.u16() else { return nil }
            var bindings: [Binding] = []
            bindings.reserveCapacity(count)
            for _ in 0..<count {
                guard let contact = r.string(), let callID = r.string(), let path = r.string(), let received = r.string(),
                      let userAgent = r.string(), let instance = r.string(), let expires = r.u64(),
                      let modified = r.u64(), let flags = r.u64(), let cseq = r.u32(), let q = r.i32(),
                      let regID = r.i32(), let socket = r.u64().map({ Int(Int64(bitPattern: $0)) }) else { return nil }
                bindings.append(Binding(contact: contact, expires: expires, q: q, callID: callID, cseq: UInt32(cseq),
                                        path: path, received: received, userAgent: userAgent, instance: instance,
                                        regID: regID, socket: socket, branchFlags: flags, modified: modified))
            }
            return .bindings(aor: aor, bindings)
        case .register:
            guard let now = r.u64(), let aor = r.string(), let callID = r.string(), let path = r.string(),
                  let received = r.string(), let userAgent = r.string(), let wildcard = r.byte(), let cseq = r.u32(),
                  let socket = r.u64().map({ Int(Int64(bitPattern: $0)) }), let flags = r.u64(), let maxContacts = r.i32(), let count = r.u16() else { return nil }
            var contacts: [ContactRequest] = []
            for _ in 0..<count {
                guard let contact = r.string(), let instance = r.string(), let expires = r.i32(), let q = r.i32(),
                      let regID = r.i32() else { return nil }
                contacts.append(ContactRequest(contact: contact, expiresSeconds: expires, q: q, instance: instance,
                                               regID: regID))
            }
            return .register(RegisterRequest(aor: aor, contacts: contacts, wildcard: wildcard == 1, callID: callID,
                                             cseq: UInt32(cseq), path: path, received: received, userAgent: userAgent,
                                             socket: socket, branchFlags: flags, maxContacts: maxContacts), now: now)
        case .remove:
            guard let aor = r.string(), let hasContact = r.byte(), let contact = r.string() else { return nil }
            return .remove(aor: aor, contact: hasContact == 1 ? contact : nil)
        case nil:
            return nil
        }
    }
}

struct MailWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func u16(_ value: Int) {
        let v = UInt16(clamping: value)
        bytes.append(UInt8(truncatingIfNeeded: v))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8))
    }

    mutating func u32(_ value: UInt64) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) } }
    mutating func u64(_ value: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) } }
    mutating func i32(_ value: Int) { u32(UInt64(UInt32(bitPattern: Int32(clamping: value)))) }

    /// Strings longer than 65,535 bytes are cut there (a Contact or Path that long is refused before it gets here).
    mutating func string(_ text: String) {
        let utf8 = Array(text.utf8.prefix(Int(UInt16.max)))
        u16(utf8.count)
        bytes += utf8
    }
}

struct MailReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    mutating func take(_ count: Int) -> UnsafeRawBufferPointer? {
        guard count <= bytes.count - position else { return nil }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<position + count])
    }

    mutating func byte() -> UInt8? { take(1)?[0] }

    mutating func number(_ width: Int) -> UInt64? {
        guard let raw = take(width) else { return nil }
        var value: UInt64 = 0
        for i in (0..<width).reversed() { value = value << 8 | UInt64(raw[i]) }
        return value
    }

    mutating func u16() -> Int? { number(2).map { Int($0) } }
    mutating func u32() -> UInt64? { number(4) }
    mutating func u64() -> UInt64? { number(8) }
    mutating func i32() -> Int? { number(4).map { Int(Int32(bitPattern: UInt32($0))) } }

    mutating func string() -> String? {
        guard let count = u16(), let raw = take(count) else { return nil }
        return String(decoding: raw, as: UTF8.self)
    }
}
