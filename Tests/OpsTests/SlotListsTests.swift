@testable import Ops
import XCTest

/// The free list and wait queue every Ops runner keeps (their queueing behaviour is tested through the
/// runners against real servers; these pin the list operations themselves).
final class SlotListsTests: XCTestCase {
    func testFreeSlotsComeLowestFirstAndReturnedOnesAreReusedFirst() {
        var lists = SlotLists(capacity: 3)
        defer { lists.deallocate() }
        XCTAssertEqual([lists.takeFree(), lists.takeFree(), lists.takeFree()], [0, 1, 2])
        XCTAssertNil(lists.takeFree())
        XCTAssertFalse(lists.hasFree)
        lists.putFree(1)
        XCTAssertEqual(lists.takeFree(), 1)
    }

    func testTheQueueIsFirstInFirstOutAndAnyMemberCanLeaveIt() {
        var lists = SlotLists(capacity: 5)
        defer { lists.deallocate() }
        for _ in 0..<5 { _ = lists.takeFree() }
        for i in [3, 0, 4, 1] { lists.enqueue(i) }
        lists.dequeue(0)                      // from the middle
        lists.enqueue(2, atFront: true)       // a retried query goes first
        XCTAssertEqual(lists.queued, 4)
        var order: [Int] = []
        var cursor = lists.firstQueued
        while let i = cursor {
            order.append(i)
            cursor = lists.queued(after: i)
        }
        XCTAssertEqual(order, [2, 3, 4, 1])
        lists.dequeue(1)                      // the tail
        XCTAssertEqual([lists.dequeueFirst(), lists.dequeueFirst(), lists.dequeueFirst()], [2, 3, 4])
        XCTAssertNil(lists.dequeueFirst())
        XCTAssertEqual(lists.queued, 0)
        // An emptied queue takes new members at both ends again.
        lists.enqueue(4)
        lists.enqueue(3, atFront: true)
        XCTAssertEqual([lists.dequeueFirst(), lists.dequeueFirst()], [3, 4])
    }
}
