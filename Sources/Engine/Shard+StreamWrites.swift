import CUring
import Glibc

/// The write side of SIP over TCP (see `Shard+Streams.swift` for the read side): messages queued per connection in
/// send slots, written one `sendmsg` at a time for all a turn queued, continued when partial; connects on the ring;
/// what cannot be delivered handed back to the handler (or the shard that mailed it); and closing.
extension Shard {
    // MARK: - Send

    /// A send over TCP: on the handle's connection while it lasts, else on one this shard holds to
    /// `destination`, else on a new one. A connection of another shard gets the bytes by mail. `origin`: the shard
    /// that mailed the message here (told if it cannot be delivered); -1 for this shard's own.
    func sendOnStream(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress, handle: StreamHandle,
                      origin: Int = -1) {
        if !handle.isToward && handle.shard != index {
            mailStream(UnsafeRawBufferPointer(rebasing: datagram.buffer[0..<length]), channel: Shard.streamSendChannel,
                       socketIndex: handle.socketIndex, address: destination, to: handle.shard)
            discard(datagram)
            return
        }
        // TCP may hold at most half the shard's send slots, so peers that stop reading cannot starve the rest.
        guard streams.queuedTotal < sends.capacity / 2 else {
            sends.prepareStream(slot: datagram.slot, length: length, connection: UInt32.max, origin: origin)
            counters.tcpQueueFull += 1
            failSend(datagram.slot)
            return
        }
        var slot = handle.isToward ? nil : streams.table.usable(handle, host: destination)
        slot = slot ?? streams.table.connection(to: destination)
        if slot == nil, handle.isToward, let remote = streams.remotePeers[destination],
           let owner = StreamHandle(socketIndex: remote), owner.shard != index {
            // Another shard holds a connection with this peer (one it accepted): the bytes go there.
            mailStream(UnsafeRawBufferPointer(rebasing: datagram.buffer[0..<length]), channel: Shard.streamSendChannel,
                       socketIndex: remote, address: destination, to: owner.shard)
            discard(datagram)
            return
        }
        slot = slot ?? connect(to: destination)
        sends.prepareStream(slot: datagram.slot, length: length, connection: slot ?? UInt32.max, origin: origin)
        guard let slot, streams.table[slot].queued < streams.queueLimit else {
            if slot != nil { counters.tcpQueueFull += 1 }
            failSend(datagram.slot)
            return
        }
        if streams.table[slot].queueTail >= 0 {
            sends.streamNext[Int(streams.table[slot].queueTail)] = datagram.slot
        } else {
            streams.table[slot].queueHead = datagram.slot
            streams.table[slot].headSince = now
        }
        streams.table[slot].queueTail = datagram.slot
        streams.table[slot].queued += 1
        streams.queuedTotal += 1
        markForFlush(slot)
    }

    /// Writes a few bytes of the engine's own (the keep-alive pong) on a connection.
    func writeStream(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        guard let out = makeDatagram() else {
            counters.dropped += 1
            return
        }
        UnsafeMutableRawBufferPointer(rebasing: out.buffer[0..<bytes.count]).copyMemory(from: bytes)
        let handle = StreamHandle(shard: index, slot: slot, generation: streams.table[slot].generation)
        sendOnStream(out, length: bytes.count, to: streams.table[slot].peer, handle: handle)
    }

    /// The connection's queue is written before the turn's submit, all of it in one sendmsg: the messages a turn
    /// sends to one peer (a 100 Trying and a 180, the requests of many calls to one next hop) become one write
    /// and, on a busy connection, fewer segments and fewer ACKs.
    private func markForFlush(_ slot: UInt32) {
        guard !streams.table[slot].flushDue else { return }
        streams.table[slot].flushDue = true
        streams.dirty.append(slot)
    }

    /// Before the turn's submit: one write for each connection with messages waiting and none in flight.
    func flushStreams() {
        for slot in streams.dirty {
            streams.table[slot].flushDue = false
            if streams.table[slot].state == .open && !streams.table[slot].sending && streams.table[slot].queueHead >= 0 {
                submitStreamSend(slot)
            }
        }
        streams.dirty.removeAll(keepingCapacity: true)
    }

