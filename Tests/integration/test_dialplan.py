"""OpenSIPS' dialplan module against a real MariaDB `dialplan` table, read once at start-up: rules by ascending
priority, whole-string (match_op 0, case-insensitive with match_flags 1) and regular-expression matches
(match_op 1, with PCRE's \\d), subst_exp/repl_exp rewriting, repl_exp alone, the input kept, attrs, disabled
rules skipped, rules with a timerec left out with a warning; the 3.x and the 1.x/2.x "$src/$dest" forms.
"""

import os

import harness as h
from conftest import start_script
from test_async import DB_URL, need_mariadb
from test_permissions import ask, sql

TABLE = f"ringsip_dialplan_{os.getpid()}"

SCRIPT = """
loadmodule "sl.so"
loadmodule "dialplan.so"
modparam("dialplan", "db_url", "%s")
modparam("dialplan", "table_name", "%s")
route {
    $var(out) = "-"; $var(attrs) = "-"; $var(u) = "-";
    $var(rc) = 1;
    if (!dp_translate(1, "$hdr(X-Num)", $var(out), $var(attrs))) $var(rc) = -1;
    dp_translate("2", "$fU/$var(u)");
    sl_send_reply(299, "rc=$var(rc) out=$var(out) attrs=$var(attrs) u=$var(u)");
}
"""


def translate(port: int, n: int, number: str, caller: str = "bob") -> str:
    return ask(port, n, from_uri=f"sip:{caller}@127.0.0.1", headers=f"X-Num: {number}\r\n")


def test_dp_translate_rewrites_by_the_first_matching_rule(procs, ringsipd, tmp_path):
    need_mariadb()
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, dpid INT NOT NULL, pr INT NOT NULL DEFAULT 0, "
        "match_op INT NOT NULL DEFAULT 0, match_exp CHAR(64) NOT NULL, match_flags INT NOT NULL DEFAULT 0, "
        "subst_exp CHAR(64) DEFAULT NULL, repl_exp CHAR(64) DEFAULT NULL, timerec CHAR(255) DEFAULT NULL, "
        "disabled INT NOT NULL DEFAULT 0, attrs CHAR(255) DEFAULT NULL)")
    try:
        sql(f"INSERT INTO {TABLE} (dpid, pr, match_op, match_exp, match_flags, subst_exp, repl_exp, timerec, disabled, attrs) VALUES "
            "(1, 10, 1, '^00\\\\d+$', 0, '^00(.*)$', '+\\\\1', NULL, 0, 'intl'), "
            "(1, 5, 0, '112', 0, NULL, '911-local', NULL, 0, 'emergency'), "
            "(1, 20, 1, '^[0-9]{4}$', 0, NULL, NULL, NULL, 0, 'extension'), "
            "(1, 1, 1, '^999', 0, NULL, 'never', NULL, 1, 'disabled'), "
            "(2, 1, 0, 'ALICE', 1, NULL, 'alice-at-home', NULL, 0, NULL), "
            "(3, 1, 0, 'x', 0, NULL, NULL, 'DTSTART:20260101T000000', 0, NULL)")
        script = tmp_path / "dialplan.cfg"
        script.write_text(SCRIPT % (DB_URL, TABLE))
        port = h.free_udp_ports(1)[0]
        daemon = start_script(procs, ringsipd, script, port)
        assert translate(port, 1, "0044123") == "SIP/2.0 299 rc=1 out=+44123 attrs=intl u=-"
        assert translate(port, 2, "112") == "SIP/2.0 299 rc=1 out=911-local attrs=emergency u=-"
        assert translate(port, 3, "1234") == "SIP/2.0 299 rc=1 out=1234 attrs=extension u=-"
        assert translate(port, 4, "99955") == "SIP/2.0 299 rc=-1 out=- attrs=- u=-"
        assert translate(port, 5, "abc", caller="Alice") == "SIP/2.0 299 rc=-1 out=- attrs=- u=alice-at-home"
        assert "dialplan 3: rules with a timerec are not loaded" in daemon.stderr(), daemon.stderr()[-1500:]
    finally:
        sql(f"DROP TABLE IF EXISTS {TABLE}")
