"""Transactions in the real daemon: examples/stateful-proxy.cfg (t_relay) between sipp UAC and UAS.

- a basic call: 0 failed, no retransmission storm, and every transaction freed afterwards;
- CANCEL: the caller gets 200 for its CANCEL and 487 for its INVITE;
- no answer: 408 within fr_inv_timeout (the proxy CANCELs the ringing branch), or within a shorter
  $T_fr_inv_timeout the script sets for the call;
- 486 from the callee relayed upstream, the caller's ACK absorbed, the callee ACKed by the proxy;
- serial forking: a failure_route relays the call to a second callee after the first is busy;
- two shards: responses that land on the shard that does not own the transaction are handed over;
- parallel forking (append_branch) with §16.7 best-response selection: a 200 beats a 486 (which the proxy
  ACKs), a 603 beats a 486, two challenges (401 + 407) are merged into one 401;
- t_on_reply: an onreply_route drops the 180; t_on_branch: a branch_route adds a header the callee sees;
- $avp values set in the request route are read in failure_route (with $T_reply_code, $T_ruri, $T_fr_inv_timeout);
- a full transaction table answers 503 with Retry-After, and stopping releases the live transactions;
- a callee's 200 after the caller's transaction ended (Timer C, 408, ACK, Timer I) still reaches the caller.
"""

import re
import socket
import time
from pathlib import Path

import harness as h
import pytest
from conftest import REPO, describe, recv_until, response_to, start_script

EXAMPLES = REPO / "examples"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CANCEL = REPO / "perf" / "scenarios" / "cancel"

# Short timers so freed transactions can be observed within a test: Timer L/J/F = 64*T1, K = T4.
FAST_TIMERS = 'modparam("tm", "T1_timer", 50)\nmodparam("tm", "T4_timer", 500)\n'


def stateful_script(tmp: Path, server_port: int, extra: str = "", failure: str = "") -> Path:
    text = (EXAMPLES / "stateful-proxy.cfg").read_text().replace("udp:127.0.0.1:5070", f"udp:127.0.0.1:{server_port}")
    text = text.replace('modparam("tm", "fr_inv_timeout", 3)', 'modparam("tm", "fr_inv_timeout", 3)\n' + extra)
    if failure:
        text = text.replace("    if (!t_relay(", failure + "    if (!t_relay(", 1)
    path = tmp / "stateful.cfg"
    path.write_text(text)
    return path



def counters(procs, daemon: h.Proc) -> list[dict]:
    """Stops the daemon and returns its per-shard counter lines at exit."""
    rc = procs.stop(daemon)
    assert rc == 0, daemon.stderr()[-2000:]
    return h.counter_rows(daemon)


def test_basic_calls_relay_statefully_and_every_transaction_is_freed(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port)
    daemon = start_script(procs, ringsipd, stateful_script(procs.workdir, uas_port, FAST_TIMERS), proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=200, calls=600, timeout=30)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 600, describe(res)
    assert res.retransmissions == 0, describe(res)
    # Timers L and J (64*T1 = 3.2 s) and K (T4 = 0.5 s) end the last transactions.
    h.wait_until(lambda: False, 4.5)
    rows = counters(procs, daemon)
    assert rows and sum(r["transactions"] for r in rows) == 0, rows
    assert sum(r["sent"] for r in rows) >= 600 * 7, rows  # 6 relayed + one 100 Trying a call


