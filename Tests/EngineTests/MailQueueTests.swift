@testable import Engine
import Glibc
import Testing

@Suite struct MailQueueTests {
    static func record(_ n: Int, length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: n &+ $0) } }

    @Test func recordsComeOutInOrderAcrossTheWrapAndAFullQueueRefusesUntilRead() {
        let queue = MailQueue(capacity: 256)
        var read: [(UInt16, [UInt8])] = []
        var sent: [(UInt16, [UInt8])] = []
        // Lengths that leave odd gaps at the end, so records wrap with and without a marker.
        for round in 0..<50 {
            var accepted = 0
            while true {
                let bytes = Self.record(round * 7 + accepted, length: (round * 13 + accepted * 5) % 57)
                let written = bytes.withUnsafeBytes { queue.write(channel: UInt16(round), $0) }
                if !written { break }
                sent.append((UInt16(round), bytes))
                accepted += 1
            }
            #expect(accepted > 0, "an empty queue took nothing in round \(round)")
            queue.read { channel, bytes in read.append((channel, Array(bytes))) }
        }
        #expect(read.count == sent.count)
        #expect(zip(read, sent).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 })
    }

    @Test func aProducerAndAConsumerOnTwoThreadsLoseAndReorderNothing() throws {
        final class Box: @unchecked Sendable {
            let queue = MailQueue(capacity: 4096)
            var received: [UInt32] = []
        }
        let box = Box()
        let total: UInt32 = 200_000
        var consumer = pthread_t()
        let started = pthread_create(&consumer, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            while box.received.count < 200_000 {
                box.queue.read { _, bytes in box.received.append(bytes.loadUnaligned(as: UInt32.self)) }
            }
            return nil
        }, Unmanaged.passRetained(box).toOpaque())
        try #require(started == 0)
        var n: UInt32 = 0
        while n < total {
            var value = n
            // Varying lengths, the number first, so records of every size cross the wrap.
            let written = withUnsafeBytes(of: &value) { number in
                var record = Array(number) + Array(repeating: 0xAB, count: Int(n % 40))
                return record.withUnsafeMutableBytes { box.queue.write(channel: 1, UnsafeRawBufferPointer($0)) }
            }
            if written { n += 1 }
        }
        pthread_join(consumer, nil)
        #expect(box.received == Array(0..<total))
    }
}
