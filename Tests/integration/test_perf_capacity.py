"""Smoke tests of perf/capacity: a small fill (2,000 live transactions on one shard) reports the live count, the
memory per live transaction and probes that still get through; a fill past max_transactions shows the 503
(with Retry-After) a full shard answers. Nothing is left running, no run folder is left behind. The 100,000
transaction run itself is in perf/RESULTS.md, not here (it takes half a minute and 600 MB)."""

import re

from conftest import REPO
from test_perf_harness import fields_of, need, run_tool

CAPACITY = str(REPO / "perf" / "capacity")


def test_capacity_holds_every_ringing_transaction_and_still_answers(tmp_path):
    need("ringsip")
    p = run_tool([CAPACITY, "--calls", "2000", "--rate", "1000", "--probes", "20", "--idle-seconds", "0.5"],
                 tmp_path, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("CAPACITY ")]
    assert len(lines) == 1, p.stdout
    f = fields_of(lines[0])
    assert f["ringing"] == "2000" and f["refused_503"] == "0" and f["fill_failed"] == "0", lines[0]
    assert int(f["live_after_fill"]) - int(f["live_before"]) == 2000, lines[0]
    # Bounded memory per live transaction: a few KiB (slot + the messages it keeps), not unbounded growth.
    assert 0 < int(f["bytes_per_live_transaction"]) < 16384, lines[0]
    probes = re.findall(r"^PROBE (\w+) options_answered=(\S+)", p.stdout, re.M)
    assert probes == [("before", "20/20"), ("after", "20/20")], p.stdout
    assert "probes all answered" in p.stdout, p.stdout
    assert re.search(r"stopped in [\d.]+ s with \d+ live, exit 0", p.stdout), p.stdout
    assert not list(tmp_path.iterdir()), "a clean run removes its run folder"


def test_capacity_past_max_transactions_answers_503_with_retry_after(tmp_path):
    need("ringsip")
    p = run_tool([CAPACITY, "--calls", "600", "--rate", "600", "--max-transactions", "300", "--probes", "10",
                  "--idle-seconds", "0.2"], tmp_path, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    f = fields_of(next(line for line in p.stdout.splitlines() if line.startswith("CAPACITY ")))
    assert f["live_after_fill"] == "300", f
    assert int(f["ringing"]) + int(f["refused_503"]) == 600 and int(f["refused_503"]) > 0, f
    full = next((line for line in p.stdout.splitlines() if line.startswith("FULL ")), "")
    assert '"SIP/2.0 503 ' in full and "Retry-After: absent" not in full, p.stdout
