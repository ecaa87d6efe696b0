import Engine

extension ScriptProgram {
    /// The script `--forward` stands for: what the stateless relay did before scripts existed, so there is
    /// one implementation behind both (RFC 3261 §16.11: Max-Forwards checked, our Route popped, forwarded).
    public static func forwardingScript(to next: SocketAddress) -> String {
        """
        loadmodule "sl.so"
        loadmodule "maxfwd.so"
        loadmodule "rr.so"
        route {
            if (!mf_process_maxfwd_header(70)) {
                sl_send_reply(483, "Too Many Hops");
                exit;
            }
            loose_route();
            forward("udp:\(next)");
        }
        """
    }
}
