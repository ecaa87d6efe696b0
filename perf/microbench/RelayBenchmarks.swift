import SIP

enum RelayBenchmarks {
    /// What the stateless relay does to a message once the ring has delivered it: parse, validate, and
    /// write the forwarded copy (new Via, Max-Forwards decremented, received/rport) into a send buffer.
    static func run(iterations: Int) -> [Measurement] {
        let message = SIPMessage()
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: 9000, alignment: 64)
        defer { out.deallocate() }
        let host = Array("127.0.0.1".utf8)
        let branch = Array("z9hG4bKrs5a1c0e4fd2a36b7e".utf8)
        var sink = 0
        var results: [Measurement] = []
        let invite = Array(SampleMessages.invite.utf8)
        let ok = Array(SampleMessages.ok.utf8)
        host.withUnsafeBytes { host in
            branch.withUnsafeBytes { branch in
                invite.withUnsafeBytes { buffer in
                    results.append(measure("relay INVITE (parse+validate+build)", iterations: iterations) {
                        try! message.parse(buffer)
                        try! message.validate()
                        var options = SIPForwardingOptions()
                        options.via = .parts(transport: .udp, host: host, port: 5060, branch: branch)
                        options.rport = 5080
                        sink &+= try! message.writeForwardedRequest(into: out, options)
                    })
                }
                ok.withUnsafeBytes { buffer in
                    results.append(measure("relay 200 OK (parse+validate+build)", iterations: iterations) {
                        try! message.parse(buffer)
                        try! message.validate()
                        sink &+= try! message.writeForwardedResponse(into: out)
                    })
                }
            }
        }
        if sink == 42 { print("") }
        return results
    }
}
