import Engine
import Script

/// The exec module for scripts: `async(exec(command[, stdin[, $avp(out)[, $avp(err)[, $avp(env)]]]]), resume[,
/// timeout])` runs `/bin/sh -c command` on the shard's ExecRunner; the resume route sees `$rc` (1 ran —
/// whatever its exit status, as OpenSIPS' exec — -1 could not run, -2 timed out, -3 the shard's exec queue
/// was full) and the output in the `$avp`s given. `$avp(env)`'s values reach the child as OSIPS_EXEC_0 (the
/// newest), OSIPS_EXEC_1, …, as in OpenSIPS.
public enum ExecModule {
    public static var module: ScriptModule {
        ScriptModule(name: "exec", parameters: [.init("timeout", .integer)], functions: [
            // Outside async() exec runs synchronously, as in OpenSIPS: it blocks the shard, so the check warns.
            ScriptFunction("exec", module: "exec", arguments: 1...5, compile: SynchronousExec.compile),
        ], asyncOperations: [
            AsyncOperationDefinition("exec", module: "exec", arguments: 1...5, defaultTimeout: 10_000,
                                     timeoutParameter: ("timeout", 1), compile: compile),
        ], service: { context, shard, _ in ExecService(context: context, shard: shard) })
    }

    @Sendable static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledAsyncOperation {
        let command = try compiler.value(call.arguments[0]!)
        let stdin = try call.arguments.count > 1 ? call.arguments[1].map { (e: Expression) throws(CompileError) in
            try compiler.value(e)
        } : nil
        let out = try compiler.outputTarget(call.arguments.count > 2 ? call.arguments[2] : nil, what: "exec's stdout")
        let err = try compiler.outputTarget(call.arguments.count > 3 ? call.arguments[3] : nil, what: "exec's stderr")
        let environment = try compiler.inputAVP(call.arguments.count > 4 ? call.arguments[4] : nil,
                                                what: "exec's environment")
        guard let service = compiler.serviceIndex(of: "exec") else {
            throw compiler.error("exec needs its module: loadmodule \"exec.so\"", at: call.location)
        }
        return CompiledAsyncOperation(
            start: { context, ticket in
                guard let runner = context.service(service) as? ExecService,
                      case .text(let text) = command(context) else { return Int(ExecCode.failed.rawValue) }
                var input = UnsafeRawBufferPointer(start: nil, count: 0)
                if let stdin, case .text(let bytes) = stdin(context) { input = bytes }
                var variables = UnsafeRawBufferPointer(start: nil, count: 0)
                if let environment {
                    guard let entries = ExecEnvironment.entries(avp: environment, context: context) else {
                        return Int(ExecCode.failed.rawValue)
                    }
                    variables = entries
                }
                return runner.start(text, stdin: input, environment: variables, ticket: ticket, out: out, err: err,
                                    context: context)
            },
            cancel: { context, ticket in
                guard let runner = context.service(service) as? ExecService,
                      let data = context.suspensions.operationData(ticket) else { return }
                runner.cancel(data)
            })
    }
}

/// One shard's ExecRunner, seen from the script layer: submits execs for suspended transactions and
/// resumes them when the runner reports.
final class ExecService: ShardService, ExecRunnerDelegate {
    unowned let context: ScriptContext
    var runner: ExecRunner!

    init(context: ScriptContext, shard: Shard) {
        self.context = context
        runner = ExecRunner(shard: shard, delegate: self)
    }

