import Engine
import Glibc
import SIP

/// What the script layer keeps with a transaction and asks of it between routes: its `$avp` values and
/// suspended state (moved out to the route that runs, so nothing here can free what a route views), the
/// branches and responses async() holds, the failure route that is due, and the accessors behind `$T_*`.
extension TransactionManager {
    /// The request that created the transaction, as received (for a failure route to work on).
    public func request(_ handle: TransactionHandle) -> (bytes: UnsafeRawBufferPointer, source: SocketAddress, socket: Int) {
        (table[handle].request.bytes, table[handle].source, table[handle].socket)
    }

    public func setFailureRoute(_ handle: TransactionHandle, _ route: Int) {
        guard table.contains(handle) else { return }
        table[handle].failureRoute = Int32(route)
    }

    public func setReplyRoute(_ handle: TransactionHandle, _ route: Int) {
        guard table.contains(handle) else { return }
        table[handle].replyRoute = Int32(route)
    }

    /// The index the next branch_route runs for (a branch held in async() keeps its place, so it is sent under
    /// the same index).
    public func nextBranchIndex(_ handle: TransactionHandle) -> Int {
        table.contains(handle) ? table[handle].branches.count : 0
    }

    /// `t_local_replied`: whether the final answers were made here (a timeout, a send failure) rather than
    /// received — every branch's (`all`), or the one that would go upstream.
    public func locallyReplied(_ handle: TransactionHandle, all: Bool) -> Bool {
        guard table.contains(handle), table[handle].branches.count > 0 else { return false }
        if all {
            for index in 0..<table[handle].branches.count where table[handle].branches[index].response != nil {
                return false
            }
            return true
        }
        guard let best = bestBranch(handle) else { return false }
        return table[handle].branches[best].response == nil
    }

    public func replyCode(_ handle: TransactionHandle) -> Int? {
        table.contains(handle) ? table[handle].replyCode : nil
    }

    /// The Request-URI of the request that created the transaction (`$T_ruri`), valid while it lives.
    public func requestURI(_ handle: TransactionHandle) -> UnsafeRawBufferPointer? {
        guard table.contains(handle) else { return nil }
        let start = Int(table[handle].requestURIStart), count = Int(table[handle].requestURICount)
        return UnsafeRawBufferPointer(rebasing: table[handle].request.bytes[start..<start + count])
    }

    /// The timer settings of this transaction (`$T_fr_timeout`, `$T_fr_inv_timeout`).
    public func settings(_ handle: TransactionHandle) -> TimerSettings? {
        table.contains(handle) ? table[handle].settings : nil
    }

    /// Changes `fr_timeout` / `fr_inv_timeout` (milliseconds; nil leaves it) for this transaction only: its
    /// branches to come, and the machines of its branches so far, where the new value applies the next time
    /// that timer is armed (a running timer keeps its deadline).
    public func setTimeouts(_ handle: TransactionHandle, finalResponse: Int?, inviteFinalResponse: Int?) {
        guard table.contains(handle) else { return }
        if let finalResponse { table[handle].settings.finalResponseTimeout = finalResponse }
        if let inviteFinalResponse { table[handle].settings.finalResponseInviteTimeout = inviteFinalResponse }
        let settings = table[handle].settings
        for i in 0..<table[handle].branches.count {
            if table[handle].branches[i].invite != nil { table[handle].branches[i].invite!.settings = settings }
            if table[handle].branches[i].nonInvite != nil { table[handle].branches[i].nonInvite!.settings = settings }
        }
    }

    /// Keeps a copy of `bytes` (the script's serialized `$avp` values) with the transaction, replacing the
    /// previous copy; empty `bytes` drops it. False when it is larger than a store block.
    ///
    /// A route never views the transaction's copy while it runs: `takeAVPs` moved it out to the route first,
    /// so replacing it here (an `async()` saving the route's values midway) cannot pull bytes from under a
    /// view.
    @discardableResult
    public func storeAVPs(_ handle: TransactionHandle, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard table.contains(handle) else { return false }
        let copy = bytes.count > 0 ? store.store(bytes) : nil
        if let old = table[handle].avps { store.release(old) }
        table[handle].avps = copy
        return copy != nil || bytes.count == 0
    }

    /// force_rport() after the transaction was created (t_newtran first): from now on its answers go to the
    /// request's source port and carry `rport`.
    public func setForceRport(_ handle: TransactionHandle) {
        guard table.contains(handle), !table[handle].forceRport else { return }
        table[handle].forceRport = true
        table[handle].responseDestination = table[handle].source
    }

