"""dialog (with acc's cdr): dialogs in the real daemon on two shards, driven by Python user agents whose in-dialog
requests come from fresh source ports (so the kernel spreads them over both shards) and by sipp.

- every call's BYE finds its dialog, whichever shard it lands on (by the did of its Route, or by its Call-ID),
  and the CDR (acc's cdr flag) is written once with the call's duration; $DLG_status, $dlg_val, $DLG_dir in the
  BYE's route;
- the call-limit pattern: get_profile_size counts a caller's dialogs on both shards, the third call is refused
  until one ends;
- a dialog that lapses (default_timeout) ends and writes its CDR;
- sipp calls with a 500 ms pause: exactly one CDR a call, ms_duration near 500.
"""

import os
import socket
import time

import harness as h
import pytest
from conftest import describe, recv_until, response_to, start_script
from test_acc import ACC, MISSED, acc_tables, rows, wait_rows  # noqa: F401  (acc_tables is a fixture)
from test_async import DB_URL
from test_registrar_db import query

SCRIPT = """
log_level = 3
# These tests count calls and records, not 503s: a sanitizer build must not shed load.
overload_threshold = 0
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "sipmsgops.so"
loadmodule "dialog.so"
loadmodule "acc.so"
modparam("dialog", "profiles_with_value", "caller")
modparam("dialog", "default_timeout", {timeout})
modparam("acc", "db_url", "{url}")
modparam("acc", "db_table_acc", "{acc}")
modparam("acc", "spill_dir", "{spill}")
route {{
    if (has_totag()) {{
        if (is_method("BYE|INVITE")) {{
            xlog("L_NOTICE", "$rm of $ci: status=$DLG_status who=$dlg_val(who) dir=$DLG_dir\\n");
            xlog("L_NOTICE", "json $DLG_json\\n");
        }}
        # sipp's built-in UAC sends its BYE to the proxy's own address (it ignores Record-Route).
        if (!loose_route() && uri == myself) {{
            {relay}
        }} else {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        get_profile_size("caller", "$fU", $var(calls));
        if ($var(calls) >= 2) {{
            sl_send_reply(486, "Too Many Calls");
            exit;
        }}
        if (!create_dialog("{flags}")) {{
            sl_send_reply(500, "No Dialog");
            exit;
        }}
        set_dlg_profile("caller", "$fU");
        $dlg_val(who) = $fU;
        do_accounting("db|log", "cdr");
        if ($rU == "refuse") {{
            sl_send_reply(403, "Refused");
            exit;
        }}
        record_route();
    }}
    {relay}
}}
"""


def script(tmp, timeout: int = 3600, relay: str = "t_relay();", flags: str = ""):
    path = tmp / "dialog.cfg"
    path.write_text(SCRIPT.format(timeout=timeout, url=DB_URL, acc=ACC, spill=tmp / "spill", relay=relay, flags=flags))
    return path


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h.LOOPBACK, 0))
    return s


