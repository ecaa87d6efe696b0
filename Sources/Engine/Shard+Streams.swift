import CUring
import Glibc
import SIP

/// SIP over TCP on the ring (RFC 3261 §18), the read side: a multishot accept per listening socket, a multishot
/// receive per connection into the shard's provided buffers, messages framed by Content-Length and handed to the
/// handler in place when a read holds them whole, the engine's cross-shard mail, and the sweep. Writes, connects
/// and closing are in `Shard+StreamWrites.swift`.
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
    func announcePeer(_ peer: SocketAddress, socketIndex: Int) {
        guard directory.count > 1 else { return }
        for target in 0..<directory.count where target != index {
            mailStream(UnsafeRawBufferPointer(start: nil, count: 0), channel: Shard.streamPeerChannel,
                       socketIndex: socketIndex, address: peer, to: target)
        }
    }

    // MARK: - Receive and framing

    func armStreamReceive(_ slot: UInt32) {
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

    func mailStream(_ bytes: UnsafeRawBufferPointer, channel: UInt16, socketIndex: Int, address: SocketAddress,
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
        } else if let handle = StreamHandle(socketIndex: socketIndex), let out = makeDatagram(),
                  bytes.count <= out.buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: out.buffer[0..<bytes.count]).copyMemory(from: bytes)
            sendOnStream(out, length: bytes.count, to: address, handle: handle, origin: sender)
        } else {
            counters.dropped += 1
        }
        return true
    }

    // MARK: - Sweep and stop

    func armSweep() {
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
