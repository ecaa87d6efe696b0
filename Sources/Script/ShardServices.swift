import Engine
import TM
import SIP

/// Per-shard machinery a module brings along (an exec runner, later an HTTP client or a database pool):
/// created once per shard when it starts, it gets the ring completions and wheel timers of its own
/// operations and is stopped with the shard.
public protocol ShardService: AnyObject {
    /// A completion of an operation this service submitted; false when `id` is not its own.
    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool
    /// A wheel timer this service armed; false when `payload` is not its own.
    func timerFired(payload: UInt64, on shard: Shard) -> Bool
    func stopping(on shard: Shard)
    /// A record this module's service on shard `sender` mailed here (`ScriptContext.mail`), in send order.
    func mailArrived(from sender: Int, _ bytes: UnsafeRawBufferPointer, on shard: Shard)
}

/// A service that continues its own work at a turn boundary (`ScriptContext.continueNextTurn(for:value:)`): what
/// it cannot do inside a completion it handles (acc's writer submits its next batch there, as a runner's delegate
/// must not submit; a prefetching service routes the request it held).
public protocol NextTurnContinuing: ShardService {
    func nextTurn(value: Int, on shard: Shard)
}

/// A service that fetches what a request's route will need before the route starts (auth_db: the stored
/// credentials of a request that carries some), so the route reads it without waiting and a slow database never
/// blocks the shard: the request waits, not the shard. The route then runs from its beginning, as if the request
/// had just arrived.
public protocol RequestPrefetching: NextTurnContinuing {
    /// Offered every new request (not one TM absorbed) before its main route. True when taken: the service
    /// copied what it needs and routes it later, from `nextTurn`, through `ScriptContext.routeHeld`.
    func prefetch(_ message: SIPMessage, bytes: UnsafeRawBufferPointer, source: SocketAddress, socketIndex: Int,
                  on shard: Shard) -> Bool
}

/// A service that keeps state on one shard for a family of requests (dialog: a call's dialog lives on the shard
/// that created it), offered every request TM did not absorb before its main route (and before prefetching).
public protocol RequestOwning: ShardService {
    /// The shard `message` belongs to when that is another one: the datagram is handed there whole, in O(1), and
    /// routed there from the start. Nil to route it here, where the service may record what the request means to
    /// it (an ACK confirms a dialog, a BYE ends it). `lent`: it was handed here already, so it is routed here.
    func owner(of message: SIPMessage, lent: Bool, on shard: Shard) -> Int?
}

/// A service told when a request's main route has ended (dialog: a dialog created by a route that left no
/// transaction — a stateless reply — will never see an answer, and ends there).
public protocol MainRouteObserving: ShardService {
    /// `transaction`: the request's live transaction, if the route left one.
    func mainRouteEnded(transaction: TransactionHandle?, on shard: Shard)
}

extension ShardService {
    public func mailArrived(from sender: Int, _ bytes: UnsafeRawBufferPointer, on shard: Shard) {}
}

/// Makes a module's service for one shard, from the script's configuration (its modparams).
public typealias ShardServiceFactory = @Sendable (ScriptContext, Shard, ScriptConfiguration) -> any ShardService

extension ScriptContext {
    /// The service a module registered, by the index its compiled call sites were given
    /// (`ScriptLibrary.serviceIndex`).
    public func service(_ index: Int) -> (any ShardService)? {
        index < services.count ? services[index] : nil
    }

    /// Calls `service.nextTurn(value:on:)` at the end of this loop turn, from the shard's loop.
    public func continueNextTurn(for service: any NextTurnContinuing, value: Int) {
        guard let index = services.firstIndex(where: { $0 === service }) else { return }
        shard.continueNextTurn(payload: ScriptHandler.serviceMarker | UInt64(index), value: value)
    }

    /// Mails `bytes` to the same module's service on shard `target` (its `mailArrived`), in order, never lost.
    public func mail(_ bytes: UnsafeRawBufferPointer, from service: any ShardService, to target: Int) {
        guard let channel = services.firstIndex(where: { $0 === service }) else { return }
        shard.send(mail: bytes, channel: UInt16(channel), to: target)
    }

    /// Output of an async operation for an `$avp`, staged while the operation's completion is handled and
    /// moved into the suspension by `asyncCompleted` (`OperationOutputs`): applied when its resume route
    /// starts, after the transaction's own `$avp` values are restored, in the order staged — the last staged
    /// value of a name is its `[0]`. Copied: the operation's buffers are reused. False when the staging area
    /// is full.
    @discardableResult
    public func stageOutput(avp slot: Int, _ bytes: UnsafeRawBufferPointer?) -> Bool {
        guard stagedCount < ScriptContext.stagedCapacity else { return false }
        guard let bytes else {
            stagedEntries[stagedCount] = (slot, -1, 0)
            stagedCount += 1
            return true
        }
        guard bytes.count <= stagingBuffer.count - stagedUsed else { return false }
        if bytes.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: stagingBuffer[stagedUsed..<stagedUsed + bytes.count]).copyMemory(from: bytes)
        }
        stagedEntries[stagedCount] = (slot, stagedUsed, bytes.count)
        stagedUsed += bytes.count
        stagedCount += 1
        return true
    }

    /// Writes an output of an operation that ran synchronously (outside async()): an `$avp` target's old
    /// values are replaced by this one, another target (`$var`, `$ru`, `$du`) is assigned. The value must live
    /// as long as the route (the arena, the message).
    public func writeOutput(_ target: Int, _ value: ScriptValue) {
        if target >= OutputTarget.writerBase {
            outputWriters[target - OutputTarget.writerBase](self, value)
            return
        }
        avps.remove(target, all: true)
        if !value.isNull { _ = avps.push(target, value) }
    }

    /// Adds one more value of a multi-valued output (rows of a query): an `$avp` target gets it on top of its
    /// others; another target is assigned (the last one stays).
    public func appendOutput(_ target: Int, _ value: ScriptValue) {
        if target >= OutputTarget.writerBase {
            outputWriters[target - OutputTarget.writerBase](self, value)
            return
        }
        _ = avps.push(target, value)
    }

    /// Forgets what was staged: the completion that staged it has handed it on, or had no suspension to give it.
    func discardStagedOutputs() {
        stagedCount = 0
        stagedUsed = 0
    }
}
