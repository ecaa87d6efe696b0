"""OpenSIPS' nathelper (signalling): nat_uac_test's checks on the Contact, Via and source; a phone whose Contact
is a private address registers with fix_nated_register, and a call to it goes to where its REGISTER came from
(the received address the registrar kept) with the Contact as Request-URI; a NATed caller's Contact is rewritten
with fix_nated_contact, or marked with add_rcv_param.
"""

import socket
import time

import harness as h
from conftest import recv_until, start_script
from test_async import final_reply
from test_registrar import contacts, phone, register

SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "nathelper.so"
modparam("nathelper", "received_avp", "$avp(rcv)")
modparam("registrar", "received_avp", "$avp(rcv)")
modparam("nathelper", "natping_interval", 30)
route {
    if (is_method("OPTIONS")) {
        $var(t) = "";
        if (nat_uac_test(1)) $var(t) = $var(t) + "1";
        if (nat_uac_test(2)) $var(t) = $var(t) + "2";
        if (nat_uac_test(4)) $var(t) = $var(t) + "4";
        if (nat_uac_test(16)) $var(t) = $var(t) + "16";
        if (nat_uac_test(64)) $var(t) = $var(t) + "64";
        sl_send_reply(299, "nat=$var(t)");
        exit;
    }
    if (is_method("REGISTER")) {
        if (nat_uac_test(1)) fix_nated_register();
        save("location");
        exit;
    }
    if (has_totag()) { t_relay(); exit; }
    if (is_method("MESSAGE")) add_rcv_param();
    else if (nat_uac_test(1)) fix_nated_contact();
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    t_relay();
}
"""


def daemon(procs, ringsipd, tmp_path) -> int:
    script = tmp_path / "nat.cfg"
    script.write_text(SCRIPT)
    port = h.free_udp_ports(1)[0]
    start_script(procs, ringsipd, script, port, shards=2)
    return port


def flags_seen(port: int, via_host: str, via_port: int | None, contact: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((h.LOOPBACK, 0))
        me = s.getsockname()[1]
        sent_by = via_host + (f":{via_port if via_port is not None else me}")
        s.sendto((f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {sent_by};branch=z9hG4bK-n{me};rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=t\r\nTo: <sip:example.com>\r\nCall-ID: nat-{me}\r\n"
                  f"CSeq: 1 OPTIONS\r\nContact: {contact.replace('ME', str(me))}\r\nContent-Length: 0\r\n\r\n").encode(),
                 (h.LOOPBACK, port))
        return final_reply(s, 3)[0].split("\r\n", 1)[0]


def test_nat_uac_test_flags(procs, ringsipd, tmp_path):
    port = daemon(procs, ringsipd, tmp_path)
    # Nothing looks NATed: the Via and Contact are the source address and port.
    assert flags_seen(port, "127.0.0.1", None, "<sip:t@127.0.0.1:ME>") == "SIP/2.0 299 nat="
    # A private Contact and Via, at another port than the source's.
    assert flags_seen(port, "192.168.1.20", 5060, "<sip:t@10.0.0.7:5060>") == "SIP/2.0 299 nat=1241664"
    # Carrier-grade NAT space (RFC 6598) is private too; a public-looking Contact elsewhere only differs (64).
    assert flags_seen(port, "100.64.3.4", None, "<sip:t@100.64.3.4:5060>") == "SIP/2.0 299 nat=12464"
    assert flags_seen(port, "127.0.0.1", None, "<sip:t@203.0.113.9:5060>") == "SIP/2.0 299 nat=64"


def test_a_natted_phone_is_reached_where_its_register_came_from(procs, ringsipd, tmp_path):
    port = daemon(procs, ringsipd, tmp_path)
    natted, direct = phone(), phone()
    ok = register(port, natted, "nina", "<sip:nina@10.1.2.3:5060>")
    assert contacts(ok) == ["<sip:nina@10.1.2.3:5060>;expires=3600"], ok
    direct_uri = f"sip:dan@127.0.0.1:{direct.getsockname()[1]}"
    assert register(port, direct, "dan", f"<{direct_uri}>").startswith("SIP/2.0 200")
    with phone() as caller:
        me = caller.getsockname()[1]
        caller.sendto((f"INVITE sip:nina@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.168.7.7:5062;branch=z9hG4bK-c{me};rport\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:carl@example.com>;tag=c\r\nTo: <sip:nina@example.com>\r\n"
                       f"Call-ID: nat-call-{me}\r\nCSeq: 1 INVITE\r\nContact: \"Carl\" <sip:carl@192.168.7.7:5062;ob>\r\n"
                       "Content-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        # Sent to the socket the REGISTER came from, with the phone's own Contact as Request-URI.
        received = recv_until(natted, "INVITE", 3)
        assert received.startswith("INVITE sip:nina@10.1.2.3:5060 SIP/2.0"), received
        # The caller's private Contact now names where the caller really is; its display name and params stay.
        assert f'Contact: "Carl" <sip:carl@127.0.0.1:{me};ob>' in received, received
        assert "192.168.7.7:5062;ob" not in received
    with phone() as caller:
        caller.sendto((f"INVITE sip:dan@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{caller.getsockname()[1]};branch=z9hG4bK-d\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:carl@example.com>;tag=d\r\nTo: <sip:dan@example.com>\r\n"
                       f"Call-ID: direct-call\r\nCSeq: 1 INVITE\r\nContact: <sip:carl@127.0.0.1:{caller.getsockname()[1]}>\r\n"
                       "Content-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        assert recv_until(direct, "INVITE", 3).startswith(f"INVITE {direct_uri} SIP/2.0")
    # add_rcv_param keeps the Contact and says where the request came from.
    with phone() as sender:
        me = sender.getsockname()[1]
        sender.sendto((f"MESSAGE sip:dan@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-m\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:carl@example.com>;tag=m\r\nTo: <sip:dan@example.com>\r\n"
                       f"Call-ID: message-{me}\r\nCSeq: 1 MESSAGE\r\nContact: <sip:carl@10.0.0.8:5060>;expires=60\r\n"
                       "Content-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        message = recv_until(direct, "MESSAGE", 3)
        assert f'Contact: <sip:carl@10.0.0.8:5060>;expires=60;received="sip:127.0.0.1:{me}"' in message, message


PING_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "nathelper.so"
modparam("nathelper", "received_avp", "$avp(rcv)")
modparam("registrar", "received_avp", "$avp(rcv)")
modparam("nathelper", "natping_interval", 1)
modparam("nathelper", "ping_nated_only", 1)
modparam("nathelper", "sipping_bflag", "7")
modparam("nathelper", "sipping_from", "sip:keepalive@example.com")
route {
    if (is_method("REGISTER")) {
        if (nat_uac_test(1)) {
            fix_nated_register();
            if ($hdr(X-Sip-Ping) == "yes") setbflag(7);
        }
        save("location");
        exit;
    }
    sl_send_reply(403, "Forbidden");
}
"""


