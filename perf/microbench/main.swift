import CAllocCounter
import Engine
import Glibc
import SIP

// Micro-benchmarks of the hot path on one core: messages per second and heap allocations per message.
//   ringsip-bench [parse|relay|shard|all] [iterations]
//   ringsip-bench check THRESHOLDS   — exits 1 when any allocation count exceeds its committed budget.
// Build with -c release; figures go to perf/RESULTS.md.

func nowNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

struct Measurement {
    var name: String
    var perSecond: Double
    var nanosecondsEach: Double
    var allocationsEach: Double

    var line: String {
        guard perSecond > 0 else { return "\(name): \(allocationsEach) allocations/msg" }
        let rate = (perSecond / 1000).rounded() * 1000
        let ns = (nanosecondsEach * 10).rounded() / 10
        return "\(name): \(Int(rate)) msgs/s, \(ns) ns/msg, \(allocationsEach) allocations/msg"
    }
}

/// Runs `body` `iterations` times after a warm-up, timing it and counting this thread's allocations.
func measure(_ name: String, iterations: Int, _ body: () -> Void) -> Measurement {
    for _ in 0..<min(iterations, 10_000) { body() }
    let allocationsBefore = CAllocCounter_thread_allocations()
    let start = nowNanoseconds()
    for _ in 0..<iterations { body() }
    let elapsed = Double(nowNanoseconds() - start)
    let allocations = Double(CAllocCounter_thread_allocations() - allocationsBefore)
    return Measurement(name: name, perSecond: Double(iterations) / (elapsed / 1e9),
                       nanosecondsEach: elapsed / Double(iterations), allocationsEach: allocations / Double(iterations))
}

/// `name: budget` lines; `#` starts a comment.
func readThresholds(_ path: String) -> [(String, Double)] {
    guard let file = fopen(path, "r") else { fatalError("cannot read \(path)") }
    defer { fclose(file) }
    var result: [(String, Double)] = []
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    while getline(&line, &capacity, file) > 0 {
        let text = String(cString: line!).split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
        guard let colon = text.lastIndex(of: ":"),
              let budget = Double(text[text.index(after: colon)...].filter { !$0.isWhitespace }) else { continue }
        result.append((String(text[..<colon]).trimmingCharacters(), budget))
    }
    free(line)
    return result
}

extension String {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s.removeFirst() }
        while s.last?.isWhitespace == true { s.removeLast() }
        return String(s)
    }
}

let arguments = CommandLine.arguments
let which = arguments.count > 1 ? arguments[1] : "all"

if which == "check" {
    guard arguments.count > 2 else { fatalError("usage: ringsip-bench check THRESHOLDS") }
    let measured = ParseBenchmarks.run(iterations: 20_000) + RelayBenchmarks.run(iterations: 20_000)
        + ShardRelayBenchmark.run(messages: 2_000) + StatefulShardBenchmark.run(calls: 1_000)
    var failed = 0
    var passed = 0
    for (name, budget) in readThresholds(arguments[2]) {
        guard let m = measured.first(where: { $0.name == name }) else {
            print("FAIL \(name): no such measurement"); failed += 1; continue
        }
        if m.allocationsEach <= budget {
            print("ok   \(name): \(m.allocationsEach) allocations/msg (budget \(budget))"); passed += 1
        } else {
            print("FAIL \(name): \(m.allocationsEach) allocations/msg, over the budget of \(budget)"); failed += 1
        }
    }
    print("allocation gates: \(passed) passed, \(failed) failed")
    exit(failed == 0 ? 0 : 1)
}

let iterations = arguments.count > 2 ? Int(arguments[2]) ?? 1_000_000 : 1_000_000
var results: [Measurement] = []
if which == "parse" || which == "all" { results += ParseBenchmarks.run(iterations: iterations) }
if which == "relay" || which == "all" { results += RelayBenchmarks.run(iterations: iterations) }
if which == "shard" || which == "all" { results += ShardRelayBenchmark.run(messages: 4_000) }
if which == "stateful" || which == "all" { results += StatefulShardBenchmark.run(calls: iterations) }
for result in results { print(result.line) }
