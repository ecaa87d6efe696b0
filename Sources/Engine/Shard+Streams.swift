import CUring
import Glibc
import SIP

/// SIP over TCP on the ring (RFC 3261 §18): a multishot accept per listening socket, a multishot receive per
/// connection into the shard's provided buffers, messages framed by Content-Length and handed to the handler in
/// place when a read holds them whole, and writes queued per connection, one in flight, continued when partial.
///
/// A connection belongs to the shard that accepted or opened it. A message the handler sends to another shard's
/// connection, or one it hands to another shard, goes by mail (a copy): the owner writes it.
extension Shard {
    /// Mail channels the engine keeps for itself: a stream message lent to another shard, and bytes for another
    /// shard's connection. Record: socketIndex 8 | address 28 | bytes.
    static let streamMessageChannel: UInt16 = 0xFFF0
    static let streamSendChannel: UInt16 = 0xFFF1
    /// A connection this shard accepted opened or closed, told to every other shard: a request toward that peer
    /// from another shard goes over it (a phone's Contact naming the port of its own connection). Record:
    /// socketIndex 8 (0 when closed) | address 28.
    static let streamPeerChannel: UInt16 = 0xFFF2
    /// A message another shard mailed here to write that could not be delivered, back to that shard's handler
    /// (`ShardHandler.sendFailed`: its transaction's branch ends 503). Record: 0 8 | address 28 | bytes.
    static let streamFailedChannel: UInt16 = 0xFFF3
    private static let mailHeaderBytes = 8 + 28

    /// Addresses this shard accepts TCP connections on.
    public var streamListenAddresses: [SocketAddress] { streams.listenAddresses }

    // MARK: - Accept

    func startStreams() {
        for listener in streams.listeners.indices { armAccept(listener) }
    }

    private func acceptTag(_ listener: Int) -> Tag {
        Tag(kind: .accept, shard: index, generation: streams.acceptGenerations[listener], slot: UInt32(listener))
    }

    private func armAccept(_ listener: Int) {
        streams.acceptGenerations[listener] &+= 1
        let sqe = ring.sqe()
        io_uring_prep_multishot_accept(sqe, streams.listeners[listener], nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        sqe.pointee.user_data = acceptTag(listener).rawValue
        streams.activeAccepts += 1
    }

    func acceptCompleted(tag: Tag, result: Int32, flags: UInt32) {
        let listener = Int(tag.slot)
        guard listener < streams.listeners.count, tag.generation == streams.acceptGenerations[listener] else {
            if result >= 0 { Syscalls.closeDescriptor(result) }
            counters.staleCompletions += 1
            return
        }
        if result >= 0 { accepted(fd: result) } else if result != -ECANCELED { counters.tcpRefused += 1 }
        if flags & IORING_CQE_F_MORE == 0 {
            streams.activeAccepts -= 1
            if stopping { return }
            if result < 0 && result != -ECANCELED {
                // Out of descriptors (EMFILE/ENFILE) or memory: armed again at the next sweep, not at once, which
                // would fail the same way in a loop.
                streams.acceptPaused[listener] = true
                armSweep()
            } else {
                armAccept(listener)
            }
        }
    }

    private func accepted(fd: Int32) {
        guard !stopping, let peer = Syscalls.peerAddress(of: fd),
              let slot = streams.table.add(fd: fd, peer: peer, state: .open, now: now) else {
            Syscalls.closeDescriptor(fd)
            counters.tcpRefused += 1
            return
        }
        Syscalls.disableNagle(fd)
        counters.tcpAccepted += 1
        counters.tcpOpen = streams.table.live
        armStreamReceive(slot)
        armSweep()
        announcePeer(peer, socketIndex: StreamHandle(shard: index, slot: slot, generation: streams.table[slot].generation)
            .socketIndex)
    }

    /// Tells the other shards which connection reaches `peer` (0: none any more).
    private func announcePeer(_ peer: SocketAddress, socketIndex: Int) {
        guard directory.count > 1 else { return }
        for target in 0..<directory.count where target != index {
            mailStream(UnsafeRawBufferPointer(start: nil, count: 0), channel: Shard.streamPeerChannel,
                       socketIndex: socketIndex, address: peer, to: target)
        }
    }

    // MARK: - Receive and framing

    private func armStreamReceive(_ slot: UInt32) {
        let sqe = ring.sqe()
        io_uring_prep_recv_multishot(sqe, streams.table[slot].fd, nil, 0, 0)
        sqe.pointee.flags |= CUring_IOSQE_BUFFER_SELECT
        sqe.pointee.buf_group = buffers.groupID
        sqe.pointee.user_data = Tag(kind: .streamReceive, shard: index, generation: streams.table[slot].generation,
                                    slot: slot).rawValue
        streams.table[slot].receiveArmed = true
    }

    func streamReceiveCompleted(tag: Tag, result: Int32, flags: UInt32) {
        let slot = tag.slot
        let bufferID: UInt16? = flags & IORING_CQE_F_BUFFER != 0
            ? UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT) : nil
        guard Int(slot) < streams.table.slots.count, streams.table[slot].generation == tag.generation else {
            if let bufferID { buffers.recycle(ReceivedBuffer(id: bufferID)) }
            counters.staleCompletions += 1
            return
        }
        let more = flags & IORING_CQE_F_MORE != 0
        if !more { streams.table[slot].receiveArmed = false }
        if result > 0, let bufferID, streams.table[slot].state == .open {
            streams.table[slot].lastActivity = now
            streamBytesArrived(slot, UnsafeRawBufferPointer(start: buffers.address(of: bufferID), count: Int(result)))
        }
        if let bufferID { buffers.recycle(ReceivedBuffer(id: bufferID)) }
        if result == -ENOBUFS {
            counters.bufferExhaustion += 1
        } else if result == 0 {
            // The peer closed its side: what is queued for it still goes (the answers to its last requests), then
            // the connection closes.
            closeAfterFlush(slot)
        } else if result < 0 {
            closeStream(slot)
        }
        if !more {
            // Not after the peer's FIN: every new receive would complete at once with 0 bytes.
            if streams.table[slot].state == .open && !streams.table[slot].closeAfterFlush {
                armStreamReceive(slot)
            } else {
                finishCloseIfQuiet(slot)
            }
        }
    }

