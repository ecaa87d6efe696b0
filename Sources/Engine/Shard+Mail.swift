/// Records one shard sends another through their mail queue (`ShardMailboxes`): delivered in order, never
/// lost, and handed to the receiver's handler before its next batch of completions (`pollMail`), so before it
/// handles any datagram that arrived after the record was written. Writing costs a copy and no wake-up: a
/// shard only needs the records when it has something to handle, and whatever it handles is a completion.
/// It is woken (one MSG_RING) only when a queue to it is a quarter full, or full, so an idle shard still
/// makes room.
extension Shard {
    /// Sends `bytes` to shard `target`'s handler under `channel` (the layers above choose what channels mean).
    /// Copied: the caller's buffer may be reused at once. When the queue is full the record waits, in order,
    /// until the receiver has made room. A shard cannot mail itself.
    public func send(mail bytes: UnsafeRawBufferPointer, channel: UInt16, to target: Int) {
        precondition(target != index && target >= 0 && target < directory.count, "mail to shard \(target) from \(index)")
        let queue = directory.mail.queue(from: index, to: target)
        if mailBacklog[target].isEmpty && queue.write(channel: channel, bytes) {
            if queue.pendingBytes > queue.capacity / 4 { mailWakeDue[target] = true }
        } else {
            mailBacklog[target].append((channel, Array(bytes)))
            counters.mailBacklogged += 1
            mailWakeDue[target] = true
        }
        if mailWakeDue[target] { mailPending = true }
    }

    /// The largest record `send(mail:)` takes.
    public var largestMail: Int { directory.mail.queue(from: index, to: (index + 1) % max(directory.count, 2)).largestRecord }

    /// Before the turn's submit: moves what backlog fits, and wakes each shard that got records.
    func flushMail() {
        mailPending = false
        for target in 0..<directory.count where target != index {
            if !mailBacklog[target].isEmpty {
                moveBacklog(to: target)
                // Woken again even when nothing moved: the wake that asked for room may be the one lost.
                mailWakeDue[target] = true
            }
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

    /// Before each batch of completions: reads whatever other shards have written, so a datagram in the batch
    /// sees every change published before it was sent. A REGISTER's 200 leaves its shard after the new binding
    /// is in the queue, so the phone's next request, on whichever shard, finds it. A load per other shard.
    func pollMail() {
        for sender in 0..<directory.count where sender != index { readMail(from: sender) }
    }

    /// The sender's wake-up; usually the records were read already by `pollMail`.
    func mailArrived(from sender: Int) {
        guard sender < directory.count, sender != index else {
            counters.staleCompletions += 1
            return
        }
        readMail(from: sender)
    }

    private func readMail(from sender: Int) {
        let queue = directory.mail.queue(from: sender, to: index)
        let read = queue.read { channel, bytes in
            if !streamMailArrived(from: sender, channel: channel, bytes) {
                handler.mailArrived(from: sender, channel: channel, bytes, on: self)
            }
        }
        // Nothing read, nothing freed: a producer waiting now finds the room its own retry needs.
        if read > 0 && queue.producerWaiting.exchange(false, ordering: .sequentiallyConsistent) {
            post(Tag(kind: .mailRoom, shard: index, generation: 0, slot: 0), result: 0, to: sender)
        }
    }

    func mailRoomArrived(at receiver: Int) {
        guard receiver < directory.count, receiver != index else { return }
        if !mailBacklog[receiver].isEmpty { mailPending = true }
    }
}
