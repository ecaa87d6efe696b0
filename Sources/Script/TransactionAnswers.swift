import Engine
import SIP
import TM

/// A transaction's first final response upstream, as a module's reporter sees it (acc).
///
/// - Invariant: `reason` and `toTag` view `ScriptHandler.answerBytes`, valid only during the reporter's call.
public struct TransactionAnswer {
    public let status: Int
    public let reason: UnsafeRawBufferPointer
    /// The response's To tag (empty when it had none: a 100-less 408 of our own to an initial request does).
    public let toTag: UnsafeRawBufferPointer
    /// Wall-clock time the response was sent, in milliseconds since the epoch.
    public let unixMilliseconds: Int64
    /// The URI of the response's first Contact (empty without one), and where a relayed response came from.
    public let contact: UnsafeRawBufferPointer
    public let source: SocketAddress
}

/// What a module compiled to report answered transactions: it is called, on the transaction's request (its
/// `$avp` values and flags restored), for each transaction whose flags meet `flags` or whose `reports` (set by
/// the module's own functions) is not zero.
public struct AnswerReporter {
    public let flags: UInt64
    public let report: (ScriptContext, TransactionAnswer) -> Void

    public init(flags: UInt64, report: @escaping (ScriptContext, TransactionAnswer) -> Void) {
        self.flags = flags
        self.report = report
    }
}

struct PendingAnswer {
    var transaction: TransactionHandle
    var status: Int
    var reason: Range<Int>
    var toTag: Range<Int>
    var unixMilliseconds: Int64
    var contact: Range<Int>
    var source: SocketAddress
}

extension ScriptHandler {
    /// Continuation payload that reports this turn's answered transactions: bits 56–63 hold 5.
    static let answerMarker: UInt64 = 5 << 56

    /// Copies the answer's facts (the response block goes on to be sent or freed) and reports it at the end of
    /// the loop turn, with every other answer of the turn.
    public func transactionAnswered(_ transaction: TransactionHandle, status: Int, response: UnsafeRawBufferPointer,
                                    manager: TransactionManager, on shard: any ShardIO) {
        // A transaction no module marked is not copied (a reply our own route sends is marked by the route's own
        // values, which reach the transaction when the route ends).
        let ownRoute = context.routeRunning && context.transaction == transaction
        let stored = ownRoute ? (flags: context.flags, branchFlags: UInt64(0), reports: context.reports)
            : manager.flags(transaction)
        guard stored.reports != 0 || stored.flags & answerFlags != 0 else { return }
        var reason = 0..<0, toTag = 0..<0, contact = 0..<0
        if (try? answerMessage.parse(response)) != nil {
            reason = keep(answerMessage.reasonPhrase, of: response)
            if let to = answerMessage.to { toTag = keep(to.tag, of: response) }
            var contacts = answerMessage.values(of: .contact)
            if let value = contacts.next(), let address = try? SIPNameAddr.parse(response, value) {
                contact = keep(address.uri.span, of: response)
            }
        }
        if pendingAnswers.isEmpty { context.shard.continueNextTurn(payload: Self.answerMarker, value: 0) }
        pendingAnswers.append(PendingAnswer(transaction: transaction, status: status, reason: reason, toTag: toTag,
                                            unixMilliseconds: WallClock.milliseconds(),
                                            contact: contact, source: responseSource))
    }

    private func keep(_ span: SIPSpan, of bytes: UnsafeRawBufferPointer) -> Range<Int> {
        guard span.isPresent, span.end > span.start else { return 0..<0 }
        let start = answerBytes.count
        answerBytes.append(contentsOf: bytes[Int(span.start)..<Int(span.end)])
        return start..<answerBytes.count
    }

    /// Runs the reporters for each answer of the turn whose transaction asks for one, on its request.
    func reportAnswers(on shard: Shard) {
        guard let transactions else { return }
        let saved = context.message
        defer {
            context.message = saved
            pendingAnswers.removeAll(keepingCapacity: true)
            answerBytes.removeAll(keepingCapacity: true)
        }
        for pending in pendingAnswers {
            guard transactions.isLive(pending.transaction) else {
                context.log.write(level: -1, "ringsipd: a transaction ended in the turn it was answered (tm's wt_timer "
                    + "0?): what modules report of its answer (accounting, dialog) is lost")
                continue
            }
            guard beginOnRequest(of: pending.transaction, transactions, on: shard) else { continue }
            context.restoreAVPs(from: pending.transaction)
            answerBytes.withUnsafeBytes { bytes in
                let answer = TransactionAnswer(status: pending.status, reason: UnsafeRawBufferPointer(rebasing: bytes[pending.reason]),
                                               toTag: UnsafeRawBufferPointer(rebasing: bytes[pending.toTag]),
                                               unixMilliseconds: pending.unixMilliseconds,
                                               contact: UnsafeRawBufferPointer(rebasing: bytes[pending.contact]),
                                               source: pending.source)
                for reporter in script.answerReporters { reporter.report(context, answer) }
            }
            context.saveAVPs(to: pending.transaction)
            context.endRoute()
        }
    }
}
