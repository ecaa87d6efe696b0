"""OpenSIPS' registrar and usrloc: save() answers a REGISTER with every current binding, lookup() turns a call
for an address-of-record into a call to its bindings (forking to all of them, highest q first), and the
location table is the same on every shard:

- sipp registers 300 users and then calls each of them through a two-shard daemon: every call reaches the
  UAS the user registered, whichever shard the REGISTER and the INVITE arrived on;
- two phones registered for one AOR both ring; the 200 to a REGISTER lists both with their q and expiry;
- the rules of RFC 3261 §10.3: `*` only with Expires: 0, an old CSeq refused, max_contacts, expiry;
- Path (RFC 3327): the call goes to the first Path hop with the Path as its Route set.
"""

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import harness as h
from conftest import describe, recv_until, start_script
from test_async import final_reply

SCENARIOS = Path(__file__).parent / "scenarios" / "registrar"

SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "timer_interval", 1)
modparam("registrar", "max_contacts", 3)
modparam("registrar", "min_expires", 1)
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 1)
route {
    if (is_method("REGISTER")) {
        if (!save("location")) xlog("L_NOTICE", "save of $tu refused\\n");
        exit;
    }
    if (has_totag()) { t_relay(); exit; }
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    t_relay();
}
"""


def daemon(procs, ringsipd, tmp_path, shards: int = 1) -> tuple[h.Proc, int]:
    script = tmp_path / "registrar.cfg"
    script.write_text(SCRIPT)
    port = h.free_udp_ports(1)[0]
    return start_script(procs, ringsipd, script, port, shards=shards), port


def phone() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h.LOOPBACK, 0))
    return s


def register(port: int, sock: socket.socket, user: str, contact: str, cseq: int = 1, call_id: str = "",
             headers: str = "") -> str:
    """Sends a REGISTER for user@example.com from `sock`; returns its final answer."""
    me = sock.getsockname()[1]
    call_id = call_id or f"reg-{user}-{me}"
    contact_line = f"Contact: {contact}\r\n" if contact else ""
    request = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-r{me}-{cseq}-{time.time_ns()}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=r{cseq}\r\nTo: <sip:{user}@example.com>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{contact_line}{headers}Content-Length: 0\r\n\r\n")
    sock.sendto(request.encode(), (h.LOOPBACK, port))
    reply, _ = final_reply(sock, 3)
    return reply


def invite(port: int, sock: socket.socket, user: str, n: int = 1) -> None:
    me = sock.getsockname()[1]
    request = (f"INVITE sip:{user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-i{me}-{n}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=c{n}\r\nTo: <sip:{user}@example.com>\r\n"
               f"Call-ID: call-{user}-{me}-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{me}>\r\n"
               "Content-Length: 0\r\n\r\n")
    sock.sendto(request.encode(), (h.LOOPBACK, port))


def contacts(reply: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in reply.split("\r\n") if line.lower().startswith("contact:")]


def counters_at_exit(procs, proc: h.Proc) -> list[dict]:
    """Each shard's counters as printed at exit, in shard order."""
    procs.stop(proc)
    lines = [l for l in proc.stdout().splitlines() if re.match(r"shard \d+: ", l)]
    return [{k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)} for line in lines]


def test_sipp_registers_300_users_then_calls_each_through_two_shards(procs, ringsipd, sipp, tmp_path):
    uas_port = h.free_udp_ports(1)[0]
    h.start_uas(procs, uas_port)
    proc, port = daemon(procs, ringsipd, tmp_path, shards=2)
    key = ["-key", "uas_port", str(uas_port)]
    registered = h.run_uacs(procs, port, rate=150, calls=300, tag="reg", scenario=SCENARIOS / "register.xml", extra=key)
    assert registered.successful == 300, describe(registered)
    called = h.run_uacs(procs, port, rate=100, calls=300, tag="call", scenario=SCENARIOS / "invite-registered.xml",
                        extra=key)
    assert called.successful == 300, describe(called)
    shards = counters_at_exit(procs, proc)
    # Every shard holds every binding, whichever shard each REGISTER arrived on.
    assert [row["registrations"] for row in shards] == [300, 300], shards
    assert all(row["mail_backlogged"] == 0 for row in shards), shards


def test_two_phones_of_one_user_both_ring_and_the_200_lists_both(procs, ringsipd, tmp_path):
    _, port = daemon(procs, ringsipd, tmp_path, shards=2)
    desk, mobile, caller = phone(), phone(), phone()
    desk_uri = f"sip:alice@127.0.0.1:{desk.getsockname()[1]}"
    mobile_uri = f"sip:alice@127.0.0.1:{mobile.getsockname()[1]}"
    first = register(port, desk, "alice", f"<{desk_uri}>;q=1.0", headers="Expires: 300\r\n")
    assert first.startswith("SIP/2.0 200 OK"), first
    assert contacts(first) == [f"<{desk_uri}>;expires=300;q=1"]
    second = register(port, mobile, "alice", f"<{mobile_uri}>;q=0.5;expires=120")
    assert second.startswith("SIP/2.0 200 OK"), second
    assert contacts(second) == [f"<{desk_uri}>;expires=300;q=1", f"<{mobile_uri}>;expires=120;q=0.5"]
    # A REGISTER without Contact asks for the bindings and changes nothing.
    assert contacts(register(port, desk, "alice", "", cseq=2)) == contacts(second)
    # From several source ports, so the calls arrive on both shards.
    for n in range(4):
        with phone() as caller:
            invite(port, caller, "alice", n)
            assert recv_until(desk, "INVITE", 3).startswith(f"INVITE {desk_uri} SIP/2.0")
            assert recv_until(mobile, "INVITE", 3).startswith(f"INVITE {mobile_uri} SIP/2.0")
    with phone() as caller:
        invite(port, caller, "bob")
        assert final_reply(caller, 3)[0].startswith("SIP/2.0 404")


