import Engine
import SIP

/// `loose_route()`: RFC 3261 §16.4 route processing, with strict-router compatibility (§16.4 step 1 and
/// §16.6 step 6 / §16.12).
///
/// - The previous hop was a strict router when the Request-URI is our own (Record-Route) URI: the real
///   Request-URI is then the last Route value, which is removed.
/// - A first Route naming us is removed.
/// - If the next Route is a strict router (no `;lr`), it becomes the Request-URI and the Request-URI goes to
///   the end of the Route set.
/// Returns 1 when the request is routed by its Route headers, -1 when it had none — and -1, as OpenSIPS does, for
/// a request outside a dialog whose only Route named us (a phone's outbound proxy setting preloads one): that
/// Route is still removed, and the request is routed by its Request-URI, so a script's preloaded-route check
/// (`if (loose_route()) { … 403 … }` for initial requests) lets it through.
enum LooseRouting {
    static let maximumRoutes = 32

    static func run(_ context: ScriptContext) -> Int {
        let message = context.message
        let bytes = message.bytes
        guard message.isRequest, message.count(of: .route) > 0 else { return -1 }
        let relay = context.relay
        let shard = context.shard!

        // Route sets are short: they are walked again where needed rather than stored (no allocation).
        var routeCount = 0
        var values = message.values(of: .route)
        while values.next() != nil { routeCount += 1 }
        guard routeCount <= maximumRoutes else { return -1 }

        let requestURIIsOurs: Bool = {
            guard let uri = message.requestURI, uri.host.isPresent else { return false }
            return relay.isOurs(message.bytes(of: uri.host), port: uri.port, on: shard)
        }()
        let firstIsOurs = relay.topRouteIsOurs(message, on: shard)

        // The common case: loose routers all the way; pop our own Route, keep the Request-URI.
        if !requestURIIsOurs {
            var rest = message.values(of: .route)
            if firstIsOurs { _ = rest.next() }
            guard let next = rest.next() else {
                context.popRoute = firstIsOurs
                return firstIsOurs && !message.hasToTag ? -1 : 1
            }
            if isLoose(next, bytes) {
                context.popRoute = firstIsOurs
                return 1
            }
        }
        return rewrite(context, requestURIIsOurs: requestURIIsOurs, firstIsOurs: firstIsOurs, routeCount: routeCount)
    }

    /// The strict-router cases: rebuild the Route set and the Request-URI in the arena.
    private static func rewrite(_ context: ScriptContext, requestURIIsOurs: Bool, firstIsOurs: Bool,
                                routeCount: Int) -> Int {
        let message = context.message
        let bytes = message.bytes
        let arena = context.arena
        var first = 0
        var last = routeCount
        var requestURI = message.bytes(of: message.requestURIText)
        if requestURIIsOurs {
            // §16.4 step 1: the real Request-URI is the last Route value.
            guard let lastValue = value(message, at: routeCount - 1), let uri = uriBytes(lastValue, bytes) else { return -1 }
            requestURI = uri
            last -= 1
        }
        if first < last, let firstValue = value(message, at: first), isOurs(firstValue, context) {
            first += 1
        }
        var appendOldRequestURI: UnsafeRawBufferPointer?
        if first < last, let next = value(message, at: first), !isLoose(next, bytes) {
            // §16.6 step 6: a strict next hop gets the request addressed to it; the Request-URI joins the
            // end of the Route set.
            guard let uri = uriBytes(next, bytes) else { return -1 }
            appendOldRequestURI = requestURI
            requestURI = uri
            first += 1
            context.destinationURI = uri
        } else if first < last, let next = value(message, at: first), let uri = uriBytes(next, bytes) {
            context.destinationURI = uri
        }
        var line = arena.begin()
        var wrote = 0
        for index in first..<last {
            guard let span = value(message, at: index) else { continue }
            arena.append(&line, wrote == 0 ? routePrefix : commaSpace)
            arena.append(&line, message.bytes(of: span))
            wrote += 1
        }
        if let old = appendOldRequestURI {
            arena.append(&line, wrote == 0 ? routePrefix : commaSpace)
            arena.append(&line, lessThan)
            arena.append(&line, old)
            arena.append(&line, greaterThan)
            wrote += 1
        }
        if wrote > 0 { arena.append(&line, crlf) }
        guard !arena.overflowed else { return -1 }
        context.routeSet = arena.end(line)
        context.requestURI = requestURI
        return 1
    }

    private static func value(_ message: SIPMessage, at index: Int) -> SIPSpan? {
        var values = message.values(of: .route)
        var i = 0
        while let span = values.next() {
            if i == index { return span }
            i += 1
        }
        return nil
    }

    private static func isLoose(_ span: SIPSpan, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let route = try? SIPNameAddr.parse(bytes, span) else { return true }
        return SIPURI.parameter("lr", in: route.uri.parameters, of: bytes) != nil
    }

    private static func isOurs(_ span: SIPSpan, _ context: ScriptContext) -> Bool {
        let bytes = context.message.bytes
        guard let route = try? SIPNameAddr.parse(bytes, span), route.uri.host.isPresent else { return false }
        return context.relay.isOurs(context.message.bytes(of: route.uri.host), port: route.uri.port, on: context.shard)
    }

    private static func uriBytes(_ span: SIPSpan, _ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let route = try? SIPNameAddr.parse(bytes, span) else { return nil }
        let uri = route.uri.span
        return UnsafeRawBufferPointer(rebasing: bytes[Int(uri.start)..<Int(uri.end)])
    }

    nonisolated(unsafe) private static let routePrefix = permanentBytes("Route: ")
    nonisolated(unsafe) private static let commaSpace = permanentBytes(", ")
    nonisolated(unsafe) private static let lessThan = permanentBytes("<")
    nonisolated(unsafe) private static let greaterThan = permanentBytes(">")
    nonisolated(unsafe) private static let crlf = permanentBytes("\r\n")
}
