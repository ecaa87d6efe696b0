import XCTest
@testable import Script

final class ArenaTests: XCTestCase {
    func testAppendedPiecesFormOneValueAndResetReusesTheSpace() {
        let arena = Arena(capacity: 64)
        var text = arena.begin()
        "sip:".utf8CString.withUnsafeBytes { arena.append(&text, UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
        arena.append(&text, .integer(-42))
        arena.append(&text, .null)
        XCTAssertEqual(ScriptValue.text(arena.end(text)).string, "sip:-42")
        let used = arena.used
        arena.reset()
        XCTAssertEqual(arena.used, 0)
        XCTAssertGreaterThan(used, 0)
    }

    func testOverflowIsReportedNotCrashing() {
        let arena = Arena(capacity: 8)
        XCTAssertNotNil(arena.allocate(8))
        XCTAssertNil(arena.allocate(1))
        XCTAssertTrue(arena.overflowed)
        arena.reset()
        XCTAssertFalse(arena.overflowed)
    }

    func testComparisonIsNumericWhenBothSidesAreNumbers() {
        let ten = permanentBytes("10"), nine = permanentBytes("9"), abc = permanentBytes("abc")
        XCTAssertEqual(compareValues(.text(ten), .integer(10)), 0)
        XCTAssertGreaterThan(compareValues(.text(ten), .integer(9))!, 0)
        XCTAssertLessThan(compareValues(.text(ten), .text(nine))!, 0, "two texts compare as bytes")
        XCTAssertNil(compareValues(.null, .text(abc)))
        XCTAssertEqual(ScriptValue.text(permanentBytes("-17")).integerValue, -17)
        XCTAssertNil(ScriptValue.text(permanentBytes("17x")).integerValue)
        XCTAssertFalse(ScriptValue.empty.isTrue)
        XCTAssertTrue(ScriptValue.integer(-1).isTrue)
    }
}
