"""acc: records of answered transactions in MariaDB (OpenSIPS' acc and missed_calls tables) and in the log.

- sipp calls through the proxy on two shards: one acc row per INVITE and per BYE, exactly, with the call's
  Call-ID, tags, code and time, and an extra field from $acc_extra; one log line each;
- busy calls with do_accounting("db", "missed"): missed_calls rows with 486 and nothing in acc; the 2.x style
  (db_flag / db_missed_flag set with setflag, db_extra from a pseudo-variable) does the same;
- MariaDB stopped in the middle of a load (a private server the test starts, stops and starts again): the
  rows wait in memory, spill to the file, and are replayed once the server is back: none lost, none doubled;
- rows the server refuses (an unknown column) are kept in the rejected file and counted, and the daemon goes on.
"""

import os
import shutil
import signal
import sys
import threading
import subprocess
import time
from pathlib import Path

import harness as h
import pytest
from conftest import describe, start_script
from test_async import DB_URL, need_mariadb
from test_permissions import sql
from test_registrar_db import query

SCENARIOS = Path(__file__).resolve().parent / "scenarios"

ACC = f"ringsip_acc_{os.getpid()}"
MISSED = f"ringsip_missed_{os.getpid()}"

# OpenSIPS 3.x's acc and missed_calls tables, with one extra column.
ACC_COLUMNS = """id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, method CHAR(16) NOT NULL DEFAULT '',
    from_tag CHAR(64) NOT NULL DEFAULT '', to_tag CHAR(64) NOT NULL DEFAULT '', callid CHAR(64) NOT NULL DEFAULT '',
    sip_code CHAR(3) NOT NULL DEFAULT '', sip_reason CHAR(32) NOT NULL DEFAULT '', time DATETIME NOT NULL,
    duration INT UNSIGNED NOT NULL DEFAULT 0, ms_duration INT UNSIGNED NOT NULL DEFAULT 0,
    setuptime INT UNSIGNED NOT NULL DEFAULT 0, created DATETIME DEFAULT NULL, caller CHAR(64) DEFAULT NULL"""
MISSED_COLUMNS = """id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, method CHAR(16) NOT NULL DEFAULT '',
    from_tag CHAR(64) NOT NULL DEFAULT '', to_tag CHAR(64) NOT NULL DEFAULT '', callid CHAR(64) NOT NULL DEFAULT '',
    sip_code CHAR(3) NOT NULL DEFAULT '', sip_reason CHAR(32) NOT NULL DEFAULT '', time DATETIME NOT NULL,
    setuptime INT UNSIGNED NOT NULL DEFAULT 0, created DATETIME DEFAULT NULL, caller CHAR(64) DEFAULT NULL"""

SCRIPT = """
log_level = 3
# These tests count calls and rows, not 503s: a sanitizer build would shed load at the rates they drive.
overload_threshold = 0
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "acc.so"
modparam("tm", "fr_inv_timeout", 5)
modparam("acc", "db_url", "{url}")
modparam("acc", "db_table_acc", "{acc}")
modparam("acc", "db_table_missed_calls", "{missed}")
modparam("acc", "spill_dir", "{spill}")
modparam("acc", "queue_size", {queue})
{extra}
route {{
    {mark}
    if (!t_relay("udp:127.0.0.1:{uas}")) {{ sl_send_reply(500, "Server Unreachable"); }}
}}
"""

MARK_3X = """if (is_method("INVITE|BYE")) {
        do_accounting("db|log", "missed");
        $acc_extra(who) = $fU;
    }"""
EXTRA_3X = 'modparam("acc", "extra_fields", "db: who->caller; log: who->caller")'

MARK_2X = """if (is_method("INVITE|BYE")) { setflag(ACC_DO); setflag(ACC_MISSED); }"""
EXTRA_2X = """modparam("acc", "db_flag", "ACC_DO")
modparam("acc", "db_missed_flag", "ACC_MISSED")
modparam("acc", "db_extra", "caller=$fU")"""


def tables(extra_column: str = "caller"):
    sql(f"DROP TABLE IF EXISTS {ACC}, {MISSED}")
    sql(f"CREATE TABLE {ACC} ({ACC_COLUMNS.replace('caller', extra_column)})")
    sql(f"CREATE TABLE {MISSED} ({MISSED_COLUMNS.replace('caller', extra_column)})")