    /// Token layout, high to low: generation 16 | suspension slot 16 | stdout avp + 1 16 | stderr avp + 1 16.
    func start(_ command: UnsafeRawBufferPointer, stdin: UnsafeRawBufferPointer, environment: UnsafeRawBufferPointer,
               ticket: AsyncTicket, out: Int?, err: Int?, context: ScriptContext) -> Int? {
        guard ticket.slot < 1 << 16 else { return Int(ExecCode.failed.rawValue) }
        let token = OpsPacking.token(ticket, low: UInt32((out ?? -1) + 1) << 16 | UInt32((err ?? -1) + 1))
        // The suspension's own timeout cancels the exec; the runner needs none of its own.
        switch runner.submit(command: command, stdin: stdin, environment: environment, timeoutMilliseconds: 0,
                             token: token) {
        case .accepted(let handle):
            context.suspensions.setOperationData(ticket, UInt64(UInt32(bitPattern: handle.slot)) << 16
                | UInt64(handle.generation))
            return nil
        case .rejected(let code, _):
            return Int(code.rawValue)
        }
    }

    func cancel(_ data: UInt64) {
        runner.cancel(ExecHandle(slot: Int32(bitPattern: UInt32(truncatingIfNeeded: data >> 16)),
                                 generation: UInt16(truncatingIfNeeded: data)))
    }

    func execCompleted(token: UInt64, _ completion: borrowing ExecCompletion, on shard: Shard) {
        let ticket = OpsPacking.ticket(ofToken: token)
        let out = Int((token >> 16) & 0xFFFF) - 1, err = Int(token & 0xFFFF) - 1
        if out >= 0 { context.stageOutput(avp: out, completion.stdout) }
        if err >= 0 { context.stageOutput(avp: err, completion.stderr) }
        context.asyncCompleted(ticket, code: Int(completion.code.rawValue))
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        guard OpsPacking.component(of: id) == .exec else { return false }
        runner.operationCompleted(id, result: result, flags: flags)
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        guard OpsPacking.component(ofTimer: payload) == .exec else { return false }
        runner.timerFired(payload: payload)
        return true
    }

    func stopping(on shard: Shard) {
        runner.shutdown()
    }
}

extension ScriptLibrary {
    /// Everything this build of ringsip provides: the core, tm, and the async operations.
    public static var full: ScriptLibrary {
        var library = ScriptLibrary.core
        library.register(ExecModule.module)
        for module in DatabaseModule.modules { library.register(module) }
        library.register(DatabaseModule.driverModule)
        library.register(PermissionsModule.module)
        library.register(DomainModule.module)
        for module in RegistrarModule.modules { library.register(module) }
        for module in AuthModule.modules { library.register(module) }
        library.register(NathelperModule.module)
        library.register(AccModule.module)
        library.register(DialogModule.module)
        library.register(DialplanModule.module)
        library.register(HTTPModule.module)
        library.register(RadiusModule.module)
        return library
    }
}

/// exec's environment argument: every value of an `$avp`, newest first, as `OSIPS_EXEC_<n>=value\0`
/// entries in the message's arena (OpenSIPS' names and order). A value ends at its first NUL, as OpenSIPS' C
/// strings do: a value with a NUL inside (from a web service, a query, a command's output) cannot smuggle in
/// a second variable. nil when the arena is full.
enum ExecEnvironment {
    static func entries(avp: Int, context: ScriptContext) -> UnsafeRawBufferPointer? {
        let arena = context.arena
        guard !arena.overflowed else { return nil }
        var text = arena.begin()
        var nul: UInt8 = 0
        for index in 0..<context.avps.valueCount(avp) {
            ("OSIPS_EXEC_" as StaticString).withUTF8Buffer { arena.append(&text, UnsafeRawBufferPointer($0)) }
            arena.appendDecimal(&text, index)
            ("=" as StaticString).withUTF8Buffer { arena.append(&text, UnsafeRawBufferPointer($0)) }
            switch context.avps.value(avp, index: index) {
            case .text(let value):
                let end = value.firstIndex(of: 0) ?? value.count
                arena.append(&text, UnsafeRawBufferPointer(rebasing: value[0..<end]))
            case let other:
                arena.append(&text, other)
            }
            withUnsafeBytes(of: &nul) { arena.append(&text, $0) }
        }
        return arena.overflowed ? nil : arena.end(text)
    }
}
