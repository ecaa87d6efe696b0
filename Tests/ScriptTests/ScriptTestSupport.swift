import Foundation
import Glibc
import Testing

import Engine
import SIP
@testable import Script

/// Helpers for the checker and runtime tests, in a namespace so they cannot collide with the parser's.
enum CheckerFixture {
    /// The error `text` fails the check with, or nil (recorded as a test failure) when it is valid.
    static func error(_ text: String, library: ScriptLibrary = .core,
                      sourceLocation: Testing.SourceLocation = #_sourceLocation) -> CompileError? {
        do {
            _ = try ScriptProgram.parse(text, file: "test.cfg", library: library)
            Issue.record("expected a compile error", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    /// The core library plus a stand-in `tm` module whose `t_on_failure("name")` resolves a failure route,
    /// as the real one registered by the layer above does.
    static var libraryWithFailureRoutes: ScriptLibrary {
        var library = ScriptLibrary.core
        library.register(ScriptModule(name: "tm", functions: [
            ScriptFunction("t_on_failure", module: "tm", arguments: 1...1, allowedIn: [.request, .branch, .failure]) {
                call, compiler throws(CompileError) in
                guard let argument = call.arguments[0], let name = compiler.constantText(argument) else {
                    throw compiler.error("t_on_failure takes a failure_route name", at: call.location)
                }
                _ = try compiler.routeIndex(.failure, named: name, at: argument.location)
                return { _ in 1 }
            },
        ]))
        return library
    }
}

/// A blocking UDP socket on loopback with a receive timeout, so a missing datagram fails the test instead of
/// hanging it. (EngineTests' LoopbackClient cannot be imported from here.)
final class TestSocket {
    let fd: Int32
    let address: SocketAddress

    init(host: String = "127.0.0.1") {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        precondition(fd >= 0)
        var storage = SocketAddress(numericHost: host, port: 0)!.storage
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(bound == 0, "cannot bind a test socket on \(host)")
        var local = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        address = withUnsafePointer(to: &local) { SocketAddress(raw: UnsafeRawPointer($0), length: Int(length))! }
        self.fd = fd
    }

    deinit { close(fd) }

    func send(_ text: String, to destination: SocketAddress) {
        var storage = destination.storage
        let bytes = Array(text.utf8)
        let n = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, destination.length) }
        }
        precondition(n == bytes.count)
    }

    /// The next datagram as text, or nil after `milliseconds`.
    func receive(within milliseconds: Int = 1500) -> String? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var ready = poll(&poller, 1, Int32(milliseconds))
        while ready < 0 && errno == EINTR { ready = poll(&poller, 1, Int32(milliseconds)) }
        guard ready > 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    /// Nothing arrives within a short wait (for tests that expect silence).
    func receiveNothing() -> String? { receive(within: 150) }
}

/// The modules every runtime script loads; prepended to the test's text.
let runtimeModules = """
    loadmodule "sl.so"
    loadmodule "rr.so"
    loadmodule "maxfwd.so"
    loadmodule "sipmsgops.so"

    """

/// A real engine with one shard on 127.0.0.1:0 running a script, a client in front of it and sinks behind.
///
/// The script names sinks by placeholders: `@SINK@` or `@SINK0@` (the first sink, `127.0.0.1:port`), `@SINK1@`, …,
/// and `@SINKPORT@` (the first sink's port). The proxy's own port is known only after start: scripts use `myself`.
final class ScriptRig {
    let client: TestSocket
    let sinks: [TestSocket]
    let engine: Engine
    let program: ScriptProgram
    var sink: TestSocket { sinks[0] }
    var proxy: SocketAddress { engine.boundAddresses[0] }

    /// Engine settings small enough for many rigs to run side by side.
    static var configuration: ShardConfiguration {
        var c = ShardConfiguration()
        c.ringEntries = 256
        c.receiveBuffers = 64
        c.sendSlots = 64
        c.timerCapacity = 1024
        c.socketBufferBytes = 256 << 10
        return c
    }

    /// Whether a real ring can run here. Without io_uring the runtime suites are disabled locally; under
    /// CI=true they run anyway, so the failure shows.
    static let canRun: Bool = {
        if ProcessInfo.processInfo.environment["CI"] == "true" { return true }
        guard let probe = try? ScriptRig("route { exit; }") else { return false }
        _ = probe
        return true
    }()

