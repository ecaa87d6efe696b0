"""OpenSIPS' permissions module (address part) against a real MariaDB `address` table:

- check_source_address matches the caller's address by network and mask, and gives the row's context_info;
- check_address matches by group, network, port (0 = any), proto ("any" or udp; a tcp-only row never matches
  while ringsip serves UDP) and the row's pattern against the call's text;
- get_source_group names the first group whose row matches the source;
- the table is read once at start-up: a row added later is not seen until a restart (OpenSIPS' cache, without
  its MI reload yet), and a missing table fails the start with the database's reason.
"""

import os
import socket
import subprocess

import harness as h
from conftest import start_script
from test_async import DB_URL, final_reply, need_mariadb

TABLE = f"ringsip_address_{os.getpid()}"

SCRIPT = """
loadmodule "sl.so"
loadmodule "permissions.so"
modparam("permissions", "db_url", "%s")
modparam("permissions", "address_table", "%s")
route {
    $var(a) = 0; $var(b) = 0; $var(c) = 0; $var(d) = 0; $var(e) = 0; $var(f) = 0; $var(g) = "none";
    if (check_source_address(1, $avp(info))) $var(a) = 1;
    if (check_address(2, "10.1.2.3", 5060, "udp", $var(i2), "sip:911@example.com")) $var(b) = 1;
    if (check_address(2, "10.1.2.3", 5061, "udp")) $var(c) = 1;
    if (check_address(2, "10.1.2.3", 5060, "any", , "sip:411@example.com")) $var(d) = 1;
    if (check_address(3, "192.168.1.5", 0, "udp")) $var(e) = 1;
    if (check_address(4, "192.168.1.200", 7, "udp")) $var(f) = 1;
    get_source_group($var(g));
    sl_send_reply(299, "a=$var(a) info=$avp(info) b=$var(b) i2=$var(i2) c=$var(c) d=$var(d) e=$var(e) f=$var(f) g=$var(g)");
}
"""


def sql(statement: str) -> None:
    subprocess.run(["mariadb", "-h127.0.0.1", "-P3306", "-uringsip", "-pringsip", "ringsip", "-e", statement],
                   check=True, capture_output=True, timeout=30)


def ask(port: int, n: int, ruri: str = "", from_uri: str = "sip:caller@127.0.0.1", headers: str = "") -> str:
    """The status line of the final answer to an OPTIONS (to `ruri`, from `from_uri`, with extra `headers`)."""
    ruri = ruri or f"sip:perm@127.0.0.1:{port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        options = (f"OPTIONS {ruri} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ask{n}\r\nMax-Forwards: 70\r\n"
                   f"From: <{from_uri}>;tag=a{n}\r\nTo: <{ruri}>\r\n"
                   f"Call-ID: ask-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n{headers}Content-Length: 0\r\n\r\n")
        caller.sendto(options.encode(), (h.LOOPBACK, port))
        reply, _ = final_reply(caller, 3)
    return reply.split("\r\n", 1)[0]


def test_address_checks_read_the_table_once_at_start(procs, ringsipd, tmp_path):
    need_mariadb()
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, grp INT NOT NULL DEFAULT 1, "
        "ip CHAR(50) NOT NULL, mask INT NOT NULL DEFAULT 32, port SMALLINT UNSIGNED NOT NULL DEFAULT 0, "
        "proto CHAR(4) NOT NULL DEFAULT 'any', pattern CHAR(64) DEFAULT NULL, context_info CHAR(32) DEFAULT NULL)")
    try:
        sql(f"INSERT INTO {TABLE} (grp, ip, mask, port, proto, pattern, context_info) VALUES "
            "(1, '127.0.0.0', 8, 0, 'any', NULL, 'loopback'), "
            "(2, '10.0.0.0', 8, 5060, 'udp', '^sip:9', 'emergency'), "
            "(3, '192.168.1.0', 24, 0, 'tcp', NULL, NULL), "
            "(7, '127.0.0.1', 32, 0, 'udp', NULL, NULL)")
        script = tmp_path / "permissions.cfg"
        script.write_text(SCRIPT % (DB_URL, TABLE))
        port = h.free_udp_ports(1)[0]
        daemon = start_script(procs, ringsipd, script, port)
        assert ask(port, 1) == ("SIP/2.0 299 a=1 info=loopback b=1 i2=emergency c=0 d=0 e=0 f=0 g=1"), \
            daemon.stderr()[-1500:]
        # Read at start-up only: a row added now is not seen by the running daemon.
        sql(f"INSERT INTO {TABLE} (grp, ip, mask) VALUES (4, '192.168.1.128', 25)")
        assert ask(port, 2).endswith(" f=0 g=1")
        procs.stop(daemon)
        restarted = start_script(procs, ringsipd, script, port)
        assert ask(port, 3).endswith(" f=1 g=1"), restarted.stderr()[-1500:]
    finally:
        sql(f"DROP TABLE IF EXISTS {TABLE}")


def test_a_missing_address_table_fails_the_start_naming_it(ringsipd, tmp_path):
    need_mariadb()
    script = tmp_path / "missing.cfg"
    script.write_text(SCRIPT % (DB_URL, "no_such_address_table"))
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "missing.cfg:" in done.stderr and "cannot read the no_such_address_table table" in done.stderr, done.stderr
    assert "no_such_address_table" in done.stderr, done.stderr


def test_without_a_db_url_the_check_says_which_modparam_is_needed(ringsipd, tmp_path):
    script = tmp_path / "no-url.cfg"
    script.write_text('loadmodule "sl.so"\nloadmodule "permissions.so"\nroute {\n'
                      '    if (!check_source_address(1)) { sl_send_reply(403, "Forbidden"); exit; }\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "no-url.cfg:4:10: error: check_source_address needs modparam(\"permissions\", \"db_url\"" in done.stderr, \
        done.stderr
