import SIP

/// What modules above this layer (the registrar) do to the message being routed, the way the core functions do.
extension ScriptContext {
    /// Adds a branch to the destination set, as `append_branch(uri)` with `$du` `destination`; false when full.
    /// The bytes must live as long as the route (the arena, the message).
    public func appendDestination(uri: UnsafeRawBufferPointer, destination: UnsafeRawBufferPointer?) -> Bool {
        appendBranch(uri: uri, destination: destination)
    }

    /// Adds a whole header line (CRLF-terminated) to the request when it is forwarded, as `append_hf` does; copied.
    public func appendHeaderLine(_ line: UnsafeRawBufferPointer) -> Bool {
        appendHeader(line)
    }

    /// `replyToRequest` with a constant reason and header lines as text.
    public func replyToRequest(status: Int, reason: StaticString, headers: String) -> Bool {
        var headers = headers
        return headers.withUTF8 { lines in
            replyToRequest(status: status, reason: UnsafeRawBufferPointer(start: reason.utf8Start, count: reason.utf8CodeUnitCount),
                           extraHeaders: UnsafeRawBufferPointer(lines))
        }
    }

    /// Answers the request being routed as `send_reply` does: through its transaction when there is one, else
    /// statelessly. `extraHeaders` (whole CRLF-terminated lines) follow the script's `append_to_reply` lines.
    public func replyToRequest(status: Int, reason: UnsafeRawBufferPointer,
                               extraHeaders: UnsafeRawBufferPointer? = nil) -> Bool {
        guard hasMessage, message.isRequest else { return false }
        var headers = replyHeaders.lines
        if let extraHeaders, extraHeaders.count > 0 {
            var joined = arena.begin()
            let own = replyHeaders.lines?.count ?? 0
            if let lines = replyHeaders.lines { arena.append(&joined, lines) }
            arena.append(&joined, extraHeaders)
            let all = arena.end(joined)
            // The arena ran out: a reply without its Contact list would tell the phone it has no bindings.
            if all.count != own + extraHeaders.count { return false }
            headers = all
        }
        if let handle = transaction, let manager = transactions {
            return manager.reply(handle, status: status, reason: reason, to: message, headers: headers, on: shard)
        }
        let sent = relay.reply(to: message, status: status, reason: reason, from: source, arrivedOn: socketIndex,
                               headers: headers, forceRport: forceRport, on: shard)
        if sent { handled = true }
        return sent
    }

    /// Appends `parameter` (";name=value", the ";" added when missing) to the Record-Route we add.
    public func addRecordRouteParameter(_ parameter: UnsafeRawBufferPointer) {
        var text = arena.begin()
        if let kept = recordRouteParameters { arena.append(&text, kept) }
        if parameter.first != UInt8(ascii: ";") { arena.append(&text, semicolon) }
        arena.append(&text, parameter)
        recordRouteParameters = arena.end(text)
    }
}

nonisolated(unsafe) private let semicolon = permanentBytes(";")
