"""async() in a branch_route and in an onreply_route: the branch waits to be sent, the response waits to be
relayed, until the resume route has run — with a raw-socket caller and callees, so each datagram's timing
and headers can be checked."""

import socket
import time

import harness as h
import pytest
from conftest import recv_until, response_to, start_script

HEAD = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
modparam("tm", "fr_inv_timeout", 5)
"""


def daemon(procs, ringsipd, script, routes: str) -> int:
    """ringsipd on a free port running HEAD + `routes` (written to `script`); its port."""
    (port,) = h.free_udp_ports(1)
    script.write_text(HEAD + routes)
    start_script(procs, ringsipd, script, port)
    return port


@pytest.fixture
def sockets():
    made = []

    def make() -> tuple[socket.socket, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((h.LOOPBACK, 0))
        made.append(s)
        return s, s.getsockname()[1]
    yield make
    for s in made:
        s.close()


def invite(proxy_port: int, me: int, call: str, extra: str = "") -> bytes:
    return (f"INVITE sip:callee@127.0.0.1:{proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{call}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=c-{call}\r\nTo: <sip:callee@127.0.0.1>\r\n"
            f"Call-ID: {call}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{me}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def quiet(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within `seconds`."""
    got, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65536).decode())
        except socket.timeout:
            break
    return got


def test_async_in_onreply_route_holds_each_response_until_its_resume_route_relays_or_drops_it(
        procs, ringsipd, sockets, tmp_path):
    uac, me = sockets()
    uas, uas_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "onreply-async.cfg", f"""
route {{
    t_on_reply("held");
    t_relay("udp:127.0.0.1:{uas_port}");
}}
onreply_route[held] {{
    $avp(seen) = $rs;
    remove_hf("X-Before");
    async(usleep(300000), after_reply);
}}
route[after_reply] {{
    if ($avp(seen) == 180) {{
        drop;
    }}
    remove_hf("X-Secret");
}}
""")
    uac.sendto(invite(proxy_port, me, "held-replies"), (h.LOOPBACK, proxy_port))
    relayed = recv_until(uas, "INVITE", 5)
    secret = "X-Secret: s\r\nX-Before: b\r\nX-Kept: k\r\n"
    uas.sendto(response_to(relayed, "180 Ringing", "u1").replace("Content-Length", secret + "Content-Length").encode(),
               (h.LOOPBACK, proxy_port))
    uas.sendto(response_to(relayed, "200 OK", "u1").replace("Content-Length", secret + "Content-Length").encode(),
               (h.LOOPBACK, proxy_port))
    sent = time.monotonic()
    ok = recv_until(uac, "200", 5)
    # Both responses were held at once; the 180 was dropped by its resume route, the 200 relayed by its own,
    # with the header removed before the async() and the one removed after it both gone.
    assert time.monotonic() - sent >= 0.28, "the 200 was relayed before its resume route ran"
    assert "X-Kept: k" in ok and "X-Secret" not in ok and "X-Before" not in ok, ok
    assert "branch=z9hG4bK-held-replies" in ok and f"Call-ID: held-replies@127.0.0.1" in ok, ok
    assert not [m for m in quiet(uac, 0.5) if m.startswith("SIP/2.0 180")], "the dropped 180 was relayed"


