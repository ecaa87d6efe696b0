"""usrloc's db_mode 1 against a real MariaDB `location` table, in OpenSIPS' 3.x form (`expires` a UNIX time) and
its 2.x form (`expires` a DATETIME): each change of an AOR replaces its rows, a lapsed row is deleted on the
sweep, and a restarted daemon reads the live rows back, so a phone registered before the restart is still
found; a lapsed row is not loaded.
"""

import os
import subprocess
import time

import pytest

import harness as h
from conftest import recv_until, start_script
from test_async import DB_URL, final_reply, need_mariadb
from test_permissions import sql
from test_registrar import invite, phone, register

TABLE = f"ringsip_location_{os.getpid()}"

COLUMNS = """contact_id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY, username CHAR(64) NOT NULL DEFAULT '',
    domain CHAR(64) DEFAULT NULL, contact TEXT NOT NULL, received CHAR(255) DEFAULT NULL, path CHAR(255) DEFAULT NULL,
    expires {expires} NOT NULL, q FLOAT(10,2) NOT NULL DEFAULT 1.0, callid CHAR(255) NOT NULL DEFAULT 'Default-Call-ID',
    cseq INT NOT NULL DEFAULT 13, last_modified DATETIME NOT NULL DEFAULT '1900-01-01 00:00:01',
    flags INT NOT NULL DEFAULT 0, cflags CHAR(255) DEFAULT NULL, user_agent CHAR(255) NOT NULL DEFAULT '',
    socket CHAR(64) DEFAULT NULL, methods INT DEFAULT NULL, sip_instance CHAR(255) DEFAULT NULL"""

SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
modparam("usrloc", "db_mode", 1)
modparam("usrloc", "use_domain", 1)
modparam("usrloc", "db_url", "%s")
modparam("usrloc", "timer_interval", 1)
modparam("registrar", "min_expires", 1)
route {
    if (is_method("REGISTER")) { save("%s"); exit; }
    if (!lookup("%s")) { sl_send_reply(404, "Not Found"); exit; }
    t_relay();
}
"""


def query(statement: str) -> list[tuple]:
    done = subprocess.run(["mariadb", "-h127.0.0.1", "-P3306", "-uringsip", "-pringsip", "ringsip", "-N", "-B",
                           "-e", statement], check=True, capture_output=True, text=True, timeout=30)
    return [tuple(line.split("\t")) for line in done.stdout.splitlines()]


def rows() -> list[tuple]:
    return query(f"SELECT username, domain, contact, q, callid, cseq, user_agent, socket, "
                 f"expires > {'NOW()' if DATETIME else 'UNIX_TIMESTAMP()'} FROM {TABLE} ORDER BY username, q DESC")


def wait_rows(predicate, seconds: float = 5.0) -> list[tuple]:
    deadline = time.monotonic() + seconds
    while True:
        got = rows()
        if predicate(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


DATETIME = False


@pytest.mark.parametrize("schema", ["3.x", "2.x"])
def test_bindings_are_written_through_and_read_back_after_a_restart(procs, ringsipd, tmp_path, schema):
    global DATETIME
    need_mariadb()
    DATETIME = schema == "2.x"
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(f"CREATE TABLE {TABLE} ({COLUMNS.format(expires='DATETIME' if DATETIME else 'INT UNSIGNED')})")
    try:
        lapsed = "DATE_SUB(NOW(), INTERVAL 1 HOUR)" if DATETIME else "UNIX_TIMESTAMP() - 3600"
        sql(f"INSERT INTO {TABLE} (username, domain, contact, expires, callid) "
            f"VALUES ('gone', 'example.com', 'sip:gone@127.0.0.1:9', {lapsed}, 'old')")
        script = tmp_path / "usrloc-db.cfg"
        script.write_text(SCRIPT % (DB_URL, TABLE, TABLE))
        port = h.free_udp_ports(1)[0]
        daemon = start_script(procs, ringsipd, script, port, shards=2)
        desk, mobile, short = phone(), phone(), phone()
        desk_uri = f"sip:alice@127.0.0.1:{desk.getsockname()[1]}"
        mobile_uri = f"sip:alice@127.0.0.1:{mobile.getsockname()[1]}"
        assert register(port, desk, "alice", f"<{desk_uri}>;q=0.8", headers="User-Agent: deskphone\r\n").startswith("SIP/2.0 200")
        assert register(port, mobile, "alice", f"<{mobile_uri}>;q=0.4").startswith("SIP/2.0 200")
        assert register(port, short, "brief", f"<sip:brief@127.0.0.1:{short.getsockname()[1]}>;expires=1").startswith("SIP/2.0 200")
        written = wait_rows(lambda r: len(r) == 4)
        alice = [r for r in written if r[0] == "alice"]
        assert [(r[1], r[2], float(r[3])) for r in alice] == [("example.com", desk_uri, 0.8), ("example.com", mobile_uri, 0.4)]
        assert alice[0][6] == "deskphone" and alice[0][7] == f"udp:127.0.0.1:{port}" and alice[0][8] == "1"
        # The sweep (timer_interval 1 s) deletes lapsed rows: the 1 s binding and the row lapsed before the start.
        swept = wait_rows(lambda r: [x[0] for x in r] == ["alice", "alice"], seconds=6)
        assert [x[0] for x in swept] == ["alice", "alice"], swept
        # Expires 0 for one Contact deletes its row.
        assert register(port, mobile, "alice", f"<{mobile_uri}>;expires=0", cseq=2).startswith("SIP/2.0 200")
        assert [r[2] for r in wait_rows(lambda r: len(r) == 1)] == [desk_uri]
        procs.stop(daemon)

        sql(f"INSERT INTO {TABLE} (username, domain, contact, expires, callid) "
            f"VALUES ('gone', 'example.com', 'sip:gone@127.0.0.1:9', {lapsed}, 'old')")
        daemon = start_script(procs, ringsipd, script, port, shards=2)
        for n in range(4):  # from several source ports: both shards loaded the rows
            with phone() as caller:
                invite(port, caller, "alice", n)
                assert recv_until(desk, "INVITE", 3).startswith(f"INVITE {desk_uri} SIP/2.0")
        with phone() as caller:
            invite(port, caller, "gone")
            assert final_reply(caller, 3)[0].startswith("SIP/2.0 404")
        procs.stop(daemon)
    finally:
        sql(f"DROP TABLE IF EXISTS {TABLE}")


def test_a_missing_location_table_fails_the_start_naming_it(ringsipd, tmp_path):
    need_mariadb()
    script = tmp_path / "no-table.cfg"
    script.write_text(SCRIPT % (DB_URL, "no_such_location", "no_such_location"))
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "usrloc: db_mode 1 needs the 'no_such_location' table in the database" in done.stderr, done.stderr
