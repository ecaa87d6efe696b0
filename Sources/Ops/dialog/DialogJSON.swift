/// `$DLG_json`: the dialog as one JSON object — its id, state, Call-ID, both ends' URIs and tags, when it was
/// created and answered (UNIX seconds, 0 before the answer), the seconds left before it lapses, its `$dlg_val`s and
/// its profiles.
enum DialogJSON {
    static func text(_ dialog: Dialog, id: String, remaining: Int) -> String {
        var out = "{\"id\":\(quoted(id)),\"state\":\(dialog.state.rawValue),\"callid\":\(quoted(dialog.callID)),"
        out += "\"from_uri\":\(quoted(dialog.fromURI)),\"from_tag\":\(quoted(dialog.callerTag)),"
        out += "\"to_uri\":\(quoted(dialog.toURI)),\"to_tag\":\(quoted(dialog.calleeTag)),"
        out += "\"created\":\(dialog.createdUnixMilliseconds / 1000),\"start\":\(dialog.startedUnixMilliseconds / 1000),"
        out += "\"timeout\":\(remaining),\"values\":{"
        out += dialog.values.sorted { $0.key < $1.key }.map { "\(quoted($0.key)):\(quoted($0.value))" }.joined(separator: ",")
        out += "},\"profiles\":["
        out += dialog.profiles.map { key in
            let name = DialogProfiles.name(of: key)
            let value = String(key.dropFirst(name.count + 1))
            return "{\"name\":\(quoted(name))" + (value.isEmpty ? "}" : ",\"value\":\(quoted(value))}")
        }.joined(separator: ",")
        return out + "]}"
    }

    /// A JSON string (RFC 8259 §7): quotes, backslashes and control characters escaped.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