def script(tmp: Path, uas: int, mark: str, extra: str, url: str = DB_URL, queue: int = 10000) -> Path:
    path = tmp / "acc.cfg"
    path.write_text(SCRIPT.format(url=url, acc=ACC, missed=MISSED, spill=tmp / "spill", queue=queue, extra=extra,
                                  mark=mark, uas=uas))
    return path


def rows(table: str, port: int = 3306) -> list[tuple]:
    if port == 3306:
        return query(f"SELECT method, sip_code, sip_reason, callid, from_tag, to_tag, caller, "
                     f"ABS(TIMESTAMPDIFF(SECOND, time, NOW())) < 120 FROM {table} ORDER BY id")
    done = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{port}", "-uany", "ringsip", "-N", "-B", "-e",
                           f"SELECT method, sip_code, callid FROM {table} ORDER BY id"],
                          check=True, capture_output=True, text=True, timeout=30)
    return [tuple(line.split("\t")) for line in done.stdout.splitlines()]


def wait_rows(table: str, count: int, seconds: float = 10, port: int = 3306) -> list[tuple]:
    deadline = time.monotonic() + seconds
    while True:
        got = rows(table, port)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def unpaired(got: list[tuple]) -> list[tuple]:
    """The rows of calls that lack their INVITE or their BYE row."""
    methods = {}
    for r in got:
        methods.setdefault(r[2], []).append(r[0])
    return [(callid, sorted(seen)) for callid, seen in methods.items() if sorted(seen) != ["BYE", "INVITE"]]


def describe_spill(spill: Path) -> str:
    """The spill directory's files: sizes, offsets, and the rows not yet replayed."""
    parts = []
    for f in sorted(spill.glob("acc-*")):
        text = f.read_text(errors="replace")
        parts.append(f"{f.name}: {len(text)} bytes" + (f" = {text.strip()}" if f.suffix == ".offset" else ""))
        if f.suffix == ".offset" and text.strip().isdigit():
            body = (spill / (f.stem + ".spill")).read_text(errors="replace")
            parts.append(f"unreplayed of {f.stem}: {body[int(text.strip()):][:1500]!r}")
    return "; ".join(parts) or "no spill files"


def counters(procs, daemon) -> dict:
    assert procs.stop(daemon) == 0, daemon.stderr()[-2000:]
    total = {}
    for row in h.counter_rows(daemon):
        for key, value in row.items():
            if key.startswith("acc_") and isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return total


@pytest.fixture
def acc_tables():
    need_mariadb()
    tables()
    yield
    sql(f"DROP TABLE IF EXISTS {ACC}, {MISSED}")


def test_every_invite_and_bye_is_one_acc_row_and_one_log_line(procs, ringsipd, sipp, acc_tables):
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, MARK_3X, EXTRA_3X), proxy, shards=2)
    res = h.run_uacs(procs, proxy, rate=100, calls=300, timeout=40)
    assert res.failed == 0 and res.successful == 300, describe(res)
    got = wait_rows(ACC, 600)
    assert len(got) == 600, got[-5:]
    assert sorted({r[0] for r in got}) == ["BYE", "INVITE"]
    assert all(r[1] == "200" and r[2] == "OK" and r[6] == "sipp" and r[7] == "1" for r in got), got[:3]
    invites = {r[3]: r for r in got if r[0] == "INVITE"}
    byes = {r[3]: r for r in got if r[0] == "BYE"}
    assert len(invites) == 300 and invites.keys() == byes.keys()
    # The INVITE's To tag is the callee's (from its 200); every From tag is the caller's.
    assert all(r[4] and r[5] for r in invites.values())
    assert rows(MISSED) == []
    log = [l for l in daemon.stderr().splitlines() if "ACC: transaction answered:" in l]
    assert len(log) == 600 and all(";caller=sipp" in l and ";code=200;" in l for l in log), log[:2]
    total = counters(procs, daemon)
    assert total["acc_written"] == 600 and total["acc_spilled"] == 0 and total["acc_failed"] == 0, total


@pytest.mark.parametrize("style", ["3.x", "2.x"])
def test_busy_calls_are_missed_calls_not_acc_rows(procs, ringsipd, sipp, acc_tables, style):
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas, scenario=SCENARIOS / "tm" / "uas-busy.xml")
    mark, extra = (MARK_3X, EXTRA_3X) if style == "3.x" else (MARK_2X, EXTRA_2X)
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, mark, extra), proxy)
    res = h.run_uacs(procs, proxy, rate=50, calls=40, timeout=30, scenario=SCENARIOS / "tm" / "uac-busy.xml")
    assert res.successful == 40, describe(res)
    got = wait_rows(MISSED, 40)
    assert len(got) == 40 and all(r[0] == "INVITE" and r[1] == "486" and r[2] == "Busy Here" and r[6] == "sipp"
                                  for r in got), got[:3]
    assert len({r[3] for r in got}) == 40
    time.sleep(0.5)
    assert rows(ACC) == []
    procs.stop(daemon)