def test_cancel_gets_200_and_the_invite_487(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port, scenario=SCENARIOS / "tm" / "uas-ring-then-cancelled.xml")
    daemon = start_script(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=50, calls=100, timeout=30, scenario=CANCEL / "uac.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 100, describe(res)
    procs.stop(daemon)


def test_no_answer_is_408_within_fr_inv_timeout(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    # The callee rings and never answers; it takes the proxy's CANCEL (200 + 487) when Timer C fires.
    h.start_uas(procs, uas_port, scenario=SCENARIOS / "tm" / "uas-ring-then-cancelled.xml")
    script = stateful_script(procs.workdir, uas_port).read_text().replace('"fr_inv_timeout", 3', '"fr_inv_timeout", 1')
    path = procs.workdir / "no-answer.cfg"
    path.write_text(script)
    daemon = start_script(procs, ringsipd, path, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20, scenario=SCENARIOS / "tm" / "uac-timeout.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    # 408 after fr_inv_timeout (1 s), not after Timer B (32 s): the whole run stays short.
    assert res.wall_s < 10, describe(res)
    procs.stop(daemon)


def test_t_fr_inv_timeout_shortens_timer_c_for_one_transaction(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port, scenario=SCENARIOS / "tm" / "uas-ring-then-cancelled.xml")
    # The module default (30 s) would outlast the run; the script gives each call 1 s.
    script = stateful_script(procs.workdir, uas_port, failure="    $T_fr_inv_timeout = 1;\n").read_text()
    path = procs.workdir / "per-call-timeout.cfg"
    path.write_text(script.replace('"fr_inv_timeout", 3', '"fr_inv_timeout", 30'))
    daemon = start_script(procs, ringsipd, path, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=10, timeout=20, scenario=SCENARIOS / "tm" / "uac-timeout.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 10, describe(res)
    assert res.wall_s < 10, describe(res)
    procs.stop(daemon)


def test_busy_is_relayed_upstream_and_the_acks_are_hop_by_hop(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    uas = h.start_uas(procs, uas_port, scenario=SCENARIOS / "tm" / "uas-busy.xml")
    daemon = start_script(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=50, calls=100, timeout=20, scenario=SCENARIOS / "tm" / "uac-busy.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 100, describe(res)
    # The callee got an ACK for every 486 (the proxy's own): its scenario waits for it, else the call fails.
    assert_callee(procs, uas, "uas", 100)
    procs.stop(daemon)


def test_failure_route_forks_serially_to_a_second_callee(procs, ringsipd, sipp):
    busy_port, ok_port, proxy_port = h.free_udp_ports(3)
    h.start_uas(procs, busy_port, scenario=SCENARIOS / "tm" / "uas-busy.xml", name="busy")
    h.start_uas(procs, ok_port, name="answers")
    failure = '    t_on_failure("next");\n'
    script = stateful_script(procs.workdir, busy_port, failure=failure).read_text() + (
        "\nfailure_route[next] {\n"
        "    if (t_check_status(\"486\")) {\n"
        f"        t_relay(\"udp:127.0.0.1:{ok_port}\");\n"
        "    }\n"
        "}\n")
    # In-dialog requests (ACK, BYE) go to the callee that answered.
    script = script.replace(f't_relay("udp:127.0.0.1:{busy_port}");\n        }} else {{',
                            f't_relay("udp:127.0.0.1:{ok_port}");\n        }} else {{')
    path = procs.workdir / "serial.cfg"
    path.write_text(script)
    daemon = start_script(procs, ringsipd, path, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=50, calls=100, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 100, describe(res)
    procs.stop(daemon)


def test_responses_landing_on_the_other_shard_are_handed_to_the_owner(procs, ringsipd, sipp):
    # SO_REUSEPORT spreads flows by their addresses: try callee ports until the callee's flow lands on
    # the other shard than the caller's, which shows as hand-offs.
    for attempt in range(6):
        uas_port, proxy_port = h.free_udp_ports(2)
        uas = h.start_uas(procs, uas_port, name=f"uas{attempt}")
        daemon = start_script(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port, shards=2)
        res = h.run_uacs(procs, proxy_port, rate=100, calls=200, timeout=20, tag=f"uac{attempt}")
        assert res.exit_codes == [0] and res.failed == 0 and res.successful == 200, describe(res)
        rows = counters(procs, daemon)
        procs.stop(uas)
        if sum(r["handoffs"] for r in rows) > 0:
            return
    pytest.fail("the two flows always hashed to the same shard; no hand-off was exercised")


# --- Forking, routes and transaction variables -------------------------------------------------------

TM = SCENARIOS / "tm"


@pytest.fixture
def udp_pair():
    """A callee's and a caller's UDP socket, bound on loopback, closed after the test."""
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind((h.LOOPBACK, 0))
    uac.bind((h.LOOPBACK, 0))
    yield uas, uac
    uas.close()
    uac.close()


def tm_script(tmp: Path, dialog_port: int, body: str, routes: str = "", modparams: str = "",
              name: str = "tm.cfg") -> Path:
    """A stateful script: in-dialog requests go to `dialog_port` (the callee that answered), new ones
    through `body`, then `routes` (failure_route, onreply_route, branch_route...)."""
    text = f"""listen = udp:127.0.0.1:5060
loadmodule "tm.so"
loadmodule "rr.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
modparam("tm", "fr_timeout", 5)
modparam("tm", "fr_inv_timeout", 3)
{modparams}
route {{
    if (has_totag()) {{
        t_relay("udp:127.0.0.1:{dialog_port}");
        exit;
    }}
{body}
}}
{routes}
"""
    path = tmp / name
    path.write_text(text)
    return path


def uas_done(procs, uas: h.Proc, name: str, calls: int) -> dict:
    """Waits (a few seconds: the scenarios end with a timewait) until the callee `name` completed
    `calls` calls, then stops it; returns its last statistics row."""
    stat = procs.workdir / f"{name}_stat.csv"
    h.wait_until(lambda: int(h.read_sipp_stat(stat).get("SuccessfulCall(C)", 0) or 0) >= calls, 6, 0.2)
    procs.stop(uas)
    return h.read_sipp_stat(stat)


def assert_callee(procs, uas: h.Proc, name: str, calls: int) -> None:
    st = uas_done(procs, uas, name, calls)
    assert int(st.get("SuccessfulCall(C)", 0)) == calls and int(st.get("FailedCall(C)", 0)) == 0, \
        (name, st.get("SuccessfulCall(C)"), st.get("FailedCall(C)"), uas.stdout()[-800:])


def test_parallel_fork_forwards_the_200_and_acks_the_486(procs, ringsipd, sipp):
    busy_port, ok_port, proxy_port = h.free_udp_ports(3)
    busy = h.start_uas(procs, busy_port, scenario=TM / "uas-busy.xml", name="busy")
    ok = h.start_uas(procs, ok_port, name="answers")
    script = tm_script(procs.workdir, ok_port, f"""
    record_route();
    $ru = "sip:busy@127.0.0.1:{busy_port}";
    append_branch("sip:ok@127.0.0.1:{ok_port}");
    if ($branch(count) != 1 || $branch(uri) != "sip:ok@127.0.0.1:{ok_port}") {{
        sl_send_reply(500, "Destination Set Wrong");
        exit;
    }}
    t_relay();
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    # The caller's default scenario fails on an unexpected 486: it must see the 200 only.
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    # The busy callee got the proxy's ACK for each 486 (its scenario waits for it); the other one the call.
    assert_callee(procs, busy, "busy", 20)
    assert_callee(procs, ok, "answers", 20)
    procs.stop(daemon)


def test_parallel_fork_a_603_beats_a_486(procs, ringsipd, sipp):
    busy_port, decline_port, proxy_port = h.free_udp_ports(3)
    busy = h.start_uas(procs, busy_port, scenario=TM / "uas-busy.xml", name="busy")
    decline = h.start_uas(procs, decline_port, scenario=TM / "uas-decline.xml", name="decline")
    script = tm_script(procs.workdir, busy_port, f"""
    $du = "sip:127.0.0.1:{busy_port}";
    append_branch("sip:declines@127.0.0.1:{decline_port}");
    t_relay();
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20, scenario=TM / "uac-decline.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    assert_callee(procs, busy, "busy", 20)
    assert_callee(procs, decline, "decline", 20)
    procs.stop(daemon)


def test_parallel_fork_merges_the_401_and_407_challenges(procs, ringsipd, sipp):
    www_port, proxy_auth_port, proxy_port = h.free_udp_ports(3)
    www = h.start_uas(procs, www_port, scenario=TM / "uas-challenge-401.xml", name="www")
    pa = h.start_uas(procs, proxy_auth_port, scenario=TM / "uas-challenge-407.xml", name="pa")
    script = tm_script(procs.workdir, www_port, f"""
    $ru = "sip:one@127.0.0.1:{www_port}";
    append_branch("sip:two@127.0.0.1:{proxy_auth_port}");
    t_relay();
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20, scenario=TM / "uac-challenged.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    assert_callee(procs, www, "www", 20)
    assert_callee(procs, pa, "pa", 20)
    procs.stop(daemon)


def test_onreply_route_drops_the_180(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port)  # sipp's uas: 180, then 200
    script = tm_script(procs.workdir, uas_port, f"""
    t_on_reply("quiet");
    t_relay("udp:127.0.0.1:{uas_port}");
""", routes="""
onreply_route[quiet] {
    if (t_check_status("180") && $T_branch_idx == 0) {
        drop;
    }
}
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20, scenario=TM / "uac-no-ringing.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    procs.stop(daemon)


def test_reply_routes_see_their_own_status_when_180_and_200_arrive_together(procs, ringsipd, udp_pair):
    # Reply routes run at the end of the loop turn; a 180 and a 200 sent back to back often land in one turn,
    # and t_check_status/$T_reply_code in the 180's route must still see 180 (CI once relayed a 180 the route
    # dropped because it saw the 200 that had arrived with it).
    uas, uac = udp_pair
    uas_port, me = uas.getsockname()[1], uac.getsockname()[1]
    (proxy_port,) = h.free_udp_ports(1)
    script = tm_script(procs.workdir, uas_port, f"""
    t_on_reply("quiet");
    t_relay("udp:127.0.0.1:{uas_port}");
""", routes="""
onreply_route[quiet] {
    if (t_check_status("180")) {
        if ($T_reply_code != 180) { xlog("L_ERR", "saw $T_reply_code in the 180's route\\n"); }
        drop;
    }
}
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    for n in range(10):
        uac.sendto(invite(proxy_port, me, f"burst-{n}"), (h.LOOPBACK, proxy_port))
        relayed = recv_until(uas, "INVITE", 5)
        uas.sendto(response_to(relayed, "180 Ringing", "u1").encode(), (h.LOOPBACK, proxy_port))
        uas.sendto(response_to(relayed, "200 OK", "u1").encode(), (h.LOOPBACK, proxy_port))
        answer = recv_until(uac, "SIP/2.0", 5)
        while answer.startswith("SIP/2.0 100 "):
            answer = recv_until(uac, "SIP/2.0", 5)
        assert answer.startswith("SIP/2.0 200 "), answer
        assert f"burst-{n}@" in answer, answer
    assert daemon.alive() and "saw " not in daemon.stderr(), daemon.stderr()[-1500:]


def test_branch_route_adds_a_header_the_callee_sees(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    uas = h.start_uas(procs, uas_port, scenario=TM / "uas-branch-header.xml", name="callee")
    script = tm_script(procs.workdir, uas_port, f"""
    $ru = "sip:callee@127.0.0.1:{uas_port}";
    t_on_branch("mark");
    t_relay();
""", routes="""
branch_route[mark] {
    append_hf("X-Branch: $T_branch_idx $ru\r\n");
}
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    assert_callee(procs, uas, "callee", 20)
    procs.stop(daemon)


def test_avp_from_the_request_route_is_read_in_failure_route(procs, ringsipd, sipp):
    busy_port, ok_port, proxy_port = h.free_udp_ports(3)
    h.start_uas(procs, busy_port, scenario=TM / "uas-busy.xml", name="busy")
    h.start_uas(procs, ok_port, name="answers")
    script = tm_script(procs.workdir, ok_port, f"""
    $avp(next) = "udp:127.0.0.1:{ok_port}";
    $T_fr_inv_timeout = 7;
    t_on_failure("next");
    t_relay("udp:127.0.0.1:{busy_port}");
""", routes="""
failure_route[next] {
    xlog("L_ERR", "failure_route: code=$T_reply_code ruri=$T_ruri fr_inv=$T_fr_inv_timeout next=$avp(next)\n");
    if (t_check_status("486")) {
        t_relay("$avp(next)");
    }
}
""")
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=10, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 10, describe(res)
    procs.stop(daemon)
    log = daemon.stderr()
    expected = (f"failure_route: code=486 ruri=sip:service@127.0.0.1:{proxy_port} fr_inv=7 "
                f"next=udp:127.0.0.1:{ok_port}")
    assert log.count(expected) == 10, log[-1500:]


def invite(proxy_port: int, me: int, name: str, user: str = "callee") -> bytes:
    """An INVITE from a caller on port `me` to `user` through the proxy; `name` is its branch (after
    z9hG4bK-), From tag and Call-ID (before @127.0.0.1)."""
    return (f"INVITE sip:{user}@127.0.0.1:{proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{name}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:caller@127.0.0.1>;tag={name}\r\nTo: <sip:{user}@127.0.0.1>\r\n"
            f"Call-ID: {name}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{me}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_full_table_answers_503_with_retry_after_and_stop_releases_the_rest(procs, ringsipd):
    silent_port, proxy_port = h.free_udp_ports(2)
    # A callee that never answers: the first INVITE's transaction stays live.
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((h.LOOPBACK, silent_port))
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind((h.LOOPBACK, 0))
    caller.settimeout(3)
    try:
        script = tm_script(procs.workdir, silent_port, f"""
    t_relay("udp:127.0.0.1:{silent_port}");
""", modparams='modparam("tm", "max_transactions", 1)')
        daemon = start_script(procs, ringsipd, script, proxy_port)
        port = caller.getsockname()[1]
        caller.sendto(invite(proxy_port, port, "full1", "full"), (h.LOOPBACK, proxy_port))
        assert caller.recv(4096).startswith(b"SIP/2.0 100 ")
        caller.sendto(invite(proxy_port, port, "full2", "full"), (h.LOOPBACK, proxy_port))
        answer = caller.recv(4096).decode()
        assert answer.startswith("SIP/2.0 503 "), answer
        assert re.search(r"\r\nRetry-After: \d+\r\n", answer), answer
        assert "branch=z9hG4bK-full2" in answer, answer
        rows = counters(procs, daemon)
        # The transaction still live at stop is reported, and its memory released without a crash.
        assert sum(r["transactions"] for r in rows) == 1, rows
        assert all("malformed_replies" in r for r in rows), rows
    finally:
        silent.close()
        caller.close()


def test_a_late_200_after_the_callers_transaction_ended_goes_upstream_and_the_proxy_lives(procs, ringsipd, udp_pair):
    # Timer C (1 s) answers the caller 408 and CANCELs the ringing branch; the caller's ACK and Timer I
    # (T4 = 0.5 s) end the server transaction while the branch still waits 64*T1 = 3.2 s for the callee. A
    # 200 sent by the callee then has no server transaction to go through: it must still reach the caller
    # (RFC 6026: a proxy forwards every 2xx), and before the fix it stopped the shard on a precondition.
    uas, uac = udp_pair
    uas_port, me = uas.getsockname()[1], uac.getsockname()[1]
    (proxy_port,) = h.free_udp_ports(1)
    script = stateful_script(procs.workdir, uas_port, FAST_TIMERS).read_text()
    path = procs.workdir / "late-200.cfg"
    path.write_text(script.replace('"fr_inv_timeout", 3', '"fr_inv_timeout", 1'))
    daemon = start_script(procs, ringsipd, path, proxy_port)
    uac.sendto(invite(proxy_port, me, "late-200"), (h.LOOPBACK, proxy_port))
    relayed = recv_until(uas, "INVITE", 5)
    uas.sendto(response_to(relayed, "180 Ringing", "u1").encode(), (h.LOOPBACK, proxy_port))
    assert recv_until(uac, "180", 5)
    timeout = recv_until(uac, "408", 5)
    to = next(l for l in timeout.split("\r\n") if l.lower().startswith("to:"))
    ack = (f"ACK sip:callee@127.0.0.1:{proxy_port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-late-200\r\nMax-Forwards: 70\r\n"
           f"From: <sip:caller@127.0.0.1>;tag=late-200\r\n{to}\r\nCall-ID: late-200@127.0.0.1\r\n"
           "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
    uac.sendto(ack.encode(), (h.LOOPBACK, proxy_port))
    time.sleep(1.2)  # past Timer I (0.5 s): the caller's side is gone, the branch is not (3.2 s)
    uas.sendto(response_to(relayed, "200 OK", "u1").encode(), (h.LOOPBACK, proxy_port))
    late = recv_until(uac, "200", 5)
    assert "Call-ID: late-200@127.0.0.1" in late and "branch=z9hG4bK-late-200" in late, late
    assert daemon.alive(), daemon.stderr()[-1500:]
    # And it keeps serving: a new call is relayed.
    uac.sendto(invite(proxy_port, me, "after"), (h.LOOPBACK, proxy_port))
    assert "after@127.0.0.1" in recv_until(uas, "INVITE", 5)
    assert procs.stop(daemon) == 0, daemon.stderr()[-1500:]


def test_t_local_replied_tells_a_timeout_from_a_callees_answer(procs, ringsipd, sipp, udp_pair):
    # A callee that never answers ends in our 408 (local); a busy one in its own 486 (received).
    silent, caller = udp_pair
    silent_port, me = silent.getsockname()[1], caller.getsockname()[1]
    busy_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, busy_port, scenario=SCENARIOS / "tm" / "uas-busy.xml", name="busy")
    script = tm_script(procs.workdir, busy_port, f"""
    t_on_failure("which");
    if ($rU == "silent") {{
        t_relay("udp:127.0.0.1:{silent_port}");
    }} else {{
        t_relay("udp:127.0.0.1:{busy_port}");
    }}
""", routes="""
failure_route[which] {
    if (t_local_replied("all") && t_local_replied("last")) {
        t_reply(599, "Local $T_reply_code");
    } else if (!t_local_replied("last")) {
        t_reply(598, "Received $T_reply_code");
    }
}
""", modparams='modparam("tm", "T1_timer", 50)\nmodparam("tm", "fr_inv_timeout", 1)')
    daemon = start_script(procs, ringsipd, script, proxy_port)
    for n, user in enumerate(["silent", "busy"]):
        caller.sendto(invite(proxy_port, me, f"local-{n}", user), (h.LOOPBACK, proxy_port))
        answer = recv_until(caller, "SIP/2.0 5", 5)
        expected = "SIP/2.0 599 Local 408" if user == "silent" else "SIP/2.0 598 Received 486"
        assert answer.startswith(expected + "\r\n"), answer
    assert daemon.alive()
