"""Reliability: what a shard does with input it cannot relay as it stands, and how it stops.

Oversized requests are answered 513 instead of being dropped at each retransmission, and no path that takes a
send slot forgets it: after hundreds of them the shard still answers, its counters show no slot in use, and
SIGTERM stops it at once.
"""

import signal
import socket
import time

import harness as h
from conftest import response_to, start_script

SCRIPT = """
# Hundreds of oversized requests in a burst would overload a slow (sanitizer) build, and its 503s are not what
# this file tests.
overload_threshold = 0
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "Alive");
        exit;
    }
    if (!t_relay("udp:127.0.0.1:@UAS@")) {
        sl_send_reply(500, "Not Relayed");
    }
}
"""


def request(method: str, port: int, me: int, n: int, padding: int = 0) -> bytes:
    pad = f"X-Padding: {'p' * padding}\r\n" if padding else ""
    return (f"{method} sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-rel-{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:a@127.0.0.1>;tag=r{n}\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: rel-{n}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n{pad}Content-Length: 0\r\n\r\n").encode()


def final(sock: socket.socket, n: int, timeout: float = 3) -> str:
    """The first final response for call `n` (a retransmission's second answer to an earlier call is skipped)."""
    end = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, end - time.monotonic()))
        text = sock.recv(65536).decode(errors="replace")
        if not text.startswith("SIP/2.0 1") and f"Call-ID: rel-{n}@" in text:
            return text


def send_slots(proc) -> int:
    before = len(proc.stdout().splitlines())
    proc.signal(signal.SIGUSR1)
    assert h.wait_until(lambda: "send_slots=" in "\n".join(proc.stdout().splitlines()[before:]), 5), proc.stdout()
    line = [x for x in proc.stdout().splitlines()[before:] if "send_slots=" in x][-1]
    return int(line.split("send_slots=")[1].split()[0])


def test_oversized_requests_are_answered_513_and_the_shard_keeps_its_send_slots_and_stops_at_once(
        procs, ringsipd, tmp_path):
    port, uas = h.free_udp_ports(2)
    script = tmp_path / "reliability.cfg"
    script.write_text(SCRIPT.replace("@UAS@", str(uas)))
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        # ~9,050 bytes: received whole (9,216-byte buffers), too large to forward (9,000-byte sends) once our Via
        # is added. More of them than a shard has send slots (2,048), each sent twice (a retransmission).
        for n in range(2200):
            big = request("INVITE", port, me, n, padding=8800)
            caller.sendto(big, (h.LOOPBACK, port))
            if n % 2:
                caller.sendto(big, (h.LOOPBACK, port))
            assert final(caller, n).startswith("SIP/2.0 513 Message Too Large\r\n"), n
            if n % 200 == 0:
                caller.sendto(request("OPTIONS", port, me, 100_000 + n), (h.LOOPBACK, port))
                assert final(caller, 100_000 + n).startswith("SIP/2.0 200 Alive\r\n"), n
        caller.sendto(request("OPTIONS", port, me, 99_999), (h.LOOPBACK, port))
        assert final(caller, 99_999).startswith("SIP/2.0 200 Alive\r\n")
    assert h.wait_until(lambda: send_slots(proc) == 0, 5)
    started = time.monotonic()
    rc = procs.stop(proc, sig=signal.SIGTERM, grace=10)
    assert rc == 0 and time.monotonic() - started < 3, (rc, time.monotonic() - started, proc.stderr()[-1000:])


