"""OpenSIPS' auth and auth_db against a real MariaDB `subscriber` table: a REGISTER without credentials is
challenged (401, a nonce this daemon signed), one with the right Digest response is saved, a wrong password is
-2, an unknown user -1, a nonce count played again -3 (challenged again with stale=true); the subscriber row is
fetched before the route on the shard's pool, so a stopped database only fails the requests that need it
(-5, answered 500 here) while the shard routes everything else; sipp registers 200 times through the 401 round
trip, and baresip phones register with a password and call each other.
"""

import hashlib
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

import harness as h
from baresip import Phone, available
from conftest import describe, missing, start_script
from test_async import DB_URL, final_reply, need_mariadb
from test_permissions import sql

TABLE = f"ringsip_subscriber_{os.getpid()}"
SCENARIOS = Path(__file__).parent / "scenarios" / "registrar"

SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("auth_db", "db_url", "%s")
modparam("auth_db", "calculate_ha1", %d)
modparam("auth_db", "password_column", "%s")
modparam("auth", "nonce_expire", 5)
modparam("auth_db", "credentials_cache", %d)
route {
    if (has_totag()) { t_relay(); exit; }
    loose_route();
    if (is_method("REGISTER")) {
        if (!www_authorize("", "%s")) {
            $var(code) = $retcode;
            if ($var(code) == -5) { sl_send_reply(500, "Server Internal Error"); exit; }
            if ($var(code) == -2) { sl_send_reply(403, "Wrong Password"); exit; }
            if ($var(code) == -1) { sl_send_reply(403, "Unknown User"); exit; }
            www_challenge("", "auth");
            exit;
        }
        append_to_reply("X-Authenticated: $au in $ar\r\n");
        consume_credentials();
        save("location");
        exit;
    }
    if (is_method("OPTIONS")) { sl_send_reply(200, "Alive"); exit; }
    if (!lookup("location")) { sl_send_reply(404, "Not Found"); exit; }
    t_relay();
}
"""


@pytest.fixture
def subscribers():
    need_mariadb()
    sql(f"DROP TABLE IF EXISTS {TABLE}")
    sql(f"CREATE TABLE {TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, username CHAR(64) NOT NULL, "
        "domain CHAR(64) NOT NULL DEFAULT '', password CHAR(25) NOT NULL DEFAULT '', "
        "ha1 CHAR(64) NOT NULL DEFAULT '', ha1b CHAR(64) NOT NULL DEFAULT '')")
    users = ", ".join(f"('user{n}', 'example.com', 'pw{n}', MD5('user{n}:example.com:pw{n}'))" for n in range(1, 201))
    sql(f"INSERT INTO {TABLE} (username, domain, password, ha1) VALUES ('alice', 'example.com', 'wonderland', "
        f"MD5('alice:example.com:wonderland')), ('bob', 'example.com', 'builder', MD5('bob:example.com:builder')), {users}")
    yield TABLE
    sql(f"DROP TABLE IF EXISTS {TABLE}")


def daemon(procs, ringsipd, tmp_path, calculate: bool = False, shards: int = 2, cache: int = 0) -> int:
    script = tmp_path / "auth.cfg"
    script.write_text(SCRIPT % (DB_URL, 1 if calculate else 0, "password" if calculate else "ha1", cache, TABLE))
    port = h.free_udp_ports(1)[0]
    start_script(procs, ringsipd, script, port, shards=shards)
    return port


class Registrar:
    """A phone's REGISTERs, raw, computing Digest responses as RFC 2617 says."""

    def __init__(self, port: int, user: str):
        self.port, self.user, self.cseq = port, user, 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((h.LOOPBACK, 0))
        self.me = self.sock.getsockname()[1]

    def send(self, authorization: str = "") -> str:
        self.cseq += 1
        header = f"Authorization: {authorization}\r\n" if authorization else ""
        request = (f"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.me};branch=z9hG4bK-a{self.me}-{self.cseq}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:{self.user}@example.com>;tag=f{self.me}\r\nTo: <sip:{self.user}@example.com>\r\n"
                   f"Call-ID: auth-{self.me}@127.0.0.1\r\nCSeq: {self.cseq} REGISTER\r\n"
                   f"Contact: <sip:{self.user}@127.0.0.1:{self.me}>\r\n{header}Content-Length: 0\r\n\r\n")
        self.sock.sendto(request.encode(), (h.LOOPBACK, self.port))
        return final_reply(self.sock, 5)[0]

    @staticmethod
    def challenge(reply: str) -> dict:
        line = next(l for l in reply.split("\r\n") if l.startswith("WWW-Authenticate:"))
        return dict(re.findall(r'(\w+)="?([^",]*)"?', line.split("Digest", 1)[1]))

    def authorization(self, challenge: dict, password: str, nc: int = 1, user: str | None = None) -> str:
        user = user or self.user
        md5 = lambda s: hashlib.md5(s.encode()).hexdigest()
        ha1 = md5(f"{user}:{challenge['realm']}:{password}")
        ha2 = md5("REGISTER:sip:example.com")
        cnonce, count = "c0ffee", f"{nc:08x}"
        response = md5(f"{ha1}:{challenge['nonce']}:{count}:{cnonce}:auth:{ha2}")
        return (f'Digest username="{user}", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
                f'uri="sip:example.com", response="{response}", algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}"')


