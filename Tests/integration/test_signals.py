"""SIGUSR1 prints one counters line per shard and changes nothing; SIGTERM and SIGINT exit 0 after
printing the same lines."""

import signal

import harness as h
from conftest import COUNTERS, describe, totals


def test_sigusr1_prints_one_counters_line_per_shard_and_keeps_running(uas, start_daemon, procs):
    daemon = start_daemon(uas, shards=2)
    first = daemon.request_counters()
    assert [row["shard"] for row in first] == [0, 1]
    assert all(set(COUNTERS) <= set(row) for row in first)
    res = h.run_uacs(procs, daemon.port, rate=400, calls=400, timeout=15)
    assert res.failed == 0 and res.successful == 400, describe(res)
    second = daemon.request_counters()
    assert daemon.proc.alive(), "SIGUSR1 must not stop the daemon"
    assert [row["shard"] for row in second] == [0, 1]
    for row0, row1 in zip(first, second):
        for k in COUNTERS:
            assert row1[k] >= row0[k], f"counter {k} of shard {row0['shard']} went down"
    t = totals(second)
    assert t["received"] >= 6 * 400 and t["sent"] >= 6 * 400, t
    rc, final = daemon.stop(signal.SIGTERM)
    assert rc == 0
    assert final is not None and [row["shard"] for row in final] == [0, 1], daemon.output()[-1000:]
    assert totals(final)["sent"] >= t["sent"]


def test_sigint_exits_0_and_prints_counters(uas, start_daemon):
    daemon = start_daemon(uas, shards=1)
    rc, final = daemon.stop(signal.SIGINT)
    assert rc == 0
    assert final is not None and [row["shard"] for row in final] == [0], daemon.output()[-1000:]
