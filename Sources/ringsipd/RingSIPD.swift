import ArgumentParser
import Engine
import Glibc
import Logging

/// The command line. Parsing is separate from running so every mistake can be reported as one line with
/// exit status 2, which is what scripts around a daemon expect (ArgumentParser alone exits 64).
struct RingSIPD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringsipd",
        abstract: "A SIP proxy on io_uring: one pinned shard per core.",
        discussion: """
            Runs an OpenSIPS-style routing script (-f FILE), or relays every request to --forward (a shortcut \
            for a one-line forward() script). Replies go back along their Via headers.
            SIGUSR1 prints each shard's counters; SIGTERM or SIGINT stops cleanly and prints them.
            """
    )

    @Option(name: .customShort("f"), help: ArgumentHelp("The routing script.", valueName: "FILE"))
    var file: String?

    @Flag(name: .long, help: "Check the script (-f) and exit: 0 when it is valid, 2 with the first error.")
    var checkConfig = false

    @Option(name: .long, help: ArgumentHelp("Address to receive SIP on (datagrams, or tcp:IP:PORT connections), repeatable.",
                                                valueName: "udp:IP:PORT"))
    var listen: [String] = []

    @Option(name: .long, help: ArgumentHelp("Next hop for every request.", valueName: "udp:IP:PORT"))
    var forward: String?

    @Option(name: .long, help: "Number of shards (default: one per CPU in --cpus, else one per online CPU).")
    var shards: Int?

    @Option(name: .long, help: ArgumentHelp("CPUs to pin shards to, in shard order.", valueName: "0,1,..."))
    var cpus: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    /// Everything the daemon needs, checked.
    struct Settings {
        var file: String?
        var checkOnly: Bool
        var listen: [SocketAddress]
        /// `--listen tcp:…`.
        var streamListen: [SocketAddress]
        var forward: SocketAddress?
        var shards: Int
        var cpus: [Int]?
        var logLevel: Logger.Level
    }

    func settings() throws(SettingsError) -> Settings {
        if file == nil && forward == nil {
            throw SettingsError("give a routing script (-f FILE) or a next hop (--forward udp:IP:PORT)")
        }
        if file != nil && forward != nil {
            throw SettingsError("-f and --forward exclude each other: --forward stands for a one-line script")
        }
        if checkConfig && file == nil { throw SettingsError("--check-config needs the script: -f FILE") }
        var addresses: [SocketAddress] = []
        var streamAddresses: [SocketAddress] = []
        for spec in listen {
            switch ListenSpec.parse(spec) {
            case .success(let parsed) where parsed.tcp: streamAddresses.append(parsed.address)
            case .success(let parsed): addresses.append(parsed.address)
            case .failure(let error): throw SettingsError("--listen: \(error)")
            }
        }
        var next: SocketAddress?
        if let forward {
            switch ListenSpec.parse(forward) {
            case .success(let parsed) where !parsed.tcp: next = parsed.address
            case .success: throw SettingsError("--forward: only udp:IP:PORT (a script can t_relay to tcp:IP:PORT)")
            case .failure(let error): throw SettingsError("--forward: \(error)")
            }
        }
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        var cpuList: [Int]?
        if let cpus {
            var list: [Int] = []
            for item in cpus.split(separator: ",", omittingEmptySubsequences: false) {
                guard let cpu = Int(item.trimmingCharacters()), cpu >= 0, cpu < online else {
                    throw SettingsError("--cpus: '\(item)' is not a CPU number between 0 and \(online - 1)")
                }
                list.append(cpu)
            }
            cpuList = list
        }
        let count = shards ?? cpuList?.count ?? online
        guard count >= 1 && count <= 255 else { throw SettingsError("--shards: \(count) is not between 1 and 255") }
        if let cpuList, cpuList.count < count {
            throw SettingsError("--cpus names \(cpuList.count) CPUs for \(count) shards; name one per shard")
        }
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw SettingsError("--log-level: '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        return Settings(file: file, checkOnly: checkConfig, listen: addresses, streamListen: streamAddresses,
                        forward: next, shards: count,
                        cpus: cpuList, logLevel: level)
    }
}

struct SettingsError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Substring {
    func trimmingCharacters() -> Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
