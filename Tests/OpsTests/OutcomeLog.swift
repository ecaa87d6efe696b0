import Foundation

/// What a harness's shard thread delivered, kept for the test's thread to wait on. Each Ops harness's scenario
/// is one, with its own extra records under the same `condition`.
class OutcomeLog<Outcome>: @unchecked Sendable {
    let condition = NSCondition()
    private var outcomes: [Outcome] = []
    private var notes: [String: Int] = [:]

    func record(_ outcome: Outcome) {
        condition.lock()
        outcomes.append(outcome)
        condition.broadcast()
        condition.unlock()
    }

    /// A number the shard's side wants the test to see (counters, submission results).
    func note(_ key: String, _ value: Int) {
        condition.lock()
        notes[key] = value
        condition.unlock()
    }

    func noted(_ key: String) -> Int? {
        condition.lock()
        defer { condition.unlock() }
        return notes[key]
    }

    /// Waits until `count` outcomes were delivered or `seconds` passed.
    func wait(for count: Int, seconds: Double) -> [Outcome] {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while outcomes.count < count && condition.wait(until: deadline) {}
        return outcomes
    }
}