NAT_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {
    force_rport();
    if (is_method("OPTIONS")) {
        sl_send_reply(404, "Stateless Answer");
        exit;
    }
    if (is_method("MESSAGE")) {
        t_reply(299, "Stateful Answer");
        exit;
    }
    t_relay("udp:127.0.0.1:@UAS@");
}
"""


def nat_request(method: str, port: int, n: int) -> bytes:
    """A phone behind NAT: its Via names a private address and port 5060, without rport."""
    return (f"{method} sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK-nat-{n}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:a@192.0.2.99>;tag=n{n}\r\nTo: <sip:svc@127.0.0.1>\r\nCall-ID: nat-{n}@192.0.2.99\r\n"
            f"CSeq: 1 {method}\r\nContact: <sip:a@192.0.2.99:5060>\r\nContent-Length: 0\r\n\r\n").encode()


def test_force_rport_sends_every_answer_to_the_source_port_with_rport_and_received(procs, ringsipd, tmp_path):
    port, uas_port = h.free_udp_ports(2)
    script = tmp_path / "nat.cfg"
    script.write_text(NAT_SCRIPT.replace("@UAS@", str(uas_port)))
    start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas:
        phone.bind((h.LOOPBACK, 0))
        uas.bind((h.LOOPBACK, uas_port))
        me = phone.getsockname()[1]
        phone.settimeout(3)
        uas.settimeout(3)

        def via(n: int) -> str:
            return f"Via: SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bK-nat-{n};received=127.0.0.1;rport={me}\r\n"

        # sl_send_reply: stateless, to the source port.
        phone.sendto(nat_request("OPTIONS", port, 1), (h.LOOPBACK, port))
        reply = phone.recv(65536).decode()
        assert reply.startswith("SIP/2.0 404 Stateless Answer\r\n") and via(1) in reply, reply

        # t_reply: the transaction's own answer.
        phone.sendto(nat_request("MESSAGE", port, 2), (h.LOOPBACK, port))
        reply = phone.recv(65536).decode()
        assert reply.startswith("SIP/2.0 299 Stateful Answer\r\n") and via(2) in reply, reply

        # t_relay: the 100 Trying, and the callee's answer relayed back, both to the source port.
        phone.sendto(nat_request("INVITE", port, 3), (h.LOOPBACK, port))
        trying = phone.recv(65536).decode()
        assert trying.startswith("SIP/2.0 100 Trying\r\n") and via(3) in trying, trying
        forwarded = uas.recv(65536).decode()
        assert via(3) in forwarded, forwarded
        uas.sendto(response_to(forwarded, "486 Busy Here", "callee").encode(), (h.LOOPBACK, port))
        busy = phone.recv(65536).decode()
        assert busy.startswith("SIP/2.0 486 Busy Here\r\n") and via(3) in busy, busy


def test_record_route_goes_below_the_via_rows_and_above_the_received_record_routes(procs, ringsipd, tmp_path):
    port, uas_port = h.free_udp_ports(2)
    script = tmp_path / "rr.cfg"
    script.write_text(f"""
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sl.so"
route {{
    record_route();
    t_relay("udp:127.0.0.1:{uas_port}");
}}
""")
    start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas:
        caller.bind((h.LOOPBACK, 0))
        uas.bind((h.LOOPBACK, uas_port))
        uas.settimeout(3)
        me = caller.getsockname()[1]
        caller.sendto((f"INVITE sip:bob@127.0.0.1:{uas_port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-rr-1;rport\r\n"
                       "Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK-upstream\r\n"
                       "Record-Route: <sip:192.0.2.50;lr>\r\nMax-Forwards: 70\r\n"
                       "From: <sip:a@127.0.0.1>;tag=rr1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: rr-1@127.0.0.1\r\n"
                       "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        lines = uas.recv(65536).decode().split("\r\n")
    vias = [i for i, line in enumerate(lines) if line.startswith("Via:")]
    routes = [i for i, line in enumerate(lines) if line.startswith("Record-Route:")]
    assert len(vias) == 3 and vias == list(range(vias[0], vias[0] + 3)), lines
    assert routes == [vias[-1] + 1, vias[-1] + 2], lines
    assert lines[routes[0]] == f"Record-Route: <sip:127.0.0.1:{port};lr>", lines
    assert lines[routes[1]] == "Record-Route: <sip:192.0.2.50;lr>", lines


def test_a_second_daemon_on_the_same_address_refuses_to_start_and_the_first_keeps_serving(procs, ringsipd, tmp_path):
    import subprocess
    port, uas_port = h.free_udp_ports(2)
    script = tmp_path / "first.cfg"
    script.write_text(SCRIPT.replace("@UAS@", str(uas_port)))
    start_script(procs, ringsipd, script, port)
    second = subprocess.run([str(ringsipd), "-f", str(script), "--listen", f"udp:127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, (second.returncode, second.stderr)
    assert f"cannot listen on udp:127.0.0.1:{port}: another process is listening there" in lines[0], lines
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        for n in range(20):
            caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 200_000 + n), (h.LOOPBACK, port))
            assert final(caller, 200_000 + n).startswith("SIP/2.0 200 Alive\r\n"), n


def test_a_reply_code_made_at_run_time_that_is_no_status_is_logged_and_answered_500(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "code.cfg"
    script.write_text("""
