import Engine
import SIP
import Testing

@testable import TM

/// A shard without a ring for `TransactionManager`: a virtual clock on a real `TimerWheel`, every datagram the
/// manager sends recorded as its first line and where it went.
final class VirtualShard: ShardIO {
    private(set) var now: UInt64 = 0
    var counters = ShardCounters()
    let localAddresses = [SocketAddress(ipv4: (127, 0, 0, 1), port: 5060)]
    let wheel = TimerWheel(capacity: 4096, now: 0)
    /// What the current row sent, and what the rows before it did.
    var sent: [Sent] = []
    var history: [Sent] = []
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 8)

    struct Sent: Equatable, CustomStringConvertible {
        let firstLine: String
        let to: SocketAddress
        let text: String
        static func == (a: Sent, b: Sent) -> Bool { a.firstLine == b.firstLine && a.to == b.to }
        var description: String { "\(firstLine) → \(to.port)" }
    }

    deinit { buffer.deallocate() }

    func schedule(after milliseconds: UInt64, payload: UInt64) -> TimerHandle? {
        wheel.schedule(at: now + milliseconds, payload: payload)
    }

    @discardableResult
    func cancel(_ timer: TimerHandle) -> Bool { wheel.cancel(timer) }
    /// As a shard's send slots (9,000 bytes); `outstanding` counts the ones taken and not yet sent or given back.
    let datagramCapacity = 9000
    private(set) var outstanding = 0

    func makeDatagram() -> OutboundDatagram? {
        outstanding += 1
        return OutboundDatagram(unpooled: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<datagramCapacity]))
    }

    func send(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress, socketIndex: Int) {
        outstanding -= 1
        let text = String(decoding: datagram.buffer[0..<length], as: UTF8.self)
        sent.append(Sent(firstLine: String(text.prefix { $0 != "\r\n" }), to: destination, text: text))
    }

    func discard(_ datagram: OutboundDatagram) { outstanding -= 1 }
    func socketIndex(for destination: SocketAddress, preferring preferred: Int) -> Int? { 0 }

    /// Moves the clock to `time`, firing every timer due on the way into `manager`.
    func advance(to time: UInt64, _ manager: TransactionManager) {
        precondition(time >= now)
        wheel.advance(to: time) { payload in
            now = wheel.elapsed
            _ = manager.timerFired(payload: payload, on: self)
        }
        now = time
    }
}

let caller = SocketAddress(ipv4: (192, 0, 2, 1), port: 5060)
let callee = SocketAddress(ipv4: (192, 0, 2, 2), port: 5070)
let otherCallee = SocketAddress(ipv4: (192, 0, 2, 3), port: 5080)

/// The script side of a scenario: a failure route that forks to `next` when one is set.
final class ScenarioUser: TransactionUser {
    var failureRoutes = 0
    var next: SocketAddress?
    var request: Parsed?

    /// Due failure routes, run at the end of the row as the shard's loop would at the end of its turn.
    var due: [TransactionHandle] = []

    func failureRouteDue(transaction: TransactionHandle, manager: TransactionManager, on io: any ShardIO) {
        due.append(transaction)
    }

    func transactionAnswered(_ transaction: TransactionHandle, status: Int, response: UnsafeRawBufferPointer,
                             manager: TransactionManager, on shard: any ShardIO) {}

    func runDue(_ manager: TransactionManager, on io: any ShardIO) {
        sentBeforeDue = (io as! VirtualShard).sent
        for (response, transaction, branch) in dueReplies {
            manager.releaseHeldReply(transaction, branch: branch, response, relay: response.statusCode >= 200, on: io)
        }
        dueReplies.removeAll()
        while !due.isEmpty {
            let transaction = due.removeFirst()
            guard manager.takeDueFailureRoute(transaction) != nil else { continue }
            failureRoutes += 1
            if let next, let request {
                _ = manager.relay(transaction, request.message, from: caller, arrivedOn: 0, to: next,
                                  edits: RelayEdits(), on: io)
            }
            manager.failureRouteEnded(transaction, on: io)
        }
    }

