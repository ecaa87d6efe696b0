@testable import Ops
import Testing

/// The binding rules of RFC 3261 §10.3 on a virtual clock (milliseconds).
@Suite struct UsrlocTests {
    static func register(_ contacts: [ContactRequest], callID: String = "c1", cseq: UInt32 = 1, wildcard: Bool = false,
                         maxContacts: Int = 0) -> RegisterRequest {
        RegisterRequest(aor: "alice", contacts: contacts, wildcard: wildcard, callID: callID, cseq: cseq,
                        maxContacts: maxContacts)
    }

    @Test func bindingsLapseAtTheirExpiryAndASweepDropsThem() {
        let table = LocationTable()
        #expect(table.apply(Self.register([.init(contact: "sip:a@1.2.3.4", expiresSeconds: 60),
                                           .init(contact: "sip:a@5.6.7.8", expiresSeconds: 120)]), now: 1_000)
                == .applied(changed: true))
        #expect(table.bindings(of: "alice", now: 60_999).count == 2)
        #expect(table.bindings(of: "alice", now: 61_000).map(\.contact) == ["sip:a@5.6.7.8"])
        #expect(table.bindingCount == 2)
        #expect(table.sweep(now: 61_000) == 1)
        #expect(table.bindingCount == 1)
        #expect(table.sweep(now: 121_000) == 1)
        #expect(table.records.isEmpty)
    }

    @Test func forkingOrderIsHighestQFirstThenNewestThenAsWritten() {
        let table = LocationTable()
        _ = table.apply(Self.register([.init(contact: "sip:low@h", expiresSeconds: 60, q: 100),
                                       .init(contact: "sip:first@h", expiresSeconds: 60),
                                       .init(contact: "sip:second@h", expiresSeconds: 60)]), now: 0)
        _ = table.apply(Self.register([.init(contact: "sip:mid@h", expiresSeconds: 60, q: 500)], cseq: 2), now: 10)
        _ = table.apply(Self.register([.init(contact: "sip:newest@h", expiresSeconds: 60, q: 1000)], cseq: 3), now: 20)
        #expect(table.bindings(of: "alice", now: 30).map(\.contact)
                == ["sip:newest@h", "sip:first@h", "sip:second@h", "sip:mid@h", "sip:low@h"])
    }

    @Test func aRefreshReplacesTheBindingAndExpiresZeroRemovesIt() {
        let table = LocationTable()
        _ = table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 60)]), now: 0)
        _ = table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 3600)], cseq: 2), now: 30_000)
        #expect(table.bindings(of: "alice", now: 30_000).map(\.expires) == [3_630_000])
        #expect(table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 0)], cseq: 3), now: 31_000)
                == .applied(changed: true))
        #expect(table.bindings(of: "alice", now: 31_000).isEmpty && table.bindingCount == 0)
    }

    @Test func aRequestFromTheSameCallIDThatIsOlderIsRefusedAndARetransmissionChangesNothing() {
        let table = LocationTable()
        _ = table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 60)], cseq: 5), now: 0)
        #expect(table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 0)], cseq: 4), now: 1) == .outOfOrder)
        #expect(table.apply(Self.register([], cseq: 4, wildcard: true), now: 1) == .outOfOrder)
        // The same CSeq again is a retransmission: nothing changes, and it is not refused.
        #expect(table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 0)], cseq: 5), now: 1)
                == .applied(changed: false))
        #expect(table.bindings(of: "alice", now: 1).count == 1)
        // Another Call-ID (another phone, or one that rebooted) may change it whatever its CSeq.
        #expect(table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 90)], callID: "c2", cseq: 1), now: 1)
                == .applied(changed: true))
        #expect(table.bindings(of: "alice", now: 2).map(\.callID) == ["c2"])
    }

    @Test func theWildcardRemovesEveryBinding() {
        let table = LocationTable()
        _ = table.apply(Self.register([.init(contact: "sip:a@h", expiresSeconds: 60), .init(contact: "sip:b@h", expiresSeconds: 60)]),
                        now: 0)
        _ = table.apply(Self.register([.init(contact: "sip:c@h", expiresSeconds: 60)], callID: "other"), now: 0)
        #expect(table.apply(Self.register([], cseq: 2, wildcard: true), now: 5) == .applied(changed: true))
        #expect(table.records["alice"] == nil && table.bindingCount == 0)
    }

    @Test func moreThanMaxContactsIsRefusedWholeButARefreshOfFullBindingsIsNot() {
        let table = LocationTable()
        let two: [ContactRequest] = [.init(contact: "sip:a@h", expiresSeconds: 60), .init(contact: "sip:b@h", expiresSeconds: 60)]
        #expect(table.apply(Self.register(two, maxContacts: 2), now: 0) == .applied(changed: true))
        #expect(table.apply(Self.register([.init(contact: "sip:c@h", expiresSeconds: 60)], cseq: 2, maxContacts: 2), now: 1)
                == .tooManyContacts)
        #expect(table.bindings(of: "alice", now: 1).count == 2)
        #expect(table.apply(Self.register(two, cseq: 3, maxContacts: 2), now: 2) == .applied(changed: true))
        // A lapsed binding does not count against the limit.
        #expect(table.apply(Self.register([.init(contact: "sip:c@h", expiresSeconds: 60)], cseq: 4, maxContacts: 2), now: 70_000)
                == .applied(changed: true))
    }

    @Test func anInstanceIDReplacesTheOldContactOfARebootedPhone() {
        let table = LocationTable()
        let instance = "\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\""
        _ = table.apply(Self.register([.init(contact: "sip:a@10.0.0.1:5060", expiresSeconds: 60, instance: instance, regID: 1)]),
                        now: 0)
        _ = table.apply(Self.register([.init(contact: "sip:a@10.0.0.9:5062", expiresSeconds: 60, instance: instance, regID: 1)],
                                      callID: "after-reboot"), now: 10)
        #expect(table.bindings(of: "alice", now: 10).map(\.contact) == ["sip:a@10.0.0.9:5062"])
    }

    @Test func replicationRecordsRoundTrip() throws {
        let bindings = [Binding(contact: "sip:a@h;transport=udp", expires: 99_000, q: 500, callID: "c", cseq: 7,
                                path: "<sip:p1;lr>, <sip:p2;lr>", received: "sip:1.2.3.4:5066", userAgent: "baresip",
                                instance: "\"<urn:x>\"", regID: 2, socket: 1, branchFlags: 1 << 40, modified: 42)]
        let mail = LocationMail.bindings(aor: "alice@example.com", bindings).encoded()
        guard case .bindings(let aor, let decoded)? = mail.withUnsafeBytes({ LocationMail.decode($0) }) else {
            Issue.record("did not decode")
            return
        }
        #expect(aor == "alice@example.com" && decoded == bindings)
        let request = RegisterRequest(aor: "bob", contacts: [.init(contact: "sip:b@h", expiresSeconds: 30, q: 1000,
                                                                   instance: "i", regID: 3)],
                                      callID: "x", cseq: 9, path: "<sip:p>", maxContacts: 4)
        let again = LocationMail.register(request, now: 1234).encoded().withUnsafeBytes { LocationMail.decode($0) }
        guard case .register(let decodedRequest, let now)? = again else {
            Issue.record("register did not decode")
            return
        }
        #expect(decodedRequest == request && now == 1234)
        #expect([UInt8]([2, 0]).withUnsafeBytes { LocationMail.decode($0) } == nil)
    }

    @Test func qValuesParseAsThousandthsAndPrintBack() {
        func q(_ text: String) -> Int? { Array(text.utf8).withUnsafeBytes { RegistrarModule.qValue($0) } }
        #expect(q("1") == 1000 && q("1.0") == 1000 && q("0.5") == 500 && q("0.123") == 123 && q("0") == 0)
        #expect(q("1.5") == nil && q("2") == nil && q("0.1234") == nil && q("") == nil && q("0,5") == nil)
        #expect(RegistrarModule.qText(500) == "0.5" && RegistrarModule.qText(1000) == "1" && RegistrarModule.qText(0) == "0"
                && RegistrarModule.qText(125) == "0.125")
    }
}