def test_a_failed_flag_accounts_the_failure_in_acc_too(procs, ringsipd, sipp, acc_tables):
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas, scenario=SCENARIOS / "tm" / "uas-busy.xml")
    mark = 'if (is_method("INVITE")) { do_accounting("db", "failed"); }'
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, mark, ""), proxy)
    res = h.run_uacs(procs, proxy, rate=50, calls=10, timeout=30, scenario=SCENARIOS / "tm" / "uac-busy.xml")
    assert res.successful == 10, describe(res)
    got = wait_rows(ACC, 10)
    assert len(got) == 10 and all(r[1] == "486" and r[6] == "NULL" for r in got), got[:3]
    assert rows(MISSED) == []
    procs.stop(daemon)


class PrivateMariaDB:
    """A MariaDB server of the test's own (its data directory under the test's workdir, no grant tables), so the
    test can stop it in the middle of a load and start it again without touching the shared one."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "mariadb"
        self.port = free_tcp_port()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir()
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)

    def start(self):
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir / 'data'}", f"--socket={self.dir / 'sock'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", "--user=root", "--skip-grant-tables",
             f"--pid-file={self.dir / 'pid'}", f"--log-error={self.dir / 'err.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert h.wait_until(lambda: self.sql("SELECT 1", check=False) == 0, 30), (self.dir / "err.log").read_text()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def sql(self, statement: str, check: bool = True) -> int:
        done = subprocess.run(["mariadb", "-h127.0.0.1", f"-P{self.port}", "-uany", "-e", statement],
                              capture_output=True, timeout=30)
        if check:
            assert done.returncode == 0, done.stderr
        return done.returncode


def free_tcp_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_mariadb(procs):
    """A started PrivateMariaDB with the ringsip database and the test's acc tables; stopped at the end."""
    need_mariadb()
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        pytest.skip("mariadbd is not installed: run `make test-deps`")
    server = PrivateMariaDB(procs.workdir)
    server.start()
    try:
        server.sql("CREATE DATABASE ringsip")
        server.sql(f"CREATE TABLE ringsip.{ACC} ({ACC_COLUMNS})")
        server.sql(f"CREATE TABLE ringsip.{MISSED} ({MISSED_COLUMNS})")
        yield server
    finally:
        server.stop()


def test_rows_spill_while_mariadb_is_stopped_and_are_replayed_none_lost_none_doubled(procs, ringsipd, sipp,
                                                                                    private_mariadb):
    server = private_mariadb
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    url = f"mysql://any:any@127.0.0.1:{server.port}/ringsip"
    # A small memory queue, so the outage spills to the file.
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, MARK_3X, EXTRA_3X, url=url, queue=50),
                          proxy, shards=2)
    def outage():
        time.sleep(1.5)
        server.stop()

    cut = threading.Thread(target=outage)
    cut.start()
    res = h.run_uacs(procs, proxy, rate=100, calls=500, timeout=60)
    cut.join()
    assert res.failed == 0 and res.successful == 500, describe(res)
    spill = procs.workdir / "spill"
    assert sum(f.stat().st_size for f in spill.glob("acc-*.spill")) > 0, "nothing was spilled"
    server.start()
    got = wait_rows(ACC, 1000, seconds=45, port=server.port)
    if len(got) != 1000:
        # Once seen (999 of 1000 under the sanitizer build): say whether the row was late or lost.
        total = counters(procs, daemon)
        pytest.fail(f"{len(got)} rows; unpaired: {unpaired(got)}; counters {total}; "
                    f"{describe_spill(spill)}; stderr: {daemon.stderr()[-3000:]}")
    assert len({(r[0], r[2]) for r in got}) == 1000, "a row was written twice"
    total = counters(procs, daemon)
    assert total["acc_spilled"] > 0 and total["acc_replayed"] > 0 and total["acc_failed"] == 0, total
    assert total["acc_written"] == 1000, total