    /// Whether the transaction keeps `$avp` values.
    /// The script's flags kept with the transaction, for the next route that runs for it.
    public func storeFlags(_ handle: TransactionHandle, flags: UInt64, branchFlags: UInt64, reports: UInt32) {
        guard table.contains(handle) else { return }
        table[handle].scriptFlags = flags
        table[handle].scriptBranchFlags = branchFlags
        table[handle].scriptReports = reports
    }

    /// The flags `storeFlags` kept (zero for a transaction that is gone).
    public func flags(_ handle: TransactionHandle) -> (flags: UInt64, branchFlags: UInt64, reports: UInt32) {
        guard table.contains(handle) else { return (0, 0, 0) }
        return (table[handle].scriptFlags, table[handle].scriptBranchFlags, table[handle].scriptReports)
    }

    public func hasAVPs(_ handle: TransactionHandle) -> Bool {
        table.contains(handle) && table[handle].avps != nil
    }

    /// Moves the transaction's `$avp` values out to the route that is about to run for it: the caller owns
    /// the block (its views stay valid whatever the transaction does meanwhile) and gives it back with
    /// `releaseBlock` when the route has ended; the route's own values come back with `storeAVPs`.
    public func takeAVPs(_ handle: TransactionHandle) -> StoredMessage? {
        guard table.contains(handle), let kept = table[handle].avps else { return nil }
        table[handle].avps = nil
        return kept
    }

    /// Returns a block moved out by `takeAVPs` or `takeSuspension` to the store it came from.
    public func releaseBlock(_ block: StoredMessage) {
        store.release(block)
    }

    /// Marks the transaction as waiting for an async operation and keeps the script's state for the resume
    /// route (a copy of `state`). False when it cannot be kept, or the transaction already waits for one.
    /// - Precondition: the state of an earlier suspension was moved out (`takeSuspension`).
    public func suspend(_ handle: TransactionHandle, state: UnsafeRawBufferPointer) -> Bool {
        // One suspension at a time: a failure route running while the request route waits must not overwrite
        // the state its resume route needs.
        guard table.contains(handle), !table[handle].suspended else { return false }
        assert(table[handle].suspension == nil, "a resumed suspension's state was not moved out before suspending again")
        guard let copy = store.store(state) else { return false }
        table[handle].suspension = copy
        table[handle].suspended = true
        return true
    }

    /// Ends the suspension and moves its state (kept by `suspend`) out to the resume route, which owns it
    /// from here and gives it back with `releaseBlock`; nil when the transaction is gone or not suspended.
    public func takeSuspension(_ handle: TransactionHandle) -> StoredMessage? {
        guard table.contains(handle), table[handle].suspended, let kept = table[handle].suspension else { return nil }
        table[handle].suspended = false
        table[handle].suspension = nil
        return kept
    }

