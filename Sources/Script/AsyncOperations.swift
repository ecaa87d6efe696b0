import Engine
import Glibc
import TM

/// Names one suspension: a slot of the shard's suspension table and its generation, so a completion that
/// arrives after the suspension ended (timed out, slot reused) is dropped instead of resuming another call.
public struct AsyncTicket: Sendable, Equatable {
    public let slot: UInt32
    public let generation: UInt16

    public init(slot: UInt32, generation: UInt16) {
        self.slot = slot
        self.generation = generation
    }
}

/// An operation started by `async()`/`launch()`, compiled once per call site.
public struct CompiledAsyncOperation {
    /// Starts the operation; it later calls `context.asyncCompleted(ticket, code:)` on the same shard. Returns
    /// nil when started, or the code to resume with at once (it could not start: a full queue, bad input).
    public var start: (ScriptContext, AsyncTicket) -> Int?
    /// Stops the operation at its source (the suspension timed out): abort the request, kill the child…
    public var cancel: (ScriptContext, AsyncTicket) -> Void

    public init(start: @escaping (ScriptContext, AsyncTicket) -> Int?,
                cancel: @escaping (ScriptContext, AsyncTicket) -> Void) {
        self.start = start
        self.cancel = cancel
    }
}

public struct AsyncOperationDefinition: Sendable {
    public var name: String
    /// The module that must be loaded; "core" needs none.
    public var module: String
    public var minimumArguments: Int
    public var maximumArguments: Int
    /// Required positions (0-based) that may still be left empty, as OpenSIPS' docs write
    /// `rest_post(url, body, , $var(out))` for the default content type.
    public var omittableArguments: Set<Int> = []
    /// The timeout when neither async() nor the module's modparam nor `async_timeout` gives one, in ms.
    public var defaultTimeout: Int
    /// The module parameter that sets this operation's timeout, and how many ms one unit of it is
    /// (rest_client's curl_timeout is in seconds: 1000).
    public var timeoutParameter: (name: String, milliseconds: Int)?
    public var compile: @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledAsyncOperation

    public init(_ name: String, module: String, arguments: ClosedRange<Int>, defaultTimeout: Int,
                timeoutParameter: (name: String, milliseconds: Int)? = nil,
                compile: @escaping @Sendable (FunctionCall, ScriptCompiler) throws(CompileError) -> CompiledAsyncOperation) {
        self.name = name
        self.timeoutParameter = timeoutParameter
        self.module = module
        minimumArguments = arguments.lowerBound
        maximumArguments = arguments.upperBound
        self.defaultTimeout = defaultTimeout
        self.compile = compile
    }
}

/// What `$rc` holds in a resume route when the operation did not finish on its own.
public enum AsyncCode {
    /// The operation's timeout expired; it was cancelled at its source.
    public static let timeout = -2
    /// No room to suspend (too many suspended transactions on the shard) or the state could not be kept.
    public static let cannotSuspend = -5
}

extension ScriptContext {
    /// An async operation finished with `code`, and what it staged (`stageOutput`) is its output: both are
    /// recorded with the suspension and its route resumes at the end of this loop turn, never inside the
    /// caller (a runner's completion, a timer). Call on the shard that started it. The first result of a
    /// suspension wins: a stale ticket, or a second result (an operation completing as it times out), is
    /// dropped with what it staged.
    public func asyncCompleted(_ ticket: AsyncTicket, code: Int) {
        defer { discardStagedOutputs() }
        guard suspensions.isWaiting(ticket) else { return }
        let (outputs, dropped) = OperationOutputs.pack(self, into: operationOutputs)
        if dropped { log.write(level: -1, "ringsipd: an async operation's outputs are too large to keep; dropped") }
        guard let timers = suspensions.complete(ticket, outputs: outputs) else {
            if let outputs { operationOutputs.release(outputs) }
            return
        }
        if let timer = timers.timeout { shard.cancel(timer) }
        if let timer = timers.operation { shard.cancel(timer) }
        shard.continueNextTurn(payload: Suspensions.resumePayload(ticket), value: code)
    }
}

/// `sleep(seconds)` and `usleep(microseconds)` (OpenSIPS cfgutils): inside `async()` they suspend the
/// transaction on a wheel timer and the shard goes on; called directly they block the shard, as in OpenSIPS,
/// and the check warns about it.
enum SleepOperations {
    /// Wheel-timer payloads for sleeps: bit 60 marks them, then generation 16 | slot 32 of the suspension.
    static let marker: UInt64 = 1 << 60

    static var module: ScriptModule {
        ScriptModule(name: "cfgutils", functions: [
            ScriptFunction("sleep", module: "cfgutils", arguments: 1...1) { call, compiler throws(CompileError) in
                try blocking(call, compiler, microsecondsPerUnit: 1_000_000)
            },
            ScriptFunction("usleep", module: "cfgutils", arguments: 1...1) { call, compiler throws(CompileError) in
                try blocking(call, compiler, microsecondsPerUnit: 1)
            },
        ], asyncOperations: [
            AsyncOperationDefinition("sleep", module: "cfgutils", arguments: 1...1, defaultTimeout: 3_600_000) {
                call, compiler throws(CompileError) in try suspending(call, compiler, millisecondsPerUnit: 1000, divisor: 1)
            },
            AsyncOperationDefinition("usleep", module: "cfgutils", arguments: 1...1, defaultTimeout: 3_600_000) {
                call, compiler throws(CompileError) in try suspending(call, compiler, millisecondsPerUnit: 1, divisor: 1000)
            },
        ])
    }

    static func blocking(_ call: FunctionCall, _ compiler: ScriptCompiler,
                         microsecondsPerUnit: Int) throws(CompileError) -> CompiledCall {
        compiler.warn("\(call.name)() outside async() blocks the whole shard while it sleeps", at: call.location)
        let amount = try compiler.integer(call.arguments[0]!, what: "\(call.name) time")
        return { context in
            guard let n = amount(context), n >= 0 else { return -1 }
            usleep(UInt32(min(n * microsecondsPerUnit, Int(UInt32.max))))
            return 1
        }
    }

    static func suspending(_ call: FunctionCall, _ compiler: ScriptCompiler, millisecondsPerUnit: Int,
                           divisor: Int) throws(CompileError) -> CompiledAsyncOperation {
        let amount = try compiler.integer(call.arguments[0]!, what: "\(call.name) time")
        return CompiledAsyncOperation(
            start: { context, ticket in
                guard let n = amount(context), n >= 0 else { return -1 }
                let milliseconds = UInt64(n * millisecondsPerUnit / divisor)
                let payload = marker | UInt64(ticket.generation) << 32 | UInt64(ticket.slot)
                guard let timer = context.shard.schedule(after: milliseconds, payload: payload) else { return -1 }
                context.suspensions.setOperationTimer(ticket, timer)
                return nil
            },
            cancel: { context, ticket in
                if let timer = context.suspensions.operationTimer(ticket) { context.shard.cancel(timer) }
            })
    }

    /// A sleep's timer fired: its operation completed.
    static func timerFired(_ payload: UInt64, _ context: ScriptContext) -> Bool {
        guard payload & (1 << 63 | 1 << 62 | 1 << 61 | marker) == marker else { return false }
        let ticket = AsyncTicket(slot: UInt32(truncatingIfNeeded: payload), generation: UInt16(truncatingIfNeeded: payload >> 32))
        context.suspensions.setOperationTimer(ticket, nil)
        context.asyncCompleted(ticket, code: 1)
        return true
    }
}
