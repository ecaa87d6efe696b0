import Testing

@testable import Script

/// The script side of transactions that needs no shard: `$avp` values surviving the trip through a
/// transaction's bytes, and the checker's messages for the tm routes and variables.
@Suite struct TransactionScriptTests {
    @Test func avpValuesRoundTripThroughTheTransactionsBytes() throws {
        let store = AVPStore(capacity: 8)
        let text = permanentBytes("udp:127.0.0.1:5070")
        #expect(store.push(3, .text(text)))
        #expect(store.push(1, .integer(-42)))
        #expect(store.push(3, .text(permanentBytes(""))))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { buffer.deallocate() }
        let length = try #require(store.serialize(into: buffer))
        let restored = AVPStore(capacity: 8)
        #expect(restored.push(9, .integer(1)))  // replaced by the restore
        restored.restore(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        #expect(restored.count == 3)
        #expect(restored.value(3).string == "")
        #expect(restored.value(3, index: 1).string == "udp:127.0.0.1:5070")
        #expect(restored.value(1).integerValue == -42)
        #expect(restored.value(9).isNull)
    }

    @Test func avpValuesThatDoNotFitAreRefused() {
        let store = AVPStore(capacity: 2)
        #expect(store.push(0, .text(permanentBytes(String(repeating: "x", count: 100)))))
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        #expect(store.serialize(into: buffer) == nil)
    }

    static func expectError(_ script: String, _ expected: String,
                            sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        guard let error = CheckerFixture.error(script, sourceLocation: sourceLocation) else { return }
        #expect(error.description == expected, sourceLocation: sourceLocation)
    }

    @Test func tOnBranchNamesABranchRoute() {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    t_on_branch(\"nope\");\n    t_relay();\n}\nbranch_route[per] {\n}\n", """
            test.cfg:3:17: error: unknown branch_route 'nope'
                t_on_branch("nope");
                            ^
            """)
    }

    @Test func tOnReplyNamesAnOnreplyRoute() {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    t_on_reply(\"rpl\");\n    t_relay();\n}\nonreply_route[reply] {\n}\n", """
            test.cfg:3:16: error: unknown onreply_route 'rpl' (did you mean 'reply'?)
                t_on_reply("rpl");
                           ^
            """)
    }

    @Test func tLocalRepliedTakesAllBranchOrLast() {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    t_relay();\n}\nfailure_route[f] {\n    if (t_local_replied(\"some\")) { exit; }\n}\n", """
            test.cfg:6:9: error: t_local_replied takes "all", "branch" or "last"
                if (t_local_replied("some")) { exit; }
                    ^
            """)
    }

    @Test func branchTakesAKnownField() {
        Self.expectError("route {\n    xlog(\"$branch(q)\");\n}\n", """
            test.cfg:2:11: error: $branch(q): expected uri, duri or count
                xlog("$branch(q)");
                      ^
            """)
    }

    @Test func transactionVariablesAreReadOnlyExceptTheTimeouts() throws {
        Self.expectError("loadmodule \"tm.so\"\nroute {\n    $T_reply_code = 3;\n}\n", """
            test.cfg:3:5: error: cannot assign to $T_reply_code: it is read-only
                $T_reply_code = 3;
                ^
            """)
        _ = try ScriptProgram.parse("""
            loadmodule "tm.so"
            loadmodule "sipmsgops.so"
            route {
                $T_fr_timeout = 2;
                $T_fr_inv_timeout = 20;
                append_branch();
                append_branch("sip:b@127.0.0.1:5070");
                t_on_branch("per");
                t_on_reply("reply");
                t_relay();
            }
            branch_route[per] {
                append_hf("X-Branch: $T_branch_idx $T_ruri\\r\\n");
            }
            onreply_route[reply] {
                xlog("$T_reply_code $T_branch_idx $(branch(uri)[*])");
            }
            """)
    }
}