    init(_ script: String, sinks sinkHosts: [String] = ["127.0.0.1"], listen: [String] = ["127.0.0.1"],
         library: ScriptLibrary = .core, modules: String = runtimeModules) throws {
        client = TestSocket()
        sinks = sinkHosts.map { TestSocket(host: $0) }
        var text = modules + script
        for (i, sink) in sinks.enumerated() {
            text = text.replacingOccurrences(of: "@SINK\(i)@", with: "\(sink.address)")
        }
        text = text.replacingOccurrences(of: "@SINK@", with: "\(sinks[0].address)")
        text = text.replacingOccurrences(of: "@SINKPORT@", with: "\(sinks[0].address.port)")
        program = try ScriptProgram.parse(text, file: "runtime.cfg", library: library)
        let program = self.program
        engine = Engine(listen: listen.map { SocketAddress(numericHost: $0, port: 0)! }, shards: 1, cpus: nil,
                        configuration: ScriptRig.configuration) { _ in ScriptHandler(program: program) }
        try engine.start()
    }

    deinit { engine.stop() }

    /// Sends `text` from the client to the proxy's first (or `socket`-th) address.
    func send(_ text: String, socket: Int = 0) {
        client.send(text, to: engine.boundAddresses[socket])
    }

    /// Sends a request and returns the reply the client gets (nil if none).
    func reply(to text: String) -> String? {
        send(text)
        return client.receive()
    }

    /// The reason phrase of the reply to `text` when its status is `status`, else nil (recorded).
    func reason(of text: String, status: Int = 299, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> String? {
        guard let reply = reply(to: text) else {
            Issue.record("no reply", sourceLocation: sourceLocation)
            return nil
        }
        let statusLine = SIPText.startLine(reply)
        let prefix = "SIP/2.0 \(status) "
        guard statusLine.hasPrefix(prefix) else {
            Issue.record("unexpected reply: \(statusLine)", sourceLocation: sourceLocation)
            return nil
        }
        return String(statusLine.dropFirst(prefix.count))
    }

    /// A request from the client, in the shape of RFC 3261's examples, with `extra` header lines inserted
    /// before Content-Length.
    func request(_ method: String = "INVITE", uri: String = "sip:bob@127.0.0.2:5070;transport=udp",
                 via: String? = nil, maxForwards: String? = "70", to: String = "<sip:bob@biloxi.example.com:5062>",
                 extra: String = "", callID: String = "call-7@127.0.0.1", cseq: Int = 17) -> String {
        let via = via ?? "SIP/2.0/UDP 127.0.0.1:\(client.address.port);branch=z9hG4bK-rt-\(cseq);rport"
        return "\(method) \(uri) SIP/2.0\r\nVia: \(via)\r\n"
            + (maxForwards.map { "Max-Forwards: \($0)\r\n" } ?? "")
            + "From: \"Alice\" <sip:alice@atlanta.example.com>;tag=a1\r\nTo: \(to)\r\n"
            + "Call-ID: \(callID)\r\nCSeq: \(cseq) \(method)\r\n\(extra)Content-Length: 0\r\n\r\n"
    }
}

/// Fields of a SIP message as text, for assertions.
enum SIPText {
    /// The first line. (Not `prefix { $0 != "\r" }`: "\r\n" is one Character in Swift.)
    static func startLine(_ text: String) -> String { text.components(separatedBy: "\r\n")[0] }

    /// The values of every header line named `name` (case-insensitive), in order.
    static func header(_ name: String, in text: String) -> [String] {
        let head = text.components(separatedBy: "\r\n\r\n")[0]
        return head.components(separatedBy: "\r\n").dropFirst()
            .filter { $0.lowercased().hasPrefix(name.lowercased() + ":") }
            .map { String($0.dropFirst(name.count + 1).drop(while: { $0 == " " })) }
    }

    /// The comma-separated values of every `name` line, in order (Route and Record-Route sets).
    static func values(_ name: String, in text: String) -> [String] {
        header(name, in: text).flatMap { $0.components(separatedBy: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
    }
}

/// Redirects this process's stderr to a file while `body` runs and returns what was written: the runtime
/// writes xlog lines and script errors straight to fd 2. Tests using it must not run concurrently with each
/// other (they live in one serialized suite).
///
/// Swift Testing reports progress on stderr too, so what other suites print meanwhile is captured as well: every
/// captured line that is not the runtime's own (`ringsipd: …`, or containing `own`) is written back afterwards,
/// so no other test's failure goes unseen.
func capturingStderr(own marker: String? = nil, _ body: () throws -> Void) rethrows -> String {
    let path = "/tmp/ringsip-script-stderr-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    let file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    precondition(file >= 0)
    let saved = dup(STDERR_FILENO)
    dup2(file, STDERR_FILENO)
    var restored = false
    func restore() -> String {
        guard !restored else { return "" }
        restored = true
        dup2(saved, STDERR_FILENO)
        close(saved)
        close(file)
        let output = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        unlink(path)
        let others = output.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            !line.hasPrefix("ringsipd: ") && !(marker.map { line.contains($0) } ?? false)
        }
        let text = others.joined(separator: "\n")
        if !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
        }
        return output
    }
    defer { _ = restore() }
    try body()
    return restore()
}