@pytest.mark.parametrize("calculate", [False, True], ids=["ha1", "plain-password"])
def test_digest_registration_round_trip(procs, ringsipd, tmp_path, subscribers, calculate):
    port = daemon(procs, ringsipd, tmp_path, calculate=calculate)
    alice = Registrar(port, "alice")
    first = alice.send()
    assert first.startswith("SIP/2.0 401 Unauthorized"), first
    challenge = Registrar.challenge(first)
    assert challenge["realm"] == "example.com" and challenge["qop"] == "auth" and len(challenge["nonce"]) == 48
    ok = alice.send(alice.authorization(challenge, "wonderland"))
    assert ok.startswith("SIP/2.0 200 OK"), ok
    assert f"<sip:alice@127.0.0.1:{alice.me}>;expires=" in ok
    assert "X-Authenticated: alice in example.com" in ok, ok  # $au and $ar
    # The same nonce with a higher count is fine; the same count again is a replay: stale, challenged again.
    assert alice.send(alice.authorization(challenge, "wonderland", nc=2)).startswith("SIP/2.0 200 OK")
    replay = alice.send(alice.authorization(challenge, "wonderland", nc=2))
    assert replay.startswith("SIP/2.0 401") and "stale=true" in replay, replay
    assert alice.send(alice.authorization(challenge, "mushroom", nc=3)).startswith("SIP/2.0 403 Wrong Password")
    stranger = Registrar(port, "mallory")
    assert stranger.send(stranger.authorization(challenge, "x")).startswith("SIP/2.0 403 Unknown User")
    # A nonce that is not ours (another daemon's, or ours before a restart) is stale: challenged afresh.
    forged = dict(challenge, nonce="0" * 48)
    again = alice.send(alice.authorization(forged, "wonderland", nc=4))
    assert again.startswith("SIP/2.0 401") and "stale=true" in again, again


def test_an_expired_nonce_is_stale(procs, ringsipd, tmp_path, subscribers):
    port = daemon(procs, ringsipd, tmp_path, shards=1)
    bob = Registrar(port, "bob")
    challenge = Registrar.challenge(bob.send())
    time.sleep(6.2)  # nonce_expire is 5 s here
    stale = bob.send(bob.authorization(challenge, "builder"))
    assert stale.startswith("SIP/2.0 401") and "stale=true" in stale, stale
    assert bob.send(bob.authorization(Registrar.challenge(stale), "builder")).startswith("SIP/2.0 200 OK")