    /// Frames what arrived: whole messages are handled where they lie, a message's beginning is kept until the
    /// rest comes (the only copy a stream costs, and only when a message spans reads).
    private func streamBytesArrived(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        guard streams.table[slot].partialCount > 0 else {
            guard let used = frameAndDeliver(slot, bytes) else { return }
            keepPartial(slot, UnsafeRawBufferPointer(rebasing: bytes[used...]))
            return
        }
        let held = streams.table[slot].partialCount
        guard streams.reserve(slot, held + bytes.count, readBytes: buffers.bufferSize), let partial = streams.table[slot].partial else {
            counters.tcpBadClosed += 1
            closeStream(slot)
            return
        }
        UnsafeMutableRawBufferPointer(rebasing: partial[held..<(held + bytes.count)]).copyMemory(from: bytes)
        let total = held + bytes.count
        streams.table[slot].partialCount = total
        // Framed again only when it can have changed: once the body's length is known, when the message is whole;
        // before, when the new bytes end the header block. A message dripping in costs each read its own bytes,
        // not a rescan of all it has sent.
        let awaiting = streams.table[slot].awaiting
        if awaiting > 0 ? total < awaiting : !SIPStreamFramer.endsHeaderBlock(UnsafeRawBufferPointer(partial), from: held, to: total) {
            return
        }
        guard let used = frameAndDeliver(slot, UnsafeRawBufferPointer(rebasing: partial[0..<total])) else { return }
        if used > 0 && used < total {
            // Moved down within the same buffer: memmove semantics.
            memmove(partial.baseAddress!, partial.baseAddress! + used, total - used)
        }
        streams.table[slot].partialCount = total - used
        if used > 0 { streams.table[slot].partialSince = now }
        // A buffer a large message grew is given back once it is empty; a small one is kept for the next.
        if total == used && partial.count > StreamSet.keptPartialBytes {
            partial.deallocate()
            streams.table[slot].partial = nil
        }
    }

    private func keepPartial(_ slot: UInt32, _ rest: UnsafeRawBufferPointer) {
        guard !rest.isEmpty else { return }
        guard streams.reserve(slot, rest.count, readBytes: buffers.bufferSize), let partial = streams.table[slot].partial else {
            counters.tcpBadClosed += 1
            closeStream(slot)
            return
        }
        UnsafeMutableRawBufferPointer(rebasing: partial[0..<rest.count]).copyMemory(from: rest)
        streams.table[slot].partialCount = rest.count
        streams.table[slot].partialSince = now
    }

