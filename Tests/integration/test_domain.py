"""OpenSIPS' domain module against a real MariaDB `domain` table, read once at start-up: is_from_local and
is_uri_host_local test the From and Request-URI hosts, is_domain_local any text, all without regard to case,
each giving the row's attrs when asked; a 1.x table without an attrs column works too.
"""

import os
import subprocess

import harness as h
from conftest import start_script
from test_async import DB_URL, need_mariadb
from test_permissions import ask, sql

TABLE = f"ringsip_domain_{os.getpid()}"

SCRIPT = """
loadmodule "sl.so"
loadmodule "domain.so"
modparam("domain", "db_url", "%s")
modparam("domain", "domain_table", "%s")
modparam("domain", "db_mode", 1)
route {
    $var(f) = 0; $var(r) = 0; $var(d) = 0; $var(n) = 0;
    if (is_from_local($var(fa))) $var(f) = 1;
    if (is_uri_host_local()) $var(r) = 1;
    if (is_domain_local("$hdr(X-Domain)", $avp(da))) $var(d) = 1;
    if (is_domain_local("nowhere.example")) $var(n) = 1;
    sl_send_reply(299, "f=$var(f) fa=$var(fa) r=$var(r) d=$var(d) da=$avp(da) n=$var(n)");
}
"""


def ask_domains(port: int, n: int, from_host: str, ruri_host: str, domain: str) -> str:
    return ask(port, n, ruri=f"sip:svc@{ruri_host}", from_uri=f"sip:alice@{from_host}", headers=f"X-Domain: {domain}\r\n")


def run(procs, ringsipd, tmp_path, with_attrs: bool) -> list[str]:
    need_mariadb()
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    attrs = ", attrs CHAR(255) DEFAULT NULL" if with_attrs else ""
    sql(f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, domain CHAR(64) NOT NULL{attrs})")
    try:
        if with_attrs:
            sql(f"INSERT INTO {TABLE} (domain, attrs) VALUES ('Example.COM', 'tenant=7'), ('voip.example.net', NULL)")
        else:
            sql(f"INSERT INTO {TABLE} (domain) VALUES ('Example.COM'), ('voip.example.net')")
        script = tmp_path / f"domain-{with_attrs}.cfg"
        script.write_text(SCRIPT % (DB_URL, TABLE))
        port = h.free_udp_ports(1)[0]
        daemon = start_script(procs, ringsipd, script, port)
        answers = [ask_domains(port, 1, "example.com", "VOIP.example.net", "EXAMPLE.com"),
                   ask_domains(port, 2, "elsewhere.org", "example.org", "voip.example.net")]
        procs.stop(daemon)
        return answers
    finally:
        sql(f"DROP TABLE IF EXISTS {TABLE}")


def test_local_domains_come_from_the_domain_table(procs, ringsipd, tmp_path):
    assert run(procs, ringsipd, tmp_path, with_attrs=True) == [
        "SIP/2.0 299 f=1 fa=tenant=7 r=1 d=1 da=tenant=7 n=0",
        "SIP/2.0 299 f=0 fa= r=0 d=1 da= n=0",
    ]


def test_a_1x_domain_table_without_attrs(procs, ringsipd, tmp_path):
    assert run(procs, ringsipd, tmp_path, with_attrs=False) == [
        "SIP/2.0 299 f=1 fa= r=1 d=1 da= n=0",
        "SIP/2.0 299 f=0 fa= r=0 d=1 da= n=0",
    ]


def test_without_a_db_url_the_check_names_the_modparam(ringsipd, tmp_path):
    script = tmp_path / "no-url.cfg"
    script.write_text('loadmodule "sl.so"\nloadmodule "domain.so"\nroute {\n'
                      '    if (!is_from_local()) { sl_send_reply(403, "Forbidden"); exit; }\n}\n')
    done = subprocess.run([ringsipd, "--check-config", "-f", script], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert 'no-url.cfg:4:10: error: is_from_local needs modparam("domain", "db_url"' in done.stderr, done.stderr
