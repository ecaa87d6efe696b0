"""Routing scripts in the real daemon: the scripts under examples/, run with `ringsipd -f`.

- examples/stateless-proxy.cfg between sipp UAC and UAS whose scenarios (Tests/integration/scenarios)
  exercise record_route, loose_route and forward(): the UAS echoes Record-Route, the UAC sends ACK and BYE
  along the learned route set, and the UAS fails a call whose ACK or BYE still has a Route header.
- examples/options-responder.cfg answering an OPTIONS from a plain UDP socket.
- `--check-config`: exit 2 with file:line:col for a bad script, 0 for the examples.
"""

import re
import socket
import subprocess
from pathlib import Path

import harness as h
import pytest
from conftest import REPO, describe, start_script

EXAMPLES = REPO / "examples"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"



def with_server_port(tmp_path: Path, script: Path, port: int) -> Path:
    """A copy of `script` whose SIP server (127.0.0.1:5070 in the examples) is at `port`."""
    text = script.read_text()
    assert "127.0.0.1:5070" in text, f"{script} no longer names its server as 127.0.0.1:5070"
    copy = tmp_path / script.name
    copy.write_text(text.replace("127.0.0.1:5070", f"127.0.0.1:{port}"))
    return copy


def test_stateless_proxy_example_routes_dialogs_by_record_route_without_a_failure(procs, ringsipd, sipp):
    uas_port, proxy_port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port, scenario=SCENARIOS / "uas-record-route.xml")
    script = with_server_port(procs.workdir, EXAMPLES / "stateless-proxy.cfg", uas_port)
    daemon = start_script(procs, ringsipd, script, proxy_port)
    res = h.run_uacs(procs, proxy_port, rate=200, calls=400, timeout=20, scenario=SCENARIOS / "uac-route-set.xml")
    assert res.exit_codes == [0] and res.failed == 0 and res.successful == 400, describe(res)
    rc = procs.stop(daemon)
    assert rc == 0, daemon.stderr()[-2000:]
    assert "script error" not in daemon.stderr()


def test_options_responder_example_answers_options_with_200(procs, ringsipd):
    port = h.free_udp_ports(1)[0]
    start_script(procs, ringsipd, EXAMPLES / "options-responder.cfg", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((h.LOOPBACK, 0))
        s.settimeout(2)
        me = s.getsockname()[1]

        def ask(method: str, uri: str, cseq: int) -> str:
            s.sendto((f"{method} {uri} SIP/2.0\r\n"
                      f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-opt-{cseq};rport\r\n"
                      "Max-Forwards: 70\r\nFrom: <sip:monitor@127.0.0.1>;tag=m1\r\nTo: <sip:127.0.0.1>\r\n"
                      f"Call-ID: opt-{cseq}@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode(),
                     (h.LOOPBACK, port))
            return s.recv(65536).decode()

        reply = ask("OPTIONS", f"sip:127.0.0.1:{port}", 1)
        assert reply.startswith("SIP/2.0 200 OK\r\n"), reply
        assert f"\r\nCSeq: 1 OPTIONS\r\n" in reply and f"rport={me}" in reply, reply
        reply = ask("INVITE", f"sip:bob@127.0.0.1:{port}", 2)
        assert reply.startswith("SIP/2.0 405 Method Not Allowed\r\n"), reply
        reply = ask("OPTIONS", "sip:192.0.2.1", 3)
        assert reply.startswith("SIP/2.0 405 Method Not Allowed\r\n"), "an OPTIONS for someone else is refused"


BAD_SCRIPT = """\
loadmodule "sl.so"
route {
    sl_send_replyy(404, "Not Here");
}
"""


def test_check_config_rejects_a_bad_script_with_file_line_and_column(ringsipd, tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(BAD_SCRIPT)
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(bad)], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.splitlines()[:3] == [
        f"{bad}:3:5: error: unknown function 'sl_send_replyy' (did you mean 'sl_send_reply'?)",
        '    sl_send_replyy(404, "Not Here");',
        "    ^",
    ], p.stderr


def test_check_config_of_a_script_that_cannot_be_read_exits_2(ringsipd, tmp_path):
    missing = tmp_path / "missing.cfg"
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(missing)], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert re.match(rf"{re.escape(str(missing))}:1:1: error: cannot read script", p.stderr), p.stderr


@pytest.mark.parametrize("script", sorted(EXAMPLES.glob("*.cfg")) + [REPO / "etc" / "ringsip.cfg"],
                         ids=lambda p: p.name)
def test_check_config_accepts_the_examples_and_the_default_configuration(ringsipd, script):
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(script)], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith(f"ringsipd: {script} is valid: "), p.stdout