    /// Hands every whole message at the start of `bytes` to the handler; the bytes used, or nil when the stream
    /// cannot be framed (the connection is closing). Notes the length of a message left incomplete, when known.
    private func frameAndDeliver(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) -> Int? {
        var offset = 0
        streams.table[slot].awaiting = 0
        while offset < bytes.count && streams.table[slot].state == .open {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch SIPStreamFramer.frame(rest, maximum: streams.largestMessage) {
            case .message(let length):
                deliverStreamMessage(slot, UnsafeRawBufferPointer(rebasing: rest[0..<length]))
                offset += length
            case .keepAlive(let length, let ping):
                if ping { writeStream(slot, Shard.pong) }
                offset += length
            case .needs(let length):
                streams.table[slot].awaiting = length
                return offset
            case .incomplete:
                return offset
            case .invalid:
                counters.tcpBadClosed += 1
                closeStream(slot)
                return nil
            }
        }
        return offset
    }

    nonisolated(unsafe) private static let pong = UnsafeRawBufferPointer(start: ("\r\n" as StaticString).utf8Start, count: 2)

    private func deliverStreamMessage(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
        counters.received += 1
        let handle = StreamHandle(shard: index, slot: slot, generation: streams.table[slot].generation)
        let peer = streams.table[slot].peer
        let datagram = Datagram(bytes: bytes, source: peer, socketIndex: handle.socketIndex)
        switch handler.handle(datagram, on: self) {
        case .done: break
        case .handOff(let target) where target != index && target >= 0 && target < directory.count:
            counters.handoffs += 1
            mailStream(bytes, channel: Shard.streamMessageChannel, socketIndex: handle.socketIndex, address: peer,
                       to: target)
        case .handOff: break
        }
    }

    private func mailStream(_ bytes: UnsafeRawBufferPointer, channel: UInt16, socketIndex: Int, address: SocketAddress,
                            to target: Int) {
        let total = Shard.mailHeaderBytes + bytes.count
        guard total <= largestMail else {
            counters.dropped += 1
            return
        }
        withUnsafeTemporaryAllocation(byteCount: total, alignment: 8) { record in
            record.storeBytes(of: UInt64(bitPattern: Int64(socketIndex)), toByteOffset: 0, as: UInt64.self)
            UnsafeMutableRawBufferPointer(rebasing: record[8..<Shard.mailHeaderBytes]).initializeMemory(as: UInt8.self, repeating: 0)
            address.write(to: record.baseAddress! + 8)
            UnsafeMutableRawBufferPointer(rebasing: record[Shard.mailHeaderBytes...]).copyMemory(from: bytes)
            send(mail: UnsafeRawBufferPointer(record), channel: channel, to: target)
        }
        // Mail is usually read when the receiver next handles a completion; a message for a peer must not wait
        // for that (an idle shard would hold a 200 OK): the receiver is woken this turn (one MSG_RING).
        mailWakeDue[target] = true
        mailPending = true
    }

