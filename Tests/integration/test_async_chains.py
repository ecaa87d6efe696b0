"""Chained async(): `$avp` values and the script's edits survive every hop of a chain of operations.

Each resume route logs every `$avp` it can see (xlog to stderr, one line per hop) and starts the next
operation; the test compares each hop's line with what the script set. Values of many sizes: empty, one byte,
a 4 KB text, multi-valued names, integers; set before the first async() and between hops.
"""

import socket
import time

import harness as h
import pytest
from conftest import start_script

HEAD = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "textops.so"
"""


def ask(port: int, call: str, extra: str = "", timeout: float = 5) -> str:
    """Sends an INVITE from a fresh socket; the first final reply's text."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.bind((h.LOOPBACK, 0))
        me = caller.getsockname()[1]
        caller.sendto((f"INVITE sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-chain-{call}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:sipp@127.0.0.1>;tag=t-{call}\r\nTo: <sip:svc@127.0.0.1>\r\n"
                       f"Call-ID: chain-{call}@127.0.0.1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n").encode(),
                      (h.LOOPBACK, port))
        end = time.monotonic() + timeout
        while True:
            caller.settimeout(max(0.01, end - time.monotonic()))
            text = caller.recv(65536).decode(errors="replace")
            if not text.startswith("SIP/2.0 1"):
                return text


def hop_lines(proc, prefix: str, count: int, timeout: float = 5) -> list[str]:
    """The daemon's stderr lines starting with `prefix`, once there are `count` of them."""
    def lines():
        return [line for line in proc.stderr().splitlines() if line.startswith(prefix)]
    assert h.wait_until(lambda: len(lines()) >= count, timeout), proc.stderr()[-3000:]
    return lines()


