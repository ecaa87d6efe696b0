import Engine
import Foundation
import Glibc
@testable import Ops
import XCTest

/// One finished request, copied off the shard's thread.
struct RadiusOutcome: Sendable {
    var token: UInt64
    var code: RadiusCode
    var responseCode: UInt8
    var retransmissions: Int
    var attributes: [(type: UInt8, value: [UInt8])]

    func string(_ type: UInt8) -> String? {
        attributes.first { $0.type == type }.map { String(decoding: $0.value, as: UTF8.self) }
    }
}

/// What a test does on the shard, and what came back.
final class RadiusScenario: OutcomeLog<RadiusOutcome>, @unchecked Sendable {
    let configuration: RadiusRunner.Configuration
    let body: (RadiusHarness) -> Void

    init(configuration: RadiusRunner.Configuration, body: @escaping (RadiusHarness) -> Void) {
        self.configuration = configuration
        self.body = body
        super.init()
    }
}

/// A shard handler that owns a RadiusRunner and forwards to it what the engine delivers.
final class RadiusHarness: ShardHandler, RadiusRunnerDelegate {
    let scenario: RadiusScenario
    var runner: RadiusRunner!
    unowned var shard: Shard!

    init(scenario: RadiusScenario) {
        self.scenario = scenario
    }

    func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition { .done }

    func started(on shard: Shard) {
        self.shard = shard
        do {
            runner = try RadiusRunner(shard: shard, configuration: scenario.configuration, delegate: self)
        } catch {
            scenario.note("socketError", Int(error.rawValue))
            return
        }
        scenario.body(self)
    }

    func operationCompleted(_ id: OperationID, result: Int32, flags: UInt32, on shard: Shard) {
        if OpsPacking.component(of: id) == .radius { runner.operationCompleted(id, result: result, flags: flags) }
    }

    func timerFired(payload: UInt64, on shard: Shard) {
        if OpsPacking.component(ofTimer: payload) == .radius { runner.timerFired(payload: payload) }
    }

    func stopping(on shard: Shard) {
        runner?.shutdown()
    }

    @discardableResult
    func access(_ user: String, _ password: String, attributes: RadiusAttributes = RadiusAttributes(),
                timeout: UInt64 = 5000, token: UInt64) -> RadiusSubmission {
        let user = Array(user.utf8), password = Array(password.utf8)
        return user.withUnsafeBytes { user in
            password.withUnsafeBytes { password in
                runner.submitAccess(userName: user, password: password, attributes: attributes,
                                    timeoutMilliseconds: timeout, token: token)
            }
        }
    }

    func radiusCompleted(token: UInt64, _ completion: borrowing RadiusCompletion, on shard: Shard) {
        var attributes: [(type: UInt8, value: [UInt8])] = []
        completion.forEachAttribute { attributes.append(($0, Array($1))) }
        scenario.note("retransmissionsTotal", runner.retransmissions)
        scenario.note("badResponses", runner.badResponses)
        scenario.note("inFlight", runner.inFlight)
        scenario.record(RadiusOutcome(token: token, code: completion.code, responseCode: completion.responseCode,
                                      retransmissions: completion.retransmissions, attributes: attributes))
    }
}

/// A private FreeRADIUS (a copy of /etc/freeradius/3.0 in a temp folder, on free ports, with the test user
/// alice / s3cret answering Reply-Message "hello alice"), started once for a test class.
final class FreeRadiusServer: @unchecked Sendable {
    static let secret = "testing123"
    let process: Process
    let folder: String
    let authPort: UInt16
    let accountingPort: UInt16