def test_async_in_branch_route_sends_each_branch_after_its_resume_route(procs, ringsipd, sockets, tmp_path):
    uac, me = sockets()
    first, first_port = sockets()
    second, second_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "branch-async.cfg", f"""
route {{
    if (is_present_hf("X-Drop")) {{
        t_on_branch("check");
        t_relay("udp:127.0.0.1:{first_port}");
        exit;
    }}
    $ru = "sip:callee@127.0.0.1:{first_port}";
    append_branch("sip:callee@127.0.0.1:{second_port}");
    t_on_branch("check");
    t_relay();
}}
branch_route[check] {{
    append_hf("X-Branch: $T_branch_idx\\r\\n");
    async(usleep(300000), after_branch);
}}
route[after_branch] {{
    $var(rc) = $rc;
    if (is_present_hf("X-Drop")) {{
        drop;
    }}
    append_hf("X-Resumed: rc=$var(rc)\\r\\n");
}}
""")
    started = time.monotonic()
    uac.sendto(invite(proxy_port, me, "held-branches"), (h.LOOPBACK, proxy_port))
    # Both branches of the fork were held, then sent, each with what its branch route and resume route added.
    to_first = recv_until(first, "INVITE", 5)
    to_second = recv_until(second, "INVITE", 5)
    assert time.monotonic() - started >= 0.28, "a branch left before its resume route ran"
    assert "X-Branch: 0\r\n" in to_first and "X-Resumed: rc=1\r\n" in to_first, to_first
    assert "X-Branch: 1\r\n" in to_second and "X-Resumed: rc=1\r\n" in to_second, to_second
    assert "X-Branch: 1" not in to_first and "X-Branch: 0" not in to_second
    # The first callee answers: the 200 reaches the caller through the transaction.
    first.sendto(response_to(to_first, "200 OK", "u1").encode(), (h.LOOPBACK, proxy_port))
    assert "held-branches@127.0.0.1" in recv_until(uac, "200", 5)

    # A resume route that drops the only branch: the transaction has nothing left, the caller gets a 500.
    uac.sendto(invite(proxy_port, me, "dropped-branch", "X-Drop: yes\r\n"), (h.LOOPBACK, proxy_port))
    final = recv_until(uac, "500", 5)
    assert "dropped-branch@127.0.0.1" in final and final.startswith("SIP/2.0 500 No Branch Sent\r\n"), final
    assert not [m for m in quiet(first, 0.3) if "dropped-branch" in m], "the dropped branch was sent"


def test_async_in_failure_route_waits_then_forks_again_or_sends_the_best_answer(procs, ringsipd, sockets, tmp_path):
    uac, me = sockets()
    busy, busy_port = sockets()
    second, second_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "failure-async.cfg", f"""
route {{
    t_on_failure("again");
    t_relay("udp:127.0.0.1:{busy_port}");
}}
failure_route[again] {{
    async(usleep(300000), retry);
}}
route[retry] {{
    if (is_present_hf("X-Give-Up")) {{
        exit;
    }}
    t_relay("udp:127.0.0.1:{second_port}");
}}
""")
    for call, extra in (("forks-again", ""), ("gives-up", "X-Give-Up: yes\r\n")):
        uac.sendto(invite(proxy_port, me, call, extra), (h.LOOPBACK, proxy_port))
        first = recv_until(busy, "INVITE", 5)
        busy.sendto(response_to(first, "486 Busy Here", "b1").encode(), (h.LOOPBACK, proxy_port))
        sent = time.monotonic()
        if not extra:
            # The suspended failure route's resume route forks to the second callee, whose 200 goes up.
            retried = recv_until(second, "INVITE", 5)
            assert time.monotonic() - sent >= 0.28 and f"{call}@127.0.0.1" in retried, retried
            second.sendto(response_to(retried, "200 OK", "s1").encode(), (h.LOOPBACK, proxy_port))
            assert f"{call}@127.0.0.1" in recv_until(uac, "200", 5)
        else:
            # Nothing more was tried: once the resume route ends, the best answer so far (the 486) goes up —
            # not before it, and not a 500.
            final = recv_until(uac, "486", 5)
            assert time.monotonic() - sent >= 0.28 and f"{call}@127.0.0.1" in final, final


def message(proxy_port: int, me: int, call: str) -> bytes:
    return (f"MESSAGE sip:callee@127.0.0.1:{proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{call}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag=c-{call}\r\nTo: <sip:callee@127.0.0.1>\r\n"
            f"Call-ID: {call}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n").encode()