    /// The resume route has ended without suspending again: the transaction may be freed if it ended meanwhile.
    public func resumeEnded(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), !table[handle].suspended else { return }
        freeIfDone(handle, on: shard)
    }

    /// A held response comes back after its reply routes (`replyRouteDue`) or the resume route of an async()
    /// in them: `relay` false
    /// drops a provisional; a final always goes on to the proxy core. `message` is the response as the
    /// route left it (parsed, its header removals marked).
    /// nil: the response could not be read back (a held final then counts as the branch failing, 500).
    public func releaseHeldReply(_ handle: TransactionHandle, branch index: Int, _ message: SIPMessage?, relay: Bool,
                                 on shard: any ShardIO) {
        guard table.contains(handle), table[handle].heldReplies > 0 else { return }
        // Still counted while it is processed: relaying it may end the server transaction, and with the branch's
        // machine over already the transaction would be freed under us.
        if index < table[handle].branches.count {
            if let message {
                let code = message.statusCode
                if code >= 200 { table[handle].branches[index].heldFinal = false }
                if relay || code >= 200 { proxyResponse(handle, index, message, on: shard) }
            } else if table[handle].branches[index].heldFinal {
                table[handle].branches[index].heldFinal = false
                branchFailed(handle, index, status: 500, on: shard)
            }
        }
        guard table.contains(handle) else { return }
        table[handle].heldReplies -= 1
        freeIfDone(handle, on: shard)
    }

    /// The resume route of a held response held it again (a chained async()): its new hold counted it, so the
    /// old count goes.
    public func replyHeldAgain(_ handle: TransactionHandle) {
        guard table.contains(handle), table[handle].heldReplies > 0 else { return }
        table[handle].heldReplies -= 1
    }

    /// The live transaction in `slot` with `generation` (a handle carried through a continuation's payload).
    public func handle(slot: UInt32, generation: UInt16) -> TransactionHandle? {
        table.handle(slot: slot, generation: generation)
    }

    /// Whether `handle` still names a live transaction.
    public func isLive(_ handle: TransactionHandle) -> Bool { table.contains(handle) }

    /// Whether a CANCEL reached the transaction.
    public func wasCancelled(_ handle: TransactionHandle) -> Bool { table.contains(handle) && table[handle].cancelled }

    /// A reply route's async() took the response being handled (its routes then end in a hold): the
    /// transaction waits for `releaseHeldReply`. Counted here, before the operation starts, so that even a
    /// completion delivered at once finds it. False when the transaction is gone or cannot hold more.
    public func holdReply(_ handle: TransactionHandle) -> Bool {
        guard canHold(handle) else { return false }
        table[handle].heldReplies += 1
        return true
    }

    /// After a route of the transaction ended (the request route, or a resume route) without suspending it:
    /// a transaction left with no answer and nothing in progress gets one now — the best of its branches when
    /// all are final (a failure route suspended), or a 500 with `reason` when none was sent at all.
    public func answerIfUnanswered(_ handle: TransactionHandle, reason: UnsafeRawBufferPointer, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].finalSent < 200, !table[handle].suspended,
              table[handle].heldBranches == 0, table[handle].failureRouteDue < 0 else { return }
        if table[handle].sentBranchCount == 0 {
            reply(handle, status: 500, reason: reason, on: shard)
        } else if table[handle].allBranchesFinal {
            sendBestResponse(handle, on: shard)
        }
    }

    /// Whether one more response (or branch) of the transaction can be held for an async() in a reply (or
    /// branch) route.
    public func canHold(_ handle: TransactionHandle) -> Bool {
        table.contains(handle) && table[handle].heldReplies < UInt8.max && table[handle].heldBranches < UInt8.max
    }

    /// A branch_route took its branch into async(): it is not sent yet, its place (index) is kept for it, and
    /// the transaction's answer waits for it until `releaseHeldBranch`. The place, or nil when the transaction is
    /// gone, answered, cancelled, or has no room for another branch.
    public func holdBranch(_ handle: TransactionHandle) -> Int? {
        guard canHold(handle), table[handle].finalSent < 200, !table[handle].cancelled,
              table[handle].branches.count < Branches.capacity else { return nil }
        let index = table[handle].branches.count
        _ = table[handle].branches.append(.placeholder(), store: store)
        table[handle].heldBranches += 1
        return index
    }

    /// A held branch is settled: the script sent it into its place (`relay(…, into: index)` before this) or
    /// gave it up (its place is abandoned). When it was the last thing the transaction waited for, the answer
    /// is chosen now — a transaction with no branch sent at all gets a 500.
    public func releaseHeldBranch(_ handle: TransactionHandle, branch index: Int, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].heldBranches > 0 else { return }
        table[handle].heldBranches -= 1
        if index < table[handle].branches.count && table[handle].branches[index].reserved {
            table[handle].branches[index].reserved = false
            table[handle].branches[index].abandoned = true
            table[handle].branches[index].machineDone = true
        }
        if table[handle].heldBranches == 0 && table[handle].finalSent < 200 && !table[handle].suspended
            && table[handle].failureRouteDue < 0 {
            if table[handle].sentBranchCount == 0 {
                reply(handle, status: 500, reason: noBranchReason, on: shard)
            } else {
                branchesSettled(handle, on: shard)
            }
        }
        freeIfDone(handle, on: shard)
    }

    /// The failure route that is due for `handle`, taken to run now; nil when none is (the transaction ended).
    public func takeDueFailureRoute(_ handle: TransactionHandle) -> Int? {
        guard table.contains(handle), table[handle].failureRouteDue >= 0 else { return nil }
        return Int(table[handle].failureRouteDue)
    }

    /// The failure route has run: new branches (sent or held) or a suspension answer later, a reply it sent
    /// stands; otherwise the best response goes upstream now (§16.7 step 6).
    public func failureRouteEnded(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].failureRouteDue >= 0 else { return }
        table[handle].failureRouteDue = -1
        if table[handle].branches.count > Int(table[handle].branchesBeforeFailureRoute) || table[handle].heldBranches > 0
            || table[handle].suspended || table[handle].finalSent >= 200 {
            freeIfDone(handle, on: shard)
            return
        }
        sendBestResponse(handle, on: shard)
    }
}
