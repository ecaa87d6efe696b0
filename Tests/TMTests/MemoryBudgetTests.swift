import Engine
import Testing

@testable import TM

/// A shard holds up to `max_transactions` entries (100,000 by default), so bytes added to an entry are paid a
/// hundred thousand times: these budgets make growth a decision (perf/capacity measures the whole cost).
@Suite struct MemoryBudgetTests {
    @Test func aTransactionEntryStaysWithinItsBudget() {
        // One branch inline, the other three in a store block, timer settings in 28 bytes (was 3,408 bytes with
        // four branches inline and 72-byte settings in every machine).
        #expect(MemoryLayout<ProxyTransaction>.stride <= 960)
        #expect(MemoryLayout<Branch>.stride <= 416)
        #expect(MemoryLayout<TimerSettings>.stride <= 28)
        // Branches two to four fit one 2 KiB block of the message store.
        #expect(MemoryLayout<Branch>.stride * (Branches.capacity - 1) <= 2048)
    }

    @Test func anAddressIsTheKernelsIPv6FormNotASockaddrStorage() {
        #expect(MemoryLayout<SocketAddress>.stride == 28)
        let v6 = SocketAddress(numericHost: "2001:db8::1", port: 5060)!
        #expect(v6.description == "[2001:db8::1]:5060" && v6.length == 28)
        let v4 = SocketAddress(numericHost: "192.0.2.7", port: 5070)!
        #expect(v4.description == "192.0.2.7:5070" && v4.length == 16)
        var storage = v4.storage
        let back = withUnsafeBytes(of: &storage) { SocketAddress(raw: $0.baseAddress!, length: 16) }
        #expect(back == v4)
    }
}