def test_the_issue_reproducer_keeps_avps_across_two_chained_usleeps(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "chain.cfg"
    script.write_text(HEAD + """
route {
    $avp(caller) = $fU;
    $avp(lit) = "literal";
    async(usleep(1000), r1);
}
route[r1] {
    xlog("L_ERR", "r1: caller=[$avp(caller)] lit=[$avp(lit)]\\n");
    async(usleep(1000), r2);
}
route[r2] {
    xlog("L_ERR", "r2: caller=[$avp(caller)] lit=[$avp(lit)]\\n");
    t_reply(486, "Busy");
}
""")
    proc = start_script(procs, ringsipd, script, port)
    reply = ask(port, "repro")
    assert reply.startswith("SIP/2.0 486 Busy\r\n"), reply
    assert hop_lines(proc, "r1:", 1) == ["r1: caller=[sipp] lit=[literal]"]
    assert hop_lines(proc, "r2:", 1) == ["r2: caller=[sipp] lit=[literal]"]


BIG = "".join(chr(ord("a") + i % 26) for i in range(4096))


def test_avps_of_every_size_survive_five_hops_and_values_set_between_hops_too(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "sizes.cfg"
    hops = "\n".join(f"""
route[h{i}] {{
    xlog("L_ERR", "hop{i}: rc=$rc e=[$avp(empty)] one=[$avp(one)] big=[$avp(big)] m=[$(avp(multi)[0]),$(avp(multi)[1]),$(avp(multi)[2])] n=[$avp(n)] ru=[$ru] prev=[$avp(prev)]\\n");
    $avp(prev) = "from-h{i}-$fU";
    async(usleep({(i * 700) % 3000}), h{i + 1});
}}""" for i in range(1, 5))
    script.write_text(HEAD + f"""
route {{
    $avp(empty) = "";
    $avp(one) = "x";
    $avp(big) = $hdr(X-Big);
    $avp(multi) = "m1";
    $avp(multi) = "m2";
    $avp(multi) = "m3";
    $avp(n) = 42;
    $ru = "sip:changed@192.0.2.1";
    append_hf("X-Kept: yes\\r\\n");
    async(usleep(500), h1);
}}
{hops}
route[h5] {{
    xlog("L_ERR", "hop5: rc=$rc e=[$avp(empty)] one=[$avp(one)] big=[$avp(big)] m=[$(avp(multi)[0]),$(avp(multi)[1]),$(avp(multi)[2])] n=[$avp(n)] ru=[$ru] prev=[$avp(prev)]\\n");
    t_reply(299, "done");
}}
""")
    proc = start_script(procs, ringsipd, script, port)
    reply = ask(port, "sizes", extra=f"X-Big: {BIG}\r\n")
    assert reply.startswith("SIP/2.0 299 done\r\n"), reply
    for i in range(1, 6):
        prev = "" if i == 1 else f"from-h{i - 1}-sipp"
        (line,) = hop_lines(proc, f"hop{i}:", 1)
        assert line == (f"hop{i}: rc=1 e=[] one=[x] big=[{BIG}] m=[m3,m2,m1] n=[42] "
                        f"ru=[sip:changed@192.0.2.1] prev=[{prev}]"), line[:400]


def test_many_calls_chained_at_once_each_keep_their_own_avps(procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "many.cfg"
    script.write_text(HEAD + """
route {
    $avp(call) = $ci;
    $avp(tag) = $hdr(X-Tag);
    async(usleep($hdr(X-Pause)), a);
}
route[a] {
    $avp(mid) = "mid-$avp(tag)";
    async(usleep($hdr(X-Pause)), b);
}
route[b] {
    async(usleep(100), c);
}
route[c] {
    t_reply(299, "call=$avp(call) tag=$avp(tag) mid=$avp(mid)");
}
""")
    start_script(procs, ringsipd, script, port)
    callers = []
    for n in range(40):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((h.LOOPBACK, 0))
        me = s.getsockname()[1]
        s.sendto((f"INVITE sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-many-{n}\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t{n}\r\nTo: <sip:svc@127.0.0.1>\r\n"
                  f"Call-ID: many-{n}\r\nCSeq: 1 INVITE\r\nX-Tag: {'t' * (n % 7)}{n}\r\n"
                  f"X-Pause: {(n * 997) % 5000}\r\nContent-Length: 0\r\n\r\n").encode(), (h.LOOPBACK, port))
        callers.append(s)
    try:
        for n, s in enumerate(callers):
            s.settimeout(5)
            while True:
                text = s.recv(65536).decode()
                if not text.startswith("SIP/2.0 1"):
                    break
            tag = f"{'t' * (n % 7)}{n}"
            assert text.startswith(f"SIP/2.0 299 call=many-{n} tag={tag} mid=mid-{tag}\r\n"), text
    finally:
        for s in callers:
            s.close()


def test_a_db_rest_exec_radius_sleep_chain_keeps_avps_and_each_operations_outputs_at_every_hop(
        procs, ringsipd, tmp_path):
    """The chain real scripts run: look up in the database, ask a web service, run a helper, authenticate,
    pause — each hop sees the values set before it and the outputs of every operation before it."""
    from test_async import DB_URL, need_mariadb, start_freeradius, start_http_fixture
    need_mariadb()
    http_port = start_http_fixture(procs)
    radius_ports = start_freeradius(procs, tmp_path)
    show = ("rc=$rc who=[$avp(who)] big=[$(avp(big){s.len})] e=[$avp(empty)] db=[$(avp(db)[0]),$(avp(db)[1])] "
            "body=[$avp(body)] code=[$avp(code)] out=[$avp(out)] msg=[$avp(msg)]")
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "mixed.cfg"
    script.write_text(HEAD + f"""
loadmodule "avpops.so"
loadmodule "rest_client.so"
loadmodule "exec.so"
loadmodule "aaa_radius.so"
modparam("avpops", "db_url", "{DB_URL}")
modparam("aaa_radius", "secret", "testing123")
modparam("aaa_radius", "auth_server", "udp:127.0.0.1:{radius_ports[0]}")
modparam("aaa_radius", "acct_server", "udp:127.0.0.1:{radius_ports[1]}")
modparam("aaa_radius", "sets", "creds = {{ User-Name = $avp(user); User-Password = $avp(pw) }}")
modparam("aaa_radius", "sets", "reply = {{ Reply-Message = $avp(msg) }}")
route {{
    $avp(who) = $fU;
    $avp(big) = $hdr(X-Big);
    $avp(empty) = "";
    $avp(pw) = "s3cret";
    $avp(user) = "alice";
    async(avp_db_query("SELECT 'row1' UNION ALL SELECT 'row2'", "$avp(db)"), after_db, 2000);
}}
route[after_db] {{
    xlog("L_ERR", "hop-db: {show}\\n");
    async(rest_get("http://127.0.0.1:{http_port}/hello", $avp(body), $avp(ctype), $avp(code)), after_rest, 2000);
}}
route[after_rest] {{
    xlog("L_ERR", "hop-rest: {show}\\n");
    async(exec("printf out-$avp(body)", "", $avp(out)), after_exec, 2000);
}}
route[after_exec] {{
    xlog("L_ERR", "hop-exec: {show}\\n");
    async(radius_send_auth("creds", "reply"), after_radius, 2000);
}}
route[after_radius] {{
    xlog("L_ERR", "hop-radius: {show}\\n");
    async(usleep(2000), after_sleep);
}}
route[after_sleep] {{
    xlog("L_ERR", "hop-sleep: {show}\\n");
    t_reply(299, "chain done");
}}
""")
    proc = start_script(procs, ringsipd, script, port)
    reply = ask(port, "mixed", extra=f"X-Big: {BIG}\r\n")
    assert reply.startswith("SIP/2.0 299 chain done\r\n"), reply + proc.stderr()[-2000:]
    base = "rc=1 who=[sipp] big=[4096] e=[] db=[row1,row2]"
    expected = {
        "hop-db": f"{base} body=[] code=[] out=[] msg=[]",
        "hop-rest": f"{base} body=[hello] code=[200] out=[] msg=[]",
        "hop-exec": f"{base} body=[hello] code=[200] out=[out-hello] msg=[]",
        "hop-radius": f"{base} body=[hello] code=[200] out=[out-hello] msg=[hello alice]",
        "hop-sleep": f"{base} body=[hello] code=[200] out=[out-hello] msg=[hello alice]",
    }
    for hop, want in expected.items():
        (line,) = hop_lines(proc, hop + ":", 1)
        assert line == f"{hop}: {want}", line


def test_var_quoted_avp_ru_and_du_outputs_are_written_when_the_resume_route_starts_and_in_synchronous_calls(
        procs, ringsipd, tmp_path):
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "outputs.cfg"
    script.write_text(HEAD + """
loadmodule "exec.so"
route {
    $var(before) = "set-before";
    async(exec("printf out1", "", $var(out)), a);
}
route[a] {
    xlog("L_ERR", "outs-a: rc=$rc var=[$var(out)] before=[$var(before)]\\n");
    # OpenSIPS 2.x quoted its output variables.
    async(exec("printf quoted-value", "", "$avp(quoted)"), b);
}
route[b] {
    xlog("L_ERR", "outs-b: quoted=[$avp(quoted)] var=[$var(out)]\\n");
    async(exec("printf sip:new@192.0.2.10", "", $ru), c);
}
route[c] {
    xlog("L_ERR", "outs-c: ru=[$ru] quoted=[$avp(quoted)]\\n");
    exec("printf sync-var", "", $var(sync));
    exec("printf sip:hop@192.0.2.11:5070", "", $du);
    t_reply(299, "sync=$var(sync) du=$du ru=$ru");
}
""")
    proc = start_script(procs, ringsipd, script, port)
    reply = ask(port, "outputs")
    assert reply.startswith("SIP/2.0 299 sync=sync-var du=sip:hop@192.0.2.11:5070 ru=sip:new@192.0.2.10\r\n"), reply
    assert hop_lines(proc, "outs-a:", 1) == ["outs-a: rc=1 var=[out1] before=[]"]
    assert hop_lines(proc, "outs-b:", 1) == ["outs-b: quoted=[quoted-value] var=[]"]
    assert hop_lines(proc, "outs-c:", 1) == ["outs-c: ru=[sip:new@192.0.2.10] quoted=[quoted-value]"]


def test_an_output_that_cannot_be_written_fails_the_check_naming_what_can(ringsipd, tmp_path):
    import subprocess
    bad = tmp_path / "bad-output.cfg"
    bad.write_text(HEAD + 'loadmodule "exec.so"\nroute {\n    async(exec("true", "", $fU), done);\n}\n'
                   'route[done] {\n    exit;\n}\n')
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(bad)], capture_output=True, text=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.startswith(f"{bad}:9:28: error: exec's stdout must be where the result goes: "
                               "$avp(name), $var(name), $ru or $du"), p.stderr