def test_a_stopped_database_fails_only_what_needs_it(procs, ringsipd, tmp_path, subscribers):
    port = daemon(procs, ringsipd, tmp_path, shards=1)
    alice = Registrar(port, "alice")
    challenge = Registrar.challenge(alice.send())
    sql(f"RENAME TABLE {TABLE} TO {TABLE}_away")
    try:
        started = time.monotonic()
        failed = alice.send(alice.authorization(challenge, "wonderland"))
        assert failed.startswith("SIP/2.0 500"), failed
        assert time.monotonic() - started < 3
        # Everything that does not need the database is still routed.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ping:
            ping.bind((h.LOOPBACK, 0))
            me = ping.getsockname()[1]
            ping.sendto((f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-p{me}\r\n"
                         f"Max-Forwards: 70\r\nFrom: <sip:p@example.com>;tag=p\r\nTo: <sip:example.com>\r\n"
                         f"Call-ID: ping-{me}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
            assert final_reply(ping, 3)[0].startswith("SIP/2.0 200 Alive")
    finally:
        sql(f"RENAME TABLE {TABLE}_away TO {TABLE}")
    assert alice.send(alice.authorization(challenge, "wonderland", nc=2)).startswith("SIP/2.0 200 OK")


def test_sipp_registers_200_times_through_the_challenge(procs, ringsipd, sipp, tmp_path, subscribers):
    port = daemon(procs, ringsipd, tmp_path)
    # One phone registering 200 times (a new Call-ID each), each through the 401 round trip.
    csv = tmp_path / "users.csv"
    csv.write_text("SEQUENTIAL\nuser7\n")
    result = h.run_uacs(procs, port, rate=100, calls=200, tag="reg-auth", scenario=SCENARIOS / "register-auth.xml",
                        extra=["-inf", str(csv), "-au", "user7", "-ap", "pw7"])
    assert result.successful == 200, describe(result)


def test_baresip_phones_register_with_passwords_and_call(procs, ringsipd, tmp_path, subscribers):
    if not available():
        missing("baresip with its ctrl_tcp module is not installed (make test-deps)")
    port = daemon(procs, ringsipd, tmp_path)
    alice = Phone(procs, tmp_path / "alice", "alice", port, extra_account=";auth_pass=wonderland")
    bob = Phone(procs, tmp_path / "bob", "bob", port, extra_account=";auth_pass=builder")
    alice.wait_registered()
    bob.wait_registered()
    alice.command("dial", "sip:bob@example.com")
    assert bob.wait_event("CALL_ESTABLISHED")["peeruri"] == "sip:alice@example.com"
    alice.wait_event("CALL_ESTABLISHED")
    alice.command("hangup")
    bob.wait_event("CALL_CLOSED")
    wrong = Phone(procs, tmp_path / "eve", "bob", port, extra_account=";auth_pass=guess")
    with pytest.raises(AssertionError):
        wrong.wait_registered(seconds=3)


def test_with_a_credentials_cache_a_known_subscriber_needs_no_query(procs, ringsipd, tmp_path, subscribers):
    port = daemon(procs, ringsipd, tmp_path, shards=1, cache=60)
    alice = Registrar(port, "alice")
    challenge = Registrar.challenge(alice.send())
    assert alice.send(alice.authorization(challenge, "wonderland")).startswith("SIP/2.0 200 OK")
    sql(f"RENAME TABLE {TABLE} TO {TABLE}_away")
    try:
        # The row fetched a moment ago answers without the table; a wrong password is still wrong.
        assert alice.send(alice.authorization(challenge, "wonderland", nc=2)).startswith("SIP/2.0 200 OK")
        assert alice.send(alice.authorization(challenge, "mushroom", nc=3)).startswith("SIP/2.0 403 Wrong Password")
        # A subscriber never fetched needs the table.
        bob = Registrar(port, "bob")
        assert bob.send(bob.authorization(challenge, "builder")).startswith("SIP/2.0 500")
    finally:
        sql(f"RENAME TABLE {TABLE}_away TO {TABLE}")
