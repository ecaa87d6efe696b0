"""Shared machinery for perf/bench, perf/compare, perf/profile and Tests/integration.

Everything here drives real processes on 127.0.0.1 only: the target (ringsipd, Kamailio or OpenSIPS)
running a scenario's script, a `sipp` UAS behind it when the scenario has one, and one or more `sipp`
UACs in front of it. Every process is started in its own
session (process group) and registered in a `ProcGroup`, whose `close()` kills whatever is still
running, so a crash or Ctrl-C of the harness leaves nothing behind.

Figures come from the kernel, not from the target: CPU is time on CPU from /proc/PID/task/*/schedstat
(all threads; for a multi-process target, the sum over its process tree; utime+stime from
/proc/PID/stat is the same quantity in 10 ms steps), peak RSS is VmHWM. sipp's own CPU comes from
the rusage of its exit.
"""

from __future__ import annotations

import csv
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PERF = REPO / "perf"
SCENARIOS = PERF / "scenarios"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"
# sipp's socket buffers (default 64 KiB): bursts of a few thousand calls/s overflow that, and the
# retransmissions it causes would be blamed on the target. The kernel caps it at net.core.rmem_max.
SIPP_BUFF = 1 << 20


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    """A folder under perf/scenarios/: the target's script (ringsip.cfg, kamailio.cfg, opensips.cfg)
    and the sipp XML it is driven with."""
    name: str
    call: str                 # what one sipp "call" is
    messages: int             # SIP messages the target receives per call (and sends: each is relayed or answered)
    uac_xml: str | None       # sipp UAC scenario in the folder; None: sipp's built-in `uac`
    uas_xml: str | None       # sipp UAS scenario in the folder; None: the target answers, no UAS
    rtt: str                  # what rt_p50_ms / rt_p99_ms measure (sipp rtd)
    shm_mb: int = 64          # Kamailio's / OpenSIPS' shared memory (-m): where their transactions live
    backend: str | None = None  # "http": the harness starts perf/delay_server.py; "mysql": the local MariaDB
    targets: tuple = ("ringsip", "kamailio", "opensips")  # the targets that have a script for it
    kamailio_modules: tuple = ()  # modules its kamailio.cfg loads that Debian does not package (kamailio_module)
    why_not: str = ""         # why a target missing from `targets` has none
    setup_sql: str | None = None  # a file in the folder run on the local MariaDB before the targets start
    delayed_backend: bool = True  # each call waits out the back-end's 20 ms (False: a plain lookup, register-auth)
    floor_args: tuple | None = None  # perf/floor's arguments for this scenario's floor; None: it has none
    transport: str = "udp"    # "tcp": sipp UAC and UAS over TCP (-t t1), the target listens on TCP too

    @property
    def sipp_transport(self) -> list[str]:
        return ["-t", "t1"] if self.transport == "tcp" else []

    def config_files(self) -> list[str]:
        return [f"{t}.cfg" for t in self.targets]

    def runs(self, target: str) -> bool:
        """Whether `target` can run this scenario: a script for it, or (a floor target) a floor."""
        return target in self.targets or (target in FLOOR_TARGETS and self.floor_args is not None)

    @property
    def folder(self) -> Path:
        return SCENARIOS / self.name

    def file(self, name: str | None) -> Path | None:
        return self.folder / name if name else None


