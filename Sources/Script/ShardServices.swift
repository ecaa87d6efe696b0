import Engine

/// Per-shard machinery a module brings along (an exec runner, later an HTTP client or a database pool):
/// created once per shard when it starts, it gets the ring completions and wheel timers of its own
/// operations and is stopped with the shard.
public protocol ShardService: AnyObject {
    /// A completion of an operation this service submitted; false when `id` is not its own.
    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool
    /// A wheel timer this service armed; false when `payload` is not its own.
    func timerFired(payload: UInt64, on shard: Shard) -> Bool
    func stopping(on shard: Shard)
}

/// Makes a module's service for one shard.
public typealias ShardServiceFactory = @Sendable (ScriptContext, Shard) -> any ShardService

extension ScriptContext {
    /// The service a module registered, by the index its compiled call sites were given
    /// (`ScriptLibrary.serviceIndex`).
    public func service(_ index: Int) -> (any ShardService)? {
        index < services.count ? services[index] : nil
    }

    /// Output of an async operation for an `$avp`, applied when its resume route starts (after the
    /// transaction's own `$avp` values are restored). Copied: the operation's buffers are reused.
    public func stageOutput(avp slot: Int, _ bytes: UnsafeRawBufferPointer) {
        guard stagedCount < 2 else { return }
        let buffer = stagedOutputs[stagedCount]
        let length = min(bytes.count, buffer.count)
        if length > 0 { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length]).copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<length])) }
        stagedSlots[stagedCount] = (slot, length)
        stagedCount += 1
    }

    func applyStagedOutputs() {
        for i in 0..<stagedCount {
            let (slot, length) = stagedSlots[i]
            avps.remove(slot, all: true)
            _ = avps.push(slot, .text(UnsafeRawBufferPointer(rebasing: stagedOutputs[i][0..<length])))
        }
        stagedCount = 0
    }
}
