"""Real phones through ringsip as registrar and proxy: two baresip instances register their AORs, then call each
other by AOR — INVITE, 180/200, ACK, BYE end to end — and a call to a phone that declines ends busy for the caller.
The same over TCP (both phones register and call over TCP connections to ringsip), and between a phone on TCP and
one on UDP.
"""

import pytest

import harness as h
from baresip import Phone, available
from conftest import missing, start_script

SCRIPT = """
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
route {
    if (has_totag()) {
        if (loose_route()) { t_relay(); exit; }
        t_relay();
        exit;
    }
    # The phones preload a Route to us (their outbound proxy): removed, and not taken as a route set.
    if (loose_route()) { sl_send_reply(403, "Preload Route denied"); exit; }
    if (is_method("REGISTER")) { save("location"); exit; }
    if (is_method("INVITE")) record_route();
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    t_relay();
}
"""


@pytest.fixture
def proxy(procs, ringsipd, tmp_path):
    if not available():
        missing("baresip with its ctrl_tcp module is not installed (make test-deps)")
    script = tmp_path / "phones.cfg"
    script.write_text(SCRIPT)
    port = h.free_udp_ports(1)[0]
    start_script(procs, ringsipd, script, port, shards=2)
    return port


def test_two_baresip_phones_register_and_call_each_other_by_aor(procs, proxy, tmp_path):
    alice = Phone(procs, tmp_path / "alice", "alice", proxy)
    bob = Phone(procs, tmp_path / "bob", "bob", proxy)
    alice.wait_registered()
    bob.wait_registered()
    alice.command("dial", "sip:bob@example.com")
    # Bob answers at once (answermode auto): the call is up at both ends, each seeing the other's AOR.
    assert bob.wait_event("CALL_ESTABLISHED")["peeruri"] == "sip:alice@example.com"
    assert alice.wait_event("CALL_ESTABLISHED")["peeruri"] == "sip:bob@example.com"
    alice.command("hangup")
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")
    # And back the other way.
    bob.command("dial", "sip:alice@example.com")
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")
    bob.command("hangup")
    alice.wait_event("CALL_CLOSED")


def test_a_declined_call_ends_busy_and_an_unknown_aor_is_not_found(procs, proxy, tmp_path):
    alice = Phone(procs, tmp_path / "alice", "alice", proxy)
    carol = Phone(procs, tmp_path / "carol", "carol", proxy, answer="manual")
    alice.wait_registered()
    carol.wait_registered()
    alice.command("dial", "sip:carol@example.com")
    carol.wait_event("CALL_INCOMING")
    alice.wait_event("CALL_RINGING")
    carol.command("hangup")  # declines the ringing call: 486 Busy Here
    closed = alice.wait_event("CALL_CLOSED")
    assert "486" in closed.get("param", ""), closed
    alice.command("dial", "sip:nobody@example.com")
    closed = alice.wait_event("CALL_CLOSED")
    assert "404" in closed.get("param", ""), closed


@pytest.fixture
def tcp_proxy(procs, ringsipd, tmp_path):
    """The same script on UDP and TCP at one port, two shards."""
    if not available():
        missing("baresip with its ctrl_tcp module is not installed (make test-deps)")
    script = tmp_path / "phones.cfg"
    script.write_text('loadmodule "proto_tcp.so"\n' + SCRIPT)
    port = h.free_udp_tcp_port()
    proc = procs.start("ringsipd", [ringsipd, "-f", script, "--shards", "2", "--listen", f"udp:{h.LOOPBACK}:{port}",
                                    "--listen", f"tcp:{h.LOOPBACK}:{port}"])
    ok = h.wait_until(lambda: (h.udp_port_bound(port) and h.tcp_port_listening(port)) or not proc.alive(), 10)
    assert ok and proc.alive(), proc.stderr()[-1500:]
    return port, proc


def test_phones_register_and_call_over_tcp(procs, tcp_proxy, tmp_path):
    port, daemon = tcp_proxy
    alice = Phone(procs, tmp_path / "alice", "alice", port, transport="tcp")
    bob = Phone(procs, tmp_path / "bob", "bob", port, transport="tcp")
    alice.wait_registered()
    bob.wait_registered()
    alice.command("dial", "sip:bob@example.com")
    assert bob.wait_event("CALL_ESTABLISHED")["peeruri"] == "sip:alice@example.com"
    assert alice.wait_event("CALL_ESTABLISHED")["peeruri"] == "sip:bob@example.com"
    alice.command("hangup")
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")
    rows = h.signal_counters(daemon, shards=2) or []
    assert sum(r.get("tcp_accepted", 0) for r in rows) >= 2, rows


def test_a_phone_on_tcp_calls_a_phone_on_udp_and_back(procs, tcp_proxy, tmp_path):
    port, _ = tcp_proxy
    alice = Phone(procs, tmp_path / "alice", "alice", port, transport="tcp")
    bob = Phone(procs, tmp_path / "bob", "bob", port)
    alice.wait_registered()
    bob.wait_registered()
    alice.command("dial", "sip:bob@example.com")
    bob.wait_event("CALL_ESTABLISHED")
    alice.wait_event("CALL_ESTABLISHED")
    bob.command("hangup")  # the callee hangs up: its BYE follows the Record-Route back to a TCP caller
    alice.wait_event("CALL_CLOSED")
    bob.wait_event("CALL_CLOSED")
    bob.command("dial", "sip:alice@example.com")
    alice.wait_event("CALL_ESTABLISHED")
    bob.wait_event("CALL_ESTABLISHED")
    alice.command("hangup")
    bob.wait_event("CALL_CLOSED")
    alice.wait_event("CALL_CLOSED")
