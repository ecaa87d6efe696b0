import SIP

enum ParseBenchmarks {
    /// Parse + validate + the values a stateless proxy reads (top Via, Max-Forwards, CSeq, Call-ID).
    static func run(iterations: Int) -> [Measurement] {
        let message = SIPMessage()
        var sink = 0
        var results: [Measurement] = []
        for (name, text) in [("parse INVITE", SampleMessages.invite), ("parse 200 OK", SampleMessages.ok)] {
            let bytes = Array(text.utf8)
            results.append(bytes.withUnsafeBytes { buffer in
                measure(name, iterations: iterations) {
                    do {
                        try message.parse(buffer)
                        try message.validate()
                    } catch {
                        fatalError("sample message does not parse: \(error)")
                    }
                    sink &+= Int(message.topVia?.branch.count ?? 0) &+ (message.maxForwards ?? 0)
                        &+ Int(message.cseq?.number ?? 0) &+ (message.callID?.count ?? 0)
                }
            })
        }
        if sink == 42 { print("") }
        return results
    }
}
