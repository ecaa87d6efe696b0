import Engine
import Script

/// rest_client for scripts, inside `async()`: `rest_get(url, $avp(body)[, $avp(ctype)[, $avp(rcode)]])`,
/// `rest_post(url, body, ctype, $avp(body)[, …])`, `rest_put(…)`, and `rest_append_hf("Name: value")` for
/// the next request of this message. libcurl's multi interface runs on the shard's ring (see HTTPRunner).
/// `$rc` as OpenSIPS: 1 a response came (any status: see the rcode variable), -1 refused, -2 connect
/// timeout, -3 transfer timeout, -5 the shard's transfer queue was full, -10 other failures.
public enum HTTPModule {
    public static var module: ScriptModule {
        ScriptModule(name: "rest_client", parameters: [
            .init("curl_timeout", .integer), .init("connection_timeout", .integer), .init("max_transfer_size", .integer),
            .init("max_async_transfers", .integer), .init("ssl_verifypeer", .integer), .init("ssl_verifyhost", .integer),
        ], functions: [
            ScriptFunction("rest_append_hf", module: "rest_client", arguments: 1...1, compile: appendHeader),
        ] + [("rest_get", HTTPMethod.get), ("rest_post", .post), ("rest_put", .put)].map { name, method in
            // Outside async() the request is made synchronously, as in OpenSIPS; the check warns: it blocks.
            ScriptFunction(name, module: "rest_client", arguments: 2...6) { call, compiler throws(CompileError) in
                try SynchronousHTTP.compile(call, compiler, method: method)
            }
        }, asyncOperations: [
            AsyncOperationDefinition("rest_get", module: "rest_client", arguments: 2...4, defaultTimeout: 20_000,
                                     timeoutParameter: ("curl_timeout", 1000)) { call, compiler throws(CompileError) in
                try compile(call, compiler, method: .get)
            },
            omittingContentType(AsyncOperationDefinition("rest_post", module: "rest_client", arguments: 4...6,
                                                         defaultTimeout: 20_000, timeoutParameter: ("curl_timeout", 1000)) {
                call, compiler throws(CompileError) in try compile(call, compiler, method: .post)
            }),
            omittingContentType(AsyncOperationDefinition("rest_put", module: "rest_client", arguments: 4...6,
                                                         defaultTimeout: 20_000, timeoutParameter: ("curl_timeout", 1000)) {
                call, compiler throws(CompileError) in try compile(call, compiler, method: .put)
            }),
        ], service: { context, shard, configuration in HTTPService(context: context, shard: shard, configuration: configuration) })
    }

    @Sendable static func appendHeader(_ call: FunctionCall, _ compiler: ScriptCompiler) throws(CompileError) -> CompiledCall {
        let header = try compiler.value(call.arguments[0]!)
        guard let service = compiler.serviceIndex(of: "rest_client") else {
            throw compiler.error("rest_append_hf needs loadmodule \"rest_client.so\"", at: call.location)
        }
        return { context in
            guard let http = context.service(service) as? HTTPService, case .text(let text) = header(context) else { return -1 }
            return http.appendHeader(text, context: context) ? 1 : -1
        }
    }

    /// The content type (the third argument) may be left empty: none is sent then.
    static func omittingContentType(_ definition: AsyncOperationDefinition) -> AsyncOperationDefinition {
        var definition = definition
        definition.omittableArguments = [2]
        return definition
    }

