import Engine
import Testing

@Suite struct NextTurnQueueTests {
    @Test func continuationsComeOutInTheOrderTheyWereRecordedAcrossGrowth() {
        var queue = NextTurnQueue(capacity: 4)
        // Wrap the ring first, so growing has to unroll it.
        for i in 0..<3 { queue.enqueue(.init(payload: UInt64(i), value: i)) }
        for i in 0..<3 { #expect(queue.dequeue()?.payload == UInt64(i)) }
        for i in 0..<100 { queue.enqueue(.init(payload: UInt64(i), value: -i)) }
        #expect(queue.count == 100)
        for i in 0..<100 {
            let next = queue.dequeue()
            #expect(next?.payload == UInt64(i) && next?.value == -i)
        }
        #expect(queue.dequeue() == nil && queue.isEmpty)
    }
}