def test_a_held_final_outlives_its_branchs_machine_and_is_still_the_answer(procs, ringsipd, sockets, tmp_path):
    # wt_timer 0 ends an INVITE branch's machine (Timers D and M) as soon as its final arrives, T4 100 ms a
    # non-INVITE's (Timer K): each final is held 300 ms past that, and must still be what the caller gets —
    # not a 408 made up when the machine ended, and not lost when it is released (relaying the MESSAGE's 200
    # ends its server transaction at once, with wt_timer 0: the transaction must not be freed mid-release).
    uac, me = sockets()
    uas, uas_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "held-final.cfg", f"""
modparam("tm", "wt_timer", 0)
modparam("tm", "T4_timer", 100)
route {{
    t_on_reply("held");
    t_relay("udp:127.0.0.1:{uas_port}");
}}
onreply_route[held] {{
    async(usleep(300000), after_reply);
}}
route[after_reply] {{
    exit;
}}
""")
    for call, request, status in (("held-486", invite, "486 Busy Here"), ("held-200", invite, "200 OK"),
                                  ("held-msg-200", message, "200 OK")):
        uac.sendto(request(proxy_port, me, call), (h.LOOPBACK, proxy_port))
        relayed = recv_until(uas, "INVITE" if request is invite else "MESSAGE", 5)
        uas.sendto(response_to(relayed, status, "u1").encode(), (h.LOOPBACK, proxy_port))
        sent = time.monotonic()
        # (A 486 is sent again until the caller ACKs it, which this one does not: the same answer each time,
        # and the next calls' windows still see it, so each looks at its own Call-ID.)
        finals = [m for m in quiet(uac, 1.2) if not m.startswith("SIP/2.0 1") and f"Call-ID: {call}@" in m]
        assert finals and {m.split("\r\n", 1)[0] for m in finals} == {f"SIP/2.0 {status}"}, (call, finals)
        assert f"{call}@127.0.0.1" in finals[0]
        assert time.monotonic() - sent >= 0.28


def test_a_response_held_by_the_unnamed_onreply_route_still_goes_through_t_on_reply(procs, ringsipd, sockets,
                                                                                      tmp_path):
    uac, me = sockets()
    uas, uas_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "both-reply-routes.cfg", f"""
route {{
    t_on_reply("named");
    t_relay("udp:127.0.0.1:{uas_port}");
}}
onreply_route {{
    if ($rs == 200) {{
        async(usleep(200000), after_reply);
    }}
}}
route[after_reply] {{
    remove_hf("X-Global");
}}
onreply_route[named] {{
    remove_hf("X-Named");
}}
""")
    uac.sendto(invite(proxy_port, me, "both-routes"), (h.LOOPBACK, proxy_port))
    relayed = recv_until(uas, "INVITE", 5)
    extra = "X-Global: g\r\nX-Named: n\r\nX-Kept: k\r\n"
    uas.sendto(response_to(relayed, "200 OK", "u1").replace("Content-Length", extra + "Content-Length").encode(),
               (h.LOOPBACK, proxy_port))
    ok = recv_until(uac, "200", 5)
    assert "X-Kept: k" in ok and "X-Global" not in ok and "X-Named" not in ok, ok


def test_a_cancel_keeps_a_held_branch_from_being_sent(procs, ringsipd, sockets, tmp_path):
    uac, me = sockets()
    first, first_port = sockets()
    second, second_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "cancel-held.cfg", f"""
route {{
    $ru = "sip:callee@127.0.0.1:{first_port}";
    append_branch("sip:callee@127.0.0.1:{second_port}");
    t_on_branch("slow_second");
    t_relay();
}}
branch_route[slow_second] {{
    if ($T_branch_idx == 1) {{
        async(usleep(1500000), after_branch);
    }}
}}
route[after_branch] {{
    exit;
}}
""")
    uac.sendto(invite(proxy_port, me, "cancel-held"), (h.LOOPBACK, proxy_port))
    to_first = recv_until(first, "INVITE", 5)
    first.sendto(response_to(to_first, "180 Ringing", "f1").encode(), (h.LOOPBACK, proxy_port))
    recv_until(uac, "180", 5)
    cancel = invite(proxy_port, me, "cancel-held").decode().replace("INVITE sip:", "CANCEL sip:", 1) \
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL").replace(f"Contact: <sip:caller@127.0.0.1:{me}>\r\n", "")
    uac.sendto(cancel.encode(), (h.LOOPBACK, proxy_port))
    # The sent branch is cancelled and answers 487; the held one is never sent, and the caller gets the 487.
    cancelled = recv_until(first, "CANCEL", 5)
    first.sendto(response_to(cancelled, "200 OK", "f1").encode(), (h.LOOPBACK, proxy_port))
    first.sendto(response_to(to_first, "487 Request Terminated", "f1").encode(), (h.LOOPBACK, proxy_port))
    answered = time.monotonic()
    final = recv_until(uac, "487", 5)
    # Not held back by the held branch's 1.5 s operation: after a CANCEL it will not be sent anyway.
    assert "cancel-held@127.0.0.1" in final and time.monotonic() - answered < 0.5, final
    assert not [m for m in quiet(second, 1.8) if m.startswith("INVITE")], "the held branch rang after the CANCEL"