    /// The engine's own mail: a stream message another shard lent here, or bytes for a connection of this one.
    /// False for a channel the handler owns.
    func streamMailArrived(from sender: Int, channel: UInt16, _ record: UnsafeRawBufferPointer) -> Bool {
        guard channel >= Shard.streamMessageChannel && channel <= Shard.streamFailedChannel else { return false }
        guard record.count >= Shard.mailHeaderBytes,
              let address = SocketAddress(raw: record.baseAddress! + 8, length: 28) else {
            counters.dropped += 1
            return true
        }
        let socketIndex = Int(Int64(bitPattern: record.load(as: UInt64.self)))
        if channel == Shard.streamPeerChannel {
            streams.remotePeers[address] = socketIndex == 0 ? nil : socketIndex
            return true
        }
        let bytes = UnsafeRawBufferPointer(rebasing: record[Shard.mailHeaderBytes...])
        if channel == Shard.streamMessageChannel {
            _ = handler.handle(Datagram(bytes: bytes, source: address, socketIndex: socketIndex, lender: sender), on: self)
        } else if channel == Shard.streamFailedChannel {
            handler.sendFailed(bytes, on: self)
        } else if let out = makeDatagram(), bytes.count <= out.buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: out.buffer[0..<bytes.count]).copyMemory(from: bytes)
            streams.mailedFrom = sender
            send(out, length: bytes.count, to: address, socketIndex: socketIndex)
            streams.mailedFrom = -1
        } else {
            counters.dropped += 1
        }
        return true
    }

    // MARK: - Send

    /// A send over TCP: on the handle's connection while it lasts, else on one this shard holds to
    /// `destination`, else on a new one. A connection of another shard gets the bytes by mail.
    func sendOnStream(_ datagram: OutboundDatagram, length: Int, to destination: SocketAddress, handle: StreamHandle) {
        if !handle.isToward && handle.shard != index {
            mailStream(UnsafeRawBufferPointer(rebasing: datagram.buffer[0..<length]), channel: Shard.streamSendChannel,
                       socketIndex: handle.socketIndex, address: destination, to: handle.shard)
            discard(datagram)
            return
        }
        // TCP may hold at most half the shard's send slots, so peers that stop reading cannot starve the rest.
        guard streams.queuedTotal < sends.capacity / 2 else {
            sends.prepareStream(slot: datagram.slot, length: length, connection: UInt32.max, origin: streams.mailedFrom)
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
        sends.prepareStream(slot: datagram.slot, length: length, connection: slot ?? UInt32.max, origin: streams.mailedFrom)
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
    private func writeStream(_ slot: UInt32, _ bytes: UnsafeRawBufferPointer) {
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
    private func connect(to destination: SocketAddress) -> UInt32? {
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
        if streams.table[slot].sending {
            var last = streams.table[slot].queueHead
            for _ in 1..<streams.table[slot].writing { last = sends.streamNext[Int(last)] }
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
        } else {
            while streams.table[slot].queueHead >= 0 { popStreamQueue(slot, delivered: false) }
        }
        Syscalls.shutdownStream(streams.table[slot].fd)
        finishCloseIfQuiet(slot)
    }

    /// The peer will send no more: close once what is queued for it has gone (at once when nothing is).
    private func closeAfterFlush(_ slot: UInt32) {
        guard streams.table[slot].state == .open, streams.table[slot].queueHead >= 0 else {
            closeStream(slot)
            return
        }
        streams.table[slot].closeAfterFlush = true
    }

    private func finishCloseIfQuiet(_ slot: UInt32) {
        guard streams.table[slot].state == .closing, streams.table[slot].quiet else { return }
        while streams.table[slot].queueHead >= 0 { popStreamQueue(slot, delivered: false) }
        Syscalls.closeDescriptor(streams.table[slot].fd)
        if !streams.table[slot].outbound { announcePeer(streams.table[slot].peer, socketIndex: 0) }
        streams.table.remove(slot)
        counters.tcpOpen = streams.table.live
    }

    // MARK: - Sweep and stop

    private func armSweep() {
        guard !streams.sweepArmed else { return }
        streams.sweepArmed = schedule(after: StreamSet.sweepMilliseconds, payload: StreamSet.sweepPayload) != nil
    }

    /// Once a second while there are connections: closes those idle too long, and those whose message has
    /// taken too long to arrive.
    func sweepStreams() {
        streams.sweepArmed = false
        for listener in streams.listeners.indices where streams.acceptPaused[listener] && !stopping {
            streams.acceptPaused[listener] = false
            armAccept(listener)
        }
        for i in streams.table.slots.indices {
            let slot = UInt32(i)
            let connection = streams.table[slot]
            if connection.state == .connecting && now - connection.lastActivity > streams.connectMilliseconds + 1000 {
                // The connect's own timeout did not end it: the kernel's did not come either; stop waiting.
                counters.tcpConnectFailed += 1
                closeStream(slot)
                continue
            }
            guard connection.state == .open else { continue }
            if connection.queueHead >= 0 && now - connection.headSince > streams.writeMilliseconds {
                // A peer that stopped reading: the first message queued for it has not gone in all that time (a
                // trickle of partial writes does not count), and its queue holds send slots.
                counters.tcpWriteStalled += 1
                closeStream(slot)
            } else if connection.partialCount > 0 && now - connection.partialSince > streams.messageMilliseconds {
                counters.tcpBadClosed += 1
                closeStream(slot)
            } else if now - connection.lastActivity > streams.idleMilliseconds && connection.queueHead < 0 {
                counters.tcpIdleClosed += 1
                closeStream(slot)
            }
        }
        if streams.table.live > 0 || streams.acceptPaused.contains(true) { armSweep() }
    }

    /// At stop: no more accepts, and every connection closed (its receive ends; sends in flight complete).
    func stopStreams() {
        for listener in streams.listeners.indices {
            let sqe = ring.sqe()
            io_uring_prep_cancel64(sqe, acceptTag(listener).rawValue, 0)
            sqe.pointee.user_data = Tag(kind: .timeoutUpdate, shard: index, generation: 0, slot: 0).rawValue
        }
        for i in streams.table.slots.indices { closeStream(UInt32(i)) }
    }
}
