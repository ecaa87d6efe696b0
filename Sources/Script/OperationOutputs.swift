import TM

/// An operation's outputs, kept by its suspension from the moment it completes until its resume route
/// starts: one block of `ScriptContext.operationOutputs`, so several operations can complete in one loop
/// turn, before any of their routes runs, without sharing a staging area.
///
/// Layout, per output in staging order: slot i32 | length i32 (-1: NULL) | the bytes. Native byte order,
/// unaligned: the bytes never leave the process.
enum OperationOutputs {
    /// Packs what the context staged into a block of `store`; nil when nothing was staged, or it does not fit
    /// (then `dropped` is true).
    static func pack(_ context: ScriptContext, into store: MessageStore) -> (block: StoredMessage?, dropped: Bool) {
        guard context.stagedCount > 0 else { return (nil, false) }
        let total = context.stagedCount * 8 + context.stagedUsed
        guard let block = store.allocate(total) else { return (nil, true) }
        var at = 0
        for i in 0..<context.stagedCount {
            let (slot, offset, length) = context.stagedEntries[i]
            block.bytes.storeBytes(of: Int32(truncatingIfNeeded: slot), toByteOffset: at, as: Int32.self)
            block.bytes.storeBytes(of: Int32(offset < 0 ? -1 : length), toByteOffset: at + 4, as: Int32.self)
            at += 8
            if offset >= 0 && length > 0 {
                UnsafeMutableRawBufferPointer(rebasing: block.bytes[at..<at + length])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: context.stagingBuffer[offset..<offset + length]))
                at += length
            }
        }
        return (StoredMessage(block: block.bytes.baseAddress!, sizeClass: block.sizeClass, count: at), false)
    }

    /// Writes the outputs into the route's pseudo-variables: the first output for an `$avp` replaces its old
    /// values, later ones stack on it; other targets are assigned. The values view `block`, which the route owns
    /// until it ends.
    static func apply(_ block: StoredMessage, to context: ScriptContext) {
        let bytes = block.bytes
        let avps = context.avps
        // First pass: clear each name once (a handful of names: a quadratic scan, no Set).
        var at = 0
        while at + 8 <= bytes.count {
            let slot = Int(bytes.loadUnaligned(fromByteOffset: at, as: Int32.self))
            let length = Int(bytes.loadUnaligned(fromByteOffset: at + 4, as: Int32.self))
            var seen = false
            var before = 0
            while before < at {
                if Int(bytes.loadUnaligned(fromByteOffset: before, as: Int32.self)) == slot { seen = true; break }
                before += 8 + max(0, Int(bytes.loadUnaligned(fromByteOffset: before + 4, as: Int32.self)))
            }
            if !seen && slot < OutputTarget.writerBase { avps.remove(slot, all: true) }
            at += 8 + max(0, length)
        }
        at = 0
        while at + 8 <= bytes.count {
            let slot = Int(bytes.loadUnaligned(fromByteOffset: at, as: Int32.self))
            let length = Int(bytes.loadUnaligned(fromByteOffset: at + 4, as: Int32.self))
            at += 8
            var value = ScriptValue.null
            if length >= 0 {
                value = .text(UnsafeRawBufferPointer(rebasing: bytes[at..<at + length]))
                at += length
            }
            context.appendOutput(slot, value)
        }
    }
}