def test_a_held_branch_keeps_its_index_so_its_replies_name_the_branch_its_branch_route_saw(procs, ringsipd, sockets,
                                                                                          tmp_path):
    # Only branch 0 is held: branch 1 goes first, yet each keeps the index its branch_route saw, and the
    # 180s each callee returns (echoing X-Branch) are relayed only when $T_branch_idx in the reply route agrees.
    uac, me = sockets()
    first, first_port = sockets()
    second, second_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "branch-index.cfg", f"""
route {{
    $ru = "sip:callee@127.0.0.1:{first_port}";
    append_branch("sip:callee@127.0.0.1:{second_port}");
    t_on_branch("mark");
    t_on_reply("check");
    t_relay();
}}
branch_route[mark] {{
    append_hf("X-Branch: $T_branch_idx\\r\\n");
    if ($T_branch_idx == 0) {{
        async(usleep(300000), after_branch);
    }}
}}
route[after_branch] {{
    exit;
}}
onreply_route[check] {{
    if ("$T_branch_idx" != $hdr(X-Branch)) {{
        drop;
    }}
}}
""")
    uac.sendto(invite(proxy_port, me, "held-index"), (h.LOOPBACK, proxy_port))
    to_second = recv_until(second, "INVITE", 5)
    to_first = recv_until(first, "INVITE", 5)
    assert "X-Branch: 0\r\n" in to_first and "X-Branch: 1\r\n" in to_second, (to_first, to_second)
    for callee, relayed, tag in ((first, to_first, "f1"), (second, to_second, "s1")):
        branch = "X-Branch: 0\r\n" if callee is first else "X-Branch: 1\r\n"
        callee.sendto(response_to(relayed, "180 Ringing", tag).replace("Content-Length", branch + "Content-Length")
                      .encode(), (h.LOOPBACK, proxy_port))
    ringing = [m for m in quiet(uac, 0.8) if m.startswith("SIP/2.0 180")]
    assert sorted(m.split("X-Branch: ")[1][0] for m in ringing) == ["0", "1"], ringing


def test_a_cancel_while_a_final_is_held_past_its_machine_gets_that_final_and_the_proxy_lives(procs, ringsipd, sockets,
                                                                                          tmp_path):
    # wt_timer 0: the branch's machine ends with its 486, which the reply route holds. A CANCEL then finds a
    # branch that has answered: nothing to cancel (it used to trap there), and the held 486 is the answer.
    uac, me = sockets()
    uas, uas_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "cancel-held-final.cfg", f"""
modparam("tm", "wt_timer", 0)
route {{
    t_on_reply("held");
    t_relay("udp:127.0.0.1:{uas_port}");
}}
onreply_route[held] {{
    async(usleep(400000), after_reply);
}}
route[after_reply] {{
    exit;
}}
""")
    uac.sendto(invite(proxy_port, me, "cancel-held-final"), (h.LOOPBACK, proxy_port))
    relayed = recv_until(uas, "INVITE", 5)
    uas.sendto(response_to(relayed, "486 Busy Here", "u1").encode(), (h.LOOPBACK, proxy_port))
    time.sleep(0.1)
    cancel = invite(proxy_port, me, "cancel-held-final").decode().replace("INVITE sip:", "CANCEL sip:", 1) \
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL").replace(f"Contact: <sip:caller@127.0.0.1:{me}>\r\n", "")
    uac.sendto(cancel.encode(), (h.LOOPBACK, proxy_port))
    assert "CSeq: 1 CANCEL" in recv_until(uac, "200", 5)
    final = recv_until(uac, "486", 5)
    assert "cancel-held-final@127.0.0.1" in final, final
    # Still serving.
    uac.sendto(invite(proxy_port, me, "after-cancel"), (h.LOOPBACK, proxy_port))
    assert "after-cancel@127.0.0.1" in recv_until(uas, "INVITE", 5)


