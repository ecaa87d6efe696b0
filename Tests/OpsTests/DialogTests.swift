@testable import Ops
import Testing

/// The dialog table (a shard's dialogs) and the records dialog services mail each other.
@Suite struct DialogTests {
    @Test func aDialogIsFoundFromEitherEndAndOnlyByItsTags() {
        let table = DialogTable(capacity: 8)
        let slot = table.create(callID: "c1", callerTag: "a", timeoutSeconds: 60, now: 0, unixMilliseconds: 0)!
        // The INVITE finds the dialog it created; its answer names the callee.
        #expect(table.find(callID: "c1", fromTag: "a", toTag: "") == slot)
        table.confirm(slot, calleeTag: "b", now: 1_000, unixMilliseconds: 1_000)
        #expect(table[slot].state == .confirmedUnacknowledged)
        #expect(table.find(callID: "c1", fromTag: "a", toTag: "b") == slot)  // the caller's BYE
        #expect(table.find(callID: "c1", fromTag: "b", toTag: "a") == slot)  // the callee's BYE
        #expect(table.find(callID: "c1", fromTag: "x", toTag: "b") == nil)
        #expect(table.find(callID: "c2", fromTag: "a", toTag: "b") == nil)
    }

    @Test func aFreedSlotIsReusedUnderANewGenerationSoAnOldDidFindsNothing() {
        let table = DialogTable(capacity: 1)
        let first = table.create(callID: "c1", callerTag: "a", timeoutSeconds: 60, now: 0, unixMilliseconds: 0)!
        let old = DialogID(shard: 0, slot: first, generation: table[first].generation)
        #expect(table.create(callID: "c2", callerTag: "a", timeoutSeconds: 60, now: 0, unixMilliseconds: 0) == nil)
        #expect(table.end(first))
        #expect(!table.end(first))  // ended once
        #expect(table.slot(of: old) == first)  // readable until removed
        table.remove(first)
        #expect(table.live == 0 && table.find(callID: "c1", fromTag: "a", toTag: "") == nil)
        let second = table.create(callID: "c3", callerTag: "z", timeoutSeconds: 60, now: 0, unixMilliseconds: 0)!
        #expect(second == first)
        #expect(table.slot(of: old) == nil)
        #expect(table.slot(of: DialogID(shard: 0, slot: second, generation: table[second].generation)) == second)
    }

    @Test func aDidReadsBackAndRejectsWhatIsNotOne() {
        let id = DialogID(shard: 1, slot: 0x2a, generation: 7)
        #expect(id.text == "1.2a.7")
        #expect(DialogID(Substring(id.text)) == id)
        #expect(DialogID("1.2a") == nil)
        #expect(DialogID("1.zz.7") == nil)
        #expect(DialogID("1.2a.7.9") == nil)
    }

    @Test func mailRoundTripsAndATruncatedRecordIsRefused() {
        let records: [DialogMail] = [.owner(callID: "abc@h", shard: 3), .gone(callID: "abc@h"),
                                     .profile(key: DialogProfiles.key("caller", "alice"), delta: -1)]
        for record in records {
            let bytes = record.encoded()
            #expect(bytes.withUnsafeBytes { DialogMail.decode($0) } == record)
            #expect(bytes.dropLast().withUnsafeBytes { DialogMail.decode($0) } == nil)
        }
        #expect(DialogProfiles.name(of: DialogProfiles.key("caller", "alice")) == "caller")
    }

    @Test func varsKeepValuesAndThePendingCDRThroughTheTable() {
        var dialog = Dialog(callID: "c@h", callerTag: "a")
        dialog.values = ["who": "alice", "odd:name": "x\ny;z"]
        dialog.createdUnixMilliseconds = 1_700_000_000_000
        dialog.startedUnixMilliseconds = 1_700_000_002_000
        var cdr = AccRecord(kind: .transaction, method: "INVITE", fromTag: "a", toTag: "b", callID: "c@h", code: 200,
                            reason: "OK", unixMilliseconds: 0)
        cdr.extras = [("caller", "alice"), ("none", nil)]
        dialog.cdr = cdr
        dialog.cdrBackends = [.db, .aaa]
        let text = DialogDatabase.encodeVars(dialog)

        var back = Dialog(callID: "c@h", callerTag: "a")
        back.startedUnixMilliseconds = 1_700_000_002_000
        DialogDatabase.decodeVars(text, into: &back)
        #expect(back.values == dialog.values)
        #expect(back.cdrBackends == [.db, .aaa])
        #expect(back.createdUnixMilliseconds == 1_700_000_000_000)
        #expect(back.cdr?.toTag == "b" && back.cdr?.extras.map(\.value) == ["alice", nil])
        // Damaged text restores nothing rather than something wrong.
        var damaged = Dialog(callID: "c@h", callerTag: "a")
        DialogDatabase.decodeVars(String(text.dropLast(3)), into: &damaged)
        #expect(damaged.values.isEmpty && damaged.cdr == nil)
    }

    @Test func theJSONFormEscapesWhatItQuotes() {
        var dialog = Dialog(callID: "c\"1", callerTag: "a")
        dialog.state = .confirmed
        dialog.values = ["note": "line\nbreak\u{1}"]
        dialog.profiles = [DialogProfiles.key("caller", "alice"), DialogProfiles.key("inbound", nil)]
        #expect(DialogJSON.text(dialog, id: "0.1.2", remaining: 30)
                == #"{"id":"0.1.2","state":4,"callid":"c\"1","from_uri":"","from_tag":"a","to_uri":"","to_tag":"","#
                + #""created":0,"start":0,"timeout":30,"values":{"note":"line\nbreak\u0001"},"#
                + #""profiles":[{"name":"caller","value":"alice"},{"name":"inbound"}]}"#)
    }
}
