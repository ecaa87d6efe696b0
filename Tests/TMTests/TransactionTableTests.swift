import Testing

@testable import TM

/// SplitMix64: a seeded generator, so a failing randomized run can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct TransactionTableTests {
    @Test func fillsToCapacityAndDrainsToZero() {
        let capacity = 100_000
        let table = TransactionTable<Int>(capacity: capacity)
        var handles: [TransactionHandle] = []
        handles.reserveCapacity(capacity)
        for i in 0..<capacity {
            guard let handle = table.insert(i, key: UInt64(i) &* 0x1234_5678_9abc_def1) else {
                Issue.record("table full at \(i)")
                return
            }
            handles.append(handle)
        }
        #expect(table.live == capacity)
        #expect(table.isFull)
        #expect(table.insert(-1, key: 1) == nil)
        #expect(table.checkIndex() < 64)
        for i in stride(from: 0, to: capacity, by: 997) {
            let key = UInt64(i) &* 0x1234_5678_9abc_def1
            #expect(table.lookup(key) { $0 == i } == handles[i])
        }
        for (i, handle) in handles.enumerated() {
            #expect(table.remove(handle) == i)
        }
        #expect(table.live == 0)
        _ = table.checkIndex()
        // Every slot is free again, and comes back with the next generation.
        let again = table.insert(0, key: 0)
        #expect(again?.slot == handles[0].slot && again?.generation == handles[0].generation + 1)
    }

    @Test func generationsAdvanceAndStaleHandlesAreRejected() {
        let table = TransactionTable<String>(capacity: 2)
        let first = table.insert("a", key: 5)!
        #expect(first.generation == 1)
        #expect(table.contains(first))
        #expect(table.handle(slot: first.slot, generation: first.generation) == first)
        #expect(table.remove(first) == "a")
        #expect(!table.contains(first))
        #expect(table.handle(slot: first.slot, generation: first.generation) == nil)
        #expect(table.lookup(5) { _ in true } == nil)
        // First in, first out: the other slot is used before this one comes back.
        let second = table.insert("b", key: 5)!
        #expect(second.slot != first.slot)
        let third = table.insert("c", key: 6)!
        #expect(third.slot == first.slot && third.generation == 2)
        #expect(!table.contains(first))
        #expect(table.handle(slot: 7, generation: 1) == nil)
        #expect(table.handle(slot: third.slot, generation: 0) == nil)
        table[third] += "!"
        #expect(table[third] == "c!")
    }

    @Test func churnTouchesTheLiveHighWaterMarkPlusTheReserveAndReusesSlotsOnlyAfterTheReserve() {
        let table = TransactionTable<Int>(capacity: 100_000, warmReserve: 64)
        var rng = SplitMix64(state: 7)
        var live: [TransactionHandle] = []
        var endedSince: [UInt32: Int] = [:]
        var ended = 0
        var highWater = 0
        for i in 0..<50_000 {
            if live.count < 300 && (live.isEmpty || rng.next() % 2 == 0) {
                let handle = table.insert(i, key: UInt64(i))!
                // A slot used before comes back only once the reserve's other slots have ended after it.
                if let freedAt = endedSince[handle.slot] { #expect(ended - freedAt >= 63) }
                live.append(handle)
                highWater = max(highWater, live.count)
            } else {
                let handle = live.remove(at: Int(rng.next() % UInt64(live.count)))
                table.remove(handle)
                ended += 1
                endedSince[handle.slot] = ended
            }
        }
        #expect(table.touched <= highWater + 64)
        #expect(!table.isFull)
        _ = table.checkIndex()
    }

    @Test func aTableAtItsCapacityReusesEveryFreedSlot() {
        let table = TransactionTable<Int>(capacity: 8, warmReserve: 4)
        var handles = (0..<8).map { table.insert($0, key: nil)! }
        #expect(table.isFull && table.insert(8, key: nil) == nil)
        table.remove(handles[5])
        let again = table.insert(9, key: nil)!
        #expect(again.slot == handles[5].slot && again.generation == handles[5].generation + 1)
        handles[5] = again
        #expect(table.isFull)
    }

    @Test func generationWrapsPastZero() {
        let table = TransactionTable<Int>(capacity: 1)
        var last = table.insert(0, key: nil)!
        for _ in 0..<65_535 {
            table.remove(last)
            last = table.insert(0, key: nil)!
            #expect(last.generation != 0)
        }
        #expect(last.generation == 1)
    }

    @Test func entriesUnderOneKeyAreToldApartByThePredicate() {
        let table = TransactionTable<Int>(capacity: 16)
        let handles = (0..<8).map { table.insert($0, key: 42)! }
        for i in 0..<8 { #expect(table.lookup(42) { $0 == i } == handles[i]) }
        table.remove(handles[3])
        table.remove(handles[0])
        #expect(table.lookup(42) { $0 == 3 } == nil)
        for i in [1, 2, 4, 5, 6, 7] { #expect(table.lookup(42) { $0 == i } == handles[i]) }
        _ = table.checkIndex()
    }

    @Test func keysWithTheSameHomeAndRunsThatWrapAroundStayFindable() {
        let table = TransactionTable<UInt64>(capacity: 8)  // 16 index positions
        // Keys whose home is the last position, so their run wraps to the start of the index.
        var colliding: [UInt64] = []
        var key: UInt64 = 0
        while colliding.count < 5 {
            if table.home(key) == 15 { colliding.append(key) }
            key += 1
        }
        let handles = colliding.map { table.insert($0, key: $0)! }
        #expect(table.checkIndex() == 4)
        table.remove(handles[1])
        #expect(table.checkIndex() == 3)
        for (i, k) in colliding.enumerated() where i != 1 {
            #expect(table.lookup(k) { $0 == k } == handles[i])
        }
        #expect(table.lookup(colliding[1]) { _ in true } == nil)
    }

    @Test func randomOperationsAgreeWithADictionaryModel() {
        var random = SplitMix64(state: 0x5eed)
        let table = TransactionTable<Int>(capacity: 200)
        var model: [TransactionHandle: (key: UInt64?, value: Int)] = [:]
        var removed: [(key: UInt64, value: Int)] = []
        var nextValue = 0
        for step in 0..<20_000 {
            let roll = random.next() % 100
            if roll < 55 {
                // Few distinct keys, so runs are long and keys repeat.
                let key: UInt64? = random.next() % 10 == 0 ? nil : random.next() % 64
                let handle = table.insert(nextValue, key: key)
                if model.count == table.capacity {
                    #expect(handle == nil)
                } else if let handle {
                    #expect(model[handle] == nil)
                    model[handle] = (key, nextValue)
                } else {
                    Issue.record("insert refused at \(model.count) live, step \(step)")
                }
                nextValue += 1
            } else if roll < 90, let (handle, stored) = model.randomElement(using: &random) {
                #expect(table.remove(handle) == stored.value)
                model[handle] = nil
                if let key = stored.key { removed.append((key, stored.value)) }
            } else if let (handle, stored) = model.randomElement(using: &random), let key = stored.key {
                #expect(table.lookup(key) { $0 == stored.value } == handle)
                #expect(table.key(of: handle) == key)
            }
            if let gone = removed.last {
                #expect(table.lookup(gone.key) { $0 == gone.value } == nil)
            }
            #expect(table.live == model.count)
            if step % 500 == 0 { _ = table.checkIndex() }
        }
        for (handle, stored) in model {
            if let key = stored.key { #expect(table.lookup(key) { $0 == stored.value } == handle) }
            #expect(table[handle] == stored.value)
        }
        _ = table.checkIndex()
    }

    final class Tracked {
        nonisolated(unsafe) static var alive = 0
        init() { Tracked.alive += 1 }
        deinit { Tracked.alive -= 1 }
    }

    @Test func entriesAreReleasedOnRemoveRemoveAllAndDeinit() {
        do {
            let table = TransactionTable<Tracked>(capacity: 4)
            let a = table.insert(Tracked(), key: 1)!
            _ = table.insert(Tracked(), key: 2)!
            _ = table.insert(Tracked(), key: nil)!
            #expect(Tracked.alive == 3)
            table.remove(a)
            #expect(Tracked.alive == 2)
            var drained = 0
            table.removeAll { _, _ in drained += 1 }
            #expect(drained == 2 && table.live == 0 && Tracked.alive == 0)
            _ = table.insert(Tracked(), key: 3)!
            #expect(Tracked.alive == 1)
        }
        #expect(Tracked.alive == 0)
    }
}