    /// With reply routes: each response waits for the turn boundary, where provisionals are dropped (as a
    /// reply route's `drop` would) and finals relayed.
    var replyRoutes = false
    var dueReplies: [(SIPMessage, TransactionHandle, Int)] = []
    /// What had been sent when the turn's due work began: nothing a reply route decides goes out before it.
    var sentBeforeDue: [VirtualShard.Sent] = []

    func wantsReplyRoutes(route: Int) -> Bool { replyRoutes }

    func replyRouteDue(_ response: SIPMessage, route: Int, transaction: TransactionHandle, branch: Int,
                       manager: TransactionManager, on io: any ShardIO) -> Bool {
        dueReplies.append((response, transaction, branch))
        return true
    }
}

/// One row of a proxy scenario: at `time`, `input` happens; the manager sends exactly `expected` (first line and
/// destination), in order.
struct ProxyRow {
    enum Input {
        /// The caller's request: a new one is taken on (created, relayed to the callee), a retransmission or a
        /// CANCEL is absorbed.
        case fromCaller(Parsed)
        /// A response from a callee to the request (not a CANCEL) the manager sent there last, with this status
        /// line.
        case fromCallee(SocketAddress, String)
        /// The callee's 200 to the CANCEL the manager sent there.
        case cancelAnswered(SocketAddress)
        /// Only time passes.
        case wait
    }

    let time: UInt64
    let input: Input
    let expected: [VirtualShard.Sent]
    let location: SourceLocation
}

func row(_ time: UInt64, _ input: ProxyRow.Input, _ expected: [(String, SocketAddress)],
         sourceLocation: SourceLocation = #_sourceLocation) -> ProxyRow {
    ProxyRow(time: time, input: input, expected: expected.map { VirtualShard.Sent(firstLine: $0.0, to: $0.1, text: "") },
             location: sourceLocation)
}

/// Runs the rows against a fresh manager; returns it and the shard, for checks after the table.
@discardableResult
func runProxyScenario(_ rows: [ProxyRow], settings: TimerSettings = TimerSettings(), user: ScenarioUser? = nil,
                      forkTo destinations: [SocketAddress] = [callee],
                      failureRoute: Int? = nil) -> (TransactionManager, VirtualShard) {
    let shard = VirtualShard()
    let manager = TransactionManager(shardIndex: 0, capacity: 64, settings: settings, key: BranchKey(k0: 1, k1: 2),
                                     seed: 3, relay: SIPRelay())
    manager.user = user
    var kept: [Parsed] = []
    for row in rows {
        shard.sent.removeAll()
        shard.advance(to: row.time, manager)
        switch row.input {
        case .fromCaller(let request):
            kept.append(request)
            if manager.absorb(request.message, from: caller, arrivedOn: 0, on: shard) { break }
            guard case .created(let handle) = manager.create(request.message, from: caller, arrivedOn: 0, on: shard) else {
                Issue.record("the request was not taken on", sourceLocation: row.location)
                continue
            }
            user?.request = request
            if let failureRoute { manager.setFailureRoute(handle, failureRoute) }
            for destination in destinations {
                #expect(manager.relay(handle, request.message, from: caller, arrivedOn: 0, to: destination,
                                      edits: RelayEdits(), on: shard), sourceLocation: row.location)
            }
        case .fromCallee(let from, let status):
            kept.append(contentsOf: respond(from: from, status: status, cancel: false, manager, shard, row.location))
        case .cancelAnswered(let from):
            kept.append(contentsOf: respond(from: from, status: "200 OK", cancel: true, manager, shard, row.location))
        case .wait:
            break
        }
        // The turn boundary: what the row made due runs now.
        user?.runDue(manager, on: shard)
        #expect(shard.sent == row.expected, "at \(row.time) ms", sourceLocation: row.location)
        shard.history.append(contentsOf: shard.sent)
    }
    _ = kept
    return (manager, shard)
}

/// A callee's answer to the latest request (or CANCEL) the manager sent it, handed to the manager.
private func respond(from callee: SocketAddress, status: String, cancel: Bool, _ manager: TransactionManager,
                     _ shard: VirtualShard, _ location: SourceLocation) -> [Parsed] {
    guard let forwarded = lastRequest(to: callee, cancel: cancel, in: shard) else {
        Issue.record("nothing was sent to \(callee.port) to answer", sourceLocation: location)
        return []
    }
    let response = Parsed(answer(forwarded, status: status))
    #expect(manager.handleResponse(response.message, on: shard) == .handled, sourceLocation: location)
    return [response]
}

