"""async(): a transaction suspended on the shard's wheel while the shard goes on serving.

The script answers from its resume route with t_reply, so a plain UDP socket sees the result: the reply
comes after the pause, carries $rc and the $avp set before the suspension, and an OPTIONS sent meanwhile
is answered at once (the shard did not block). A pause longer than the async timeout resumes with -2.
Also examples/async-sleep.cfg between sipp UAC and UAS: 0 failed calls, each INVITE paced by 200 ms.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import harness as h
import pytest
from conftest import REPO, describe, missing, start_script

SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "Still Here");
        exit;
    }
    $avp(who) = $fU;
    append_hf("X-Before: kept\\r\\n");
    async(usleep($hdr(X-Pause-Us)), resume, 250);
}
route[resume] {
    t_reply(299, "rc=$rc who=$avp(who)");
}
"""


def request(method: str, port: int, me: int, n: int, pause_us: int = 0) -> bytes:
    return (f"{method} sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-async-{n};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{n}\r\nTo: <sip:svc@127.0.0.1>\r\n"
            f"Call-ID: async-{n}@127.0.0.1\r\nCSeq: 1 {method}\r\nX-Pause-Us: {pause_us}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def final_reply(s: socket.socket, timeout: float) -> tuple[str, float]:
    """The first non-1xx reply and when it came (monotonic)."""
    end = time.monotonic() + timeout
    while True:
        s.settimeout(max(0.01, end - time.monotonic()))
        text = s.recv(65536).decode()
        if not text.startswith("SIP/2.0 1"):
            return text, time.monotonic()


@pytest.fixture
def daemon(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "async.cfg"
    script.write_text(SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    return port


def test_resume_route_runs_after_the_pause_with_rc_and_avps_while_the_shard_keeps_serving(daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller, \
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as pinger:
        caller.bind((h.LOOPBACK, 0))
        pinger.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(request("INVITE", daemon, caller.getsockname()[1], 1, pause_us=150_000), (h.LOOPBACK, daemon))
        # While the INVITE is suspended, the shard answers others at once.
        pinger.sendto(request("OPTIONS", daemon, pinger.getsockname()[1], 2), (h.LOOPBACK, daemon))
        pinger.settimeout(1)
        pong = pinger.recv(65536).decode()
        pong_at = time.monotonic()
        reply, reply_at = final_reply(caller, 3)
    assert pong.startswith("SIP/2.0 200 Still Here"), pong
    assert pong_at - start < 0.1, "the OPTIONS waited for the suspended INVITE"
    assert reply.startswith("SIP/2.0 299 rc=1 who=alice\r\n"), reply
    assert reply_at - start >= 0.14, f"resumed after {reply_at - start:.3f}s, before the 150 ms pause ended"


def test_a_pause_longer_than_the_timeout_resumes_with_minus_2(daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(request("INVITE", daemon, caller.getsockname()[1], 3, pause_us=5_000_000), (h.LOOPBACK, daemon))
        reply, at = final_reply(caller, 3)
    assert reply.startswith("SIP/2.0 299 rc=-2 who=alice\r\n"), reply
    assert 0.2 <= at - start < 1.5, f"timed out after {at - start:.3f}s, not at the 250 ms async timeout"


def test_async_sleep_example_paces_invites_without_failing_calls(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port)
    text = (REPO / "examples" / "async-sleep.cfg").read_text().replace("udp:127.0.0.1:5070", f"udp:127.0.0.1:{uas_port}")
    script = procs.workdir / "async-sleep.cfg"
    script.write_text(text)
    proc = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=100, calls=300, timeout=30)
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 300, describe(res)
    assert res.rtts_ms and min(res.rtts_ms) >= 190, f"INVITE answered in {min(res.rtts_ms)} ms, before the pause"
    procs.stop(proc)


EXEC_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "exec.so"
route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "Still Here");
        exit;
    }
    $avp(who) = $fU;
    $avp(env) = "pushed-first";
    $avp(env) = $fU;
    async(exec("$hdr(X-Cmd)", "from-stdin", $avp(out), $avp(err), $avp(env)), done, 500);
}
route[done] {
    t_reply(299, "rc=$rc out=$avp(out) err=$avp(err) who=$avp(who)");
}
"""


@pytest.fixture
def exec_daemon(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "exec.cfg"
    script.write_text(EXEC_SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    return port


def exec_request(port: int, me: int, n: int, command: str) -> bytes:
    return request("INVITE", port, me, n).replace(b"X-Pause-Us: 0\r\n", f"X-Cmd: {command}\r\n".encode())


def test_exec_runs_on_the_ring_and_its_output_reaches_the_resume_route(exec_daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        caller.sendto(exec_request(exec_daemon, me, 10, "printf hello; printf oops >&2"), (h.LOOPBACK, exec_daemon))
        reply, _ = final_reply(caller, 3)
        assert reply.startswith("SIP/2.0 299 rc=1 out=hello err=oops who=alice\r\n"), reply
        caller.sendto(exec_request(exec_daemon, me, 11, "cat"), (h.LOOPBACK, exec_daemon))
        reply, _ = final_reply(caller, 3)
        assert reply.startswith("SIP/2.0 299 rc=1 out=from-stdin err= who=alice\r\n"), reply
        # The environment $avp's values, newest first, as OpenSIPS names them; the daemon's own stay.
        caller.sendto(exec_request(exec_daemon, me, 13, 'printf "$OSIPS_EXEC_0,$OSIPS_EXEC_1,$OSIPS_EXEC_2,${PATH:+path}"'),
                      (h.LOOPBACK, exec_daemon))
        reply, _ = final_reply(caller, 3)
        assert reply.startswith("SIP/2.0 299 rc=1 out=alice,pushed-first,,path err= who=alice\r\n"), reply


def test_exec_past_its_timeout_is_killed_and_resumes_with_minus_2(exec_daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(exec_request(exec_daemon, caller.getsockname()[1], 12, "sleep 7; printf late"),
                      (h.LOOPBACK, exec_daemon))
        reply, at = final_reply(caller, 3)
    assert reply.startswith("SIP/2.0 299 rc=-2 out= err= who=alice\r\n"), reply
    assert 0.45 <= at - start < 1.5, f"resumed after {at - start:.3f}s, not at the 500 ms timeout"
    # The child was killed at its source, not left to run.
    assert h.wait_until(lambda: not any("sleep 7" in h.cmdline(p) for p in h.all_pids()), 5), \
        "the child still runs: " + "; ".join(f"{p} {h._stat_fields(p)} {h.cmdline(p)}" for p in h.all_pids()
                                             if "sleep 7" in h.cmdline(p))


LAUNCH_SCRIPT = """
loadmodule "sl.so"
loadmodule "exec.so"
route {
    launch(exec("printf launched-$ci", , $avp(out)), report, "from-$fU");
    sl_send_reply(200, "Launched");
}
route[report] {
    xlog("L_ERR", "REPORT rc=$rc param=$param(1) out=$avp(out)\\n");
}
"""


def test_launch_is_fire_and_forget_and_its_report_route_sees_rc_param_and_output(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "launch.cfg"
    script.write_text(LAUNCH_SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(2)
        caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 20), (h.LOOPBACK, port))
        assert caller.recv(65536).decode().startswith("SIP/2.0 200 Launched"), "the route did not wait for the operation"
    expected = "REPORT rc=1 param=from-alice out=launched-async-20@127.0.0.1"
    assert h.wait_until(lambda: expected in proc.stderr(), 3), proc.stderr()[-1500:]


def test_timeout_comes_from_the_modules_modparam_when_async_gives_none(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "exec-modparam.cfg"
    script.write_text(EXEC_SCRIPT.replace('loadmodule "exec.so"', 'loadmodule "exec.so"\nmodparam("exec", "timeout", 300)')
                      .replace("$avp(err)), done, 500);", "$avp(err)), done);"))
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(exec_request(port, caller.getsockname()[1], 30, "sleep 7"), (h.LOOPBACK, port))
        reply, at = final_reply(caller, 3)
    assert reply.startswith("SIP/2.0 299 rc=-2 "), reply
    assert 0.28 <= at - start < 1.0, f"timed out after {at - start:.3f}s, not at the module's 300 ms"


DB_URL = "mysql://ringsip:ringsip@127.0.0.1:3306/ringsip"
DB_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "avpops.so"
modparam("avpops", "db_url", "%s")
route {
    $avp(who) = $fU;
    # Query texts are the script's; only substituted values come from the message (and are escaped).
    switch ($hdr(X-Query)) {
    case "rows":
        async(avp_db_query("SELECT 'first', 1 UNION ALL SELECT 'second', 2", "$avp(a);$avp(b)"), done, 400);
    case "inject":
        async(avp_db_query("SELECT '$hdr(X-Name)', 'x'", "$avp(a);$avp(b)"), done, 400);
    case "slow":
        async(avp_db_query("SELECT SLEEP(3), 1", "$avp(a);$avp(b)"), done, 400);
    case "after":
        async(avp_db_query("SELECT 'after', 2", "$avp(a);$avp(b)"), done, 400);
    }
}
route[done] {
    t_reply(299, "rc=$rc a0=$(avp(a)[0]) a1=$(avp(a)[1]) b0=$(avp(b)[0]) who=$avp(who)");
}
""" % DB_URL


def mariadb_up() -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 3306)) == 0


