"""Transactions in the real daemon: examples/stateful-proxy.cfg (t_relay) between sipp UAC and UAS.

- a basic call: 0 failed, no retransmission storm, and every transaction freed afterwards;
- CANCEL: the caller gets 200 for its CANCEL and 487 for its INVITE;
- no answer: 408 within fr_inv_timeout (the proxy CANCELs the ringing branch);
- 486 from the callee relayed upstream, the caller's ACK absorbed, the callee ACKed by the proxy;
- serial forking: a failure_route relays the call to a second callee after the first is busy;
- two shards: responses that land on the shard that does not own the transaction are handed over.
"""

import re
from pathlib import Path

import harness as h
import pytest
from conftest import REPO, describe

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


def start(procs, ringsipd, script: Path, port: int, shards: int = 1) -> h.Proc:
    argv = [ringsipd, "-f", script, "--listen", f"udp:{h.LOOPBACK}:{port}", "--shards", str(shards)]
    proc = procs.start("ringsipd", argv)
    ok = h.wait_until(lambda: h.udp_port_bound(port) or not proc.alive(), 10)
    if not ok or not proc.alive():
        pytest.fail(f"ringsipd did not start: {proc.stderr()[-1500:]}", pytrace=False)
    return proc


def counters(procs, daemon: h.Proc) -> list[dict]:
    """Stops the daemon and returns its per-shard counter lines at exit."""
    rc = procs.stop(daemon)
    assert rc == 0, daemon.stderr()[-2000:]
    rows = []
    for line in (daemon.stdout() + daemon.stderr()).splitlines():
        m = re.match(r"shard (\d+): (.*)$", line.strip())
        if m:
            rows.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))} | {"shard": int(m.group(1))})
    return rows


def test_basic_calls_relay_statefully_and_every_transaction_is_freed(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port)
    daemon = start(procs, ringsipd, stateful_script(procs.workdir, uas_port, FAST_TIMERS), proxy_port)
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
    daemon = start(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port)
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
    daemon = start(procs, ringsipd, path, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=20, calls=20, timeout=20, scenario=SCENARIOS / "tm" / "uac-timeout.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 20, describe(res)
    # 408 after fr_inv_timeout (1 s), not after Timer B (32 s): the whole run stays short.
    assert res.wall_s < 10, describe(res)
    procs.stop(daemon)


def test_busy_is_relayed_upstream_and_the_acks_are_hop_by_hop(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    uas = h.start_uas(procs, uas_port, scenario=SCENARIOS / "tm" / "uas-busy.xml")
    daemon = start(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=50, calls=100, timeout=20, scenario=SCENARIOS / "tm" / "uac-busy.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 100, describe(res)
    procs.stop(daemon)
    # The callee got an ACK for every 486 (the proxy's own), or its scenario would have failed the calls.
    procs.stop(uas)
    assert "Failed call" not in uas.stdout() or re.search(r"Failed call\s*\|\s*\d+\s*\|\s*0\b", uas.stdout()), \
        uas.stdout()[-1500:]


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
    daemon = start(procs, ringsipd, path, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=50, calls=100, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 100, describe(res)
    procs.stop(daemon)


def test_responses_landing_on_the_other_shard_are_handed_to_the_owner(procs, ringsipd, sipp):
    # SO_REUSEPORT spreads flows by their addresses: try callee ports until the callee's flow lands on
    # the other shard than the caller's, which shows as hand-offs.
    for attempt in range(6):
        uas_port, proxy_port = h.free_udp_ports(2)
        uas = h.start_uas(procs, uas_port, name=f"uas{attempt}")
        daemon = start(procs, ringsipd, stateful_script(procs.workdir, uas_port), proxy_port, shards=2)
        res = h.run_uacs(procs, proxy_port, rate=100, calls=200, timeout=20, tag=f"uac{attempt}")
        assert res.exit_codes == [0] and res.failed == 0 and res.successful == 200, describe(res)
        rows = counters(procs, daemon)
        procs.stop(uas)
        if sum(r["handoffs"] for r in rows) > 0:
            return
    pytest.fail("the two flows always hashed to the same shard; no hand-off was exercised")