private func lastRequest(to destination: SocketAddress, cancel: Bool, in shard: VirtualShard) -> String? {
    (shard.history + shard.sent).last { sent in
        sent.to == destination && !sent.firstLine.hasPrefix("SIP/2.0") && !sent.firstLine.hasPrefix("ACK")
            && sent.firstLine.hasPrefix("CANCEL") == cancel
    }?.text
}

/// A callee's response to `request` (its Via rows, From, To with a tag, Call-ID, CSeq), LF line ends.
func answer(_ request: String, status: String, extraHeader: String? = nil, toTag: String = "callee") -> String {
    let lines = request.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
    var out = ["SIP/2.0 \(status)"]
    for line in lines {
        let name = line.prefix { $0 != ":" }.lowercased()
        switch name {
        case "via", "from", "call-id", "cseq": out.append(line)
        case "to": out.append(line.contains("tag=") ? line : line + ";tag=\(toTag)")
        default: continue
        }
    }
    if let extraHeader { out.append(extraHeader) }
    out.append("Content-Length: 0")
    return out.joined(separator: "\n") + "\n\n"
}

/// The caller's request of call `call`: `method` with its CSeq number (a CANCEL shares its INVITE's).
func callerRequest(_ method: String, call: String, cseq: Int) -> Parsed {
    Parsed("""
        \(method) sip:bob@192.0.2.2:5070 SIP/2.0
        Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-\(call)
        Max-Forwards: 70
        To: <sip:bob@biloxi.example.com>
        From: <sip:alice@atlanta.example.com>;tag=1928301774
        Call-ID: \(call)@192.0.2.1
        CSeq: \(cseq) \(method)
        Content-Length: 0


        """)
}

func invite(_ call: String = "a84b4c76e66710") -> Parsed { callerRequest("INVITE", call: call, cseq: 314159) }
func cancelOf(_ call: String = "a84b4c76e66710") -> Parsed { callerRequest("CANCEL", call: call, cseq: 314159) }
func options(_ call: String = "opt1") -> Parsed { callerRequest("OPTIONS", call: call, cseq: 1) }

