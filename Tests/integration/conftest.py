"""Fixtures for the integration suite: the real daemon between two sipp instances on 127.0.0.1.

The daemon is `.build/release/ringsipd` (relative to the repo root), or $RINGSIPD if set, e.g.
`RINGSIPD=Tests/integration/standin_ringsipd.py` to check the suite itself. A missing binary is a
skip locally and a failure under CI=true. Every process a test starts is killed in its teardown, and
the teardown fails the test if any process it started (or any child of those) is still there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "perf"))
import harness as h  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The counters line, one per shard, printed on SIGUSR1 and at exit (stdout or stderr; a log
# prefix before "shard" is allowed, and more `name=number` fields may follow the six named here):
#     shard 0: received=12 sent=10 parse_errors=1 dropped=1 stale=0 handoffs=0 send_errors=0 enobufs=0
# A `total: ...` line after the shards' lines is allowed and ignored.
COUNTERS = ("received", "sent", "parse_errors", "dropped", "stale", "handoffs")
COUNTERS_RE = re.compile(r"shard (\d+): " + " ".join(rf"{k}=(\d+)" for k in COUNTERS) + r"(?: \w+=\d+)*\s*$")


def missing(what: str) -> None:
    """Fail under CI (where everything must be there), skip otherwise."""
    if IN_CI:
        pytest.fail(what + " (CI=true: this is a failure, not a skip)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def ringsipd() -> Path:
    path = h.ringsipd_path()
    if not path.is_absolute():
        path = REPO / path
    if not path.exists():
        missing(f"daemon binary {path} not found: run `make build` first (or set RINGSIPD=path)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not executable", pytrace=False)
    return path


@pytest.fixture(scope="session")
def sipp() -> str:
    exe = shutil.which("sipp")
    if not exe:
        missing("sipp not found: run `make test-deps` (Debian package sip-tester)")
    return exe


@pytest.fixture
def procs(tmp_path):
    """A ProcGroup for the test; teardown kills everything and checks nothing is left."""
    group = h.ProcGroup(tmp_path)
    yield group
    group.close()
    left = leftovers(group)
    assert not left, "processes left behind: " + "; ".join(f"{p} {h.cmdline(p)}" for p in left)


def leftovers(group: h.ProcGroup) -> list[int]:
    """Processes still alive in any process group we created, or children of this pytest."""
    pgids = {p.pid for p in group.procs}
    out = set(h.descendants(os.getpid()))
    for pid in h.all_pids():
        f = h._stat_fields(pid)
        if f and int(f[2]) in pgids and f[0] != "Z":
            out.add(pid)
    # Give a just-killed process a moment to disappear before calling it a leftover.
    if out:
        time.sleep(0.5)
        out = {p for p in out if h._stat_fields(p) and h._stat_fields(p)[0] != "Z"}
    return sorted(out)


@dataclass
class Daemon:
    group: h.ProcGroup
    proc: h.Proc
    port: int
    forward_port: int
    shards: int | None

    def output(self) -> str:
        return self.proc.stdout() + "\n" + self.proc.stderr()

    def counter_lines(self) -> list[dict]:
        rows = []
        for line in self.output().splitlines():
            m = COUNTERS_RE.search(line)
            if m:
                rows.append({"shard": int(m.group(1)), **{k: int(v) for k, v in zip(COUNTERS, m.groups()[1:])}})
        return rows

    def _dump_after(self, start: int) -> list[dict] | None:
        """The dump among counter lines [start:]: the latest line of each shard, in shard order,
        once every shard has printed one (shards print their own lines, in any order). With an
        unknown shard count, whatever is there once the output stops growing."""
        rows = self.counter_lines()[start:]
        latest = {row["shard"]: row for row in rows}
        if self.shards is None:
            return [latest[k] for k in sorted(latest)] if latest else None
        if set(range(self.shards)) <= set(latest):
            return [latest[k] for k in range(self.shards)]
        return None

    def _wait_dump(self, start: int, timeout: float) -> list[dict]:
        assert h.wait_until(lambda: self._dump_after(start) is not None, timeout), (
            f"no complete counters dump within {timeout}s; output so far:\n{self.output()[-2000:]}")
        if self.shards is None:  # unknown shard count: wait until the dump stops growing
            n = -1
            while n != len(self.counter_lines()):
                n = len(self.counter_lines())
                time.sleep(0.3)
        return self._dump_after(start)

    def request_counters(self, timeout: float = 5.0) -> list[dict]:
        """SIGUSR1, then the counters it printed: one row per shard, in shard order."""
        start = len(self.counter_lines())
        self.proc.signal(signal.SIGUSR1)
        return self._wait_dump(start, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int | None, list[dict] | None]:
        """Signal the daemon and wait for its exit; returns (exit code, counters printed at exit)."""
        start = len(self.counter_lines())
        rc = self.group.stop(self.proc, sig=sig, grace=timeout)
        return rc, self._dump_after(start)


def totals(block: list[dict]) -> dict:
    return {k: sum(row[k] for row in block) for k in COUNTERS}


@pytest.fixture
def uas(procs, sipp):
    """sipp's built-in UAS on a free loopback port; returns its port."""
    port = h.free_udp_ports(1)[0]
    h.start_uas(procs, port)
    return port


