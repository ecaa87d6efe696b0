import Engine
import Glibc
import SIP

/// The proxy core (RFC 3261 §16.7–16.10): what a branch's response or failure does to the transaction — relay
/// a provisional or a 2xx, wait for every branch and choose the best final, run the failure route, CANCEL the
/// other branches, ACK a negative final hop by hop.
extension TransactionManager {
    // MARK: - Proxy core (§16.7)

    /// A response passed up by a branch's client transaction.
    func branchResponded(_ handle: TransactionHandle, _ index: Int, _ message: SIPMessage, on shard: any ShardIO) {
        let code = message.statusCode
        // 100 is hop by hop (§16.7 step 5): never relayed, so no reply route needs to see it.
        if code == 100 { return }
        // While a final of this branch is held, what else it sends (a 2xx retransmission) is dropped: the held
        // one is relayed when its resume route ends, and a UAS sends its 2xx again until it gets the ACK.
        if table[handle].branches[index].heldFinal { return }
        let route = Int(table[handle].replyRoute)
        if let user, user.wantsReplyRoutes(route: route), canHold(handle) {
            // Held until its reply routes have run from the loop: counted, and a final is this branch's answer.
            table[handle].heldReplies += 1
            if code >= 200 { table[handle].branches[index].heldFinal = true }
            if user.replyRouteDue(message, route: route, transaction: handle, branch: index, manager: self, on: shard) {
                return
            }
            table[handle].heldReplies -= 1
            if code >= 200 { table[handle].branches[index].heldFinal = false }
        }
        proxyResponse(handle, index, message, on: shard)
    }

    /// §16.7 steps 5–10 for one response the reply routes let through.
    func proxyResponse(_ handle: TransactionHandle, _ index: Int, _ message: SIPMessage, on shard: any ShardIO) {
        let code = message.statusCode
        if code < 200 {
            forwardUpstream(handle, message, status: code, on: shard)
            return
        }
        if code < 300 {
            if table[handle].branches[index].finalCode == 0 { table[handle].branches[index].finalCode = code }
            forwardUpstream(handle, message, status: code, on: shard)
            guard table.contains(handle) else { return }
            // §16.7 step 10: a 2xx ends the others.
            for other in 0..<table[handle].branches.count where other != index {
                cancelBranch(handle, other, on: shard)
            }
            return
        }
        guard table[handle].branches[index].finalCode == 0 else { return }
        table[handle].branches[index].finalCode = code
        if let kept = store.store(UnsafeRawBufferPointer(rebasing: message.bytes[0..<message.length])) {
            table[handle].branches[index].response = kept
        }
        if code >= 600 {
            // §16.7 step 5: a 6xx decides the answer; the other branches are cancelled rather than awaited.
            for other in 0..<table[handle].branches.count where other != index {
                cancelBranch(handle, other, on: shard)
            }
        }
        branchesSettled(handle, on: shard)
    }

    /// A branch ended without a response of its own: Timer B/F/C or fr_timeout (408), a send failure (503).
    func branchFailed(_ handle: TransactionHandle, _ index: Int, status: Int, on shard: any ShardIO) {
        guard table[handle].branches[index].finalCode == 0 else { return }
        table[handle].branches[index].finalCode = status
        branchesSettled(handle, on: shard)
    }

    /// When every branch has a final answer and none was a 2xx: run the failure route if there is one
    /// (it may add branches), else send the best response upstream (§16.7 step 6).
    func branchesSettled(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard table.contains(handle), table[handle].allBranchesFinal, table[handle].finalSent < 200,
              table[handle].failureRouteDue < 0 else { return }
        // `$T_reply_code` / `t_check_status` in failure_route see the answer that would go upstream.
        if let best = bestBranch(handle) { table[handle].replyCode = table[handle].branches[best].finalCode }
        let route = table[handle].failureRoute
        if route >= 0 && !table[handle].cancelled, let user {
            // A failure route runs once; t_on_failure inside it arms the next one.
            table[handle].failureRoute = -1
            table[handle].failureRouteDue = route
            table[handle].branchesBeforeFailureRoute = UInt8(table[handle].branches.count)
            user.failureRouteDue(transaction: handle, manager: self, on: shard)
            return
        }
        sendBestResponse(handle, on: shard)
    }

