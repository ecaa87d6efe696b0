"""Smoke test of perf/inflight: two small waves of calls held in async() rest_get on one shard, each wholly in
flight before any completes; the tool reports the memory per call in flight and what the last wave added,
leaves nothing running and no run folder behind. The 10,000-call run itself is in perf/RESULTS.md."""

import re

from conftest import REPO
from test_perf_harness import fields_of, need, run_tool

INFLIGHT = str(REPO / "perf" / "inflight")


def test_inflight_holds_every_call_of_each_wave_and_reports_memory_per_call(tmp_path):
    need("ringsip")
    p = run_tool([INFLIGHT, "--calls", "300", "--rate", "300", "--waves", "2", "--hold-seconds", "2"],
                 tmp_path, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    waves = [fields_of(line) for line in p.stdout.splitlines() if line.startswith("WAVE ")]
    assert [w["n"] for w in waves] == ["1", "2"], p.stdout
    for w in waves:
        assert w["inflight"] == "300" and w["all_in_flight"] == "true", w
        assert w["ok"] == "300" and w["failed"] == "0", w
        # Every call waited out the 2 s back-end before its 200, and the shard freed them all afterwards.
        assert float(w["rt_p50_ms"]) >= 1990 and w["transactions_after"] == "0" and w["async_after"] == "0", w
    summary = next(line for line in p.stdout.splitlines() if line.startswith("INFLIGHT "))
    f = fields_of(summary)
    assert f["operation"] == "rest" and f["failed"] == "0", summary
    assert 0 < float(f["bytes_per_call_first"]) < 1 << 20, summary
    assert re.fullmatch(r"-?\d+\.\d", f["last_wave_growth_mb"]), summary
    assert not list(tmp_path.iterdir()), "a clean run removes its run folder"