    static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler, method: HTTPMethod) throws(CompileError)
        -> CompiledAsyncOperation {
        let url = try compiler.value(call.arguments[0]!)
        var body: ScriptCompiler.Evaluate?
        var contentType: ScriptCompiler.Evaluate?
        var first = 1
        if method != .get {
            guard let bodyArgument = call.arguments[1] else {
                throw compiler.error("\(call.name) needs the body to send as its second argument", at: call.location)
            }
            body = try compiler.value(bodyArgument)
            // An empty content type (`rest_post(url, body, , $avp(out))`, as OpenSIPS' docs write it) sends none.
            contentType = try call.arguments[2].map { (e: Expression) throws(CompileError) in try compiler.value(e) }
            first = 3
        }
        let outputs = try (0..<3).map { (i: Int) throws(CompileError) -> Int? in
            let index = first + i
            return try compiler.outputTarget(index < call.arguments.count ? call.arguments[index] : nil,
                                          what: "\(call.name)'s \(["body", "content type", "status code"][i]) output")
        }
        guard outputs[0] != nil else {
            throw compiler.error("\(call.name) needs an $avp for the response body", at: call.location)
        }
        guard let service = compiler.serviceIndex(of: "rest_client") else {
            throw compiler.error("\(call.name) needs loadmodule \"rest_client.so\"", at: call.location)
        }
        let targets = (outputs[0].map { $0 + 1 } ?? 0, outputs[1].map { $0 + 1 } ?? 0, outputs[2].map { $0 + 1 } ?? 0)
        return CompiledAsyncOperation(
            start: { context, ticket in
                guard let http = context.service(service) as? HTTPService, case .text(let address) = url(context) else {
                    return Int(HTTPCode.failed.rawValue)
                }
                var payload = UnsafeRawBufferPointer(start: nil, count: 0)
                var type = UnsafeRawBufferPointer(start: nil, count: 0)
                if let body, case .text(let bytes) = body(context) { payload = bytes }
                if let contentType, case .text(let bytes) = contentType(context) { type = bytes }
                return http.start(method, url: address, body: payload, contentType: type, outputs: targets,
                                  ticket: ticket, context: context)
            },
            cancel: { context, ticket in
                guard let http = context.service(service) as? HTTPService,
                      let data = context.suspensions.operationData(ticket) else { return }
                http.runner.cancel(HTTPHandle(packed: data))
            })
    }
}

