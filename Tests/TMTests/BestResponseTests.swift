import Testing

@testable import TM

/// RFC 3261 §16.7 step 6–7 as a table: the branches' final statuses (`*` marks one the proxy made up
/// itself, a 408 for a timeout or 503 for a send failure) and the branch whose answer goes upstream.
@Suite struct BestResponseTests {
    struct Case: CustomStringConvertible, Sendable {
        let branches: [String]
        let expected: Int?
        var description: String { "\(branches) → \(expected.map(String.init) ?? "none")" }
    }

    static let cases: [Case] = [
        Case(branches: [], expected: nil),
        Case(branches: ["486"], expected: 0),
        Case(branches: ["486", "603"], expected: 1),  // a 6xx beats a lower class
        Case(branches: ["603", "302"], expected: 0),  // …even 3xx
        Case(branches: ["600", "603"], expected: 0),  // the first 6xx
        Case(branches: ["486", "302"], expected: 1),  // otherwise the lowest class
        Case(branches: ["503", "404"], expected: 1),
        Case(branches: ["486", "404"], expected: 0),  // same class, no preference: the earliest
        Case(branches: ["486", "407"], expected: 1),  // a challenge is preferred within 4xx
        Case(branches: ["404", "401", "407"], expected: 1),
        Case(branches: ["480", "484"], expected: 1),  // 484 Address Incomplete is preferred too
        Case(branches: ["408*", "486"], expected: 1),  // a local 408 is a 4xx like the rest…
        Case(branches: ["408*", "408"], expected: 1),  // …but ranks below a received one of its class
        Case(branches: ["503*", "408*"], expected: 1),  // still the lower class first
        Case(branches: ["408*", "500"], expected: 0),
        Case(branches: ["486", "200"], expected: 1),  // a 2xx (normally forwarded at once) beats all
    ]

    @Test(arguments: cases)
    func selectsTheBranchOfRFC3261Section16_7(_ c: Case) {
        let codes = c.branches.map { Int($0.prefix(3))! }
        let received = c.branches.map { !$0.hasSuffix("*") }
        let best = BestResponse.select(count: codes.count, code: { codes[$0] }, received: { received[$0] })
        #expect(best == c.expected)
    }

    @Test func onlyChallengesAreMerged() {
        #expect(BestResponse.mergesChallenges(401))
        #expect(BestResponse.mergesChallenges(407))
        for code in [200, 403, 404, 415, 420, 484, 486, 500, 603] { #expect(!BestResponse.mergesChallenges(code)) }
    }
}
