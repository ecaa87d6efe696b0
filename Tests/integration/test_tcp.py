"""SIP over TCP through the real daemon (RFC 3261 §18, RFC 5626 keep-alives), with sipp over TCP and raw sockets.

- calls through a stateful script: sipp UAC over TCP → ringsip → sipp UAS over TCP, on two shards; and each side
  over the other transport (UDP in, TCP out; TCP in, UDP out), with Via and Record-Route saying which;
- framing: a message split over several writes, two messages in one, a CRLF CRLF ping answered with a CRLF
  pong, a reply sent back on the connection the request came on, $proto;
- bad input, each closed and counted while the shard serves another connection: a Content-Length of 2 GB, a
  message that takes longer than tcp_max_msg_time, a connection idle past tcp_connection_lifetime, connections
  past tcp_max_connections;
- a next hop that refuses the connection: counted, and the call still ends.
"""

import socket
import time
from pathlib import Path

import harness as h
import pytest
from conftest import describe

SCRIPT = """\
listen = udp:127.0.0.1:{port}
listen = tcp:127.0.0.1:{port}
log_level = 1
{globals}
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "sipmsgops.so"
loadmodule "proto_tcp.so"
modparam("tm", "fr_inv_timeout", 3)
modparam("tm", "fr_timeout", 2)

route {{
    if (!mf_process_maxfwd_header(70)) {{
        sl_send_reply(483, "Too Many Hops");
        exit;
    }}
    if (is_method("OPTIONS")) {{
        append_to_reply("X-Proto: $proto\\r\\n");
        sl_send_reply(200, "OK");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (uri == myself) {{
            t_relay("{uas}");
        }} else {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    if (!t_relay("{uas}")) {{
        sl_send_reply(500, "Server Unreachable");
    }}
    exit;
}}
"""


def start(procs, ringsipd, uas: str, shards: int = 1, globals: str = "") -> tuple[h.Proc, int]:
    """The daemon on UDP and TCP 127.0.0.1:PORT relaying to `uas` (udp:… or tcp:…); returns it and PORT."""
    port = free_port()
    script = procs.workdir / "tcp.cfg"
    script.write_text(SCRIPT.format(port=port, uas=uas, globals=globals))
    proc = procs.start("ringsipd", [ringsipd, "-f", script, "--shards", str(shards)])
    ok = h.wait_until(lambda: (h.tcp_port_listening(port) and h.udp_port_bound(port)) or not proc.alive(), 10)
    if not ok or not proc.alive():
        pytest.fail(f"ringsipd did not start: {proc.stderr()[-1500:]}", pytrace=False)
    return proc, port


def free_port() -> int:
    return h.free_udp_tcp_port()


def totals(procs, daemon: h.Proc) -> dict:
    rc = procs.stop(daemon)
    assert rc == 0, daemon.stderr()[-2000:]
    rows = [r for r in h.counter_rows(daemon)]
    shards = {r["shard"]: r for r in rows}
    total: dict = {}
    for row in shards.values():
        for key, value in row.items():
            if key != "shard":
                total[key] = total.get(key, 0) + value
    return total