loadmodule "sl.so"
loadmodule "sipmsgops.so"
route {
    sl_send_reply($hdr(X-Code), "As Asked");
}
""")
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        for n, code in enumerate(["9999999999999999999", "42", "486"]):
            caller.sendto(request("OPTIONS", port, me, 300_000 + n).replace(
                b"Content-Length", f"X-Code: {code}\r\nContent-Length".encode()), (h.LOOPBACK, port))
            reply = final(caller, 300_000 + n)
            want = "SIP/2.0 486 As Asked\r\n" if code == "486" else "SIP/2.0 500 Server Internal Error\r\n"
            assert reply.startswith(want), (code, reply)
    assert h.wait_until(lambda: proc.stderr().count("sl_send_reply: the reply code is not a number from 100 to 699; "
                                                    "answering 500 instead") == 2, 3), proc.stderr()


def test_a_request_too_large_to_forward_statelessly_is_answered_513(procs, ringsipd, tmp_path):
    port, uas = h.free_udp_ports(2)
    script = tmp_path / "stateless.cfg"
    script.write_text(f"""
loadmodule "sl.so"
route {{
    if (!forward("udp:127.0.0.1:{uas}")) {{
        sl_send_reply(500, "Not Forwarded");
    }}
}}
""")
    start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        caller.sendto(request("INVITE", port, me, 400_000, padding=8800), (h.LOOPBACK, port))
        assert final(caller, 400_000).startswith("SIP/2.0 513 Message Too Large\r\n")
        # Exactly one answer: the script's fallback did not send a second.
        caller.settimeout(0.5)
        try:
            extra = caller.recv(65536).decode(errors="replace")
        except socket.timeout:
            extra = ""
        assert extra == "", extra


def test_datagrams_larger_than_a_receive_buffer_are_answered_513_not_lost(procs, ringsipd, tmp_path):
    port, uas = h.free_udp_ports(2)
    script = tmp_path / "reliability.cfg"
    script.write_text(SCRIPT.replace("@UAS@", str(uas)))
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        caller.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        caller.bind((h.LOOPBACK, 0))
        callee.bind((h.LOOPBACK, uas))
        me = caller.getsockname()[1]
        # Receive buffers are 9,216 bytes: these arrive cut short. A padding header longer than a buffer (the
        # header section itself arrives incomplete), and a body longer than one (the headers arrive whole).
        for n, size in enumerate([12_000, 30_000, 65_000]):
            caller.sendto(request("INVITE", port, me, 500_000 + n, padding=size), (h.LOOPBACK, port))
            assert final(caller, 500_000 + n).startswith("SIP/2.0 513 Message Too Large\r\n"), size
        body = "v=0\r\n" + "a=x\r\n" * 4000
        big = request("INVITE", port, me, 500_010).decode().replace(
            "Content-Length: 0\r\n\r\n", f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}")
        caller.sendto(big.encode(), (h.LOOPBACK, port))
        assert final(caller, 500_010).startswith("SIP/2.0 513 Message Too Large\r\n")
        # An ACK cannot be answered, nor can a response: both are dropped, and counted.
        caller.sendto(request("ACK", port, me, 500_020, padding=20_000), (h.LOOPBACK, port))
        caller.sendto(("SIP/2.0 200 OK\r\n" + "X-Big: " + "b" * 20_000 + "\r\n\r\n").encode(), (h.LOOPBACK, port))
        caller.sendto(request("OPTIONS", port, me, 500_030), (h.LOOPBACK, port))
        assert final(caller, 500_030).startswith("SIP/2.0 200 Alive\r\n")
        callee.settimeout(0.3)
        try:
            leaked = callee.recv(65536).decode(errors="replace")
        except socket.timeout:
            leaked = ""
        assert leaked == "", f"part of an oversized datagram was relayed: {leaked[:200]!r}"
    before = len(proc.stdout().splitlines())
    proc.signal(signal.SIGUSR1)
    assert h.wait_until(lambda: "oversized=" in "\n".join(proc.stdout().splitlines()[before:]), 5)
    line = [x for x in proc.stdout().splitlines()[before:] if "oversized=" in x][-1]
    assert "oversized=6" in line, line
