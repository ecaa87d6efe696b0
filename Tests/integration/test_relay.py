"""Calls through the daemon: sipp UAC -> ringsipd -> sipp UAS (built-in scenarios, 6 relayed
messages a call: INVITE, 180, 200, ACK, BYE, 200)."""

import harness as h
from conftest import describe, totals

MESSAGES_PER_CALL = 6


def test_relays_three_thousand_calls_across_two_shards_without_a_failure(uas, start_daemon, procs):
    daemon = start_daemon(uas, shards=2, extra=["--cpus", "0,1"])
    res = h.run_uacs(procs, daemon.port, rate=600, calls=3000, timeout=30)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 3000, describe(res)
    block = daemon.request_counters()
    assert [row["shard"] for row in block] == [0, 1]
    t = totals(block)
    assert t["received"] >= MESSAGES_PER_CALL * 3000, t
    assert t["sent"] >= MESSAGES_PER_CALL * 3000, t
    assert t["parse_errors"] == 0, t
    rc, _ = daemon.stop()
    assert rc == 0


def test_relays_calls_with_default_flags(uas, start_daemon, procs):
    daemon = start_daemon(uas)
    res = h.run_uacs(procs, daemon.port, rate=500, calls=1000, timeout=20)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 1000, describe(res)
    rc, final = daemon.stop()
    assert rc == 0
    assert final and totals(final)["sent"] >= MESSAGES_PER_CALL * 1000, final


def test_relays_calls_arriving_on_a_second_listen_address(uas, start_daemon, procs):
    ports = h.free_udp_ports(2)
    daemon = start_daemon(uas, listen_ports=ports)
    for port in ports:
        res = h.run_uacs(procs, port, rate=300, calls=300, timeout=15)
        assert res.exit_codes == [0] and res.failed == 0 and res.successful == 300, f"port {port}: " + describe(res)
    rc, _ = daemon.stop()
    assert rc == 0