@pytest.fixture
def start_daemon(procs, ringsipd):
    def start(forward_port: int, shards: int | None = None, extra: list[str] = (),
              listen_ports: list[int] | None = None) -> Daemon:
        ports = listen_ports or h.free_udp_ports(1)
        argv = [ringsipd]
        for p in ports:
            argv += ["--listen", f"udp:{h.LOOPBACK}:{p}"]
        argv += ["--forward", f"udp:{h.LOOPBACK}:{forward_port}"]
        if shards:
            argv += ["--shards", str(shards)]
        argv += list(extra)
        proc = procs.start("ringsipd", argv)
        ok = h.wait_until(lambda: all(h.udp_port_bound(p) for p in ports) or not proc.alive(), 10)
        if not ok or not proc.alive():
            pytest.fail(f"ringsipd did not start (rc={proc.popen.poll()}): {proc.stderr()[-1500:]}", pytrace=False)
        return Daemon(procs, proc, ports[0], forward_port, shards)
    return start


def start_script(procs, ringsipd, script: Path, port: int, shards: int = 1) -> h.Proc:
    """The daemon on 127.0.0.1:`port` (--listen overrides the script's `listen`) running `script`, once its
    port is bound; the test fails with the daemon's stderr if it exits instead."""
    argv = [ringsipd, "-f", script, "--listen", f"udp:{h.LOOPBACK}:{port}", "--shards", str(shards)]
    proc = procs.start("ringsipd", argv)
    ok = h.wait_until(lambda: h.udp_port_bound(port) or not proc.alive(), 10)
    if not ok or not proc.alive():
        pytest.fail(f"ringsipd -f {script} did not start (rc={proc.popen.poll()}): {proc.stderr()[-1500:]}",
                    pytrace=False)
    return proc


def describe(res: h.UacResult) -> str:
    return (f"ok={res.successful}/{res.calls} failed={res.failed} retrans={res.retransmissions} "
            f"exit={res.exit_codes} wall={res.wall_s:.1f}s\n{res.errors_tail[-3000:]}")


def recv_until(sock: socket.socket, wanted: str, seconds: float) -> str:
    """The first datagram whose first line contains `wanted`; others (100, retransmissions) are skipped."""
    end = time.monotonic() + seconds
    while True:
        sock.settimeout(max(0.01, end - time.monotonic()))
        text = sock.recv(65536).decode()
        if wanted in text.split("\r\n", 1)[0]:
            return text


def response_to(request: str, status: str, to_tag: str) -> str:
    """A UAS's response to `request`: its Vias, From, Call-ID, CSeq, and To with our tag."""
    lines = request.split("\r\n")
    keep = [l for l in lines if l.split(":", 1)[0].lower() in ("via", "from", "call-id", "cseq")]
    to = next(l for l in lines if l.lower().startswith("to:"))
    return (f"SIP/2.0 {status}\r\n" + "\r\n".join(keep) + f"\r\n{to};tag={to_tag}\r\n"
            "Contact: <sip:callee@127.0.0.1>\r\nContent-Length: 0\r\n\r\n")
