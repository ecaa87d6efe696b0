import CCurl
import Engine
import Glibc

// libcurl's sockets and timer on the shard's ring and wheel.
extension HTTPRunner {
    /// Operation id of `fd`'s poll: the fd is the operation slot, its watch's generation the id's.
    private func pollID(_ fd: Int) -> OperationID {
        OpsPacking.operationID(.http, slot: fd, channel: 0, generation: watches[fd].generation)
    }

    /// CURLMOPT_SOCKETFUNCTION: libcurl wants `fd` watched for `what` (CURL_POLL_IN/OUT/INOUT), or no more
    /// (CURL_POLL_REMOVE). Changing the events of a poll in flight cancels it and arms a new one.
    func socketChanged(_ fd: curl_socket_t, what: Int32) {
        let fd = Int(fd)
        precondition(fd >= 0 && fd < OpsPacking.maximumSlots)
        if fd >= watches.count { watches.append(contentsOf: repeatElement(Watch(), count: fd + 1 - watches.count)) }
        var events: Int16 = 0
        if what != CURL_POLL_REMOVE {
            if what & CURL_POLL_IN != 0 { events |= Int16(POLLIN) }
            if what & CURL_POLL_OUT != 0 { events |= Int16(POLLOUT) }
        }
        if watches[fd].wanted == 0 && events != 0 { watchedSockets += 1 }
        if watches[fd].wanted != 0 && events == 0 { watchedSockets -= 1 }
        watches[fd].wanted = events
        if watches[fd].inFlight {
            if watches[fd].armed == events { return }
            shard.cancelOperations(id: pollID(fd))
            watches[fd].inFlight = false
            watches[fd].generation &+= 1
        }
        if events != 0 { arm(fd) }
    }

    private func arm(_ fd: Int) {
        watches[fd].armed = watches[fd].wanted
        watches[fd].inFlight = true
        shard.submitPoll(fd: Int32(fd), events: watches[fd].wanted, id: pollID(fd))
    }

    /// CURLMOPT_TIMERFUNCTION: call `curl_multi_socket_action(CURL_SOCKET_TIMEOUT)` in `milliseconds`
    /// (-1: never). One wheel timer, replaced on every change; its generation drops a replaced one.
    func timerChanged(_ milliseconds: Int) {
        if let timer = multiTimer { shard.cancel(timer) }
        multiTimer = nil
        multiTimerGeneration &+= 1
        guard milliseconds >= 0 else { return }
        let payload = OpsPacking.timerPayload(.http, slot: HTTPRunner.multiTimerSlot, generation: multiTimerGeneration)
        // A full wheel leaves libcurl without its timeouts; socket events still drive it, and the next
        // timer change tries again.
        multiTimer = shard.schedule(after: UInt64(milliseconds), payload: payload)
    }

    // MARK: - Events from the shard

    /// Forward every `ShardHandler.operationCompleted` whose `OpsPacking.component(of:)` is `.http`.
    public func operationCompleted(_ operation: OperationID, result: Int32, flags: UInt32) {
        let fd = OpsPacking.slotAndChannel(of: operation).slot
        guard fd < watches.count, watches[fd].generation == operation.generation, watches[fd].inFlight else {
            staleCompletions += 1
            return
        }
        watches[fd].inFlight = false
        var mask: Int32 = 0
        if result < 0 {
            mask = CURL_CSELECT_ERR
        } else {
            if result & Int32(POLLIN | POLLHUP) != 0 { mask |= CURL_CSELECT_IN }
            if result & Int32(POLLOUT) != 0 { mask |= CURL_CSELECT_OUT }
            if result & Int32(POLLERR) != 0 { mask |= CURL_CSELECT_ERR }
        }
        var active: Int32 = 0
        curl_multi_socket_action(multi, curl_socket_t(fd), mask, &active)
        // Still wanted and not re-armed by the callback during the action: watch it again (one-shot poll).
        if watches[fd].wanted != 0 && !watches[fd].inFlight { arm(fd) }
        drainFinished()
    }

    /// Forward every `ShardHandler.timerFired` whose `OpsPacking.component(ofTimer:)` is `.http`.
    public func timerFired(payload: UInt64) {
        let (index, generation) = OpsPacking.slotAndGeneration(ofTimer: payload)
        if index == HTTPRunner.multiTimerSlot {
            guard generation == multiTimerGeneration, multiTimer != nil else {
                staleCompletions += 1
                return
            }
            multiTimer = nil
            var active: Int32 = 0
            curl_multi_socket_action(multi, -1, 0, &active)  // -1: CURL_SOCKET_TIMEOUT
            drainFinished()
            return
        }
        queuedRequestExpired(index, generation: generation)
    }
}