/// One shard's HTTPRunner, seen from the script layer.
final class HTTPService: ShardService, HTTPRunnerDelegate {
    unowned let context: ScriptContext
    var runner: HTTPRunner!
    /// Output $avp slots + 1 (0: none) per in-flight request, by suspension slot: body, type, status.
    private let outputs: UnsafeMutablePointer<(Int, Int, Int)>
    private static let tracked = 65_536
    /// rest_append_hf's headers for the current message, as "Name: value\0" entries.
    private let headers = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
    private var headersCount = 0
    private var headersSerial: UInt64 = 0
    private let statusText = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 8)
    private let blocking = BlockingHTTP()
    private let settings: HTTPRunner.Configuration

    init(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration) {
        self.context = context
        outputs = .allocate(capacity: HTTPService.tracked)
        outputs.initialize(repeating: (0, 0, 0), count: HTTPService.tracked)
        var settings = HTTPRunner.Configuration()
        if let s = configuration.optionalInteger("rest_client", "curl_timeout") { settings.curlTimeout = UInt64(s) * 1000 }
        if let s = configuration.optionalInteger("rest_client", "connection_timeout") {
            settings.connectionTimeout = UInt64(s) * 1000
        }
        if let kb = configuration.optionalInteger("rest_client", "max_transfer_size") { settings.maxTransferSize = kb * 1024 }
        if let n = configuration.optionalInteger("rest_client", "max_async_transfers") { settings.maximumTransfers = n }
        if let v = configuration.optionalInteger("rest_client", "ssl_verifypeer") { settings.verifyPeer = v != 0 }
        if let v = configuration.optionalInteger("rest_client", "ssl_verifyhost") { settings.verifyHost = v != 0 }
        self.settings = settings
        runner = HTTPRunner(shard: shard, configuration: settings, delegate: self)
    }

    /// rest_* outside async(): blocks the shard (see SynchronousHTTP). Outputs go to the `$avp`s through the
    /// message's arena.
    func perform(_ method: HTTPMethod, url: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer,
                 contentType: UnsafeRawBufferPointer, outputs: [Int?], context: ScriptContext) -> Int {
        let (code, status, type) = blocking.perform(method, url: url, body: body, contentType: contentType,
                                                    headers: appendedHeaders(context), configuration: settings)
        headersCount = 0
        func set(_ slot: Int?, _ bytes: UnsafeRawBufferPointer) {
            guard let slot, let copy = context.arena.copy(bytes) else { return }
            context.writeOutput(slot, .text(copy))
        }
        if code == .success {
            set(outputs[0], UnsafeRawBufferPointer(rebasing: blocking.body[0..<blocking.received]))
            set(outputs[1], type)
        }
        if let slot = outputs[2] { context.writeOutput(slot, .integer(status)) }
        return Int(code.rawValue)
    }

    deinit {
        outputs.deallocate()
        headers.deallocate()
        statusText.deallocate()
    }

    func appendHeader(_ text: UnsafeRawBufferPointer, context: ScriptContext) -> Bool {
        if headersSerial != context.messageSerial {
            headersSerial = context.messageSerial
            headersCount = 0
        }
        guard text.count + 1 <= headers.count - headersCount else { return false }
        UnsafeMutableRawBufferPointer(rebasing: headers[headersCount..<headersCount + text.count]).copyMemory(from: text)
        headers[headersCount + text.count] = 0
        headersCount += text.count + 1
        return true
    }

    /// What rest_append_hf collected for the message being routed (used up by the next request it makes).
    private func appendedHeaders(_ context: ScriptContext) -> UnsafeRawBufferPointer {
        headersSerial == context.messageSerial
            ? UnsafeRawBufferPointer(rebasing: headers[0..<headersCount]) : UnsafeRawBufferPointer(start: nil, count: 0)
    }

    func start(_ method: HTTPMethod, url: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer,
               contentType: UnsafeRawBufferPointer, outputs targets: (Int, Int, Int), ticket: AsyncTicket,
               context: ScriptContext) -> Int? {
        guard ticket.slot < UInt32(HTTPService.tracked) else { return Int(HTTPCode.failed.rawValue) }
        let appended = appendedHeaders(context)
        outputs[Int(ticket.slot)] = targets
        let token = OpsPacking.token(ticket)
        // The suspension's timeout cancels the request; libcurl's own (curl_timeout) stays as a backstop.
        switch runner.submit(method: method, url: url, body: body, contentType: contentType, headers: appended, token: token) {
        case .accepted(let handle):
            headersCount = 0
            context.suspensions.setOperationData(ticket, handle.packed)
            return nil
        case .rejected(let code):
            return Int(code.rawValue)
        }
    }

    func httpCompleted(token: UInt64, _ completion: borrowing HTTPCompletion, on shard: Shard) {
        let ticket = OpsPacking.ticket(ofToken: token)
        let (body, type, status) = outputs[Int(ticket.slot)]
        if completion.code == .success {
            if body > 0 { context.stageOutput(avp: body - 1, completion.body) }
            if type > 0 { context.stageOutput(avp: type - 1, completion.contentType) }
        }
        if status > 0 {
            var writer = 0
            var digits = completion.status
            var scratch: (UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0)
            withUnsafeMutableBytes(of: &scratch) { raw in
                var i = 4
                repeat { i -= 1; raw[i] = UInt8(48 + digits % 10); digits /= 10 } while digits > 0 && i > 0
                writer = 4 - i
                statusText.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[i..<4]))
            }
            context.stageOutput(avp: status - 1, UnsafeRawBufferPointer(rebasing: statusText[0..<writer]))
        }
        context.asyncCompleted(ticket, code: Int(completion.code.rawValue))
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) -> Bool {
        guard OpsPacking.component(of: id) == .http else { return false }
        runner.operationCompleted(id, result: result, flags: flags)
        return true
    }

    func timerFired(payload: UInt64, on shard: Shard) -> Bool {
        guard OpsPacking.component(ofTimer: payload) == .http else { return false }
        runner.timerFired(payload: payload)
        return true
    }

    func stopping(on shard: Shard) {
        runner.shutdown()
    }
}
