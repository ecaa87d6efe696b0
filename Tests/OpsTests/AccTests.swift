import Glibc
@testable import Ops
import Testing

/// acc's spill file (what waits while MariaDB cannot take rows) and its log record form.
@Suite struct AccTests {
    static func directory() -> String {
        var template = Array("/tmp/ringsip-acc-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil)
        return String(cString: template)
    }

    static func open(_ directory: String) -> AccSpill {
        guard case .success(let spill) = AccSpill.open(directory: directory, shard: 3) else {
            preconditionFailure("cannot open a spill file in \(directory)")
        }
        return spill
    }

    @Test func spilledRowsAreReadBackInOrderAndATabInAValueIsKept() {
        let spill = Self.open(Self.directory())
        #expect(!spill.hasRows)
        spill.append(head: "INSERT INTO acc (a) VALUES ", values: "('one')")
        spill.append(head: "INSERT INTO acc (a) VALUES ", values: "('two\twith a tab')")
        spill.append(head: "INSERT INTO missed_calls (a) VALUES ", values: "('three')")
        #expect(spill.hasRows)
        let two = spill.read(limit: 2)
        #expect(two.map(\.values) == ["('one')", "('two\twith a tab')"])
        #expect(two.map(\.head) == ["INSERT INTO acc (a) VALUES ", "INSERT INTO acc (a) VALUES "])
        #expect(spill.read(limit: 10).count == 3)
        #expect(spill.path.hasSuffix("/acc-3.spill"))
    }

    @Test func replayProgressSurvivesAReopenAndAFullReplayEmptiesTheFile() {
        let directory = Self.directory()
        var spill: AccSpill? = Self.open(directory)
        for n in 0..<5 { spill!.append(head: "H ", values: "(\(n))") }
        let first = spill!.read(limit: 2)
        spill!.replayed(through: first.last!.end)
        spill = nil  // closed: a restart

        let again = Self.open(directory)
        let rest = again.read(limit: 10)
        #expect(rest.map(\.values) == ["(2)", "(3)", "(4)"])
        again.replayed(through: rest.last!.end)
        #expect(!again.hasRows)
        #expect(again.fileSize == 0 && again.replayed == 0)
        // Rows spilled after the file emptied are read from its start.
        again.append(head: "H ", values: "(5)")
        #expect(again.read(limit: 10).map(\.values) == ["(5)"])
    }

    @Test func rowsAppendedDuringReplayWaitBehindTheOlderOnes() {
        let spill = Self.open(Self.directory())
        spill.append(head: "H ", values: "(old)")
        let old = spill.read(limit: 10)
        spill.append(head: "H ", values: "(new)")
        spill.replayed(through: old.last!.end)
        #expect(spill.hasRows)
        #expect(spill.read(limit: 10).map(\.values) == ["(new)"])
    }

    @Test func theLogLineHasOpenSIPSFieldsThenTheExtras() {
        var record = AccRecord(kind: .transaction, method: "INVITE", fromTag: "f1", toTag: "t1", callID: "c@h",
                               code: 200, reason: "OK", unixMilliseconds: 1_700_000_000_123)
        record.extras = [("caller", "alice"), ("src", nil)]
        #expect(record.logLine == "ACC: transaction answered: timestamp=1700000000;method=INVITE;from_tag=f1;to_tag=t1;"
                + "call_id=c@h;code=200;reason=OK;caller=alice;src=")
        record.kind = .missed
        #expect(record.logLine.hasPrefix("ACC: call missed: "))
    }

    @Test func onlyStatementErrorsAreRefusalsAndConnectionTroubleIsRetried() {
        #expect(AccWriter.isRefusal(1054))  // unknown column
        #expect(AccWriter.isRefusal(1146))  // no such table
        #expect(AccWriter.isRefusal(1110))  // a column named twice
        #expect(!AccWriter.isRefusal(2013))  // lost connection
        #expect(!AccWriter.isRefusal(1053))  // server shutting down
        #expect(!AccWriter.isRefusal(1205))  // lock wait timeout
        #expect(!AccWriter.isRefusal(0))
    }

    @Test func aRowThatMayBeWrittenIsRetriedInAFormThatWritesItOnce() {
        let values = "('INVITE','a\\'b, c','',NULL,200,FROM_UNIXTIME(1700000000),'x(y')"
        #expect(AccStatements.fields(of: values)
                == ["'INVITE'", "'a\\'b, c'", "''", "NULL", "200", "FROM_UNIXTIME(1700000000)", "'x(y'"])
        let guarded = AccStatements.guarded(head: "INSERT INTO acc (method, who) VALUES ", values: "('BYE', NULL)")
        #expect(guarded == "INSERT INTO acc (method, who) SELECT 'BYE', NULL FROM DUAL WHERE NOT EXISTS "
                + "(SELECT 1 FROM acc WHERE method <=> 'BYE' AND who <=> NULL)")
        #expect(AccStatements.guarded(head: "INSERT INTO acc (a, b) VALUES ", values: "('only one')") == nil)
        #expect(AccStatements.fields(of: "('unclosed)") == nil)
    }

    @Test func aSpilledRowThatMayBeWrittenKeepsItsMark() {
        let spill = Self.open(Self.directory())
        spill.append(head: "H ", values: "(1)", uncertain: true)
        spill.append(head: "H ", values: "(2)")
        #expect(spill.read(limit: 10).map(\.uncertain) == [true, false])
        #expect(spill.read(limit: 10).map(\.head) == ["H ", "H "])
    }
}