    /// A sendmsg of up to `StreamSet.vectorsPerWrite` queued messages, the first from where the last write
    /// stopped. Its header and vectors are the head send slot's, stable until the completion.
    private func submitStreamSend(_ slot: UInt32) {
        let head = streams.table[slot].queueHead
        let vectors = streams.vectors + Int(head) * StreamSet.vectorsPerWrite
        var count = 0
        var next = head
        while next >= 0 && count < StreamSet.vectorsPerWrite {
            let (start, length) = sends.unsent(slot: next)
            vectors[count] = iovec(iov_base: start, iov_len: length)
            count += 1
            next = sends.streamNext[Int(next)]
        }
        let header = streams.headers + Int(head)
        header.pointee = msghdr()
        header.pointee.msg_iov = vectors
        header.pointee.msg_iovlen = count
        let sqe = ring.sqe()
        io_uring_prep_sendmsg(sqe, streams.table[slot].fd, header, UInt32(MSG_NOSIGNAL))
        sqe.pointee.user_data = Tag(kind: .streamSend, shard: index, generation: sends.generation(of: head),
                                    slot: UInt32(head)).rawValue
        streams.table[slot].sending = true
        streams.table[slot].writing = count
    }

    /// A write completed: the messages it took whole are freed, one it took in part keeps its place at the head
    /// (the rest goes first in the next write), and a failed write closes the connection.
    func streamSendCompleted(tag: Tag, result: Int32) {
        let head = Int32(truncatingIfNeeded: tag.slot)
        guard Int(tag.slot) < sends.capacity, sends.generation(of: head) == tag.generation else {
            counters.staleCompletions += 1
            return
        }
        let slot = sends.streamConnection[Int(head)]
        guard streams.table[slot].sending, streams.table[slot].queueHead == head else {
            counters.staleCompletions += 1
            return
        }
        streams.table[slot].sending = false
        var written = Int(max(result, 0))
        for _ in 0..<streams.table[slot].writing {
            let first = streams.table[slot].queueHead
            let left = sends.unsent(slot: first).count
            guard written >= left else {
                sends.streamSent[Int(first)] += Int32(written)
                break
            }
            written -= left
            popStreamQueue(slot, delivered: true)
        }
        streams.table[slot].writing = 0
        if result <= 0 {
            // What the failed write carried is lost with the connection: reported, then the rest dropped.
            if streams.table[slot].queueHead >= 0 { popStreamQueue(slot, delivered: false) }
            closeStream(slot)
        }
        if streams.table[slot].state == .open {
            streams.table[slot].lastActivity = now
            if streams.table[slot].queueHead >= 0 {
                markForFlush(slot)
            } else if streams.table[slot].closeAfterFlush {
                closeStream(slot)
            }
        } else {
            finishCloseIfQuiet(slot)
        }
    }

    /// Takes the queue's head: freed when it was written, else reported as failed.
    private func popStreamQueue(_ slot: UInt32, delivered: Bool) {
        let head = streams.table[slot].queueHead
        let next = sends.streamNext[Int(head)]
        streams.table[slot].queueHead = next
        streams.table[slot].headSince = now
        if next < 0 { streams.table[slot].queueTail = -1 }
        streams.table[slot].queued -= 1
        streams.queuedTotal -= 1
        if delivered {
            _ = sends.release(slot: UInt32(head), generation: sends.generation(of: head))
            counters.sent += 1
        } else {
            failSend(head)
        }
    }

    /// A message that will not be delivered: kept for `reportFailedSends`.
    private func failSend(_ sendSlot: Int32) {
        counters.sendErrors += 1
        streams.failed.append(sendSlot)
    }