def options(call_id: str, port: int, body: str = "") -> bytes:
    return (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n"
            "From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def read_responses(sock: socket.socket, count: int, seconds: float = 5.0) -> list[str]:
    """`count` whole responses read from a stream (framed by Content-Length, which ours always carry)."""
    data = b""
    deadline = time.monotonic() + seconds
    responses: list[str] = []
    sock.settimeout(0.2)
    while len(responses) < count and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if len(rest) < length:
                break
            responses.append((head + b"\r\n\r\n" + rest[:length]).decode())
            data = rest[length:]
    return responses


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the daemon closes the connection (EOF or reset) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def connect(port: int) -> socket.socket:
    return socket.create_connection((h.LOOPBACK, port), timeout=5)


# MARK: - Calls


def test_calls_over_tcp_on_both_sides_on_two_shards(procs, ringsipd, sipp):
    uas_port = free_port()
    h.start_uas(procs, uas_port, extra=["-t", "t1"])
    daemon, port = start(procs, ringsipd, f"tcp:127.0.0.1:{uas_port}", shards=2)
    res = h.run_uacs(procs, port, rate=200, calls=600, procs=2, timeout=30, extra=["-t", "t1"])
    assert res.exit_codes == [0, 0] and res.failed == 0 and res.successful == 600, describe(res)
    assert res.retransmissions == 0, describe(res)
    # Reliable transactions end without Timers J/K/D lingering for retransmissions.
    t = totals(procs, daemon)
    assert t["tcp_accepted"] >= 2 and t["tcp_connected"] >= 1, t
    assert t["tcp_bad_closed"] == 0 and t["tcp_connect_failed"] == 0 and t["send_errors"] == 0, t


@pytest.mark.parametrize("uac, uas", [("u1", "tcp"), ("t1", "udp")])
def test_calls_cross_between_udp_and_tcp(procs, ringsipd, sipp, uac, uas):
    uas_port = free_port()
    h.start_uas(procs, uas_port, extra=["-t", "t1"] if uas == "tcp" else [])
    daemon, port = start(procs, ringsipd, f"{uas}:127.0.0.1:{uas_port}")
    res = h.run_uacs(procs, port, rate=100, calls=200, timeout=30, extra=["-t", uac])
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 200, describe(res)
    t = totals(procs, daemon)
    assert (t["tcp_connected"] if uas == "tcp" else t["tcp_accepted"]) >= 1, t


def test_via_and_record_route_name_tcp_toward_a_tcp_next_hop(procs, ringsipd):
    """A raw TCP server as the next hop sees our Via say TCP and our Record-Route say transport=tcp."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((h.LOOPBACK, 0))
    server.listen(4)
    next_hop = server.getsockname()[1]
    daemon, port = start(procs, ringsipd, f"tcp:127.0.0.1:{next_hop}")
    caller = connect(port)
    invite = (f"INVITE sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
              "Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-inv1\r\n"
              "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: tcp-via-1\r\n"
              "CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:9;transport=tcp>\r\nMax-Forwards: 70\r\n"
              "Content-Length: 0\r\n\r\n")
    caller.sendall(invite.encode())
    server.settimeout(5)
    callee, _ = server.accept()
    got = read_responses(callee, 1)
    assert got, "the INVITE did not arrive over TCP"
    forwarded = got[0]
    top_via = next(line for line in forwarded.split("\r\n") if line.lower().startswith("via:"))
    assert top_via.startswith(f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch="), forwarded
    assert f"Record-Route: <sip:127.0.0.1:{port};transport=tcp;lr>" in forwarded, forwarded
    # The callee's 486 goes back to the caller on the caller's connection (and the proxy ACKs the callee).
    branch = top_via.split("branch=")[1].split(";")[0]
    vias = "\r\n".join(line for line in forwarded.split("\r\n") if line.lower().startswith("via:"))
    busy = (f"SIP/2.0 486 Busy Here\r\n{vias}\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
            "To: <sip:bob@127.0.0.1>;tag=b1\r\nCall-ID: tcp-via-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    callee.sendall(busy.encode())
    answers = read_responses(caller, 2)
    assert any(a.startswith("SIP/2.0 486") for a in answers), answers
    ack = read_responses(callee, 1)
    assert ack and ack[0].startswith("ACK ") and branch in ack[0], ack
    for s in (caller, callee, server):
        s.close()
    procs.stop(daemon)


# MARK: - Framing


def test_split_and_coalesced_messages_and_keep_alive_pings(procs, ringsipd):
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9")
    sock = connect(port)
    whole = options("split-1", port)
    for piece in (whole[:10], whole[10:60], whole[60:]):
        sock.sendall(piece)
        time.sleep(0.05)
    first = read_responses(sock, 1)
    assert first and first[0].startswith("SIP/2.0 200 OK") and "X-Proto: tcp" in first[0], first
    assert "Call-ID: split-1" in first[0], first
    # Two messages in one write, with CRLFs between them as RFC 3261 §7.5 allows.
    sock.sendall(options("both-1", port) + b"\r\n" + options("both-2", port, body="abc"))
    both = read_responses(sock, 2)
    assert [("both-1" in r, "both-2" in r) for r in both] == [(True, False), (False, True)], both
    # RFC 5626 §3.5.1: a double CRLF is answered with one CRLF.
    sock.sendall(b"\r\n\r\n")
    sock.settimeout(3)
    assert sock.recv(16) == b"\r\n"
    sock.close()
    t = totals(procs, daemon)
    assert t["tcp_accepted"] == 1 and t["tcp_bad_closed"] == 0 and t["parse_errors"] == 0, t


# MARK: - Bad input


def test_a_huge_content_length_closes_only_that_connection(procs, ringsipd):
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9")
    bad = connect(port)
    good = connect(port)
    bad.sendall(options("huge", port).replace(b"Content-Length: 0", b"Content-Length: 2147483648"))
    assert closed_within(bad, 3), "a 2 GB Content-Length did not close the connection"
    good.sendall(options("still-served", port))
    answer = read_responses(good, 1)
    assert answer and "still-served" in answer[0], answer
    bad.close()
    good.close()
    t = totals(procs, daemon)
    assert t["tcp_bad_closed"] == 1, t


def test_slow_messages_and_idle_connections_are_closed(procs, ringsipd):
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9",
                         globals="tcp_max_msg_time = 1\ntcp_connection_lifetime = 2\n")
    slow = connect(port)
    idle = connect(port)
    # One header byte every 0.3 s: the message has taken longer than 1 s after the sweep following it.
    start_time = time.monotonic()
    closed = False
    for byte in options("slow", port)[:40]:
        try:
            slow.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        time.sleep(0.3)
        if closed_within(slow, 0.01):
            closed = True
            break
    assert closed and time.monotonic() - start_time < 6, "a message sent a byte at a time was not cut off"
    assert closed_within(idle, 5), "an idle connection outlived tcp_connection_lifetime"
    slow.close()
    idle.close()
    t = totals(procs, daemon)
    assert t["tcp_bad_closed"] == 1 and t["tcp_idle_closed"] == 1, t


def test_connections_past_the_cap_are_refused(procs, ringsipd):
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9", globals="tcp_max_connections = 3\n")
    kept = [connect(port) for _ in range(3)]
    for i, sock in enumerate(kept):
        sock.sendall(options(f"kept-{i}", port))
        assert read_responses(sock, 1), f"connection {i} within the cap was not served"
    extra = connect(port)
    assert closed_within(extra, 3), "a connection past tcp_max_connections was kept"
    kept[0].close()
    # A place is free again once the closed one is gone.
    assert h.wait_until(lambda: served_once(port), 5), "no connection was served after one closed"
    for sock in kept[1:] + [extra]:
        sock.close()
    t = totals(procs, daemon)
    assert t["tcp_refused"] >= 1, t


def served_once(port: int) -> bool:
    sock = connect(port)
    try:
        sock.sendall(options("again", port))
        return bool(read_responses(sock, 1, seconds=1))
    except OSError:
        return False
    finally:
        sock.close()


def test_a_next_hop_that_refuses_the_connection_is_counted(procs, ringsipd, sipp):
    closed_port = free_port()
    daemon, port = start(procs, ringsipd, f"tcp:127.0.0.1:{closed_port}")
    started = time.monotonic()
    res = h.run_uacs(procs, port, rate=10, calls=3, timeout=20)
    # Nobody listens: each call ends 503 at once (a transport error, RFC 3261 §8.1.3.1), not 408 after
    # fr_inv_timeout (3 s).
    assert res.successful == 0 and res.failed == 3, describe(res)
    assert time.monotonic() - started < 2.5, describe(res)
    errors = "".join(p.read_text() for p in procs.workdir.glob("uac*_errors.log"))
    assert errors.count("received 'SIP/2.0 503 Service Unavailable") == 3, errors[-1500:]
    t = totals(procs, daemon)
    assert t["tcp_connect_failed"] >= 3 and t["timeouts"] == 0, t


def test_a_lone_crlf_is_a_pong_not_a_slow_message(procs, ringsipd):
    """RFC 5626 §4.4.1: a client answers our ping with one CRLF; it must not start the slow-message clock."""
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9", globals="tcp_max_msg_time = 1\n")
    sock = connect(port)
    sock.sendall(b"\r\n")
    assert not closed_within(sock, 3), "a lone CRLF was held as the start of a message and timed out"
    sock.sendall(options("after-pong", port))
    answer = read_responses(sock, 1)
    assert answer and "after-pong" in answer[0], answer
    sock.close()
    t = totals(procs, daemon)
    assert t["tcp_bad_closed"] == 0, t


def test_a_peer_that_closes_its_side_still_gets_its_answer(procs, ringsipd):
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9")
    sock = connect(port)
    sock.sendall(options("half-closed", port))
    sock.shutdown(socket.SHUT_WR)
    answer = read_responses(sock, 1)
    assert answer and "half-closed" in answer[0], answer
    assert closed_within(sock, 3), "the connection was kept after its queue was written"
    sock.close()
    procs.stop(daemon)


def test_a_peer_that_stops_reading_is_closed_and_does_not_starve_the_shard(procs, ringsipd):
    """A client that sends requests and never reads the answers: once the socket buffers are full ringsip's write
    waits, and past proto_tcp's tcp_send_timeout the connection is closed; another client is served meanwhile."""
    daemon, port = start(procs, ringsipd, "udp:127.0.0.1:9",
                         globals='loadmodule "proto_tcp.so"\nmodparam("proto_tcp", "tcp_send_timeout", 500)\n')
    # A small receive buffer, set before connecting (it fixes the window): the kernel then holds little more than
    # ringsip's send buffer (4 MB at most) of the answers, and 30,000 of them are over 6 MB.
    greedy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.connect((h.LOOPBACK, port))
    greedy.settimeout(1)
    other = None
    deadline = time.monotonic() + 20
    burst = 0
    # Bursts until the daemon has closed it (a slower build reads them more slowly: no fixed count).
    while time.monotonic() < deadline and stalled(daemon) == 0:
        try:
            greedy.sendall(b"".join(options(f"greedy-{burst}-{i}", port) for i in range(500)))
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        burst += 1
        if burst == 20:
            # Served while the greedy connection's answers pile up.
            other = connect(port)
            other.sendall(options("other", port))
            answer = read_responses(other, 1)
            assert answer and "other" in answer[0], answer
    assert stalled(daemon) >= 1, f"the stalled write's connection was not closed after {burst} bursts"
    greedy.close()
    if other:
        other.close()
    procs.stop(daemon)


def stalled(daemon: h.Proc) -> int:
    rows = h.signal_counters(daemon) or []
    return sum(r.get("tcp_write_stalled", 0) for r in rows if "tcp_write_stalled" in r)


def test_stateless_forward_answers_over_the_tcp_connection(procs, ringsipd):
    """forward(): a request over TCP to a UDP next hop; the response comes back on the caller's connection."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((h.LOOPBACK, 0))
    server.settimeout(5)
    port = free_port()
    script = procs.workdir / "forward.cfg"
    script.write_text(f'listen = udp:127.0.0.1:{port}\nlisten = tcp:127.0.0.1:{port}\nlog_level = 1\n'
                      f'route {{\n    forward("udp:127.0.0.1:{server.getsockname()[1]}");\n}}\n')
    daemon = procs.start("ringsipd", [ringsipd, "-f", script, "--shards", "1"])
    h.wait_until(lambda: h.tcp_port_listening(port) or not daemon.alive(), 10)
    assert daemon.alive(), daemon.stderr()
    caller = connect(port)
    message = options("stateless-1", port).replace(b"OPTIONS", b"MESSAGE").replace(b"127.0.0.1:9;branch", b"127.0.0.1:9;rport;branch")
    caller.sendall(message)
    request, source = server.recvfrom(65536)
    text = request.decode()
    assert text.startswith("MESSAGE ") and "Via: SIP/2.0/UDP" in text, text
    vias = [line for line in text.split("\r\n") if line.lower().startswith("via:")]
    answer = (f"SIP/2.0 200 OK\r\n" + "\r\n".join(vias) + "\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"
              "To: <sip:ping@127.0.0.1>;tag=2\r\nCall-ID: stateless-1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n")
    server.sendto(answer.encode(), source)
    got = read_responses(caller, 1)
    assert got and got[0].startswith("SIP/2.0 200 OK") and "stateless-1" in got[0], got
    caller.close()
    server.close()
    procs.stop(daemon)


REGISTRAR = """\
listen = udp:127.0.0.1:{port}
listen = tcp:127.0.0.1:{port}
log_level = 1
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "proto_tcp.so"
route {{
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    if (has_totag()) {{ t_relay(); exit; }}
    if (!lookup("location")) {{ sl_send_reply(404, "Not Found"); exit; }}
    t_relay();
}}
"""


def start_registrar(procs, ringsipd) -> tuple[h.Proc, int]:
    """REGISTRAR on UDP and TCP 127.0.0.1:PORT, two shards."""
    port = free_port()
    script = procs.workdir / "registrar.cfg"
    script.write_text(REGISTRAR.format(port=port))
    daemon = procs.start("ringsipd", [ringsipd, "-f", script, "--shards", "2"])
    h.wait_until(lambda: h.tcp_port_listening(port) or not daemon.alive(), 10)
    assert daemon.alive(), daemon.stderr()
    return daemon, port


def register(port: int, user: str, contact_port: int) -> socket.socket:
    """A new connection that registers `user`@example.com with Contact sip:user@127.0.0.1:contact_port over TCP."""
    sock = connect(port)
    sock.sendall((f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{contact_port};branch=z9hG4bK-r{user}\r\n"
                  f"From: <sip:{user}@example.com>;tag=r1\r\nTo: <sip:{user}@example.com>\r\nCall-ID: reg-{user}\r\n"
                  f"CSeq: 1 REGISTER\r\nContact: <sip:{user}@127.0.0.1:{contact_port};transport=tcp>\r\n"
                  "Expires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
    answer = read_responses(sock, 1)
    assert answer and answer[0].startswith("SIP/2.0 200"), answer
    return sock


def test_a_phone_registered_over_tcp_is_called_on_its_connection_from_either_shard(procs, ringsipd):
    """The Contact's own port is closed (a phone behind NAT): every INVITE, on whichever shard it arrives, must go
    over the connection the REGISTER came on."""
    daemon, port = start_registrar(procs, ringsipd)
    phone = register(port, "bob", contact_port=9)
    # INVITEs from several source ports, so SO_REUSEPORT spreads them over both shards.
    for n in range(8):
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind((h.LOOPBACK, 0))
        caller.sendto((f"INVITE sip:bob@example.com SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{caller.getsockname()[1]};rport;branch=z9hG4bK-inv{n}\r\n"
                       f"From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-{n}\r\n"
                       "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        got = read_responses(phone, 1, seconds=3)
        assert got and got[0].startswith("INVITE sip:bob@127.0.0.1:9;transport=tcp") and f"call-{n}" in got[0], (n, got)
        caller.close()
    phone.close()
    t = totals(procs, daemon)
    assert t["tcp_connect_failed"] == 0 and t["tcp_connected"] == 0, t


def test_answers_cross_shards_between_tcp_phones_at_once(procs, ringsipd):
    """Six caller/callee pairs, each registered over its own connection on whichever shard took it: a callee's 200
    that arrives on the other shard than the call's transaction is handed over and relayed at once (not when that
    shard next has something to do)."""
    daemon, port = start_registrar(procs, ringsipd)

    for k in range(6):
        caller, callee = register(port, f"alice{k}", 9), register(port, f"bob{k}", 9)
        caller.sendall((f"INVITE sip:bob{k}@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;rport;branch=z9hG4bK-x{k}\r\n"
                        f"From: <sip:alice{k}@example.com>;tag=a{k}\r\nTo: <sip:bob{k}@example.com>\r\nCall-ID: x-{k}\r\n"
                        "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())
        invite = read_responses(callee, 1)
        assert invite and invite[0].startswith("INVITE "), (k, invite)
        vias = "\r\n".join(line for line in invite[0].split("\r\n") if line.lower().startswith("via:"))
        callee.sendall((f"SIP/2.0 200 OK\r\n{vias}\r\nFrom: <sip:alice{k}@example.com>;tag=a{k}\r\n"
                        f"To: <sip:bob{k}@example.com>;tag=b{k}\r\nCall-ID: x-{k}\r\nCSeq: 1 INVITE\r\n"
                        "Contact: <sip:bob@127.0.0.1:9;transport=tcp>\r\nContent-Length: 0\r\n\r\n").encode())
        answers = read_responses(caller, 2, seconds=1)
        assert [a.split("\r\n")[0] for a in answers] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"], (k, answers)
        caller.close()
        callee.close()
    procs.stop(daemon)


def test_a_request_toward_a_peer_of_another_shards_connection_goes_over_it(procs, ringsipd):
    """A phone whose Contact names its own connection's port (no listener behind it, as baresip's does): an
    in-dialog request routed to that Contact, on whichever shard, goes over the connection the phone opened."""
    daemon, port = start_registrar(procs, ringsipd)
    phone = connect(port)
    own = phone.getsockname()[1]
    phone.sendall(options("hello", port))
    assert read_responses(phone, 1), "the phone's connection was not served"
    for n in range(8):
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind((h.LOOPBACK, 0))
        caller.sendto((f"BYE sip:bob@127.0.0.1:{own};transport=tcp SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{caller.getsockname()[1]};rport;branch=z9hG4bK-bye{n}\r\n"
                       f"From: <sip:alice@example.com>;tag=a{n}\r\nTo: <sip:bob@example.com>;tag=b{n}\r\n"
                       f"Call-ID: bye-{n}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                      (h.LOOPBACK, port))
        got = read_responses(phone, 1, seconds=3)
        assert got and got[0].startswith("BYE ") and f"bye-{n}" in got[0], (n, got)
        caller.close()
    phone.close()
    t = totals(procs, daemon)
    assert t["tcp_connect_failed"] == 0 and t["tcp_connected"] == 0, t


def test_a_call_to_a_phone_whose_connection_is_gone_ends_503_from_either_shard(procs, ringsipd):
    """The binding's connection has closed and its Contact refuses connections: the call is answered 503 at
    once on whichever shard it arrives (the connection's shard tells the transaction's), not after a timeout."""
    daemon, port = start_registrar(procs, ringsipd)
    phone = register(port, "carol", contact_port=9)
    phone.close()
    time.sleep(0.3)
    for n in range(8):
        caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(2)
        caller.sendto((f"INVITE sip:carol@example.com SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{caller.getsockname()[1]};rport;branch=z9hG4bK-gone{n}\r\n"
                       f"From: <sip:alice@example.com>;tag=g{n}\r\nTo: <sip:carol@example.com>\r\nCall-ID: gone-{n}\r\n"
                       "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        finals = []
        try:
            while not finals:
                status = caller.recv(65536).decode().split("\r\n")[0]
                if not status.startswith("SIP/2.0 1"):
                    finals.append(status)
        except socket.timeout:
            pass
        assert finals == ["SIP/2.0 503 Service Unavailable"], (n, finals)
        caller.close()
    procs.stop(daemon)
