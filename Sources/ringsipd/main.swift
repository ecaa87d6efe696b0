import ArgumentParser
import Engine
import Glibc
import Logging
import Ops
import Script

func fail(_ message: String, status: Int32) -> Never {
    FileHandleStderr.write("ringsipd: \(message)\n")
    exit(status)
}

let settings: RingSIPD.Settings
do {
    // --help arrives as ArgumentParser's own help command, not as a RingSIPD.
    guard let command = try RingSIPD.parseAsRoot() as? RingSIPD else {
        print(RingSIPD.helpMessage())
        exit(0)
    }
    settings = try command.settings()
} catch let error as SettingsError {
    fail(error.description, status: 2)
} catch {
    if RingSIPD.exitCode(for: error) == .success {
        print(RingSIPD.fullMessage(for: error))
        exit(0)
    }
    fail(RingSIPD.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments", status: 2)
}

LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = settings.logLevel
    return handler
}
let log = Logger(label: "ringsipd")

// Block the signals we handle in every thread (shards inherit this mask), then take them synchronously here:
// no signal handler ever runs on a shard's thread.
var handled = sigset_t()
sigemptyset(&handled)
for signal in [SIGINT, SIGTERM, SIGUSR1, SIGPIPE] { sigaddset(&handled, signal) }
pthread_sigmask(SIG_BLOCK, &handled, nil)

let program: ScriptProgram
do {
    if let file = settings.file {
        program = try ScriptProgram.load(path: file, library: .full)
    } else {
        program = try ScriptProgram.parse(ScriptProgram.forwardingScript(to: settings.forward!), file: "--forward", library: .full)
    }
} catch {
    FileHandleStderr.write("\(error)\n")
    exit(2)
}
for warning in program.warnings { log.warning("\(warning)") }
if settings.checkOnly {
    print("ringsipd: \(settings.file!) is valid: \(program.source.routes.count) route(s), \(program.warnings.count) warning(s)")
    exit(0)
}

// Listen addresses: the flags when given, else the script's, else the loopback default.
// A script that listens on TCP only has no UDP socket; with no listen address at all, UDP on loopback.
let configured = program.configuration
let flagsListen = !settings.listen.isEmpty || !settings.streamListen.isEmpty
let streamListen = flagsListen ? settings.streamListen : configured.streamListen
let listen = flagsListen ? settings.listen
    : !configured.listen.isEmpty || !streamListen.isEmpty ? configured.listen
    : [SocketAddress(numericHost: "127.0.0.1", port: 5060)!]
var shardConfiguration = ShardConfiguration()
shardConfiguration.overloadPercent = configured.overloadPercent
if let seconds = configured.tcpConnectionLifetime { shardConfiguration.streamIdleMilliseconds = UInt64(seconds) * 1000 }
if let total = configured.tcpMaxConnections { shardConfiguration.streamConnections = max(1, total / settings.shards) }
if let ms = configured.tcpConnectTimeout { shardConfiguration.streamConnectMilliseconds = UInt64(ms) }
if let seconds = configured.tcpMaxMessageTime { shardConfiguration.streamMessageMilliseconds = UInt64(seconds) * 1000 }
if let ms = configured.optionalInteger("proto_tcp", "tcp_send_timeout") { shardConfiguration.streamWriteMilliseconds = UInt64(ms) }
let engine = Engine(listen: listen, streamListen: streamListen, shards: settings.shards, cpus: settings.cpus,
                    configuration: shardConfiguration) { shard in
    ScriptHandler(program: program, shard: shard)
}
do {
    try engine.start()
} catch {
    fail(error.description, status: error.isAddressProblem ? 2 : 1)
}

let cpuText = settings.cpus.map { $0.map(String.init).joined(separator: ",") } ?? "0-\(settings.shards - 1)"
log.info("""
    ringsipd started: \(settings.shards) shard(s) pinned to CPUs \(cpuText); \
    io_uring flags \(engine.features.map { "\($0)" } ?? "none"); \
    listening on \((engine.boundAddresses.map { "udp:\($0)" } + engine.boundStreamAddresses.map { "tcp:\($0)" })
        .joined(separator: " ")); \
    \(settings.file.map { "script \($0)" } ?? "forwarding to udp:\(settings.forward!)")
    """)

var signal: Int32 = 0
while true {
    guard sigwait(&handled, &signal) == 0 else { continue }
    if signal == SIGUSR1 {
        engine.requestCounters()
        continue
    }
    if signal == SIGINT || signal == SIGTERM { break }
}

log.info("stopping: draining sends and joining shards")
engine.stop()
var total = ShardCounters()
for (index, counters) in engine.finalCounters.enumerated() {
    print(counters.line(label: "shard \(index)"))
    total = total + counters
}
print(total.line(label: "total"))
exit(0)
