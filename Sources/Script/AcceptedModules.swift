/// Modules real scripts load for services ringsip provides another way or does not have yet. Loading one is a
/// warning naming it, and so is each of its parameters, so an OpenSIPS script checks without edits and its
/// author sees what is not in effect.
enum AcceptedModules {
    static let managementReason = "ringsip has no management interface yet (send SIGUSR1 for the counters)"

    static var modules: [ScriptModule] {
        var list = ["mi_fifo", "mi_http", "mi_datagram", "mi_xmlrpc", "mi_json", "mi_html", "mi_script", "httpd"].map {
            ScriptModule.acceptedOnly($0, managementReason)
        }
        list.append(ScriptModule(name: "proto_udp", parameters: [
            .ignored("udp_port", "a socket without a port uses the 'port' global (5060 by default)"),
            .ignored("udp_send_timeout", "sends go through the ring and never block"),
            .ignored("udp_max_msg_chunks", "ringsip does not fragment"),
        ]))
        list.append(ScriptModule(name: "proto_tcp", parameters: [
            .ignored("tcp_port", "a socket without a port uses the 'port' global (5060 by default)"),
            // ms: how long a write may wait for a peer that does not read before the connection is closed.
            ModuleParameterDeclaration("tcp_send_timeout", .integer, range: 1...600_000, unit: "ms"),
            .ignored("tcp_max_msg_chunks", "a message may arrive in any number of reads within tcp_max_msg_time"),
            .ignored("tcp_crlf_pingpong", "a CRLF CRLF ping is always answered with a CRLF pong"),
            .ignored("tcp_crlf_drop", "CRLFs between messages are always dropped"),
            .ignored("tcp_async", "connects and writes are always asynchronous (on the ring)"),
            .ignored("tcp_async_max_postponed_chunks", "a connection's queue holds up to 256 messages"),
            .ignored("tcp_async_local_connect_timeout", "see the tcp_connect_timeout global"),
            .ignored("tcp_async_local_write_timeout", "writes never block a shard"),
        ]))
        list.append(.acceptedOnly("statistics", "ringsip's counters are printed on SIGUSR1 and at exit"))
        list.append(.acceptedOnly("db_mysql_ext", "db_mysql is built in"))
        return list
    }
}
