import Engine
import Script

/// acc's aaa backend: each record as a RADIUS Accounting-Request (RFC 2866) to aaa_radius' `acct_server`, through
/// a RADIUS client of its own on the shard's ring (its own socket and identifiers).
///
/// - Acct-Status-Type: Start (1) for an answered INVITE, Stop (2) for a BYE and for a CDR (with Acct-Session-Time,
///   the call's seconds), Failed (15) for a final of 300 or more, Interim-Update (3) otherwise; Acct-Session-Id the
///   Call-ID, Event-Timestamp the answer's time, Service-Type from `service_type`; then the extra fields, named by
///   their RADIUS attribute (`aaa:` in `extra_fields`, 2.x `aaa_extra`).
/// - Never lost silently: records wait in memory (up to `queue_size`), at most 64 in flight; one the server does
///   not answer (after the runner's retransmissions, 5 s) goes back to the front and is sent again after a back-off
///   (doubling to 5 s). A record that cannot wait (the queue full, or not encodable) is written to
///   `acc-<shard>.radius-lost` as text and counted failed.
final class AccRadius: RadiusRunnerDelegate {
    unowned let context: ScriptContext
    unowned let shard: Shard
    private(set) var runner: RadiusRunner!
    let serviceType: UInt32?
    let queueSize: Int
    let lost: AccSideFile
    static let maxInFlight = 64
    static let timeoutMilliseconds: UInt64 = 5_000

    /// Records waiting, oldest at `waitingHead` (the slots before it are spent; compacted as they grow).
    private var waiting: [(record: AccRecord, attributes: RadiusAttributes)] = []
    private var waitingHead = 0
    private var inFlight: [UInt64: (record: AccRecord, attributes: RadiusAttributes)] = [:]
    private var nextToken: UInt64 = 1
    private var backoff = ProbeBackoff()
    private var failures = FailureCount()

    init?(context: ScriptContext, shard: Shard, configuration: ScriptConfiguration, queueSize: Int, spillDirectory: String) {
        guard case .string(let secret)? = configuration.moduleParameters["aaa_radius"]?["secret"] else { return nil }
        var address = SocketAddress(numericHost: "127.0.0.1", port: 1813)
        if case .string(let text)? = configuration.moduleParameters["aaa_radius"]?["acct_server"],
           case .success(let spec) = ListenSpec.parse(text) { address = spec.address }
        guard let address else { return nil }
        self.context = context
        self.shard = shard
        self.queueSize = queueSize
        serviceType = configuration.optionalInteger("acc", "service_type").map { UInt32(truncatingIfNeeded: $0) }
        lost = AccSideFile(path: "\(spillDirectory)/acc-\(shard.index).radius-lost")
        var settings = RadiusRunner.Configuration(server: address, secret: secret)
        settings.component = .accountingRadius
        guard let made = try? RadiusRunner(shard: shard, configuration: settings, delegate: self) else { return nil }
        runner = made
    }

    /// RADIUS attribute numbers an extra field may name (aaa_radius' dictionary).
    static func attributeType(_ name: String) -> (type: UInt8, integer: Bool)? {
        RadiusModule.dictionary[name.lowercased()]
    }

    func send(_ record: AccRecord) {
        var attributes = RadiusAttributes()
        let status: UInt32
        if record.cdr != nil || record.method == "BYE" {
            status = 2
        } else if record.code >= 300 {
            status = 15
        } else if record.method == "INVITE" {
            status = 1
        } else {
            status = 3
        }
        var ok = attributes.append(type: 40, integer: status)
        ok = ok && attributes.append(type: 44, string: record.callID)
        ok = ok && attributes.append(type: 55, integer: UInt32(truncatingIfNeeded: record.unixMilliseconds / 1000))
        if let serviceType { ok = ok && attributes.append(type: 6, integer: serviceType) }
        if let cdr = record.cdr {
            ok = ok && attributes.append(type: 46, integer: UInt32(truncatingIfNeeded: cdr.durationMilliseconds / 1000))
        }
        for (name, value) in record.extras {
            guard let value, let known = Self.attributeType(name) else { continue }
            if known.integer {
                ok = ok && attributes.append(type: known.type, integer: UInt32(truncatingIfNeeded: Int(value) ?? 0))
            } else {
                ok = ok && attributes.append(type: known.type, string: value)
            }
        }
        guard ok, waiting.count - waitingHead < queueSize else {
            lose(record, why: ok ? "the queue is full" : "an attribute is longer than 253 bytes")
            return
        }
        waiting.append((record, attributes))
        pump()
    }

    func pump() {
        while inFlight.count < Self.maxInFlight, waitingHead < waiting.count,
              backoff.maySend(now: shard.now, idle: inFlight.isEmpty) {
            let next = waiting[waitingHead]
            waitingHead += 1
            let token = nextToken
            nextToken += 1
            inFlight[token] = next
            if case .rejected = runner.submitAccounting(attributes: next.attributes,
                                                        timeoutMilliseconds: Self.timeoutMilliseconds, token: token) {
                inFlight[token] = nil
                waitingHead -= 1
                break
            }
        }
        if waitingHead > 1024 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        shard.counters.accQueued = waiting.count - waitingHead
    }

    /// Puts a record back at the front of the queue.
    private func requeue(_ record: (record: AccRecord, attributes: RadiusAttributes)) {
        if waitingHead > 0 {
            waitingHead -= 1
            waiting[waitingHead] = record
        } else {
            waiting.insert(record, at: 0)
        }
    }

    func radiusCompleted(token: UInt64, _ completion: borrowing RadiusCompletion, on shard: Shard) {
        guard let done = inFlight.removeValue(forKey: token) else { return }
        switch completion.code {
        case .accepted:
            backoff.succeeded()
            shard.counters.accWritten += 1
        case .timeout, .identifiersFull:
            backoff.failed(now: shard.now)
            requeue(done)
            report("no Accounting-Response from the server; the records wait and are sent again")
        default:
            lose(done.record, why: "the server refused it (\(completion.code))")
        }
        shard.counters.accQueued = waiting.count - waitingHead
    }

    /// Called on acc's tick: a record waiting out a back-off goes again.
    func tick() { pump() }

    /// Records still waiting at a stop are kept as text.
    func stop() {
        for (record, _) in waiting[waitingHead...] + inFlight.values {
            lose(record, why: "the daemon stopped before the server answered")
        }
        waiting.removeAll()
        waitingHead = 0
        inFlight.removeAll()
        runner.shutdown()
    }

    private func lose(_ record: AccRecord, why: String) {
        shard.counters.accFailed += 1
        if lost.append(record.logLine) {
            report("a RADIUS accounting record was not delivered (\(why)); kept in \(lost.path)")
        } else {
            context.log.write(level: -1, "ringsipd: acc: a RADIUS accounting record was not delivered (\(why)): "
                + record.logLine)
        }
    }

    private func report(_ reason: String) {
        guard failures.add() else { return }
        context.log.write(level: -1, "ringsipd: acc: \(reason) (\(failures.count) so far)")
    }
}
