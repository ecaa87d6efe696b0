import SIP
import Testing

@testable import TM

/// A message parsed from its own copy of the bytes (CRLF line ends added), kept alive with it.
final class Parsed {
    let storage: UnsafeMutableRawBufferPointer
    let message = SIPMessage()

    init(_ text: String) {
        var bytes: [UInt8] = []
        for c in text.utf8 {
            if c == 0x0A { bytes.append(0x0D) }
            bytes.append(c)
        }
        storage = .allocate(byteCount: bytes.count, alignment: 1)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        try! message.parse(UnsafeRawBufferPointer(storage))
        try! message.validate()
    }

    deinit { storage.deallocate() }

    var bytes: UnsafeRawBufferPointer { message.bytes }
    func id(seed: UInt64 = 7) -> ServerTransactionID? { ServerTransactionID(message, seed: seed) }
}

/// A request of the dialog below with the given start line, top Via, To and CSeq.
func request(
    _ method: String, uri: String = "sip:bob@biloxi.example.com",
    via: String = "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    to: String = "<sip:bob@biloxi.example.com>", cseq: Int = 314159, cseqMethod: String? = nil
) -> Parsed {
    Parsed("""
        \(method) \(uri) SIP/2.0
        Via: \(via)
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfirsthop
        Max-Forwards: 70
        To: \(to)
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com
        CSeq: \(cseq) \(cseqMethod ?? method)
        Content-Length: 0


        """)
}

@Suite struct ServerMatchingTests {
    /// `incoming` matches the transaction `original` created (§17.2.3).
    static func matches(_ incoming: Parsed, _ original: Parsed, responseToTag: String = "") -> Bool {
        guard let a = incoming.id(), let b = original.id() else { return false }
        let tag = Array(responseToTag.utf8)
        return tag.withUnsafeBytes {
            a.matches(b, bytes: incoming.bytes, storedBytes: original.bytes, responseToTag: $0)
        }
    }

    static func cancels(_ cancel: Parsed, _ original: Parsed) -> Bool {
        guard let a = cancel.id(), let b = original.id() else { return false }
        return a.cancels(b, bytes: cancel.bytes, storedBytes: original.bytes)
    }