def test_a_chained_hold_of_the_unnamed_onreply_route_still_ends_in_t_on_reply(procs, ringsipd, sockets, tmp_path):
    uac, me = sockets()
    uas, uas_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "chained-reply-hold.cfg", f"""
route {{
    t_on_reply("named");
    t_relay("udp:127.0.0.1:{uas_port}");
}}
onreply_route {{
    if ($rs == 200) {{
        async(usleep(100000), again);
    }}
}}
route[again] {{
    async(usleep(100000), last);
}}
route[last] {{
    remove_hf("X-Global");
}}
onreply_route[named] {{
    remove_hf("X-Named");
}}
""")
    uac.sendto(invite(proxy_port, me, "chained-hold"), (h.LOOPBACK, proxy_port))
    relayed = recv_until(uas, "INVITE", 5)
    extra = "X-Global: g\r\nX-Named: n\r\nX-Kept: k\r\n"
    uas.sendto(response_to(relayed, "200 OK", "u1").replace("Content-Length", extra + "Content-Length").encode(),
               (h.LOOPBACK, proxy_port))
    ok = recv_until(uac, "200", 5)
    assert "X-Kept: k" in ok and "X-Global" not in ok and "X-Named" not in ok, ok


def test_a_held_branchs_resume_route_can_send_it_where_an_avp_or_an_output_says(procs, ringsipd, sockets, tmp_path):
    """The resume route of a held branch sets `$du` from an `$avp` or from the operation's `$du` output: the
    branch goes there. Those values view blocks the route owns until the branch has been relayed (under
    `make test-asan` a view that outlived them would trap)."""
    uac, me = sockets()
    by_avp, by_avp_port = sockets()
    by_output, by_output_port = sockets()
    proxy_port = daemon(procs, ringsipd, tmp_path / "held-du.cfg", f"""
loadmodule "exec.so"
route {{
    $avp(gw) = "sip:127.0.0.1:{by_avp_port}";
    $avp(gone) = "set before t_relay";
    t_on_branch("pick");
    t_relay();
    # Removed after the branch route's async() kept the transaction's values: its resume route must not see
    # them, even when no value is left at all.
    $avp(gone) = NULL;
    if (is_present_hf("X-By-Output")) {{
        $avp(gw) = NULL;
    }}
}}
branch_route[pick] {{
    if (is_present_hf("X-By-Output")) {{
        async(exec("printf sip:127.0.0.1:{by_output_port}", "", $du), after_pick);
    }}
    async(usleep(1000), after_pick);
}}
route[after_pick] {{
    if (!is_present_hf("X-By-Output")) {{
        $du = $avp(gw);
    }}
    append_hf("X-Gone: [$avp(gone)]\\r\\n");
}}
""")
    uac.sendto(invite(proxy_port, me, "du-by-avp"), (h.LOOPBACK, proxy_port))
    sent = recv_until(by_avp, "INVITE", 5)
    assert "du-by-avp@127.0.0.1" in sent and "X-Gone: []\r\n" in sent, sent
    uac.sendto(invite(proxy_port, me, "du-by-output", "X-By-Output: yes\r\n"), (h.LOOPBACK, proxy_port))
    sent = recv_until(by_output, "INVITE", 5)
    assert "du-by-output@127.0.0.1" in sent and "X-Gone: []\r\n" in sent, sent
