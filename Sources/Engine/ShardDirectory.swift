import Glibc

/// What every shard may know about every other: its ring's fd (the MSG_RING target) and its receive
/// buffers (to read a datagram it lends). Filled while shards start, read-only once the start gate opens.
///
/// Safety: written by each shard thread for its own index before `StartGate.open`, read only after it;
/// the gate's mutex orders the writes before the reads.
public final class ShardDirectory: @unchecked Sendable {
    public let count: Int
    var ringFDs: [Int32]
    var bufferBases: [UnsafeMutableRawPointer?]
    var bufferSizes: [Int]
    let mail: ShardMailboxes

    public init(count: Int) {
        self.count = count
        mail = ShardMailboxes(count: count)
        ringFDs = Array(repeating: -1, count: count)
        bufferBases = Array(repeating: nil, count: count)
        bufferSizes = Array(repeating: 0, count: count)
    }
}

/// Holds shard threads after their set-up until every shard is ready (or one has failed), so no shard
/// sends a MSG_RING to a ring that does not exist yet, and start-up errors reach the main thread.
public final class StartGate: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var ready = 0
    private var failures: [String] = []
    private var opened = false
    private let expected: Int

    public init(expected: Int) {
        self.expected = expected
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    /// Reports this shard's set-up result and waits until all have reported. Returns false if any failed.
    func arrive(failure: String?) -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let failure { failures.append(failure) }
        ready += 1
        if ready == expected { opened = true; pthread_cond_broadcast(&condition) }
        while !opened { pthread_cond_wait(&condition, &mutex) }
        return failures.isEmpty
    }

    /// Waits for every shard's report; returns the failures (empty when all started).
    public func waitForAll() -> [String] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while !opened { pthread_cond_wait(&condition, &mutex) }
        return failures
    }
}
