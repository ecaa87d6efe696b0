/// Records one shard sends another through their mail queue (`ShardMailboxes`): delivered in order, never
/// lost, and handed to the receiver's handler as completions of its loop (`ShardHandler.mailArrived`).
/// Writing costs a copy; the receiver is woken by one MSG_RING per turn that wrote to it, not per record.
extension Shard {
    /// Sends `bytes` to shard `target`'s handler under `channel` (the layers above choose what channels mean).
    /// Copied: the caller's buffer may be reused at once. When the queue is full the record waits, in order,
    /// until the receiver has made room. A shard cannot mail itself.
    public func send(mail bytes: UnsafeRawBufferPointer, channel: UInt16, to target: Int) {
        precondition(target != index && target >= 0 && target < directory.count, "mail to shard \(target) from \(index)")
        let queue = directory.mail.queue(from: index, to: target)
        if mailBacklog[target].isEmpty && queue.write(channel: channel, bytes) {
            mailWakeDue[target] = true
        } else {
            mailBacklog[target].append((channel, Array(bytes)))
            counters.mailBacklogged += 1
        }
        mailPending = true
    }

    /// The largest record `send(mail:)` takes.
    public var largestMail: Int { directory.mail.queue(from: index, to: (index + 1) % max(directory.count, 2)).largestRecord }

    /// Before the turn's submit: moves what backlog fits, and wakes each shard that got records.
    func flushMail() {
        mailPending = false
        for target in 0..<directory.count where target != index {
            if !mailBacklog[target].isEmpty { moveBacklog(to: target) }
            if mailWakeDue[target] {
                mailWakeDue[target] = false
                post(Tag(kind: .mail, shard: index, generation: 0, slot: 0), result: 0, to: target)
            }
        }
    }

    private func moveBacklog(to target: Int) {
        let queue = directory.mail.queue(from: index, to: target)
        var moved = 0
        for record in mailBacklog[target] {
            let written = record.bytes.withUnsafeBytes { queue.write(channel: record.channel, $0) }
            if !written { break }
            moved += 1
        }
        if moved > 0 {
            mailBacklog[target].removeFirst(moved)
            mailWakeDue[target] = true
        }
        if !mailBacklog[target].isEmpty {
            // Ask for a word when the receiver has read; then try once more, in case it read before it could see
            // the request (the flag and the queue's head are ordered sequentially consistently).
            queue.producerWaiting.store(true, ordering: .sequentiallyConsistent)
            if let first = mailBacklog[target].first,
               first.bytes.withUnsafeBytes({ queue.write(channel: first.channel, $0) }) {
                mailBacklog[target].removeFirst()
                mailWakeDue[target] = true
                mailPending = true
            }
        }
    }

    func mailArrived(from sender: Int) {
        guard sender < directory.count, sender != index else {
            counters.staleCompletions += 1
            return
        }
        let queue = directory.mail.queue(from: sender, to: index)
        queue.read { channel, bytes in handler.mailArrived(from: sender, channel: channel, bytes, on: self) }
        if queue.producerWaiting.exchange(false, ordering: .sequentiallyConsistent) {
            post(Tag(kind: .mailRoom, shard: index, generation: 0, slot: 0), result: 0, to: sender)
        }
    }

    func mailRoomArrived(at receiver: Int) {
        guard receiver < directory.count, receiver != index else { return }
        if !mailBacklog[receiver].isEmpty { mailPending = true }
    }
}