def test_keepalive_pings_reach_natted_bindings_only(procs, ringsipd, tmp_path):
    script = tmp_path / "ping.cfg"
    script.write_text(PING_SCRIPT)
    port = h.free_udp_ports(1)[0]
    start_script(procs, ringsipd, script, port, shards=2)
    crlf, options, direct = phone(), phone(), phone()
    assert register(port, crlf, "crlf", "<sip:crlf@10.0.0.1:5060>").startswith("SIP/2.0 200")
    assert register(port, options, "opt", "<sip:opt@10.0.0.2:5060>", headers="X-Sip-Ping: yes\r\n").startswith("SIP/2.0 200")
    assert register(port, direct, "direct", f"<sip:direct@127.0.0.1:{direct.getsockname()[1]}>").startswith("SIP/2.0 200")
    # natping_interval is 1 s: within ~2 s each NATed binding is pinged where its REGISTER came from.
    crlf.settimeout(3)
    assert crlf.recv(100) == b"\r\n\r\n"
    ping = recv_until(options, "OPTIONS", 3)
    assert ping.startswith("OPTIONS sip:opt@10.0.0.2:5060 SIP/2.0"), ping
    assert "From: <sip:keepalive@example.com>;tag=" in ping and "CSeq: 1 OPTIONS" in ping
    # Its answer is taken by the proxy, not routed (the script would answer anything routed with 403).
    via = next(l for l in ping.split("\r\n") if l.startswith("Via:"))
    lines = [l for l in ping.split("\r\n") if l.split(":", 1)[0] in ("From", "To", "Call-ID", "CSeq")]
    options.sendto(("SIP/2.0 200 OK\r\n" + via + "\r\n" + "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                   (h.LOOPBACK, port))
    # ping_nated_only: the binding registered without NAT is never pinged.
    direct.settimeout(2.5)
    try:
        unexpected = direct.recv(100)
    except socket.timeout:
        unexpected = b""
    assert unexpected == b"", unexpected
