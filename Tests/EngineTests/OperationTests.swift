import CUring
import Foundation
import Glibc
import XCTest
@testable import Engine

/// Completions seen on the shard's thread, read by the test's thread.
final class OperationLog: @unchecked Sendable {
    struct Entry: Equatable {
        var slot: UInt32
        var result: Int32
        var more: Bool
        var bytes: String
    }
    private let condition = NSCondition()
    private var entries: [Entry] = []

    func append(_ entry: Entry) {
        condition.lock()
        entries.append(entry)
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until `count` entries arrived or `seconds` passed; returns what arrived.
    func wait(for count: Int, seconds: Double) -> [Entry] {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while entries.count < count && condition.wait(until: deadline) {}
        return entries
    }
}

/// Drives one pipe through the four operations: write+read, a poll that is cancelled, a poll that fires.
final class PipeOperationHandler: ShardHandler {
    let log: OperationLog
    var readEnd: Int32 = -1
    var writeEnd: Int32 = -1
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
    let hello = UnsafeMutableRawBufferPointer.allocate(byteCount: 5, alignment: 8)
    let byte = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 8)

    init(log: OperationLog) {
        self.log = log
        hello.copyBytes(from: Array("hello".utf8))
        byte.copyBytes(from: Array("x".utf8))
    }

    deinit {
        buffer.deallocate()
        hello.deallocate()
        byte.deallocate()
        close(readEnd)
        close(writeEnd)
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition { .done }

    func started(on shard: Shard) {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0)
        (readEnd, writeEnd) = (fds[0], fds[1])
        shard.submitWrite(fd: writeEnd, from: UnsafeRawBufferPointer(hello), id: OperationID(slot: 1, generation: 7))
        shard.submitRead(fd: readEnd, into: buffer, id: OperationID(slot: 2, generation: 7))
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        precondition(id.generation == 7, "the caller's generation comes back unchanged")
        let bytes = id.slot == 2 && result > 0
            ? String(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<Int(result)]), as: UTF8.self) : ""
        log.append(.init(slot: id.slot, result: result, more: flags & IORING_CQE_F_MORE != 0, bytes: bytes))
        switch id.slot {
        case 2:
            // The pipe is empty now: this poll can only end by cancellation.
            shard.submitPoll(fd: readEnd, events: Int16(POLLIN), id: OperationID(slot: 3, generation: 7))
            shard.cancelOperations(id: OperationID(slot: 3, generation: 7))
        case 3:
            shard.submitPoll(fd: readEnd, events: Int16(POLLIN), id: OperationID(slot: 4, generation: 7))
            shard.submitWrite(fd: writeEnd, from: UnsafeRawBufferPointer(byte), id: OperationID(slot: 5, generation: 7))
        default:
            break
        }
    }
}

final class OperationTests: XCTestCase {
    func testReadWritePollAndCancelOnAPipeCompleteThroughTheHandler() throws {
        let log = OperationLog()
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            PipeOperationHandler(log: log)
        }
        do {
            try engine.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
        let entries = log.wait(for: 5, seconds: 3)
        engine.stop()
        XCTAssertEqual(entries.count, 5, "\(entries)")
        let bySlot = Dictionary(entries.map { ($0.slot, $0) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(bySlot[1]?.result, 5, "the write moved all five bytes")
        XCTAssertEqual(bySlot[2]?.bytes, "hello")
        XCTAssertEqual(bySlot[3]?.result, -ECANCELED, "a cancelled poll still completes, with -ECANCELED")
        XCTAssertEqual(bySlot[5]?.result, 1)
        XCTAssertEqual(bySlot[4].map { $0.result & Int32(POLLIN) }, Int32(POLLIN), "the poll reports the ready mask")
        XCTAssertFalse(entries.contains { $0.more }, "one-shot operations never set IORING_CQE_F_MORE")
        XCTAssertEqual(engine.finalCounters[0].staleCompletions, 0)
    }
}
