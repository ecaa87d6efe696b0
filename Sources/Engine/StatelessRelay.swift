import SIP

public struct RelayConfiguration: Sendable {
    /// The next hop for every request; nil routes by the top Route, else the Request-URI.
    public var forward: SocketAddress?

    public init(forward: SocketAddress? = nil) {
        self.forward = forward
    }
}

/// RFC 3261 §16.11 stateless proxying without a script: the daemon's behaviour for `--forward` before
/// routing scripts existed, kept as the reference the benchmarks and engine tests run.
///
/// Requests: validated, Max-Forwards checked (483 at 0) and decremented, our Route popped, a Via added whose
/// branch is derived from the request, received/rport added to the sender's Via, then sent to the next hop.
/// Responses: the top Via must be ours; it is removed and the response follows the next Via. A request too
/// broken to answer is dropped and counted; one whose Via can be read gets 400 (or 505) naming the problem.
public final class StatelessRelay: ShardHandler {
    let configuration: RelayConfiguration
    let message = SIPMessage()
    let relay = SIPRelay()

    public init(configuration: RelayConfiguration) {
        self.configuration = configuration
    }

    public func handle(_ datagram: borrowing Datagram, on shard: Shard) -> Disposition {
        guard parseAndValidate(message, datagram, relay: relay, on: shard) else { return .done }
        if !message.isRequest {
            relay.forwardResponse(message, arrivedOn: datagram.socketIndex, on: shard)
            return .done
        }
        if message.maxForwards == 0 {
            if message.method == .ack { shard.counters.dropped += 1 } else {
                relay.reply(to: message, status: 483, reason: "Too Many Hops", from: datagram.source,
                            arrivedOn: datagram.socketIndex, on: shard)
            }
            return .done
        }
        var edits = RelayEdits()
        edits.popRoute = relay.topRouteIsOurs(message, on: shard)
        guard let destination = configuration.forward.map({ NextHop(address: $0) })
            ?? relay.defaultNextHop(message, skippingFirstRoute: edits.popRoute) else {
            if message.method == .ack { shard.counters.dropped += 1 } else {
                relay.reply(to: message, status: 503, reason: "No numeric next hop", from: datagram.source,
                            arrivedOn: datagram.socketIndex, on: shard)
            }
            return .done
        }
        relay.forwardRequest(message, from: datagram.source, arrivedOn: datagram.socketIndex, to: destination.address,
                             transport: destination.transport, edits: edits, on: shard)
        return .done
    }
}

/// Parses and validates a datagram into `message` (fully for a request; for a response what relaying it
/// needs, see `SIPMessage.validateForRelay`). On failure: a keep-alive is ignored, an answerable
/// request gets 400/505 naming the problem, anything else is dropped; all but keep-alives are counted.
/// Returns whether the message is ready to route.
public func parseAndValidate(_ message: SIPMessage, _ datagram: borrowing Datagram, relay: SIPRelay,
                             on shard: Shard) -> Bool {
    if datagram.truncated {
        // Larger than a receive buffer (a UDP datagram may be 65,507 bytes): relaying a part would be worse than
        // nothing. A request whose headers arrived whole is answered 513 Message Too Large (RFC 3261 §21.5.11),
        // so its sender knows; anything else is dropped and counted.
        shard.counters.oversized += 1
        _ = try? message.parse(datagram.bytes)
        if message.isRequest && message.isAnswerable && message.method != .ack {
            relay.reply(to: message, status: 513, reason: messageTooLarge, from: datagram.source,
                        arrivedOn: datagram.socketIndex, on: shard)
        } else {
            shard.counters.dropped += 1
        }
        return false
    }
    do {
        try message.parse(datagram.bytes)
        if message.isRequest { try message.validate() } else { try message.validateForRelay() }
        return true
    } catch {
        // A datagram of CRLFs is a keep-alive (RFC 5626 §3.5.1): nothing to count, nothing to answer.
        guard error.reason != .empty else { return false }
        shard.counters.parseErrors += 1
        if message.isAnswerable {
            relay.reply(to: message, status: error.reason.statusCode, reason: error.reason.phrase,
                        from: datagram.source, arrivedOn: datagram.socketIndex, on: shard)
        } else {
            shard.counters.dropped += 1
        }
        return false
    }
}

private let messageTooLarge: StaticString = "Message Too Large"