def need_mariadb() -> None:
    if not mariadb_up():
        missing("no MariaDB on 127.0.0.1:3306: run `make test-deps`")


@pytest.fixture
def db_daemon(procs, ringsipd, tmp_path):
    need_mariadb()
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "db.cfg"
    script.write_text(DB_SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    return port


def db_request(port: int, me: int, n: int, query: str, name: str = "") -> bytes:
    return request("INVITE", port, me, n).replace(b"X-Pause-Us: 0\r\n",
                                                   f"X-Query: {query}\r\nX-Name: {name}\r\n".encode())


def ask_db(port: int, n: int, query: str, name: str = "") -> tuple[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(db_request(port, caller.getsockname()[1], n, query, name), (h.LOOPBACK, port))
        reply, at = final_reply(caller, 3)
    return reply, at - start


def test_avp_db_query_rows_and_columns_reach_the_resume_route(db_daemon):
    reply, _ = ask_db(db_daemon, 40, "rows")
    assert reply.startswith("SIP/2.0 299 rc=1 a0=first a1=second b0=1 who=alice\r\n"), reply


def test_substituted_values_are_escaped_so_sql_cannot_be_injected(db_daemon):
    # A header value is substituted into the query text; escaped, it stays one string literal.
    reply, _ = ask_db(db_daemon, 41, "inject", name="x' OR '1'='1")
    assert reply.startswith("SIP/2.0 299 rc=1 a0=x' OR '1'='1 a1= b0=x who=alice\r\n"), reply


def test_a_query_past_its_timeout_resumes_with_minus_2_and_the_pool_recovers(db_daemon):
    reply, took = ask_db(db_daemon, 42, "slow")
    assert reply.startswith("SIP/2.0 299 rc=-2 "), reply
    assert 0.35 <= took < 1.5, f"timed out after {took:.3f}s, not at the 400 ms timeout"
    reply, _ = ask_db(db_daemon, 43, "after")
    assert reply.startswith("SIP/2.0 299 rc=1 a0=after "), reply


HTTP_FIXTURE = REPO / "Tests" / "OpsTests" / "Fixtures" / "http_fixture.py"
HTTP_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "rest_client.so"
route {
    if (is_method("OPTIONS")) {
        sl_send_reply(200, "Still Here");
        exit;
    }
    rest_append_hf("X-Caller: $fU");
    async(rest_get("http://127.0.0.1:@PORT@$hdr(X-Path)", $avp(body), $avp(ctype), $avp(code)), done, 400);
}
route[done] {
    t_reply(299, "rc=$rc code=$avp(code) ctype=$avp(ctype) body=$avp(body)");
}
"""


def start_http_fixture(procs) -> int:
    """The test HTTP server (Tests/OpsTests/Fixtures/http_fixture.py) on a free port, once it listens; its port."""
    server = procs.start("http", [sys.executable, HTTP_FIXTURE])
    assert h.wait_until(lambda: server.stdout().strip() != "" or not server.alive(), 5), server.stderr()
    return int(server.stdout().split()[0])


@pytest.fixture
def http_daemon(procs, ringsipd, tmp_path):
    http_port = start_http_fixture(procs)
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "http.cfg"
    script.write_text(HTTP_SCRIPT.replace("@PORT@", str(http_port)))
    proc = start_script(procs, ringsipd, script, port)
    return port


def ask_http(port: int, n: int, path: str) -> tuple[str, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        start = time.monotonic()
        caller.sendto(request("INVITE", port, caller.getsockname()[1], n).replace(
            b"X-Pause-Us: 0\r\n", f"X-Path: {path}\r\n".encode()), (h.LOOPBACK, port))
        reply, at = final_reply(caller, 3)
    return reply, at - start


def test_rest_get_body_type_and_status_reach_the_resume_route(http_daemon):
    reply, _ = ask_http(http_daemon, 50, "/hello")
    assert reply.startswith("SIP/2.0 299 rc=1 code=200 ctype=text/plain body=hello\r\n"), reply
    reply, _ = ask_http(http_daemon, 51, "/status/503")
    assert reply.startswith("SIP/2.0 299 rc=1 code=503 "), reply
    reply, _ = ask_http(http_daemon, 52, "/header?name=X-Caller")
    assert reply.startswith("SIP/2.0 299 rc=1 code=200 ctype=text/plain body=alice\r\n"), "rest_append_hf was not sent"


def test_a_slow_web_service_times_out_with_the_transfer_timeout_code(http_daemon):
    reply, took = ask_http(http_daemon, 53, "/delay?ms=2000")
    assert reply.startswith("SIP/2.0 299 rc=-2 ") or reply.startswith("SIP/2.0 299 rc=-3 "), reply
    assert 0.35 <= took < 1.5, f"timed out after {took:.3f}s, not at the 400 ms timeout"


SYNC_EXEC_SCRIPT = """
loadmodule "sl.so"
loadmodule "exec.so"
loadmodule "sipmsgops.so"
modparam("exec", "timeout", 300)
route {
    if (is_method("INFO")) {
        # Past the exec timeout the command is killed and $rc is -2, as with async(): the shard is not lost.
        exec("sleep 5; printf late", , $avp(out));
        sl_send_reply(297, "rc=$rc out=$avp(out)");
        exit;
    }
    $avp(env) = $fU;
    exec("printf sync-$ci-; printenv OSIPS_EXEC_0 | tr -d '\\n'; printf warn >&2", , $avp(out), $avp(err), $avp(env));
    sl_send_reply(299, "out=$avp(out) err=$avp(err)");
}
"""


def test_exec_outside_async_runs_synchronously_and_the_check_warns(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "sync-exec.cfg"
    script.write_text(SYNC_EXEC_SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    assert "exec() outside async() blocks the whole shard" in proc.stderr(), proc.stderr()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(3)
        caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 60), (h.LOOPBACK, port))
        reply = caller.recv(65536).decode()
        start = time.monotonic()
        caller.sendto(request("INFO", port, caller.getsockname()[1], 62), (h.LOOPBACK, port))
        late = caller.recv(65536).decode()
        took = time.monotonic() - start
    assert reply.startswith("SIP/2.0 299 out=sync-async-60@127.0.0.1-alice err=warn\r\n"), reply
    assert late.startswith("SIP/2.0 297 rc=-2 out=") and 0.25 <= took < 2.5, (late, took)
    assert h.wait_until(lambda: not any("sleep 5; printf late" in h.cmdline(p) for p in h.all_pids()), 2), \
        "the timed-out child still runs"


def test_an_exec_environment_value_ends_at_a_nul_so_it_cannot_add_a_variable(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "env-nul.cfg"
    # The first exec's output (what a web service or a query could return as well) has a NUL inside.
    script.write_text(r"""
loadmodule "sl.so"
loadmodule "exec.so"
route {
    exec("printf 'x\0SMUGGLED=yes'", , $avp(v));
    exec("printenv OSIPS_EXEC_0 SMUGGLED | tr '\\n' ,", , $avp(out), , $avp(v));
    sl_send_reply(299, "out=$avp(out)");
}
""")
    start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(3)
        caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 61), (h.LOOPBACK, port))
        reply = caller.recv(65536).decode()
    assert reply.startswith("SIP/2.0 299 out=x,\r\n"), reply


def test_an_exec_environment_that_is_not_an_avp_fails_the_check_at_its_column(ringsipd, tmp_path):
    bad = tmp_path / "bad-env.cfg"
    bad.write_text('loadmodule "tm.so"\nloadmodule "exec.so"\nroute {\n    async(exec("env", , , , "OSIPS_EXEC_0=x"), done);\n}\n'
                   'route[done] {\n    exit;\n}\n')
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(bad)], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith(f"{bad}:4:29: error: exec's environment must be an $avp(name)"), p.stderr


def test_avpops_and_sqlops_loaded_together_each_get_their_own_answers(procs, ringsipd, tmp_path):
    need_mariadb()
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "two-pools.cfg"
    script.write_text(f"""
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "avpops.so"
loadmodule "sqlops.so"
modparam("avpops", "db_url", "{DB_URL}")
modparam("sqlops", "db_url", "{DB_URL}")
route {{
    async(avp_db_query("SELECT 'from-avpops'", "$avp(a)"), second, 3000);
}}
route[second] {{
    $avp(rc1) = $rc;
    async(sql_query("SELECT 'from-sqlops'", "$avp(b)"), both, 3000);
}}
route[both] {{
    t_reply(299, "rc=$avp(rc1),$rc a=$avp(a) b=$avp(b)");
}}
""")
    start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        for n in (90, 91, 92):
            caller.sendto(request("INVITE", port, caller.getsockname()[1], n), (h.LOOPBACK, port))
            reply, _ = final_reply(caller, 5)
            # Before each pool claimed only its own completions, the first service (avpops) took sqlops' too.
            assert reply.startswith("SIP/2.0 299 rc=1,1 a=from-avpops b=from-sqlops\r\n"), reply


def test_avp_db_query_outside_async_runs_synchronously_and_the_check_warns(procs, ringsipd, tmp_path):
    need_mariadb()
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "sync-db.cfg"
    script.write_text(f"""
loadmodule "sl.so"
loadmodule "avpops.so"
modparam("avpops", "db_url", "{DB_URL}")
route {{
    # A query the server refuses fails as it is: the connection stays (no reconnect for a syntax error).
    avp_db_query("SELECT CONNECTION_ID()", "$avp(before)");
    avp_db_query("SELEC nonsense");
    $var(bad) = $rc;
    avp_db_query("SELECT CONNECTION_ID()", "$avp(after)");
    if ($avp(before) == $avp(after)) {{
        $var(same) = "same";
    }}
    avp_db_query("SELECT 'one', '$hdr(X-Name)' UNION ALL SELECT 'two', NULL", "$avp(a);$avp(b)");
    sl_send_reply(299, "a0=$(avp(a)[0]) a1=$(avp(a)[1]) b0=$(avp(b)[0]) bad=$var(bad) $var(same)");
}}
""")
    proc = start_script(procs, ringsipd, script, port)
    assert "avp_db_query() outside async() blocks the whole shard" in proc.stderr(), proc.stderr()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(5)
        caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 70).replace(
            b"X-Pause-Us: 0\r\n", b"X-Name: it's\r\n"), (h.LOOPBACK, port))
        reply = caller.recv(65536).decode()
    assert reply.startswith("SIP/2.0 299 a0=one a1=two b0=it's bad=-1 same\r\n"), reply


FREERADIUS_SETUP = r"""
set -e
DIR=$1
cp -r /etc/freeradius/3.0 "$DIR/raddb"
sed -i "0,/^[[:space:]]*port = 0/s//\tport = $2/; 0,/^[[:space:]]*port = 0/s//\tport = $3/; 0,/^[[:space:]]*port = 0/s//\tport = $4/; 0,/^[[:space:]]*port = 0/s//\tport = $5/" "$DIR/raddb/sites-enabled/default"
sed -i "s/port = 18120/port = $6/" "$DIR/raddb/sites-enabled/inner-tunnel"
sed -i -E "s/^([[:space:]]*)(user|group) = /\1#\2 = /; s/reject_delay = 1/reject_delay = 0/" "$DIR/raddb/radiusd.conf"
{ printf 'alice Cleartext-Password := "s3cret"\n\tReply-Message := "hello alice"\n\n'; cat "$DIR/raddb/mods-config/files/authorize"; } > "$DIR/authorize"
mv "$DIR/authorize" "$DIR/raddb/mods-config/files/authorize"
exec freeradius -f -d "$DIR/raddb" -l stdout
"""

RADIUS_SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "aaa_radius.so"
modparam("aaa_radius", "secret", "testing123")
modparam("aaa_radius", "auth_server", "udp:127.0.0.1:@AUTH@")
modparam("aaa_radius", "acct_server", "udp:127.0.0.1:@ACCT@")
modparam("aaa_radius", "sets", "creds = { User-Name = $fU; User-Password = $hdr(X-Password) }")
modparam("aaa_radius", "sets", "reply = { Reply-Message = $avp(msg) }")
modparam("aaa_radius", "sets", "acct = { Acct-Status-Type = $avp(status); Acct-Session-Id = $ci; User-Name = $fU }")
modparam("aaa_radius", "timeout", 400)
route {
    if (is_method("OPTIONS")) {
        radius_send_auth("creds", "reply");
        sl_send_reply(298, "sync rc=$rc msg=$avp(msg)");
        exit;
    }
    # Accounting, then authentication: the shard's two RADIUS clients, each with its own socket and ids.
    $avp(status) = 1;
    async(radius_send_acct("acct"), accounted, 2000);
}
route[accounted] {
    $avp(acct) = $rc;
    async(radius_send_auth("creds", "reply"), done, 2000);
}
route[done] {
    t_reply(299, "rc=$rc msg=$avp(msg) acct=$avp(acct)");
}
"""


def start_freeradius(procs, tmp_path) -> list[int]:
    """A private FreeRADIUS (user alice / s3cret) on free ports, once it is ready: its auth and acct ports first."""
    if not Path("/usr/sbin/freeradius").exists():
        missing("freeradius is not installed: run `make test-deps`")
    ports = h.free_udp_ports(5)
    server = procs.start("freeradius", ["sh", "-c", FREERADIUS_SETUP, "sh", str(tmp_path), *map(str, ports)])
    assert h.wait_until(lambda: "Ready to process requests" in server.stdout() or not server.alive(), 15), \
        server.stdout()[-2000:] + server.stderr()[-2000:]
    return ports


@pytest.fixture
def radius_daemon(procs, ringsipd, tmp_path):
    ports = start_freeradius(procs, tmp_path)
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "radius.cfg"
    script.write_text(RADIUS_SCRIPT.replace("@AUTH@", str(ports[0])).replace("@ACCT@", str(ports[1])))
    proc = start_script(procs, ringsipd, script, port)
    assert "radius_send_auth() outside async() blocks the whole shard" in proc.stderr(), proc.stderr()
    return port


def ask_radius(port: int, n: int, password: str, method: str = "INVITE") -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.sendto(request(method, port, caller.getsockname()[1], n).replace(
            b"X-Pause-Us: 0\r\n", f"X-Password: {password}\r\n".encode()), (h.LOOPBACK, port))
        reply, _ = final_reply(caller, 4)
    return reply


def test_radius_auth_accepts_rejects_and_returns_reply_attributes(radius_daemon):
    reply = ask_radius(radius_daemon, 80, "s3cret")
    assert reply.startswith("SIP/2.0 299 rc=1 msg=hello alice acct=1\r\n"), reply
    reply = ask_radius(radius_daemon, 81, "wrong")
    assert reply.startswith("SIP/2.0 299 rc=-1 "), reply


def test_radius_auth_outside_async_waits_for_the_answer_on_the_shard(radius_daemon):
    reply = ask_radius(radius_daemon, 82, "s3cret", method="OPTIONS")
    assert reply.startswith("SIP/2.0 298 sync rc=1 msg=hello alice\r\n"), reply
    reply = ask_radius(radius_daemon, 83, "wrong", method="OPTIONS")
    assert reply.startswith("SIP/2.0 298 sync rc=-1 "), reply


def test_radius_auth_outside_async_with_no_server_times_out_and_the_daemon_goes_on(procs, ringsipd, tmp_path):
    dead = h.free_udp_ports(1)[0]  # nothing listens: each send draws an ICMP port unreachable
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "radius-dead.cfg"
    script.write_text(RADIUS_SCRIPT.replace("@AUTH@", str(dead)).replace("@ACCT@", str(dead)))
    start_script(procs, ringsipd, script, port)
    for n in (84, 85):
        start = time.monotonic()
        reply = ask_radius(port, n, "s3cret", method="OPTIONS")
        took = time.monotonic() - start
        assert reply.startswith("SIP/2.0 298 sync rc=-2 msg=\r\n"), reply
        assert 0.35 <= took < 1.5, f"answered after {took:.3f}s, not at the 400 ms timeout"


CANCEL_SCRIPT = """
loadmodule "tm.so"
loadmodule "cfgutils.so"
route {
    async(usleep(400000), after, 2000);
}
route[after] {
    if (t_was_cancelled()) {
        xlog("L_ERR", "RESUMED cancelled=yes rc=$rc ci=$ci\\n");
        exit;
    }
    xlog("L_ERR", "RESUMED cancelled=no\\n");
}
"""


def test_a_transaction_cancelled_while_suspended_still_resumes_and_sees_t_was_cancelled(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "cancel-async.cfg"
    script.write_text(CANCEL_SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(2)
        invite = request("INVITE", port, caller.getsockname()[1], 90)
        caller.sendto(invite, (h.LOOPBACK, port))
        assert caller.recv(65536).decode().startswith("SIP/2.0 100"), "no 100 Trying"
        cancel = invite.replace(b"INVITE sip:", b"CANCEL sip:").replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        caller.sendto(cancel, (h.LOOPBACK, port))
        answers = {caller.recv(65536).decode().split("\r\n")[0] for _ in range(2)}
        assert answers == {"SIP/2.0 200 OK", "SIP/2.0 487 Request Terminated"}, answers
    # The resume route runs after the pause even though the CANCEL ended the transaction.
    assert h.wait_until(lambda: "RESUMED cancelled=yes rc=1 ci=async-90@127.0.0.1" in proc.stderr(), 3), proc.stderr()[-1500:]


def test_rest_get_outside_async_runs_synchronously_and_the_check_warns(procs, ringsipd, tmp_path):
    server = procs.start("http", [sys.executable, HTTP_FIXTURE])
    assert h.wait_until(lambda: server.stdout().strip() != "" or not server.alive(), 5), server.stderr()
    http_port = int(server.stdout().split()[0])
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "sync-rest.cfg"
    script.write_text(f"""
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "rest_client.so"
route {{
    if (is_method("INFO")) {{
        # As async: rest_append_hf's headers go with the request, and a body past the limit fails it.
        rest_append_hf("X-Sync: added");
        rest_get("http://127.0.0.1:{http_port}/header?name=X-Sync", $avp(body));
        $var(header) = $avp(body);
        rest_get("http://127.0.0.1:{http_port}/big?n=40000", $avp(big));
        sl_send_reply(297, "header=$var(header) big_rc=$rc");
        exit;
    }}
    rest_get("http://127.0.0.1:{http_port}/hello", $avp(body), $avp(ctype), $avp(code));
    sl_send_reply(299, "rc=$rc code=$avp(code) body=$avp(body)");
}}
""")
    proc = start_script(procs, ringsipd, script, port)
    assert "rest_get() outside async() blocks the whole shard" in proc.stderr(), proc.stderr()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        caller.settimeout(5)
        caller.sendto(request("OPTIONS", port, caller.getsockname()[1], 95), (h.LOOPBACK, port))
        reply = caller.recv(65536).decode()
        caller.sendto(request("INFO", port, caller.getsockname()[1], 96), (h.LOOPBACK, port))
        more = caller.recv(65536).decode()
    assert reply.startswith("SIP/2.0 299 rc=1 code=200 body=hello\r\n"), reply
    assert more.startswith("SIP/2.0 297 header=added big_rc=-10\r\n"), more
