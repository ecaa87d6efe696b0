/// RFC 3261 §16.7 step 6: which branch's final answer a proxy sends upstream once every branch has one and
/// none was a 2xx (a 2xx is forwarded the moment it arrives, step 9).
///
/// In order of preference:
/// 1. a 6xx (step 5: it ends the search; the driver also CANCELs the other branches when it arrives);
/// 2. otherwise the lowest class (2xx, then 3xx, 4xx, 5xx);
/// 3. within 4xx, 401, 407, 415, 420 and 484 (step 6: the caller can act on them and retry);
/// 4. within one class, a response the branch really received over one the proxy stands in with (408 for a
///    branch that timed out, 503 for one it could not send to);
/// 5. the earliest branch.
///
/// Pure, so it is tested with tables; `code` and `received` are non-escaping, so calling it allocates nothing.
public enum BestResponse {
    /// The index of the branch to answer with, or nil when there are no branches.
    /// - Parameter code: branch `i`'s final status (100–699; 0 counts as no answer and ranks last).
    /// - Parameter received: whether the proxy holds branch `i`'s own response.
    public static func select(count: Int, code: (Int) -> Int, received: (Int) -> Bool) -> Int? {
        var best: Int?
        var bestRank = Int.max
        for i in 0..<count {
            let rank = self.rank(code(i), received: received(i))
            if rank < bestRank {
                best = i
                bestRank = rank
            }
        }
        return best
    }

    /// Lower is better: class first, then the preferred 4xx, then a received response over a local one.
    static func rank(_ code: Int, received: Bool) -> Int {
        let classRank: Int
        switch code {
        case 200..<300: classRank = 0
        case 600..<700: classRank = 1
        case 300..<600: classRank = code / 100 - 1
        default: classRank = 6
        }
        let preferred = code == 401 || code == 407 || code == 415 || code == 420 || code == 484
        return classRank * 4 + (preferred ? 0 : 2) + (received ? 0 : 1)
    }

    /// §16.7 step 7: a forwarded 401 or 407 carries the challenges of every 401/407 branch.
    public static func mergesChallenges(_ code: Int) -> Bool { code == 401 || code == 407 }
}