    private static let setup = """
        set -e
        DIR=$1
        cp -r /etc/freeradius/3.0 "$DIR/raddb"
        sed -i "0,/^[[:space:]]*port = 0/s//\tport = $2/; 0,/^[[:space:]]*port = 0/s//\tport = $3/; \
        0,/^[[:space:]]*port = 0/s//\tport = $4/; 0,/^[[:space:]]*port = 0/s//\tport = $5/" \
            "$DIR/raddb/sites-enabled/default"
        sed -i "s/port = 18120/port = $6/" "$DIR/raddb/sites-enabled/inner-tunnel"
        # Stay the invoking user (the copy is ours, not freerad's); answer rejects at once.
        sed -i -E "s/^([[:space:]]*)(user|group) = /\\1#\\2 = /; s/reject_delay = 1/reject_delay = 0/" \
            "$DIR/raddb/radiusd.conf"
        { printf 'alice Cleartext-Password := "s3cret"\\n\\tReply-Message := "hello alice"\\n\\n'
          cat "$DIR/raddb/mods-config/files/authorize"; } > "$DIR/authorize"
        mv "$DIR/authorize" "$DIR/raddb/mods-config/files/authorize"
        exec freeradius -f -d "$DIR/raddb" -l stdout
        """

    /// nil (skipped locally, a failure under CI=true) when freeradius is not installed or does not start.
    static func start() -> FreeRadiusServer? {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/freeradius"),
              FileManager.default.fileExists(atPath: "/etc/freeradius/3.0/radiusd.conf") else { return nil }
        var template = Array("/tmp/ringsip-radius.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { return nil }
        let folder = String(cString: made)
        let ports = freeUDPPorts(5)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", setup, "sh", folder] + ports.map(String.init)
        let log = folder + "/freeradius.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: log) else { return nil }
        process.standardOutput = handle
        process.standardError = handle
        do { try process.run() } catch { return nil }
        let server = FreeRadiusServer(process: process, folder: folder, authPort: ports[0], accountingPort: ports[1])
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if text.contains("Ready to process requests") { return server }
            if !process.isRunning { break }
            usleep(50_000)
        }
        print((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        server.stop()
        return nil
    }

    private init(process: Process, folder: String, authPort: UInt16, accountingPort: UInt16) {
        self.process = process
        self.folder = folder
        self.authPort = authPort
        self.accountingPort = accountingPort
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: folder)
    }
}

/// Ports the kernel reports free now (bound on 127.0.0.1 then released).
func freeUDPPorts(_ count: Int) -> [UInt16] {
    var sockets: [Int32] = []
    var ports: [UInt16] = []
    for _ in 0..<count {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
                _ = bind(fd, p, length)
                return getsockname(fd, p, &length)
            }
        }
        sockets.append(fd)
        ports.append(UInt16(bigEndian: address.sin_port))
    }
    sockets.forEach { close($0) }
    return ports
}

/// A plain UDP socket on 127.0.0.1 that a test reads and answers by hand (a silent or a forging server).
final class FakeRadiusServer: @unchecked Sendable {
    let fd: Int32
    let port: UInt16

    init() {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
                _ = bind(fd, p, length)
                return getsockname(fd, p, &length)
            }
        }
        port = UInt16(bigEndian: address.sin_port)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The next datagram and who sent it; nil after the 5 s receive timeout (or with `dontWait`, when none is queued).
    func receive(dontWait: Bool = false) -> (bytes: [UInt8], from: sockaddr_in)? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var from = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let n = withUnsafeMutablePointer(to: &from) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                recvfrom(fd, &buffer, buffer.count, dontWait ? Int32(MSG_DONTWAIT) : 0, $0, &length)
            }
        }
        guard n > 0 else { return nil }
        return (Array(buffer[..<n]), from)
    }

    func send(_ bytes: [UInt8], to address: sockaddr_in) {
        var address = address
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
}

extension XCTestCase {
    /// A one-shard engine whose handler runs `scenario`; skipped where io_uring is unavailable (not under CI).
    func startEngine(_ scenario: RadiusScenario) throws -> Engine {
        let engine = Engine(listen: [SocketAddress(numericHost: "127.0.0.1", port: 0)!], shards: 1, cpus: nil) { _ in
            RadiusHarness(scenario: scenario)
        }
        do {
            try engine.start()
        } catch {
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw error }
            throw XCTSkip("io_uring unavailable here: \(error)")
        }
        return engine
    }
}