    @Test func retransmissionMatchesByBranchSentByAndMethod() {
        let invite = request("INVITE")
        #expect(invite.id()?.rule == .rfc3261)
        #expect(Self.matches(request("INVITE"), invite))
        // sent-by host compares case-insensitively, and hashes alike.
        let upper = request("INVITE", via: "SIP/2.0/UDP PC33.Atlanta.Example.COM;branch=z9hG4bK776asdhds")
        #expect(upper.id()?.hash == invite.id()?.hash)
        #expect(Self.matches(upper, invite))
        // An absent port is the default port.
        let explicitPort = "SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds"
        #expect(Self.matches(request("INVITE", via: explicitPort), invite))
        let otherPort = "SIP/2.0/UDP pc33.atlanta.example.com:5070;branch=z9hG4bK776asdhds"
        #expect(!Self.matches(request("INVITE", via: otherPort), invite))
        #expect(!Self.matches(request("INVITE", via: "SIP/2.0/UDP pc34.atlanta.example.com;branch=z9hG4bK776asdhds"),
                              invite))
        #expect(!Self.matches(request("INVITE", via: "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhdS"),
                              invite))
        // Fields outside §17.2.3 do not matter under the RFC 3261 rule.
        #expect(Self.matches(request("INVITE", uri: "sip:carol@chicago.example.com", cseq: 1), invite))
    }

    @Test func ackMatchesItsInviteAndCancelOnlyCancelsIt() {
        let invite = request("INVITE")
        let ack = request("ACK", to: "<sip:bob@biloxi.example.com>;tag=a6c85cf")
        let cancel = request("CANCEL")
        // INVITE, ACK and CANCEL hash alike: one probe, different confirmations.
        #expect(ack.id()?.hash == invite.id()?.hash)
        #expect(cancel.id()?.hash == invite.id()?.hash)
        #expect(Self.matches(ack, invite))
        #expect(!Self.matches(cancel, invite))
        #expect(Self.cancels(cancel, invite))
        #expect(!Self.cancels(ack, invite))
        // The CANCEL's own transaction: its retransmission matches it, not the INVITE's.
        #expect(Self.matches(request("CANCEL"), cancel))
        #expect(!Self.cancels(request("CANCEL"), cancel))
        // The ACK for a 2xx has a branch of its own and matches nothing (§17.1.1.3, RFC 6026).
        let ack2xx = request(
            "ACK", via: "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnew",
            to: "<sip:bob@biloxi.example.com>;tag=x")
        #expect(!Self.matches(ack2xx, invite))
        // An ACK does not match a non-INVITE transaction.
        #expect(!Self.matches(ack, request("OPTIONS")))
        let otherCancel = request("CANCEL", via: "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKother")
        #expect(!Self.cancels(otherCancel, invite))
    }

    @Test func methodsMustBeEqualIncludingExtensionMethods() {
        #expect(Self.matches(request("OPTIONS"), request("OPTIONS")))
        #expect(!Self.matches(request("INFO"), request("OPTIONS")))
        #expect(Self.matches(request("FOO"), request("FOO")))
        #expect(!Self.matches(request("BAR"), request("FOO")))
        #expect(Self.cancels(request("CANCEL"), request("FOO")))
    }

    @Test func rfc2543RequestsMatchByDialogFieldsAndTopVia() {
        let legacy = "SIP/2.0/UDP pc33.atlanta.example.com"
        let invite = request("INVITE", via: legacy)
        #expect(invite.id()?.rule == .rfc2543)
        #expect(Self.matches(request("INVITE", via: legacy), invite))
        // A branch without the cookie is still RFC 2543 (and part of the top Via compared whole).
        #expect(request("INVITE", via: legacy + ";branch=1234").id()?.rule == .rfc2543)
        #expect(!Self.matches(request("INVITE", via: legacy + ";branch=1234"), invite))
        // A bare cookie does not identify a transaction (RFC 4475 §3.2.1).
        #expect(request("INVITE", via: legacy + ";branch=z9hG4bK").id()?.rule == .rfc2543)
        #expect(!Self.matches(request("INVITE", via: legacy, cseq: 314160), invite))
        #expect(!Self.matches(request("INVITE", uri: "sip:bob@192.0.2.4", via: legacy), invite))
        #expect(!Self.matches(request("INVITE", via: legacy, to: "<sip:bob@biloxi.example.com>;tag=zz"), invite))
        // The ACK carries the To tag of the response the transaction sent.
        let ack = request("ACK", via: legacy, to: "<sip:bob@biloxi.example.com>;tag=a6c85cf", cseqMethod: "ACK")
        #expect(ack.id()?.hash == invite.id()?.hash)
        #expect(Self.matches(ack, invite, responseToTag: "a6c85cf"))
        #expect(!Self.matches(ack, invite, responseToTag: "other"))
        #expect(!Self.matches(ack, invite))
        #expect(Self.cancels(request("CANCEL", via: legacy), invite))
        #expect(!Self.cancels(request("CANCEL", via: legacy, cseq: 1), invite))
    }

    @Test func rulesNeverCrossMatch() {
        // The same request with and without the cookie belongs to different transactions.
        let withCookie = request("INVITE")
        let without = request("INVITE", via: "SIP/2.0/UDP pc33.atlanta.example.com;branch=776asdhds")
        #expect(!Self.matches(without, withCookie))
        #expect(!Self.matches(withCookie, without))
        let legacyCancel = request("CANCEL", via: "SIP/2.0/UDP pc33.atlanta.example.com;branch=776asdhds")
        #expect(!Self.cancels(legacyCancel, withCookie))
    }

    @Test func theSeedChangesEveryHash() {
        let invite = request("INVITE")
        #expect(invite.id(seed: 1)?.hash != invite.id(seed: 2)?.hash)
        let legacy = request("INVITE", via: "SIP/2.0/UDP pc33.atlanta.example.com")
        #expect(legacy.id(seed: 1)?.hash != legacy.id(seed: 2)?.hash)
    }

    @Test func responsesHaveNoServerTransactionID() {
        let response = Parsed("""
            SIP/2.0 180 Ringing
            Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
            To: <sip:bob@biloxi.example.com>;tag=a6c85cf
            From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
            Call-ID: a84b4c76e66710@pc33.atlanta.example.com
            CSeq: 314159 INVITE
            Content-Length: 0


            """)
        #expect(response.id() == nil)
    }
}

@Suite struct ClientMatchingTests {
    static let key = BranchKey(k0: 11, k1: 12)

    static func response(branch: String, method: String = "INVITE") -> Parsed {
        Parsed("""
            SIP/2.0 200 OK
            Via: SIP/2.0/UDP 198.51.100.1:5060;branch=\(branch);received=198.51.100.1
            Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds
            To: <sip:bob@biloxi.example.com>;tag=a6c85cf
            From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
            Call-ID: a84b4c76e66710@pc33.atlanta.example.com
            CSeq: 314159 \(method)
            Content-Length: 0


            """)
    }

    @Test func responsesToOurBranchesNameTheirOwner() {
        let branch = TransactionBranch(shard: 3, slot: 77, generation: 9, branchIndex: 1)
        var text = [UInt8](repeating: 0, count: TransactionBranch.encodedCount)
        text.withUnsafeMutableBytes { _ = branch.encode(key: Self.key, into: $0) }
        let ours = Self.response(branch: String(decoding: text, as: UTF8.self), method: "CANCEL")
        #expect(TransactionBranch.owner(of: ours.message, key: Self.key) == branch)
        // §17.1.3's other half, the CSeq method, picks the INVITE's or the CANCEL's client transaction.
        #expect(ours.message.cseq?.method == .cancel)
        #expect(TransactionBranch.owner(of: Self.response(branch: "z9hG4bK776asdhds").message, key: Self.key) == nil)
        #expect(TransactionBranch.owner(of: ours.message, key: BranchKey(k0: 11, k1: 13)) == nil)
        #expect(TransactionBranch.owner(of: request("INVITE").message, key: Self.key) == nil)
    }
}
