"""Smoke test of perf/bench: a tiny Kamailio run prints its result line and leaves nothing behind."""

import os
import shutil
import subprocess

import harness as h
from conftest import REPO, missing

WATCHED = ("sipp", "kamailio", "ringsipd")


def watched_pids() -> set[int]:
    out = set()
    for pid in h.all_pids():
        f = h._stat_fields(pid)
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
        except OSError:
            continue
        if f and f[0] != "Z" and comm in WATCHED:
            out.add(pid)
    return out


def test_bench_stateless_kamailio_prints_its_result_line_and_leaves_nothing_behind(tmp_path):
    for exe in ("kamailio", "sipp"):
        if not shutil.which(exe):
            missing(f"{exe} not found: run `make test-deps`")
    before = watched_pids()
    p = subprocess.run([str(REPO / "perf" / "bench"), "stateless", "--target", "kamailio", "--rate", "100",
                        "--calls", "200", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, p.stdout
    fields = dict(kv.split("=", 1) for kv in lines[0].split()[1:])
    assert fields["target"] == "kamailio" and fields["ok"] == "200" and fields["failed"] == "0", lines[0]
    assert float(fields["cpu_us_per_call"]) > 0, lines[0]
    assert float(fields["peak_rss_mb"]) > 0, lines[0]
    assert h.wait_until(lambda: not (watched_pids() - before), 3), (
        "left behind: " + "; ".join(h.cmdline(pid) for pid in watched_pids() - before))
    assert not list(tmp_path.iterdir()), "a clean run removes its run folder"