def test_the_binding_rules_of_rfc3261_section_10_3(procs, ringsipd, tmp_path):
    _, port = daemon(procs, ringsipd, tmp_path)
    ua = phone()
    me = ua.getsockname()[1]
    assert register(port, ua, "carol", "*").startswith("SIP/2.0 400")  # * needs Expires: 0
    assert register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>, *", headers="Expires: 0\r\n").startswith("SIP/2.0 400")
    assert register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>;q=2").startswith("SIP/2.0 400")
    assert register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>", cseq=5).startswith("SIP/2.0 200")
    # The same binding from the same Call-ID with an older CSeq is out of order; the same CSeq is the REGISTER
    # retransmitted after its 200 was lost: answered 200 again, changing nothing.
    assert register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>", cseq=4).startswith("SIP/2.0 400 Invalid CSeq")
    assert register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>;expires=0", cseq=5).startswith("SIP/2.0 200")
    assert len(contacts(register(port, ua, "carol", "", cseq=5))) == 1
    assert len(contacts(register(port, ua, "carol", f"<sip:c2@127.0.0.1:{me}>, <sip:c3@127.0.0.1:{me}>", cseq=6))) == 3
    too_many = register(port, ua, "carol", f"<sip:c4@127.0.0.1:{me}>", cseq=7)
    assert too_many.startswith("SIP/2.0 503 Too Many Registered Contacts"), too_many
    # Expires 0 on one Contact removes that one; `*` with Expires: 0 removes the rest.
    assert len(contacts(register(port, ua, "carol", f"<sip:c1@127.0.0.1:{me}>;expires=0", cseq=8))) == 2
    assert contacts(register(port, ua, "carol", "*", cseq=9, headers="Expires: 0\r\n")) == []
    with phone() as caller:
        invite(port, caller, "carol")
        assert final_reply(caller, 3)[0].startswith("SIP/2.0 404")
    # A binding lapses at its expiry (min_expires is 1 here).
    assert contacts(register(port, ua, "dave", f"<sip:d@127.0.0.1:{me}>;expires=1")) == [f"<sip:d@127.0.0.1:{me}>;expires=1"]
    time.sleep(1.3)
    with phone() as caller:
        invite(port, caller, "dave")
        assert final_reply(caller, 3)[0].startswith("SIP/2.0 404")


def test_a_call_to_a_user_registered_through_an_edge_proxy_follows_its_path(procs, ringsipd, tmp_path):
    _, port = daemon(procs, ringsipd, tmp_path)
    edge, ua = phone(), phone()
    edge_uri = f"sip:127.0.0.1:{edge.getsockname()[1]};lr"
    contact = f"sip:erin@10.9.8.7:5060"
    ok = register(port, ua, "erin", f"<{contact}>", headers=f"Path: <{edge_uri}>\r\nSupported: path\r\n")
    # path_mode 1 (lazy): echoed because the user agent said it supports path.
    assert f"Path: <{edge_uri}>" in ok, ok
    with phone() as caller:
        invite(port, caller, "erin")
        received = recv_until(edge, "INVITE", 3)
    assert received.startswith(f"INVITE {contact} SIP/2.0"), received
    assert f"Route: <{edge_uri}>" in received, received


def test_the_check_names_what_the_registrar_needs_and_warns_of_what_it_ignores(ringsipd, tmp_path):
    script = tmp_path / "no-usrloc.cfg"
    script.write_text('loadmodule "registrar.so"\nroute {\n    save("location");\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert 'no-usrloc.cfg:3:5: error: save needs the location service: loadmodule "usrloc.so"' in done.stderr, done.stderr
    script = tmp_path / "db-mode.cfg"
    script.write_text('loadmodule "usrloc.so"\nloadmodule "registrar.so"\nmodparam("usrloc", "hash_size", 10)\n'
                      'modparam("registrar", "tcp_persistent_flag", 7)\nroute {\n    save("location", "c5");\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "parameter 'hash_size' of module 'usrloc' is accepted but has no effect" in done.stderr, done.stderr
    assert "parameter 'tcp_persistent_flag' of module 'registrar'" in done.stderr, done.stderr
    # Persistence needs a database to persist to.
    script.write_text('loadmodule "usrloc.so"\nloadmodule "registrar.so"\nmodparam("usrloc", "db_mode", 2)\n'
                      'route {\n    save("location");\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert 'db-mode.cfg:5:5: error: save needs modparam("usrloc", "db_url", "mysql://…") or db_default_url' in done.stderr, \
        done.stderr
