"""OpenSIPS-style scripts in the real daemon: Tests/integration/scripts/opensips3-style.cfg and opensips1-style.cfg,
written the way OpenSIPS 3.x and 1.x/2.x scripts are (knobs, management modules, legacy keywords, 1.x tm names).

- both pass `--check-config` with exit 0 and one warning naming each knob that has no effect;
- both route sipp calls (INVITE/200/ACK/BYE along the Record-Route) to a sipp UAS without a failure;
- the 3.x script's failure_route answers a busy callee with send_reply (stateful: the caller's INVITE gets
  480 with our Server header, and the callee's 486 is ACKed);
- tm's auto_100trying = 0: no 100 Trying before the final answer.
"""

import socket
import subprocess
import time
from pathlib import Path

import harness as h
from conftest import describe, recv_until, response_to, start_script

SCRIPTS = Path(__file__).resolve().parent / "scripts"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def script_for(tmp: Path, name: str, uas_port: int, extra: str = "") -> Path:
    text = (SCRIPTS / name).read_text().replace("@UAS@", str(uas_port))
    if extra:
        text = text.replace('loadmodule "tm.so"\n', 'loadmodule "tm.so"\n' + extra, 1)
    path = tmp / name
    path.write_text(text)
    return path


def test_both_styles_check_with_a_warning_per_knob(ringsipd, tmp_path):
    for name, knobs in [("opensips3-style.cfg", ["udp_workers", "timer_workers", "auto_aliases", "disable_dns_blacklist",
                                                 "mpath", "onreply_avp_mode", "fifo_name", "udp_port", "use_workers 2"]),
                        ("opensips1-style.cfg", ["fork", "children", "log_stderror", "disable_tcp", "check_via", "mpath",
                                                 "pass_provisional_replies", "fifo_name"])]:
        done = subprocess.run([ringsipd, "--check-config", "-f", script_for(tmp_path, name, 5070)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert "is valid" in done.stdout, done.stdout
        for knob in knobs:
            assert f"'{knob}'" in done.stderr, f"{name}: no warning names '{knob}':\n{done.stderr}"


def test_both_styles_route_calls_to_the_callee(procs, ringsipd, sipp):
    for name in ["opensips3-style.cfg", "opensips1-style.cfg"]:
        uas_port, proxy_port = h.free_udp_ports(2)
        # The callee echoes Record-Route and the caller sends its ACK and BYE along the route set learned.
        uas = h.start_uas(procs, uas_port, name=f"uas-{name}", scenario=SCENARIOS / "uas-record-route.xml")
        daemon = start_script(procs, ringsipd, script_for(procs.workdir, name, uas_port), proxy_port)
        res = h.run_uacs(procs, proxy_port, rate=100, calls=200, timeout=20, tag=f"uac-{name}",
                         scenario=SCENARIOS / "uac-route-set.xml")
        assert res.exit_codes == [0] and res.failed == 0 and res.successful == 200, f"{name}: {describe(res)}"
        rc = procs.stop(daemon)
        assert rc == 0, daemon.stderr()[-2000:]
        assert "script error" not in daemon.stderr(), daemon.stderr()[-2000:]
        procs.stop(uas)


def invite(me: int, proxy_port: int, call: str) -> bytes:
    return (f"INVITE sip:bob@127.0.0.1:{proxy_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{call};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
            f"Call-ID: {call}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{me}>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def busy_call(procs, ringsipd, extra: str = "") -> tuple[list[str], str]:
    """A caller's INVITE through the 3.x script to a callee that answers 486: what the caller receives (first
    lines, in order) and what the callee receives after its 486."""
    proxy_port = h.free_udp_ports(1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        caller.bind((h.LOOPBACK, 0))
        callee.bind((h.LOOPBACK, 0))
        callee.settimeout(3)
        script = script_for(procs.workdir, "opensips3-style.cfg", callee.getsockname()[1], extra)
        start_script(procs, ringsipd, script, proxy_port)
        caller.sendto(invite(caller.getsockname()[1], proxy_port, "busy-1"), (h.LOOPBACK, proxy_port))
        request = callee.recv(65536).decode()
        assert request.startswith("INVITE "), request
        callee.sendto(response_to(request, "486 Busy Here", "b1").encode(), (h.LOOPBACK, proxy_port))
        seen = []
        final = recv_until(caller, "480", 3)
        caller.settimeout(0.2)
        try:
            while True:
                seen.append(caller.recv(65536).decode().split("\r\n", 1)[0])
        except socket.timeout:
            pass
        ack = recv_until(callee, "ACK", 3)
        return seen, final, ack


def test_failure_route_answers_with_send_reply(procs, ringsipd):
    seen, final, ack = busy_call(procs, ringsipd)
    assert final.startswith("SIP/2.0 480 Tried Them All\r\n"), final
    assert "\r\nServer: ringsip-compat\r\n" in final, final
    assert ack.startswith("ACK "), ack


def test_auto_100trying_off_sends_no_trying(procs, ringsipd):
    proxy_port = h.free_udp_ports(1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        caller.bind((h.LOOPBACK, 0))
        callee.bind((h.LOOPBACK, 0))
        callee.settimeout(3)
        caller.settimeout(0.5)
        script = script_for(procs.workdir, "opensips3-style.cfg", callee.getsockname()[1],
                            'modparam("tm", "auto_100trying", 0)\n')
        start_script(procs, ringsipd, script, proxy_port)
        caller.sendto(invite(caller.getsockname()[1], proxy_port, "quiet-1"), (h.LOOPBACK, proxy_port))
        assert callee.recv(65536).decode().startswith("INVITE ")
        try:
            got = caller.recv(65536).decode()
            raise AssertionError(f"the caller heard {got.splitlines()[0]!r} though auto_100trying is 0")
        except socket.timeout:
            pass