def test_rows_the_server_refuses_are_kept_and_counted(procs, ringsipd, sipp, acc_tables):
    tables(extra_column="someone_else")
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, MARK_3X, EXTRA_3X), proxy)
    res = h.run_uacs(procs, proxy, rate=50, calls=20, timeout=30)
    assert res.successful == 20, describe(res)
    rejected = procs.workdir / "spill" / "acc-0.rejected"
    assert h.wait_until(lambda: rejected.exists() and len(rejected.read_text().splitlines()) == 40, 10)
    line = rejected.read_text().splitlines()[0]
    assert line.startswith(f"INSERT INTO {ACC} (method, from_tag, to_tag, callid, sip_code, sip_reason, time, caller) VALUES \t(")
    total = counters(procs, daemon)
    assert total["acc_failed"] == 40 and total["acc_written"] == 0, total
    assert "Unknown column 'caller'" in daemon.stderr()


@pytest.mark.parametrize("line, message", [
    ('do_accounting("aaa");', "the aaa backend needs loadmodule \"aaa_radius.so\""),
    ('do_accounting("evi");', "the evi backend is not built in ringsip"),
    ('do_accounting("log", "cdr");', "'cdr' needs loadmodule \"dialog.so\""),
    ('do_accounting("log", "sometimes");', "unknown flag 'sometimes'"),
    ('acc_aaa_request("200 OK");', "acc_aaa_request needs loadmodule \"aaa_radius.so\""),
    ('do_accounting("syslog");', "unknown backend 'syslog'"),
    ('$acc_extra(x) = $fU; do_accounting("log");', None),
])
def test_the_check_names_what_acc_cannot_do(ringsipd, tmp_path, line, message):
    path = tmp_path / "check.cfg"
    path.write_text('loadmodule "tm.so"\nloadmodule "acc.so"\nmodparam("acc", "log_facility", "LOG_LOCAL0")\n'
                    f'route {{\n    {line}\n    t_relay("udp:127.0.0.1:9");\n}}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", path], capture_output=True, text=True, timeout=30)
    if message is None:
        assert done.returncode == 0, done.stderr
        assert "parameter 'log_facility' of module 'acc' is accepted but has no effect" in done.stderr
    else:
        assert done.returncode != 0 and message in done.stderr and "check.cfg:5:" in done.stderr, done.stderr


def test_db_accounting_without_a_db_url_fails_the_check(ringsipd, tmp_path):
    path = tmp_path / "nodb.cfg"
    path.write_text('loadmodule "tm.so"\nloadmodule "acc.so"\nmodparam("acc", "db_flag", 2)\n'
                    'route {\n    setflag(2);\n    t_relay("udp:127.0.0.1:9");\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", path], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "db_flag needs modparam(\"acc\", \"db_url\"" in done.stderr, done.stderr
    path.write_text('loadmodule "tm.so"\nloadmodule "acc.so"\n'
                    'route {\n    do_accounting("db");\n    t_relay("udp:127.0.0.1:9");\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", path], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "nodb.cfg:4:" in done.stderr and "needs modparam(\"acc\", \"db_url\"" in done.stderr


def test_rows_spilled_before_a_stop_are_written_by_the_next_start(procs, ringsipd, sipp, private_mariadb):
    server = private_mariadb
    server.stop()
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    url = f"mysql://any:any@127.0.0.1:{server.port}/ringsip"
    path = script(procs.workdir, uas, MARK_3X, EXTRA_3X, url=url)
    daemon = start_script(procs, ringsipd, path, proxy)
    res = h.run_uacs(procs, proxy, rate=100, calls=100, timeout=30)
    assert res.successful == 100, describe(res)
    total = counters(procs, daemon)
    assert total["acc_written"] == 0 and total["acc_spilled"] == 200, total
    server.start()
    daemon = start_script(procs, ringsipd, path, proxy)
    got = wait_rows(ACC, 200, seconds=30, port=server.port)
    assert len(got) == 200 and len(set(got)) == 200, f"{len(got)} rows, {len(set(got))} distinct"
    total = counters(procs, daemon)
    assert total["acc_replayed"] == 200 and total["acc_written"] == 200, total
    assert not any(f.stat().st_size for f in (procs.workdir / "spill").glob("acc-*.spill"))


RADIUS_ACC_SCRIPT = """
log_level = 3
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "aaa_radius.so"
loadmodule "acc.so"
modparam("aaa_radius", "secret", "testing123")
modparam("aaa_radius", "acct_server", "udp:127.0.0.1:{acct}")
modparam("acc", "aaa_url", "radius:/etc/radiusclient-ng/radiusclient.conf")
modparam("acc", "service_type", 15)
modparam("acc", "extra_fields", "aaa: who->User-Name; to->Called-Station-Id")
modparam("acc", "spill_dir", "{spill}")
route {{
    if (is_method("INVITE|BYE")) {{
        do_accounting("aaa", "failed");
        $acc_extra(who) = $fU;
        $acc_extra(to) = $tu;
    }}
    t_relay("udp:127.0.0.1:{uas}");
}}
"""


def test_radius_accounting_reaches_freeradius_start_and_stop_for_every_call(procs, ringsipd, sipp, tmp_path):
    from test_async import FREERADIUS_SETUP
    if not Path("/usr/sbin/freeradius").exists():
        pytest.skip("freeradius is not installed: run `make test-deps`")
    ports = h.free_udp_ports(5)
    # The server's log directory (where its detail module writes each Accounting-Request) under the test's own.
    setup = FREERADIUS_SETUP.replace(
        "exec freeradius", 'mkdir -p "$DIR/log"\n'
        'sed -i -E "s|^([[:space:]]*)logdir = .*|\\1logdir = $DIR/log|" "$DIR/raddb/radiusd.conf"\nexec freeradius')
    server = procs.start("freeradius", ["sh", "-c", setup, "sh", str(tmp_path), *map(str, ports)])
    assert h.wait_until(lambda: "Ready to process requests" in server.stdout() or not server.alive(), 15), \
        server.stdout()[-2000:]
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    path = tmp_path / "radius-acc.cfg"
    path.write_text(RADIUS_ACC_SCRIPT.format(acct=ports[1], spill=tmp_path / "spill", uas=uas))
    daemon = start_script(procs, ringsipd, path, proxy, shards=2)
    res = h.run_uacs(procs, proxy, rate=20, calls=20, timeout=30)
    assert res.successful == 20, describe(res)

    def records() -> list[str]:
        text = "".join(f.read_text(errors="replace") for f in (tmp_path / "log" / "radacct").rglob("detail-*"))
        return [r for r in text.split("\n\n") if "Acct-Session-Id" in r]
    assert h.wait_until(lambda: len(records()) >= 40, 10), records()[-2:]
    got = records()
    assert len(got) == 40
    starts = [r for r in got if "Acct-Status-Type = Start" in r]
    stops = [r for r in got if "Acct-Status-Type = Stop" in r]
    assert len(starts) == 20 and len(stops) == 20
    # Service-Type 15 is "IAPP-Register" in FreeRADIUS' dictionary.
    assert all('User-Name = "sipp"' in r and "Service-Type = IAPP-Register" in r and "Called-Station-Id" in r for r in got), got[0]
    session = lambda r: r.split('Acct-Session-Id = "', 1)[1].split('"', 1)[0]
    assert {session(r) for r in starts} == {session(r) for r in stops} and len({session(r) for r in starts}) == 20
    total = counters(procs, daemon)
    assert total["acc_written"] == 40 and total["acc_failed"] == 0, total


SLOW_PROXY = r"""
import asyncio, sys
listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pipe(reader, writer, slow):
    try:
        while data := await reader.read(65536):
            if slow:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def serve(client_reader, client_writer):
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False))

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def test_a_database_that_takes_100_ms_a_statement_costs_no_call_and_no_row(procs, ringsipd, sipp, acc_tables):
    """MariaDB behind a relay that holds every client packet 100 ms: each shard's two connections then carry ten
    statements a second, so rows wait and go out in larger batches; the calls stay clean and every row arrives."""
    slow = free_tcp_port()
    relay = procs.start("slowdb", [sys.executable, "-c", SLOW_PROXY,
                                   str(slow), "3306", "0.1"])
    assert h.wait_until(lambda: "ready" in relay.stdout() or not relay.alive(), 10), relay.stderr()
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    url = DB_URL.replace("127.0.0.1:3306", f"127.0.0.1:{slow}")
    daemon = start_script(procs, ringsipd, script(procs.workdir, uas, MARK_3X, EXTRA_3X, url=url), proxy, shards=2)
    # The sanitizer build (make test-asan) is several times slower: a quarter of the load.
    calls, rate = (1000, 100) if "asan" in os.environ.get("RINGSIPD", "") else (4000, 400)
    res = h.run_uacs(procs, proxy, rate=rate, calls=calls, timeout=60)
    assert res.failed == 0 and res.successful == calls and res.retransmissions == 0, describe(res)
    got = wait_rows(ACC, 2 * calls, seconds=30)
    assert len(got) == 2 * calls and len({(r[0], r[3]) for r in got}) == 2 * calls
    total = counters(procs, daemon)
    assert total["acc_written"] == 2 * calls and total["acc_failed"] == 0, total