class Call:
    """A caller and a callee (Python sockets) with one call through the proxy at `port`."""

    def __init__(self, port: int, n: int, caller_user: str = "alice", callee_user: str = "bob"):
        self.port, self.n, self.user, self.callee_user = port, n, caller_user, callee_user
        self.caller, self.callee = udp(), udp()
        self.callee_port = self.callee.getsockname()[1]
        self.call_id = f"dlg-{n}-{time.monotonic_ns()}@test"
        self.record_route = ""

    def invite(self, answer: str = "200 OK") -> str:
        """Sends the INVITE; the final status line the caller gets (the callee answers `answer` if it is reached;
        a 1xx answer returns at once, the call left ringing)."""
        cport = self.caller.getsockname()[1]
        self.branch = f"z9hG4bK-inv{self.n}-{time.monotonic_ns()}"
        self.caller.sendto((
            f"INVITE sip:{self.callee_user}@127.0.0.1:{self.callee_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{cport};branch={self.branch};rport\r\n"
            f"From: <sip:{self.user}@127.0.0.1>;tag=from{self.n}\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:{self.user}@127.0.0.1:{cport}>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, self.port))
        self.callee.settimeout(0.5)
        try:
            request = recv_until(self.callee, "INVITE", 3)
        except (socket.timeout, TimeoutError):
            request = None
        if request:
            self.invite_at_callee = request
            self.record_route = next((l for l in request.split("\r\n") if l.lower().startswith("record-route:")), "")
            self.callee.sendto(response_to(request, answer, f"to{self.n}").encode(), (h.LOOPBACK, self.port))
            if answer.startswith("1"):
                return recv_until(self.caller, answer.split()[0], 3).split("\r\n", 1)[0]
        return self.final()

    def cancel(self) -> str:
        """CANCELs the ringing INVITE: the callee answers the CANCEL 200 and the INVITE 487; the caller's final."""
        cport = self.caller.getsockname()[1]
        self.caller.sendto((
            f"CANCEL sip:bob@127.0.0.1:{self.callee_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{cport};branch={self.branch};rport\r\n"
            f"From: <sip:{self.user}@127.0.0.1>;tag=from{self.n}\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
            (h.LOOPBACK, self.port))
        cancel = recv_until(self.callee, "CANCEL", 3)
        self.callee.sendto(response_to(cancel, "200 OK", f"to{self.n}").encode(), (h.LOOPBACK, self.port))
        self.callee.sendto(response_to(self.invite_at_callee, "487 Request Terminated", f"to{self.n}").encode(),
                           (h.LOOPBACK, self.port))
        return recv_until(self.caller, "487", 3).split("\r\n", 1)[0]

    def reinvite(self, cseq: int) -> str:
        """A re-INVITE from a fresh socket, answered 200 by the callee; the status line it gets back."""
        s = self.in_dialog("INVITE", cseq, route=False)
        request = recv_until(self.callee, "INVITE", 3)
        self.callee.sendto(response_to(request, "200 OK", f"to{self.n}").encode(), (h.LOOPBACK, self.port))
        line = recv_until(s, "200", 3).split("\r\n", 1)[0]
        s.close()
        return line

    def final(self) -> str:
        end = time.monotonic() + 5
        while time.monotonic() < end:
            self.caller.settimeout(max(0.01, end - time.monotonic()))
            line = self.caller.recv(65536).decode().split("\r\n", 1)[0]
            if not line.startswith("SIP/2.0 1"):
                return line
        raise AssertionError("no final response")

    def in_dialog(self, method: str, cseq: int, route: bool) -> socket.socket:
        """Sends an in-dialog request from a fresh socket (another source port: it may land on the other shard)."""
        s = udp()
        sport = s.getsockname()[1]
        uri = self.record_route.split("<", 1)[1].split(">", 1)[0] if route and self.record_route else ""
        s.sendto((
            f"{method} sip:bob@127.0.0.1:{self.callee_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bK-{method.lower()}{self.n}-{time.monotonic_ns()};rport\r\n"
            + (f"Route: <{uri}>\r\n" if uri else "")
            + f"From: <sip:{self.user}@127.0.0.1>;tag=from{self.n}\r\nTo: <sip:bob@127.0.0.1>;tag=to{self.n}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
            (h.LOOPBACK, self.port))
        return s

    def ack(self, route: bool = False):
        self.in_dialog("ACK", 1, route).close()
        recv_until(self.callee, "ACK", 3)

    def bye(self, route: bool = False, cseq: int = 2) -> str:
        s = self.in_dialog("BYE", cseq, route)
        request = recv_until(self.callee, "BYE", 3)
        self.callee.sendto(response_to(request, "200 OK", f"to{self.n}").encode(), (h.LOOPBACK, self.port))
        s.settimeout(3)
        line = s.recv(65536).decode().split("\r\n", 1)[0]
        s.close()
        return line


def cdrs() -> list[tuple]:
    return query(f"SELECT callid, method, sip_code, duration, ms_duration, setuptime, created IS NOT NULL "
                 f"FROM {ACC} ORDER BY id")


def test_every_bye_finds_its_dialog_on_either_shard_and_writes_one_cdr(procs, ringsipd, acc_tables):
    port = h.free_udp_ports(1)[0]
    daemon = start_script(procs, ringsipd, script(procs.workdir), port, shards=2)
    calls = [Call(port, n, caller_user=f"user{n}") for n in range(12)]
    for call in calls:
        assert call.invite() == "SIP/2.0 200 OK"
        assert ";did=" in call.record_route, call.record_route
        call.ack(route=call.n % 2 == 0)
    time.sleep(1.0)
    for call in calls:
        assert call.bye(route=call.n % 2 == 0) == "SIP/2.0 200 OK"
    got = wait_rows(ACC, 12)
    assert len(got) == 12
    by_call = {r[0]: r for r in cdrs()}
    assert set(by_call) == {c.call_id for c in calls}
    for callid, method, code, duration, ms, setup, created in by_call.values():
        assert method == "INVITE" and code == "200" and created == "1"
        assert 900 <= int(ms) <= 3000 and duration in ("1", "2", "3"), (callid, ms, duration)
    log = daemon.stderr()
    for call in calls:
        assert f"BYE of {call.call_id}: status=5 who=user{call.n} dir=downstream" in log, log[-2000:]
    assert log.count("ACC: call ended:") == 12
    assert f'"state":5,"callid":"{calls[0].call_id}","from_uri":"sip:user0@127.0.0.1","from_tag":"from0"' in log
    assert '"values":{"who":"user0"},"profiles":[]}' in log  # a dialog's profiles are released when it ends
    procs.stop(daemon)


def test_a_callers_third_call_is_refused_until_one_ends_whichever_shard_holds_them(procs, ringsipd, acc_tables):
    port = h.free_udp_ports(1)[0]
    daemon = start_script(procs, ringsipd, script(procs.workdir), port, shards=2)
    first, second = Call(port, 1), Call(port, 2)
    assert first.invite() == "SIP/2.0 200 OK"
    assert second.invite() == "SIP/2.0 200 OK"
    time.sleep(0.2)  # the profile counts reach the other shard with its next batch of completions
    for n in range(3, 9):  # several source ports: both shards refuse
        assert Call(port, n).invite() == "SIP/2.0 486 Too Many Calls"
    assert Call(port, 20, caller_user="bob").invite() == "SIP/2.0 200 OK"
    first.ack()
    assert first.bye() == "SIP/2.0 200 OK"
    time.sleep(0.2)
    assert Call(port, 9).invite() == "SIP/2.0 200 OK"
    procs.stop(daemon)


def test_a_dialog_that_lapses_sends_bye_both_ways_and_writes_its_cdr(procs, ringsipd, acc_tables):
    port = h.free_udp_ports(1)[0]
    daemon = start_script(procs, ringsipd, script(procs.workdir, timeout=1, flags="B"), port)
    call = Call(port, 1)
    assert call.invite() == "SIP/2.0 200 OK"
    call.ack()
    # create_dialog("B"): each end gets a BYE as the other end would send it.
    to_caller = recv_until(call.caller, "BYE", 5)
    cport = call.caller.getsockname()[1]
    assert to_caller.startswith(f"BYE sip:alice@127.0.0.1:{cport} SIP/2.0\r\n"), to_caller
    assert "From: <sip:bob@127.0.0.1>;tag=to1\r\n" in to_caller and "To: <sip:alice@127.0.0.1>;tag=from1\r\n" in to_caller
    assert f"Call-ID: {call.call_id}\r\n" in to_caller and "CSeq: 1 BYE\r\n" in to_caller, to_caller
    to_callee = recv_until(call.callee, "BYE", 5)
    assert to_callee.startswith("BYE sip:callee@127.0.0.1 SIP/2.0\r\n"), to_callee
    assert "From: <sip:alice@127.0.0.1>;tag=from1\r\n" in to_callee and "To: <sip:bob@127.0.0.1>;tag=to1\r\n" in to_callee
    assert "CSeq: 2 BYE\r\n" in to_callee, to_callee
    got = wait_rows(ACC, 1, seconds=5)
    assert len(got) == 1
    (callid, method, code, duration, ms, setup, created), = cdrs()
    assert callid == call.call_id and 500 <= int(ms) <= 2500, (ms, duration)
    assert f"dialog {call.call_id} lapsed after 1 s; ended" in daemon.stderr()
    # Its BYE now finds an ended dialog (status 5) and no second CDR is written.
    call.bye()
    time.sleep(0.5)
    assert len(cdrs()) == 1
    procs.stop(daemon)


def test_sipp_calls_each_write_one_cdr(procs, ringsipd, sipp, acc_tables):
    uas, proxy = h.free_udp_ports(2)
    h.start_uas(procs, uas)
    daemon = start_script(procs, ringsipd, script(procs.workdir, relay=f't_relay("udp:127.0.0.1:{uas}");'), proxy,
                          shards=2)
    # Every sipp call has the same From user: -l 1 keeps one call up at a time, under the profile's limit of 2.
    res = h.run_uacs(procs, proxy, rate=20, calls=40, timeout=40, extra=["-d", "500", "-l", "1"])
    assert res.failed == 0 and res.successful == 40, describe(res)
    got = wait_rows(ACC, 40)
    assert len(got) == 40 and len({r[3] for r in got}) == 40
    assert all(400 <= int(r[4]) <= 2000 for r in cdrs()), cdrs()[:3]
    procs.stop(daemon)


def test_a_reinvite_keeps_the_dialog_and_a_cancelled_call_frees_its_profile_without_a_cdr(procs, ringsipd, acc_tables):
    port = h.free_udp_ports(1)[0]
    daemon = start_script(procs, ringsipd, script(procs.workdir), port, shards=2)
    call = Call(port, 1)
    assert call.invite() == "SIP/2.0 200 OK"
    call.ack()
    assert call.reinvite(cseq=2) == "SIP/2.0 200 OK"
    assert f"INVITE of {call.call_id}: status=4 who=alice dir=downstream" in daemon.stderr()
    assert call.bye(cseq=3) == "SIP/2.0 200 OK"
    assert len(wait_rows(ACC, 1)) == 1
    # Two ringing calls fill alice's profile; CANCEL both: the profile is free again and no CDR is written.
    ringing = [Call(port, n) for n in (2, 3)]
    for c in ringing:
        assert c.invite(answer="180 Ringing") == "SIP/2.0 180 Ringing"
    time.sleep(0.2)
    assert Call(port, 4).invite() == "SIP/2.0 486 Too Many Calls"
    for c in ringing:
        assert c.cancel() == "SIP/2.0 487 Request Terminated"
    time.sleep(0.2)
    for n in (5, 6):
        assert Call(port, n).invite() == "SIP/2.0 200 OK"
    time.sleep(0.5)
    assert len(cdrs()) == 1
    procs.stop(daemon)


DIALOG_TABLE = f"ringsip_dialog_{os.getpid()}"
# OpenSIPS 3.x's dialog table.
DIALOG_COLUMNS = """dlg_id BIGINT(10) UNSIGNED PRIMARY KEY NOT NULL, callid CHAR(255) NOT NULL, from_uri CHAR(255) NOT NULL,
    from_tag CHAR(64) NOT NULL, to_uri CHAR(255) NOT NULL, to_tag CHAR(64) NOT NULL,
    mangled_from_uri CHAR(255) DEFAULT NULL, mangled_to_uri CHAR(255) DEFAULT NULL, caller_cseq CHAR(11) NOT NULL,
    callee_cseq CHAR(11) NOT NULL, caller_ping_cseq INT(11) UNSIGNED NOT NULL, callee_ping_cseq INT(11) UNSIGNED NOT NULL,
    caller_route_set TEXT(512), callee_route_set TEXT(512), caller_contact CHAR(255), callee_contact CHAR(255),
    caller_sock CHAR(64) NOT NULL, callee_sock CHAR(64) NOT NULL, state INT(10) UNSIGNED NOT NULL,
    start_time INT(10) UNSIGNED NOT NULL, timeout INT(10) UNSIGNED NOT NULL, vars BLOB(4096) DEFAULT NULL,
    profiles TEXT(512) DEFAULT NULL, script_flags CHAR(255) DEFAULT NULL, module_flags INT(10) UNSIGNED DEFAULT 0 NOT NULL,
    flags INT(10) UNSIGNED DEFAULT 0 NOT NULL, rt_on_answer CHAR(64) DEFAULT NULL, rt_on_timeout CHAR(64) DEFAULT NULL,
    rt_on_hangup CHAR(64) DEFAULT NULL"""


def test_calls_under_way_survive_a_restart_with_db_mode(procs, ringsipd, acc_tables):
    from test_permissions import sql
    sql(f"DROP TABLE IF EXISTS {DIALOG_TABLE}")
    sql(f"CREATE TABLE {DIALOG_TABLE} ({DIALOG_COLUMNS})")
    try:
        port = h.free_udp_ports(1)[0]
        path = script(procs.workdir)
        text = path.read_text().replace('loadmodule "acc.so"\n', 'loadmodule "acc.so"\nmodparam("dialog", "db_mode", 1)\n'
                                        f'modparam("dialog", "db_url", "{DB_URL}")\n'
                                        f'modparam("dialog", "table_name", "{DIALOG_TABLE}")\n')
        path.write_text(text)
        daemon = start_script(procs, ringsipd, path, port, shards=2)
        first, second = Call(port, 1), Call(port, 2)
        for call in (first, second):
            assert call.invite() == "SIP/2.0 200 OK"
            call.ack()
        table = lambda: query(f"SELECT callid, state, from_tag, to_tag FROM {DIALOG_TABLE} ORDER BY callid")
        assert h.wait_until(lambda: [r[1] for r in table()] == ["4", "4"], 5), table()
        procs.stop(daemon)
        started = time.monotonic()

        daemon = start_script(procs, ringsipd, path, port, shards=2)
        assert h.wait_until(lambda: "took over" in daemon.stderr(), 5), daemon.stderr()
        time.sleep(0.3)
        # alice's profile came back with her two calls, on both shards.
        for n in range(3, 7):
            assert Call(port, n).invite() == "SIP/2.0 486 Too Many Calls"
        # The first call's BYE (its Route names the old process's dialog: found by Call-ID) ends the restored dialog.
        assert first.bye(route=True) == "SIP/2.0 200 OK"
        assert f"BYE of {first.call_id}: status=5 who=alice dir=downstream" in daemon.stderr()
        got = wait_rows(ACC, 1)
        assert len(got) == 1
        (callid, method, code, duration, ms, setup, created), = cdrs()
        assert callid == first.call_id and int(ms) >= (time.monotonic() - started) * 1000 - 200, ms
        assert h.wait_until(lambda: [r[0] for r in table()] == [second.call_id], 5), table()
        procs.stop(daemon)
    finally:
        sql(f"DROP TABLE IF EXISTS {DIALOG_TABLE}")


def test_a_dialog_answered_statelessly_ends_with_its_route_and_frees_its_profile(procs, ringsipd, acc_tables):
    port = h.free_udp_ports(1)[0]
    daemon = start_script(procs, ringsipd, script(procs.workdir), port, shards=2)
    for n in range(1, 4):
        assert Call(port, n, callee_user="refuse").invite() == "SIP/2.0 403 Refused"
    time.sleep(0.2)
    for n in range(4, 6):
        assert Call(port, n).invite() == "SIP/2.0 200 OK"
    procs.stop(daemon)