    func hasGlobalFailure(_ handle: TransactionHandle) -> Bool {
        for i in 0..<table[handle].branches.count where table[handle].branches[i].finalCode >= 600 { return true }
        return false
    }

    func bestBranch(_ handle: TransactionHandle) -> Int? {
        BestResponse.select(count: table[handle].branches.count, code: { table[handle].branches[$0].finalCode },
                            received: { table[handle].branches[$0].response != nil })
    }

    /// Sends the answer `BestResponse` selects: the branch's own response (a 401/407 with every branch's
    /// challenges, §16.7 step 7), or ours for a branch that had none — 487 after a CANCEL, 503 after a send
    /// failure, else 408.
    func sendBestResponse(_ handle: TransactionHandle, on shard: any ShardIO) {
        guard let best = bestBranch(handle) else {
            reply(handle, status: 500, reason: noBranch, on: shard)
            return
        }
        let code = table[handle].branches[best].finalCode
        if table[handle].branches[best].abandoned {
            // Only places of branches never sent are left: nothing was tried.
            reply(handle, status: table[handle].cancelled ? 487 : 500,
                  reason: table[handle].cancelled ? terminatedReason : noBranchReason, on: shard)
        } else if code == 503 && table[handle].branches[best].response != nil {
            // §16.7 step 6: a downstream 503 would tell the caller that *this* proxy is unavailable.
            reply(handle, status: 500, reason: serverError, on: shard)
        } else if let stored = table[handle].branches[best].response, (try? scratch.parse(stored.bytes)) != nil {
            let challenges = BestResponse.mergesChallenges(code) ? collectChallenges(handle, except: best) : nil
            forwardUpstream(handle, scratch, status: code, appending: challenges?.bytes, on: shard)
            if let challenges { store.release(challenges) }
        } else if table[handle].cancelled {
            reply(handle, status: 487, reason: terminatedReason, on: shard)
        } else if code == 503 {
            reply(handle, status: 503, reason: unavailable, on: shard)
        } else if code == 500 {
            reply(handle, status: 500, reason: serverError, on: shard)
        } else {
            reply(handle, status: 408, reason: timeoutReason, on: shard)
        }
    }