/// The proxy core (RFC 3261 §16–17) as scenario tables on a virtual clock, without a ring: what goes upstream
/// and downstream, and when.
@Suite struct ProxyCoreTests {
    @Test func anInviteIsRelayedRetransmittedOnTimerAAndTheCalleesAnswersGoUpstream() {
        let (manager, _) = runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // Timer A: T1, then doubling.
            row(500, .wait, [("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(1499, .wait, []),
            row(1500, .wait, [("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // A provisional stops Timer A; the caller's retransmission gets the last response again.
            row(1600, .fromCallee(callee, "180 Ringing"), [("SIP/2.0 180 Ringing", caller)]),
            row(1700, .fromCaller(invite()), [("SIP/2.0 180 Ringing", caller)]),
            row(3500, .wait, []),
            row(4000, .fromCallee(callee, "200 OK"), [("SIP/2.0 200 OK", caller)]),
        ])
        #expect(manager.live == 1, "the 2xx'd INVITE's branch lingers for Timer M")
    }

    @Test func aNonInviteWithNoAnswerRetransmitsUpToT2AndEndsIn408WhenTimerFFires() {
        let (manager, shard) = runProxyScenario([
            row(0, .fromCaller(options()), [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(1500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(3500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // Capped at T2 (4 s) from here.
            row(7500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(11_500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(15_500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(19_500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(23_500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(27_500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // fr_timeout (30 s by default) comes before Timer F (64·T1 = 32 s): 408 upstream.
            row(30_000, .wait, [("SIP/2.0 408 Request Timeout", caller)]),
        ])
        shard.advance(to: 200_000, manager)
        #expect(manager.live == 0, "everything ended and was freed")
    }

    @Test func aCancelIsAnsweredAtOnceSentDownstreamAndTheCalleesFinalGoesUpstreamAs487() {
        let (manager, shard) = runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(100, .fromCallee(callee, "180 Ringing"), [("SIP/2.0 180 Ringing", caller)]),
            row(200, .fromCaller(cancelOf()), [("SIP/2.0 200 OK", caller), ("CANCEL sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(250, .cancelAnswered(callee), []),
            row(300, .fromCallee(callee, "487 Request Terminated"),
                [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", callee), ("SIP/2.0 487 Request Terminated", caller)]),
        ])
        shard.advance(to: 200_000, manager)
        #expect(manager.live == 0)
    }

    @Test func ofTwoBranchesThe4xxGoesUpstreamOverThe5xxAndEachIsAcked() {
        runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee),
                                           ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(100, .fromCallee(otherCallee, "503 Service Unavailable"),
                [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(200, .fromCallee(callee, "486 Busy Here"),
                [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", callee), ("SIP/2.0 486 Busy Here", caller)]),
        ], forkTo: [callee, otherCallee])
    }

    @Test func aFailureRouteForksAgainAndTheNewBranchsAnswerGoesUpstream() {
        let user = ScenarioUser()
        user.next = otherCallee
        runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(100, .fromCallee(callee, "486 Busy Here"),
                [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", callee), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(200, .fromCallee(otherCallee, "200 OK"), [("SIP/2.0 200 OK", caller)]),
        ], user: user, failureRoute: 7)
        #expect(user.failureRoutes == 1)
    }

    @Test func aBranchs2xxGoesUpstreamAtOnceAndTheOtherRingingBranchIsCancelled() {
        runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee),
                                           ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(100, .fromCallee(callee, "180 Ringing"), [("SIP/2.0 180 Ringing", caller)]),
            row(150, .fromCallee(otherCallee, "180 Ringing"), [("SIP/2.0 180 Ringing", caller)]),
            // §16.7 step 10: the 2xx is forwarded at once, and the branch still ringing gets a CANCEL.
            row(200, .fromCallee(callee, "200 OK"),
                [("SIP/2.0 200 OK", caller), ("CANCEL sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(250, .cancelAnswered(otherCallee), []),
            // Its 487 is ACKed hop by hop and goes no further: the caller has its answer.
            row(300, .fromCallee(otherCallee, "487 Request Terminated"), [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
        ], forkTo: [callee, otherCallee])
    }

    @Test func aBranchThatNeverAnswersEndsIn408AtFrInvTimeoutWhileTheOtherSettlesFirst() {
        var settings = TimerSettings()
        settings.finalResponseInviteTimeout = 10_000
        runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee),
                                           ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            row(100, .fromCallee(callee, "180 Ringing"), [("SIP/2.0 180 Ringing", caller)]),
            row(200, .fromCallee(otherCallee, "404 Not Found"), [("ACK sip:bob@192.0.2.2:5070 SIP/2.0", otherCallee)]),
            // Timer C (fr_inv_timeout, 10 s here) on the ringing branch: it counts as 408 at once (as OpenSIPS's
            // fr_inv_timeout), so every branch has answered and the better 404 goes upstream; the branch is CANCELled.
            row(10_100, .wait, [("SIP/2.0 404 Not Found", caller), ("CANCEL sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
        ], settings: settings, forkTo: [callee, otherCallee])
    }

    @Test func aFailureRouteDueFromATimerRunsAtTheTurnBoundaryAndWhatItLeavesUndoneIsTheBestResponse() {
        let user = ScenarioUser()
        var settings = TimerSettings()
        settings.finalResponseTimeout = 2_000
        let (manager, _) = runProxyScenario([
            row(0, .fromCaller(options()), [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            row(1500, .wait, [("OPTIONS sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // fr_timeout: the branch fails (408) inside the timer; the failure route is only due there, runs at
            // the end of the turn, adds nothing, and the 408 goes upstream after it.
            row(2000, .wait, [("SIP/2.0 408 Request Timeout", caller)]),
        ], settings: settings, user: user, failureRoute: 3)
        #expect(user.failureRoutes == 1)
        #expect(manager.live == 1, "answered, and kept for its wait timer")
    }

    @Test func replyRoutesRunAtTheTurnBoundaryAndDecideWhatIsRelayed() {
        let user = ScenarioUser()
        user.replyRoutes = true
        runProxyScenario([
            row(0, .fromCaller(invite()), [("SIP/2.0 100 Trying", caller), ("INVITE sip:bob@192.0.2.2:5070 SIP/2.0", callee)]),
            // Dropped by the "reply route": the caller hears nothing.
            row(100, .fromCallee(callee, "180 Ringing"), []),
            row(200, .fromCallee(callee, "200 OK"), [("SIP/2.0 200 OK", caller)]),
        ], user: user)
        #expect(user.sentBeforeDue.isEmpty, "the 200 went upstream only after its reply routes")
    }

    @Test func aRequestTooLargeToSendIsRefusedForA513AndAResponseTooLargeGivesItsSendSlotBack() {
        let shard = VirtualShard()
        let manager = TransactionManager(shardIndex: 0, capacity: 8, settings: TimerSettings(), key: BranchKey(k0: 1, k1: 2),
                                         seed: 3, relay: SIPRelay())
        // About 9,050 bytes as received (the receive buffers hold 9,216), over the 9,000 a send slot holds.
        let big = Parsed("""
            INVITE sip:bob@192.0.2.2:5070 SIP/2.0
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-big
            Max-Forwards: 70
            To: <sip:bob@biloxi.example.com>
            From: <sip:alice@atlanta.example.com>;tag=1928301774
            Call-ID: big@192.0.2.1
            CSeq: 1 INVITE
            X-Padding: \(String(repeating: "p", count: 8800))
            Content-Length: 0


            """)
        guard case .created(let handle) = manager.create(big.message, from: caller, arrivedOn: 0, on: shard) else {
            Issue.record("not created")
            return
        }
        #expect(!manager.relay(handle, big.message, from: caller, arrivedOn: 0, to: callee, edits: RelayEdits(), on: shard))
        #expect(manager.lastRelayTooLarge)
        #expect(shard.outstanding == 0)

        // A callee's response larger than a slot, for a branch that was sent: dropped, its slot given back, also
        // when the callee sends it again and again.
        let small = invite("small")
        guard case .created(let other) = manager.create(small.message, from: caller, arrivedOn: 0, on: shard) else {
            Issue.record("not created")
            return
        }
        #expect(manager.relay(other, small.message, from: caller, arrivedOn: 0, to: callee, edits: RelayEdits(), on: shard))
        #expect(!manager.lastRelayTooLarge)
        let forwarded = shard.sent.last { $0.firstLine.hasPrefix("INVITE") }!.text
        let huge = answer(forwarded, status: "200 OK", extraHeader: "X-Padding: \(String(repeating: "q", count: 9000))")
        for _ in 0..<5 {
            let response = Parsed(huge)
            _ = manager.handleResponse(response.message, on: shard)
        }
        #expect(shard.outstanding == 0, "every slot taken for the oversized 200 was given back")
        #expect(shard.counters.dropped >= 1)
    }

    @Test func aNegativeFinalWithALongToIsStillAckedDownstream() {
        let shard = VirtualShard()
        let manager = TransactionManager(shardIndex: 0, capacity: 8, settings: TimerSettings(), key: BranchKey(k0: 1, k1: 2),
                                         seed: 3, relay: SIPRelay())
        let request = invite("long-to")
        guard case .created(let handle) = manager.create(request.message, from: caller, arrivedOn: 0, on: shard) else {
            Issue.record("not created")
            return
        }
        #expect(manager.relay(handle, request.message, from: caller, arrivedOn: 0, to: callee, edits: RelayEdits(), on: shard))
        let forwarded = shard.sent.last { $0.firstLine.hasPrefix("INVITE") }!.text
        shard.sent.removeAll()
        let busy = Parsed(answer(forwarded, status: "486 Busy Here", toTag: String(repeating: "t", count: 1200)))
        _ = manager.handleResponse(busy.message, on: shard)
        #expect(shard.sent.map(\.firstLine) == ["ACK sip:bob@192.0.2.2:5070 SIP/2.0", "SIP/2.0 486 Busy Here"])
        #expect(shard.sent.first?.text.contains(";tag=\(String(repeating: "t", count: 1200))") == true)
    }
}
