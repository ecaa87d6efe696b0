import CCurl
import Engine
import Glibc
import Script

/// `rest_get`/`rest_post`/`rest_put` called outside `async()`: the request is made and waited for on the
/// shard's thread (curl_easy_perform), as OpenSIPS' rest_client does. The whole shard stops meanwhile, so
/// the check warns at every such call site. The body is kept up to `bodyLimit` (it lands in the message's
/// arena with the `$avp`s).
enum SynchronousHTTP {
    static let bodyLimit = 32 << 10

    static func compile(_ call: FunctionCall, _ compiler: ScriptCompiler, method: HTTPMethod) throws(CompileError)
        -> CompiledCall {
        compiler.warn("\(call.name)() outside async() blocks the whole shard until the server answers; "
            + "async(\(call.name)(…), resume_route) does not", at: call.location)
        let url = try compiler.value(call.arguments[0]!)
        var body: ScriptCompiler.Evaluate?
        var contentType: ScriptCompiler.Evaluate?
        var first = 1
        if method != .get {
            guard call.arguments.count >= 4 else {
                throw compiler.error("\(call.name) takes url, body, content type and a body $avp", at: call.location)
            }
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
        guard let service = compiler.serviceIndex(of: "rest_client") else {
            throw compiler.error("\(call.name) needs loadmodule \"rest_client.so\"", at: call.location)
        }
        return { context in
            guard let http = context.service(service) as? HTTPService, case .text(let address) = url(context) else {
                return Int(HTTPCode.failed.rawValue)
            }
            var payload = UnsafeRawBufferPointer(start: nil, count: 0)
            var type = UnsafeRawBufferPointer(start: nil, count: 0)
            if let body, case .text(let bytes) = body(context) { payload = bytes }
            if let contentType, case .text(let bytes) = contentType(context) { type = bytes }
            return http.perform(method, url: address, body: payload, contentType: type, outputs: outputs, context: context)
        }
    }
}

/// The blocking side of one shard's rest_client: one easy handle, reused.
final class BlockingHTTP {
    private var easy: UnsafeMutableRawPointer?
    let body = UnsafeMutableRawBufferPointer.allocate(byteCount: SynchronousHTTP.bodyLimit, alignment: 8)
    var received = 0
    var overflowed = false
    private let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
    private var headerScratch: [CChar] = []

    deinit {
        if let easy { curl_easy_cleanup(easy) }
        body.deallocate()
        text.deallocate()
    }

    /// NUL-terminated copy of `bytes` in scratch memory, at `offset`; nil when it does not fit.
    private func cString(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UnsafePointer<CChar>? {
        guard offset + bytes.count + 1 <= text.count else { return nil }
        if bytes.count > 0 { UnsafeMutableRawBufferPointer(rebasing: text[offset..<offset + bytes.count]).copyMemory(from: bytes) }
        text[offset + bytes.count] = 0
        return UnsafePointer((text.baseAddress! + offset).assumingMemoryBound(to: CChar.self))
    }

    /// The request as the ring's transfers make it (headers, TLS checks, codes; `HTTPRunner`'s shared pieces),
    /// waited for here. A body beyond `bodyLimit` or the configured `max_transfer_size` fails it (-10), as an
    /// async one.
    func perform(_ method: HTTPMethod, url: UnsafeRawBufferPointer, body payload: UnsafeRawBufferPointer,
                 contentType: UnsafeRawBufferPointer, headers appended: UnsafeRawBufferPointer,
                 configuration: HTTPRunner.Configuration)
        -> (code: HTTPCode, status: Int, contentType: UnsafeRawBufferPointer) {
        let timeoutMilliseconds = configuration.curlTimeout, connectMilliseconds = configuration.connectionTimeout
        if easy == nil { easy = UnsafeMutableRawPointer(curl_easy_init()) }
        guard let easy, let address = cString(url, at: 0) else { return (.failed, 0, .init(start: nil, count: 0)) }
        curl_easy_reset(easy)
        received = 0
        overflowed = false
        _ = CCurl_easy_setopt_ptr(easy, CURLOPT_URL, address)
        _ = CCurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        _ = CCurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(timeoutMilliseconds))
        _ = CCurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(min(connectMilliseconds, timeoutMilliseconds)))
        _ = CCurl_easy_setopt_write_function(easy) { data, size, count, context in
            let me = Unmanaged<BlockingHTTP>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            let room = me.body.count - me.received
            if n > room { me.overflowed = true }
            if let data, min(n, room) > 0 {
                UnsafeMutableRawBufferPointer(rebasing: me.body[me.received..<me.received + min(n, room)])
                    .copyMemory(from: UnsafeRawBufferPointer(start: data, count: min(n, room)))
                me.received += min(n, room)
            }
            return n
        }
        _ = CCurl_easy_setopt_ptr(easy, CURLOPT_WRITEDATA, Unmanaged.passUnretained(self).toOpaque())
        _ = CCurl_easy_setopt_off_t(easy, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(configuration.maxTransferSize))
        HTTPRunner.applyTLS(easy, configuration)
        if method != .get {
            _ = CCurl_easy_setopt_ptr(easy, CURLOPT_POSTFIELDS, payload.baseAddress)
            _ = CCurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(payload.count))
            if method == .put { _ = "PUT".withCString { CCurl_easy_setopt_ptr(easy, CURLOPT_CUSTOMREQUEST, $0) } }
        }
        let headers = HTTPRunner.headerList(method: method, contentType: contentType, headers: appended,
                                            scratch: &headerScratch)
        if let headers { _ = CCurl_easy_setopt_ptr(easy, CURLOPT_HTTPHEADER, headers) }
        defer { if let headers { curl_slist_free_all(headers) } }
        let result = curl_easy_perform(easy)
        var status = 0
        _ = CCurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
        var type: UnsafeMutablePointer<CChar>?
        _ = CCurl_easy_getinfo_ptr(easy, CURLINFO_CONTENT_TYPE, &type)
        let typeBytes = type.map { UnsafeRawBufferPointer(start: $0, count: strlen($0)) } ?? .init(start: nil, count: 0)
        if overflowed { return (.failed, status, typeBytes) }
        return (HTTPRunner.code(of: result, easy: easy), status, typeBytes)
    }
}