    /// The WWW-Authenticate and Proxy-Authenticate lines of every other branch's 401/407, in branch order, in a
    /// store block the caller releases; nil when there are none. A line that does not fit is left out.
    func collectChallenges(_ handle: TransactionHandle, except chosen: Int) -> StoredMessage? {
        guard let block = store.allocate(4096) else { return nil }
        var used = 0
        for i in 0..<table[handle].branches.count where i != chosen {
            let branch = table[handle].branches[i]
            guard BestResponse.mergesChallenges(branch.finalCode), let response = branch.response,
                  (try? challengeScratch.parse(response.bytes)) != nil else { continue }
            for h in 0..<challengeScratch.headerCount {
                let field = challengeScratch.header(at: h)
                guard field.kind == .wwwAuthenticate || field.kind == .proxyAuthenticate else { continue }
                let line = challengeScratch.bytes(of: field.line)
                guard line.count <= block.bytes.count - used else { continue }
                UnsafeMutableRawBufferPointer(rebasing: block.bytes[used..<used + line.count]).copyMemory(from: line)
                used += line.count
            }
        }
        let collected = StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: used)
        if used == 0 {
            store.release(collected)
            return nil
        }
        return collected
    }

    /// Relays a branch's response upstream: our Via removed, sent through the server transaction.
    func forwardUpstream(_ handle: TransactionHandle, _ message: SIPMessage, status: Int,
                                 appending headers: UnsafeRawBufferPointer? = nil, on shard: any ShardIO) {
        var options = SIPForwardingOptions()
        options.appendedHeaders = headers
        guard let block = store.allocate(message.length + (headers?.count ?? 0)) else {
            malformed(on: shard)
            return
        }
        guard let length = try? message.writeForwardedResponse(into: block.bytes, options) else {
            store.release(StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: 0))
            malformed(on: shard)
            return
        }
        respond(handle, status: status,
                response: StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: length),
                on: shard)
    }

    // MARK: - CANCEL and ACK

    /// A CANCEL for a pending INVITE (§16.10): 200 for the CANCEL itself, a CANCEL to every branch; the
    /// INVITE is answered when its branches answer (487), or 487 by us if none can.
    func cancel(_ handle: TransactionHandle, answering message: SIPMessage, from source: SocketAddress,
                        arrivedOn socket: Int, on shard: any ShardIO) {
        // The CANCEL comes from where the INVITE came: the same NAT binding, answered the same way.
        relay.reply(to: message, status: 200, reason: okReason, from: source, arrivedOn: socket,
                    forceRport: table[handle].forceRport, on: shard)
        guard !table[handle].cancelled, table[handle].finalSent < 200 else { return }
        table[handle].cancelled = true
        // Nothing sent yet (no branch, or only held ones, which will not be sent now): answered at once.
        if table[handle].sentBranchCount == 0 {
            reply(handle, status: 487, reason: terminatedReason, on: shard)
            return
        }
        for i in 0..<table[handle].branches.count { cancelBranch(handle, i, on: shard) }
    }

    func cancelBranch(_ handle: TransactionHandle, _ index: Int, on shard: any ShardIO) {
        // A branch whose final answer a reply route holds has answered: nothing to cancel (its machine may
        // have ended already).
        guard table.contains(handle), table[handle].branches[index].invite != nil,
              table[handle].branches[index].finalCode == 0, !table[handle].branches[index].heldFinal,
              !table[handle].branches[index].machineDone else { return }
        let actions = table[handle].branches[index].invite!.cancel(now: shard.now)
        performClient(handle, index, actions, response: nil, on: shard)
    }

    func startCancel(_ handle: TransactionHandle, _ index: Int, on shard: any ShardIO) {
        guard table[handle].branches[index].cancel == nil else { return }
        let branch = table[handle].branches[index]
        guard (try? scratch.parse(branch.request.bytes)) != nil, let block = store.allocate(branch.request.count),
              let length = RequestBuilders.writeCancel(request: scratch, into: block.bytes) else { return }
        table[handle].branches[index].cancelRequest = store.commit(block, count: length)
        table[handle].branches[index].cancel = NonInviteClientTransaction(settings: table[handle].settings,
                                                                          transport: .unreliable)
        table[handle].branches[index].cancelDone = false
        let actions = table[handle].branches[index].cancel!.start(now: shard.now)
        performCancel(handle, index, actions, on: shard)
    }

    /// The hop-by-hop ACK for a branch's non-2xx final (§17.1.1.3): built once, resent for retransmissions.
    func sendAck(_ handle: TransactionHandle, _ index: Int, response: SIPMessage?, on shard: any ShardIO) {
        let branch = table[handle].branches[index]
        if branch.ack == nil, let response {
            // `response` is parsed in its receive buffer; the request is parsed into the scratch message.
            // The ACK carries the response's To (with its tag, which may be long): room for the request and it.
            let room = min(branch.request.count + response.length, MessageStore.largest)
            guard (try? scratch.parse(branch.request.bytes)) != nil, let block = store.allocate(room),
                  let length = RequestBuilders.writeAck(request: scratch, response: response, into: block.bytes) else {
                return
            }
            table[handle].branches[index].ack = store.commit(block, count: length)
        }
        if let ack = table[handle].branches[index].ack { send(ack, to: branch.destination, socket: branch.socket, on: shard) }
    }
}