    /// Hands each undelivered message to the handler (a transaction's branch ends 503 at once), then frees it.
    /// Called by the loop after the turn's completions and timers.
    func reportFailedSends() {
        while !streams.failed.isEmpty {
            // Swapped out: what the handler's reactions fail meanwhile waits for the next round.
            swap(&streams.failed, &streams.reporting)
            for sendSlot in streams.reporting {
                let origin = Int(sends.streamOrigin[Int(sendSlot)])
                if origin >= 0 && origin != index && origin < directory.count {
                    // Mailed here by the shard whose transaction sent it: that shard is told.
                    mailStream(sends.streamMessage(slot: sendSlot), channel: Shard.streamFailedChannel, socketIndex: 0,
                               address: SocketAddress(ipv4: (0, 0, 0, 0), port: 0), to: origin)
                } else {
                    handler.sendFailed(sends.streamMessage(slot: sendSlot), on: self)
                }
                _ = sends.release(slot: UInt32(sendSlot), generation: sends.generation(of: sendSlot))
            }
            streams.reporting.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - Connect

    /// Opens a connection to `destination` on the ring (a connect linked to a timeout); the sends queued meanwhile
    /// go once it is up. nil when no socket can be had or the shard holds its cap.
    func connect(to destination: SocketAddress) -> UInt32? {
        guard !stopping else { return nil }
        let fd = Syscalls.streamSocket(family: destination.family)
        guard fd >= 0 else {
            counters.tcpConnectFailed += 1
            return nil
        }
        guard let slot = streams.table.add(fd: fd, peer: destination, state: .connecting, now: now) else {
            Syscalls.closeDescriptor(fd)
            counters.tcpRefused += 1
            return nil
        }
        streams.table[slot].outbound = true
        Syscalls.disableNagle(fd)
        counters.tcpOpen = streams.table.live
        // The slot's own copy of the address: the kernel reads it when the connect is submitted, at the turn's end.
        let address = streams.connectAddresses + Int(slot)
        destination.write(to: UnsafeMutableRawPointer(address))
        // The connect and its timeout must be submitted together: a full queue submitted between them would
        // break the link, and the timeout would then stand alone (EINVAL) while the connect waits unbounded.
        if io_uring_sq_space_left(ring.ring) < 2 { _ = io_uring_submit(ring.ring) }
        let connect = ring.sqe()
        io_uring_prep_connect(connect, fd, UnsafeMutableRawPointer(address).assumingMemoryBound(to: sockaddr.self),
                              destination.length)
        connect.pointee.flags |= CUring_IOSQE_IO_LINK
        connect.pointee.user_data = Tag(kind: .streamConnect, shard: index, generation: streams.table[slot].generation,
                                        slot: slot).rawValue
        let timeout = ring.sqe()
        io_uring_prep_link_timeout(timeout, streams.connectTimeout, 0)
        timeout.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
        streams.table[slot].connectInFlight = true
        armSweep()
        return slot
    }

    func streamConnectCompleted(tag: Tag, result: Int32) {
        let slot = tag.slot
        guard Int(slot) < streams.table.slots.count, streams.table[slot].generation == tag.generation else {
            counters.staleCompletions += 1
            return
        }
        streams.table[slot].connectInFlight = false
        guard result == 0, streams.table[slot].state == .connecting else {
            if result != 0 { counters.tcpConnectFailed += 1 }
            closeStream(slot)
            finishCloseIfQuiet(slot)
            return
        }
        streams.table[slot].state = .open
        streams.table[slot].lastActivity = now
        counters.tcpConnected += 1
        armStreamReceive(slot)
        if streams.table[slot].queueHead >= 0 { markForFlush(slot) }
    }

    // MARK: - Close

    /// Stops a connection: what waits to be sent is dropped, the socket is shut down so the ring lets go of it,
    /// and it is closed once nothing of the ring refers to it.
    func closeStream(_ slot: UInt32) {
        guard streams.table[slot].state == .open || streams.table[slot].state == .connecting else { return }
        streams.table[slot].state = .closing
        // What waits is dropped now; the messages of a write in flight stay queued until its completion.
        failQueue(slot, keeping: streams.table[slot].sending ? streams.table[slot].writing : 0)
        Syscalls.shutdownStream(streams.table[slot].fd)
        finishCloseIfQuiet(slot)
    }

    /// Reports every queued message but the first `keeping` (those of the write in flight) as undelivered.
    private func failQueue(_ slot: UInt32, keeping: Int) {
        guard keeping > 0 else {
            while streams.table[slot].queueHead >= 0 { popStreamQueue(slot, delivered: false) }
            return
        }
        var last = streams.table[slot].queueHead
        for _ in 1..<keeping { last = sends.streamNext[Int(last)] }
        var next = sends.streamNext[Int(last)]
        while next >= 0 {
            let after = sends.streamNext[Int(next)]
            failSend(next)
            streams.table[slot].queued -= 1
            streams.queuedTotal -= 1
            next = after
        }
        sends.streamNext[Int(last)] = -1
        streams.table[slot].queueTail = last
    }

    /// The peer will send no more: close once what is queued for it has gone (at once when nothing is).
    func closeAfterFlush(_ slot: UInt32) {
        guard streams.table[slot].state == .open, streams.table[slot].queueHead >= 0 else {
            closeStream(slot)
            return
        }
        streams.table[slot].closeAfterFlush = true
    }

    func finishCloseIfQuiet(_ slot: UInt32) {
        guard streams.table[slot].state == .closing, streams.table[slot].quiet else { return }
        failQueue(slot, keeping: 0)
        Syscalls.closeDescriptor(streams.table[slot].fd)
        if !streams.table[slot].outbound { announcePeer(streams.table[slot].peer, socketIndex: 0) }
        streams.table.remove(slot)
        counters.tcpOpen = streams.table.live
    }
}