SCENARIO_SPECS = {s.name: s for s in (
    Scenario("stateless", "INVITE, 200, ACK, BYE, 200 relayed", 5, None, "uas.xml", "INVITE to 200",
             floor_args=()),
    Scenario("register", "REGISTER answered 200 by the target", 1, "uac.xml", None, "REGISTER to 200"),
    Scenario("cancel", "INVITE, 180, CANCEL, 200, 487, ACK relayed", 6, "uac.xml", "uas.xml", "INVITE to 180"),
    # Kamailio keeps a transaction 5 s after its final response (wt_timer): ~40,000 live at 4000 calls/s,
    # which ran its tm out of a 512 MB pool here ("could not allocate shared memory", 500s); 2048 MB is
    # mapped, not touched until used. (ringsipd keeps them 32 s, RFC 6026 Timers L and J, in its own slots.)
    Scenario("stateful", "INVITE, 200, ACK, BYE, 200 relayed in transactions (+ 100 Trying)", 5, None, "uas.xml",
             "INVITE to 200", shm_mb=2048, floor_args=("--trying",)),
    # The `stateful` work plus a 20 ms back-end call per initial INVITE. Kamailio's async rest is
    # http_async_client (built from Debian's source package); blocking-rest is its blocking http_client_query;
    # its avp_db_query is blocking.
    # The `stateful` work plus a reply route that looks at every response (t_on_reply): ringsipd runs it from
    # the shard's loop, on a kept copy of the response.
    # `stateful` with sipp's UAC and UAS over TCP (one connection per UAC process, one per shard to the UAS).
    Scenario("stateful-tcp", "stateful over TCP both sides (+ 100 Trying)", 5, None, "uas.xml", "INVITE to 200",
             shm_mb=2048, targets=("ringsip", "kamailio"), transport="tcp",
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
    Scenario("stateful-onreply", "stateful + onreply_route on every response", 5, None, "uas.xml",
             "INVITE to 200", shm_mb=2048, targets=("ringsip", "kamailio"),
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
    Scenario("async-rest", "stateful + async rest_get (20 ms back-end) per INVITE", 5, None, "uas.xml",
             "INVITE to 200", shm_mb=2048, backend="http", kamailio_modules=("http_async_client",)),
    Scenario("blocking-rest", "stateful + blocking rest call (20 ms back-end) per INVITE", 5, None,
             "uas.xml", "INVITE to 200", shm_mb=2048, backend="http"),
    Scenario("async-db", "stateful + avp_db_query SELECT SLEEP(0.02) per INVITE", 5, None, "uas.xml",
             "INVITE to 200", shm_mb=2048, backend="mysql"),
    # A registrar in front of phones: each "call" registers user[call_number] (Contact at the UAS), then calls
    # it by its AOR; the target stores the binding (save), finds it (lookup) and relays the call in transactions.
    Scenario("register-call", "REGISTER, then INVITE (lookup), 200, ACK, BYE, 200 relayed", 6, "uac.xml", "uas.xml",
             "INVITE to 200", shm_mb=2048, targets=("ringsip", "kamailio"),
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
    # An authenticating registrar: REGISTER, 401, REGISTER with Digest credentials checked against a subscriber
    # row in MariaDB, 200 (save). Both targets query the database per authenticated REGISTER.
    Scenario("register-auth", "REGISTER, 401, REGISTER with credentials, 200", 2, "uac.xml", None,
             "first REGISTER to 200", backend="mysql", setup_sql="setup.sql", delayed_backend=False,
             targets=("ringsip", "kamailio"),
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
    # The `stateful` work plus accounting of every INVITE and BYE to a MariaDB acc table.
    Scenario("acc", "stateful + an acc row in MariaDB per INVITE and per BYE", 5, None, "uas.xml", "INVITE to 200",
             shm_mb=2048, backend="mysql", setup_sql="setup.sql", delayed_backend=False,
             targets=("ringsip", "kamailio"),
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
    # The `stateful` work plus a dialog per call and its accounting: ringsip one CDR at the BYE, Kamailio a dialog
    # (dlg_manage) and a row per INVITE and BYE.
    Scenario("dialog-acc", "stateful + dialog + accounting to MariaDB", 5, None, "uas.xml", "INVITE to 200",
             shm_mb=2048, backend="mysql", setup_sql="../acc/setup.sql", delayed_backend=False,
             targets=("ringsip", "kamailio"),
             why_not="no OpenSIPS install here to check an opensips.cfg against"),
)}
DB_URL = "mysql://ringsip:ringsip@127.0.0.1:3306/ringsip"
# Kamailio modules Debian does not package, built from its source package (scripts/ensure-kamailio-http-async).
KAMAILIO_EXTRA_MODULES = Path(os.environ.get("KAMAILIO_MODULES", "/usr/local/lib/ringsip/kamailio"))
KAMAILIO_MODULE_BUILDERS = {"http_async_client": "scripts/ensure-kamailio-http-async"}
DELAY_SERVER = PERF / "delay_server.py"
TARGETS = ("ringsip", "kamailio", "opensips", "floor", "floor-ring")
# perf/floor/floor.c: the least work that moves the same datagrams (see perf/README.md, "The floor"), with
# recvmmsg/sendmmsg or on io_uring as ringsipd sets it up. Built on first use into perf/out/bin.
FLOOR_TARGETS = ("floor", "floor-ring")
FLOOR_SOURCE = PERF / "floor" / "floor.c"

TOKEN = re.compile(r"@([A-Z_]+)@")


def render_config(template: Path, dest: Path, values: dict[str, object]) -> Path:
    """Copy `template` to `dest` with every `@NAME@` replaced by values[NAME]. A token without a value
    is an error (a config that still says `@UAS@` would fail later, less clearly)."""
    text = template.read_text()
    unknown = sorted({m.group(1) for m in TOKEN.finditer(text)} - set(values))
    if unknown:
        raise RuntimeError(f"{template}: no value for " + ", ".join(f"@{u}@" for u in unknown))
    dest.write_text(TOKEN.sub(lambda m: str(values[m.group(1)]), text))
    return dest


# --------------------------------------------------------------------------------------------
# Ports and readiness


def free_udp_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Ports that were free a moment ago: bound together so they are distinct, then released."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_udp_tcp_port(avoid: int = 0) -> int:
    """A port below the ephemeral range (32768 up) that both a UDP and a TCP socket can bind now: a daemon
    listening on both (and no outgoing connection of anyone's takes it meanwhile)."""
    while True:
        port = random.randrange(20000, 32000)
        if port == avoid:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                 socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                udp.bind((LOOPBACK, port))
                tcp.bind((LOOPBACK, port))
            return port
        except OSError:
            continue


def udp_port_bound(port: int) -> bool:
    """True if some socket is bound to UDP `port` (IPv4 or IPv6), per /proc/net/udp{,6}."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    local = line.split()[1]  # e.g. 0100007F:13C4
                    if int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            pass
    return False


def tcp_port_listening(port: int) -> bool:
    """True if some socket listens on TCP `port` (IPv4 or IPv6), per /proc/net/tcp{,6} (state 0A)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            pass
    return False


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --------------------------------------------------------------------------------------------
# /proc readings


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime+stime of a live process (all its threads, live and exited), in seconds."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    # After "pid (comm) ", fields are numbered from 3 (state): utime is field 14, stime 15.
    return (int(f[11]) + int(f[12])) / CLK_TCK


def oncpu_seconds(pid: int) -> float:
    """Time on CPU of a live process's live threads, from /proc/PID/task/*/schedstat (ns). The same
    quantity as utime+stime (the kernel scales those to it), without their 10 ms tick granularity,
    which makes a short or light run's CPU per call jump in steps. Falls back to utime+stime."""
    total, seen = 0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                seen = True
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            pass
    return total / 1e9 if seen else cpu_seconds(pid)


def tree_oncpu_seconds(root: int) -> float:
    return sum(oncpu_seconds(p) for p in [root, *descendants(root)])


def ppid_of(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> list[int]:
    """Live descendants of `root` (not including it)."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        pp = ppid_of(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def tree_peak_rss_kb(root: int) -> int:
    """Sum of VmHWM over the process tree. For a multi-process target (Kamailio) this counts
    shared-memory pages once per process that touched them, so it overstates the total."""
    return sum(status_kb(p, "VmHWM") for p in [root, *descendants(root)])


def udp_snmp() -> dict[str, int]:
    """System-wide UDP counters from /proc/net/snmp (InErrors, RcvbufErrors, ...). On a machine
    where only the benchmark runs, a rise in RcvbufErrors means some socket's buffer overflowed."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def udp_drops(port: int) -> int:
    """Datagrams dropped (receive buffer full) by the sockets bound to UDP `port`: the last
    column of /proc/net/udp{,6}. Counts only sockets that still exist."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port:
                        total += int(cols[-1])
        except FileNotFoundError:
            pass
    return total


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    stdout_path: Path | None
    stderr_path: Path | None
    rusage: object | None = None  # resource.struct_rusage once reaped by `reap`

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def reap(self, timeout: float) -> int | None:
        """Wait up to `timeout` s for exit; keep its rusage (CPU) and return the exit code."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.returncode is not None:
                return self.popen.returncode
            try:
                pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped by Popen
                return self.popen.poll()
            if pid == self.pid:
                self.rusage = ru
                self.popen.returncode = os.waitstatus_to_exitcode(status)
                return self.popen.returncode
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def cpu_of_reaped(self) -> float:
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage else 0.0


class ProcGroup:
    """Starts processes, each in a new session; `close()` ends every one still running:
    SIGTERM to the process, then SIGKILL to its whole process group after a grace period."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def unique(self, name: str) -> str:
        """`name`, or `name-2`, `name-3`...: the first not used by a process of this group."""
        taken = {p.name for p in self.procs}
        base, n = name, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        return name

    def start(self, name: str, argv: list[str], cwd: Path | None = None, capture: bool = True,
              env: dict | None = None) -> Proc:
        name = self.unique(name)
        out = self.workdir / f"{name}.stdout" if capture else None
        err = self.workdir / f"{name}.stderr" if capture else None
        popen = subprocess.Popen(
            [str(a) for a in argv],
            cwd=str(cwd or self.workdir),
            stdin=subprocess.DEVNULL,
            stdout=open(out, "wb") if out else subprocess.DEVNULL,
            stderr=open(err, "wb") if err else subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, grace: float = 5.0) -> int | None:
        """Signal `proc`, wait up to `grace` s, then SIGKILL its process group. Returns the exit
        code it chose (None if it had to be killed)."""
        rc = proc.popen.returncode
        if rc is None:
            proc.signal(sig)
            rc = proc.reap(grace)
        self._kill_group(proc)
        if rc is None:
            proc.reap(5.0)
        return rc

    def _kill_group(self, proc: Proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc, grace=3.0)
        for proc in self.procs:
            for stream in (proc.popen.stdout, proc.popen.stderr):
                if stream:
                    stream.close()


# --------------------------------------------------------------------------------------------
# sipp


def sipp_time_us(value: str) -> int:
    """sipp prints durations as HH:MM:SS:micro."""
    h, m, s, us = value.split(":")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1_000_000 + int(us)


def read_sipp_stat(path: Path) -> dict[str, str]:
    """Last row of a `-trace_stat` CSV as {column: value} ('' when the file has no row)."""
    try:
        with open(path, newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def read_sipp_rtts_ms(paths: list[Path]) -> list[float]:
    out = []
    for p in paths:
        try:
            with open(p) as f:
                next(f, None)
                for line in f:
                    parts = line.split(";")
                    if len(parts) >= 2:
                        out.append(float(parts[1]))
        except FileNotFoundError:
            pass
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def start_uas(group: ProcGroup, port: int, scenario: Path | None = None, name: str = "uas",
              extra: list[str] = ()) -> Proc:
    """A sipp UAS on 127.0.0.1:`port`: the built-in `uas` scenario, or a scenario file."""
    sc = ["-sf", str(scenario)] if scenario else ["-sn", "uas"]
    argv = ["sipp", *sc, "-i", LOOPBACK, "-p", str(port), "-nostdin", "-trace_err", "-buff_size", str(SIPP_BUFF),
            "-trace_stat", "-stf", f"{name}_stat.csv", "-fd", "1", *extra]
    proc = group.start(name, argv)
    # `-t t1` in extra: the UAS listens on TCP instead.
    bound = tcp_port_listening if "t1" in extra else udp_port_bound
    if not wait_until(lambda: bound(port) or not proc.alive(), 10):
        raise RuntimeError(f"sipp UAS did not bind 127.0.0.1:{port}")
    if not proc.alive():
        raise RuntimeError(f"sipp UAS exited at once: {proc.stderr().strip()[-500:]}")
    return proc


@dataclass
class UacResult:
    offered_cps: float
    calls: int
    procs: int
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    created_cps: float = 0.0       # sum over UACs of sipp's own CallRate(C)
    wall_s: float = 0.0            # from the first UAC start to the last UAC exit
    exit_codes: list = field(default_factory=list)
    cpu_s: list = field(default_factory=list)  # per UAC, from rusage
    rtts_ms: list = field(default_factory=list)
    errors_tail: str = ""

    @property
    def achieved_cps(self) -> float:
        return self.successful / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def max_uac_cpu_pct(self) -> float:
        return max(self.cpu_s, default=0.0) / self.wall_s * 100 if self.wall_s > 0 else 0.0

    @property
    def timed_out(self) -> bool:
        return any(rc is None for rc in self.exit_codes)


def run_uacs(group: ProcGroup, target_port: int, rate: float, calls: int, procs: int = 1,
             timeout: float | None = None, tag: str = "uac", extra: list[str] = (),
             scenario: Path | None = None, on_started=None) -> UacResult:
    """Run `procs` sipp UACs against 127.0.0.1:`target_port`, splitting `rate` calls/s and `calls`
    between them, and wait for all to finish (at most `timeout` s, then they are killed).
    `on_started()` (optional) is called once all UACs have been spawned."""
    procs = max(1, min(procs, calls))
    if timeout is None:
        timeout = calls / rate + 15
    ports = free_udp_ports(procs)
    res = UacResult(offered_cps=rate, calls=calls, procs=procs)
    running = []
    t0 = time.monotonic()
    sc = ["-sf", str(scenario)] if scenario else ["-sn", "uac"]
    for i, port in enumerate(ports):
        n = calls // procs + (1 if i < calls % procs else 0)
        name = group.unique(f"{tag}{i}")
        argv = ["sipp", *sc, f"{LOOPBACK}:{target_port}", "-i", LOOPBACK, "-p", str(port),
                "-m", str(n), "-r", f"{rate / procs:.3f}", "-rp", "1000",
                "-nostdin", "-timeout", f"{int(timeout)}s", "-buff_size", str(SIPP_BUFF),
                "-trace_stat", "-stf", f"{name}_stat.csv", "-fd", "1",
                "-trace_rtt", "-rtt_freq", "1",
                "-trace_err", "-error_file", f"{name}_errors.log",
                "-trace_screen", "-screen_file", f"{name}_screen.log", *extra]
        proc = group.start(name, argv)
        proc._rtt_glob = f"*_{proc.pid}_rtt.csv"
        running.append((name, proc))
    if on_started:
        on_started()
    deadline = t0 + timeout + 5
    for name, proc in running:
        rc = proc.reap(max(0.1, deadline - time.monotonic()))
        if rc is None:
            group.stop(proc, grace=1.0)
        res.exit_codes.append(rc)
        res.cpu_s.append(proc.cpu_of_reaped())
    res.wall_s = time.monotonic() - t0
    for name, proc in running:
        st = read_sipp_stat(group.workdir / f"{name}_stat.csv")
        res.successful += int(st.get("SuccessfulCall(C)", 0) or 0)
        res.failed += int(st.get("FailedCall(C)", 0) or 0)
        res.retransmissions += int(st.get("Retransmissions(C)", 0) or 0)
        try:
            res.created_cps += float(st.get("CallRate(C)", 0) or 0)
        except ValueError:
            pass
        res.rtts_ms += read_sipp_rtts_ms(sorted(group.workdir.glob(proc._rtt_glob)))
        errf = group.workdir / f"{name}_errors.log"
        if errf.exists() and errf.stat().st_size:
            res.errors_tail += f"--- {name} ---\n" + errf.read_text(errors="replace")[-1500:]
    # Calls sipp never got to start (killed by the timeout) count as failed.
    res.failed += max(0, calls - res.successful - res.failed) if res.timed_out else 0
    return res


# --------------------------------------------------------------------------------------------
# ringsipd's counters (SIGUSR1 prints one line a shard)

COUNTER_LINE = re.compile(r"shard (\d+): (.*)$")


def counter_rows(proc: Proc) -> list[dict]:
    rows = []
    for line in (proc.stdout() + "\n" + proc.stderr()).splitlines():
        m = COUNTER_LINE.search(line.strip())
        if m:
            rows.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))} | {"shard": int(m.group(1))})
    return rows


def signal_counters(proc: Proc, shards: int = 1) -> list[dict] | None:
    """SIGUSR1, then the counter rows it printed (one per shard, and a total when there are several); None
    when `shards` rows do not come within 5 s."""
    before = len(counter_rows(proc))
    proc.signal(signal.SIGUSR1)
    if not wait_until(lambda: len(counter_rows(proc)) >= before + shards, 5):
        return None
    return counter_rows(proc)[before:]


def shard_received(proc: Proc, shards: int) -> list[int] | None:
    """Each shard's `received=` counter (datagrams it read), from SIGUSR1; None when they do not all come."""
    rows = signal_counters(proc, shards)
    latest = {row["shard"]: row.get("received", 0) for row in rows or []}
    return [latest[i] for i in range(shards)] if all(i in latest for i in range(shards)) else None


def dump_counters(proc: Proc) -> dict:
    """SIGUSR1, then the shard-0 line it printed (one-shard daemons)."""
    rows = signal_counters(proc)
    if rows is None:
        raise RuntimeError("ringsipd printed no counters on SIGUSR1")
    row = rows[-1]
    if "transactions" not in row:
        raise RuntimeError(f"no transactions= in the counters: {row}")
    return row


# --------------------------------------------------------------------------------------------
# Targets


def ringsipd_path() -> Path:
    return Path(os.environ.get("RINGSIPD", REPO / ".build" / "release" / "ringsipd"))


def start_ringsip(group: ProcGroup, port: int, forward_port: int | None = None, shards: int | None = None,
                  extra: list[str] = (), name: str = "ringsipd", script: Path | None = None) -> Proc:
    """ringsipd on 127.0.0.1:`port`: running `script` (-f; its `listen` should be that port), or the
    one-line forwarding script to `forward_port` (--forward)."""
    binary = ringsipd_path()
    if not binary.exists():
        raise FileNotFoundError(f"{binary} not found: run `make build` (or set RINGSIPD=path)")
    if script is not None:
        argv = [binary, "-f", script]
    else:
        argv = [binary, "--listen", f"udp:{LOOPBACK}:{port}", "--forward", f"udp:{LOOPBACK}:{forward_port}"]
    if shards:
        argv += ["--shards", str(shards)]
    argv += list(extra)
    proc = group.start(name, argv)
    if not wait_until(lambda: udp_port_bound(port) or not proc.alive(), 10) or not proc.alive():
        raise RuntimeError(f"ringsipd did not start: {proc.stderr().strip()[-800:]}")
    return proc


def start_kamailio(group: ProcGroup, port: int, forward_port: int, children: int,
                   cfg: Path | None = None, name: str = "kamailio", mem: str = "tlsf", shm_mb: int = 64,
                   defines: list[str] = (), tcp: bool = False) -> Proc:
    """Kamailio in the foreground (-DD: the creator stays attached, still forks its children),
    logging to stderr (-E), `children` UDP workers (-n) on the one listen socket; `tcp`: it listens on TCP
    at the same address too (its cfg sets tcp_children)."""
    cfg = cfg or SCENARIOS / "stateless" / "kamailio.cfg"
    rundir = group.workdir / f"{name}-run"
    rundir.mkdir(exist_ok=True)
    argv = ["kamailio", "-f", cfg, "-DD", "-E", "-n", str(children),
            "-l", f"udp:{LOOPBACK}:{port}", "-Y", rundir, "-m", str(shm_mb), "-M", "8", "-x", mem,
            "-A", f'UAS_HOST="{LOOPBACK}"', "-A", f"UAS_PORT={forward_port}"]
    if tcp:
        argv += ["-l", f"tcp:{LOOPBACK}:{port}"]
    for d in defines:
        argv += ["-A", d]
    proc = group.start(name, argv)
    if not wait_until(lambda: udp_port_bound(port) or not proc.alive(), 15) or not proc.alive():
        raise RuntimeError(f"kamailio did not start: {proc.stderr().strip()[-800:]}")
    # The creator forks its workers after binding: wait until they exist.
    wait_until(lambda: len(descendants(proc.pid)) >= children, 5)
    time.sleep(0.2)
    return proc


def opensips_path() -> Path | None:
    """An OpenSIPS install (not packaged by Debian): $OPENSIPS, `opensips` on PATH, or the usual
    prefixes of a source build. None if there is none."""
    env = os.environ.get("OPENSIPS")
    if env:
        return Path(env) if Path(env).exists() else None
    found = shutil.which("opensips")
    if found:
        return Path(found)
    for cand in ("/usr/local/sbin/opensips", "/opt/opensips/sbin/opensips", "/usr/sbin/opensips"):
        if os.access(cand, os.X_OK):
            return Path(cand)
    return None


def kamailio_module(name: str) -> Path:
    """A Kamailio module Debian does not package, built by scripts/ensure-kamailio-* (make test-deps)."""
    return KAMAILIO_EXTRA_MODULES / f"{name}.so"


def floor_path() -> Path:
    return PERF / "out" / "bin" / "floor"


def build_floor() -> str | None:
    """Builds perf/floor when its binary is missing or older than its source; None, or why it cannot."""
    binary = floor_path()
    if binary.exists() and binary.stat().st_mtime >= FLOOR_SOURCE.stat().st_mtime:
        return None
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return "no C compiler (cc) to build perf/floor: run `make test-deps`"
    binary.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(FLOOR_SOURCE), "-luring", "-lpthread"],
                          capture_output=True, text=True)
    return None if done.returncode == 0 else f"perf/floor did not build: {done.stderr.strip()[-400:]}"


def start_floor(group: ProcGroup, port: int, uas_port: int, workers: int, ring: bool, extra: tuple = ()) -> Proc:
    """perf/floor on 127.0.0.1:`port` relaying to the UAS, `workers` pinned threads."""
    why = build_floor()
    if why:
        raise RuntimeError(why)
    argv = [str(floor_path()), str(port), str(uas_port), "--io", "ring" if ring else "mmsg",
            "--workers", str(workers), *extra]
    proc = group.start("floor-ring" if ring else "floor", argv)
    if not wait_until(lambda: udp_port_bound(port) or not proc.alive(), 10) or not proc.alive():
        raise RuntimeError(f"perf/floor did not start: {proc.stderr().strip()[-800:]}")
    time.sleep(0.1)
    return proc


def target_available(target: str, scenario: Scenario | None = None) -> str | None:
    """None if `target` can run here (the scenario's script for it, when given), else why not (one line)."""
    if target in FLOOR_TARGETS:
        return build_floor()
    if target == "ringsip":
        return None if ringsipd_path().exists() else f"{ringsipd_path()} not found: run `make build`"
    if target == "kamailio":
        if not shutil.which("kamailio"):
            return "kamailio not found: run `make test-deps`"
        for name in scenario.kamailio_modules if scenario else ():
            if not kamailio_module(name).exists():
                return (f"Kamailio's {name} (not packaged by Debian) is not built at {kamailio_module(name)}: "
                        f"run {KAMAILIO_MODULE_BUILDERS[name]} (make test-deps)")
        return None
    if target == "opensips":
        return None if opensips_path() else "no OpenSIPS install found (not packaged by Debian; set OPENSIPS=path)"
    return f"unknown target {target}"


def start_opensips(group: ProcGroup, port: int, cfg: Path, name: str = "opensips", shm_mb: int = 64) -> Proc:
    """OpenSIPS with the main process in the foreground (-F), logging to stderr (-E). `cfg` is
    rendered already (its `socket` is 127.0.0.1:`port`, `udp_workers` set)."""
    binary = opensips_path()
    if binary is None:
        raise FileNotFoundError(target_available("opensips"))
    rundir = group.workdir / f"{name}-run"
    rundir.mkdir(exist_ok=True)
    argv = [binary, "-F", "-E", "-f", cfg, "-m", str(shm_mb), "-M", "8", "-w", rundir]
    proc = group.start(name, argv)
    if not wait_until(lambda: udp_port_bound(port) or not proc.alive(), 15) or not proc.alive():
        raise RuntimeError(f"opensips did not start: {proc.stderr().strip()[-800:]}")
    time.sleep(0.5)  # its workers fork after the bind
    return proc


def modparam_line(spec: str) -> str:
    """`tm.max_transactions=400000` → `modparam("tm", "max_transactions", 400000)` (a value that is not an
    integer is quoted)."""
    m = re.fullmatch(r"(\w+)\.(\w+)=(.*)", spec)
    if not m:
        raise RuntimeError(f"--ringsip-modparam wants MODULE.PARAM=VALUE, got {spec!r}")
    value = m.group(3) if re.fullmatch(r"-?\d+", m.group(3)) else '"' + m.group(3).replace('"', '\\"') + '"'
    return f'modparam("{m.group(1)}", "{m.group(2)}", {value})'


def mariadb_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, 3306)) == 0


def mariadb_pid() -> int | None:
    """The local MariaDB server's pid (not started by us: only read for its CPU time)."""
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() in ("mariadbd", "mysqld"):
                    return pid
        except OSError:
            pass
    return None


@dataclass
class Backend:
    kind: str | None
    values: dict                   # template tokens (@HTTP@, @DB_URL@)
    pid: int | None = None         # whose CPU is the back-end's (the delay server, or mariadbd)


def start_backend(group: ProcGroup, scenario: Scenario, delay_ms: int = 20) -> Backend:
    """What the scenario's script calls: the asyncio delay server (ours, in `group`) for "http", the
    already running local MariaDB for "mysql" (scripts/ensure-mariadb; an error if it is not up).
    `delay_ms`: how long the web service takes (@DELAY_MS@; the async timeout is 2 s or twice that)."""
    if scenario.backend == "http":
        proc = group.start("delay-server", [sys.executable, DELAY_SERVER])
        if not wait_until(lambda: proc.stdout().strip() != "" or not proc.alive(), 5) or not proc.alive():
            raise RuntimeError(f"delay server did not start: {proc.stderr().strip()[-500:]}")
        port = int(proc.stdout().split()[0])
        return Backend("http", {"HTTP": f"{LOOPBACK}:{port}", "DELAY_MS": delay_ms,
                                "ASYNC_TIMEOUT_MS": max(2000, 2 * delay_ms)}, proc.pid)
    if scenario.backend == "mysql":
        if not mariadb_up():
            raise RuntimeError("no MariaDB on 127.0.0.1:3306: run scripts/ensure-mariadb (make test-deps)")
        if scenario.setup_sql:
            subprocess.run(["mariadb", "-h127.0.0.1", "-P3306", "-uringsip", "-pringsip", "ringsip"],
                           stdin=open(scenario.folder / scenario.setup_sql), check=True, capture_output=True, timeout=60)
        return Backend("mysql", {"DB_URL": DB_URL}, mariadb_pid())
    return Backend(None, {})


def kamailio_defines(values: dict) -> list[str]:
    out = [f"WORKERS={values['WORKERS']}"] if "WORKERS" in values else []
    if "HTTP" in values:
        out.append(f'HTTP_URL="http://{values["HTTP"]}/delay?ms={values.get("DELAY_MS", 20)}"')
        out.append(f'HTTP_ASYNC_MODULE="{kamailio_module("http_async_client")}"')
    if "DB_URL" in values:
        out.append(f'DB_URL="{values["DB_URL"]}"')
    return out


def start_target(group: ProcGroup, target: str, scenario: Scenario, port: int, uas_port: int | None,
                 workers: int, ringsip_extra: list[str] = (), kamailio_mem: str = "tlsf",
                 ringsip_modparams: list[str] = (), backend: dict | None = None) -> Proc:
    """The target on 127.0.0.1:`port` running the scenario's script for it, `workers` workers
    (ringsipd shards, Kamailio children, OpenSIPS UDP workers), next hop the UAS (if any); `backend`:
    the back-end's template values (start_backend)."""
    if not scenario.runs(target):
        raise RuntimeError(f"{scenario.name} has no {target} script: {scenario.why_not}")
    if target in FLOOR_TARGETS:
        return start_floor(group, port, uas_port or 9, workers, ring=target == "floor-ring",
                           extra=scenario.floor_args)
    values = {"LISTEN": f"{LOOPBACK}:{port}", "UAS": f"{LOOPBACK}:{uas_port or 9}", "WORKERS": workers,
              **(backend or {})}
    if target == "ringsip":
        cfg = render_config(scenario.folder / "ringsip.cfg", group.workdir / "ringsip.cfg", values)
        if ringsip_modparams:
            with open(cfg, "a") as f:
                f.write("\n# --ringsip-modparam\n" + "".join(modparam_line(m) + "\n" for m in ringsip_modparams))
        return start_ringsip(group, port, shards=workers, extra=ringsip_extra, script=cfg)
    if target == "kamailio":
        return start_kamailio(group, port, uas_port or 9, children=workers,
                              cfg=scenario.folder / "kamailio.cfg", mem=kamailio_mem, shm_mb=scenario.shm_mb,
                              defines=kamailio_defines(values), tcp=scenario.transport == "tcp")
    if target == "opensips":
        cfg = render_config(scenario.folder / "opensips.cfg", group.workdir / "opensips.cfg", values)
        return start_opensips(group, port, cfg, shm_mb=scenario.shm_mb)
    raise ValueError(f"unknown target {target}")
