"""The command line: anything unusable is one line on stderr and exit 2, before any traffic."""

import socket
import subprocess

import harness as h
import pytest

FWD = "udp:127.0.0.1:5070"


def _listen():
    return f"udp:127.0.0.1:{h.free_udp_ports(1)[0]}"


BAD = {
    "unknown flag": lambda: ["--listen", _listen(), "--forward", FWD, "--bogus"],
    "flag without value": lambda: ["--forward", FWD, "--listen"],
    "listen not an address": lambda: ["--listen", "nonsense", "--forward", FWD],
    "listen without port": lambda: ["--listen", "udp:127.0.0.1", "--forward", FWD],
    "port out of range": lambda: ["--listen", "udp:127.0.0.1:70000", "--forward", FWD],
    "forward not an address": lambda: ["--listen", _listen(), "--forward", "udp:300.1.1.1:5070"],
    "zero shards": lambda: ["--listen", _listen(), "--forward", FWD, "--shards", "0"],
    "shards not a number": lambda: ["--listen", _listen(), "--forward", FWD, "--shards", "two"],
    "cpu that does not exist": lambda: ["--listen", _listen(), "--forward", FWD, "--cpus", "4096"],
    "unknown log level": lambda: ["--listen", _listen(), "--forward", FWD, "--log-level", "loud"],
    # 192.0.2.0/24 is TEST-NET-1: not an address of this host, so bind() fails (no packet is sent).
    "address not on this host": lambda: ["--listen", "udp:192.0.2.1:5060", "--forward", FWD],
}


def _run(ringsipd, args):
    return subprocess.run([str(ringsipd), *args], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case", sorted(BAD))
def test_unusable_command_line_exits_2_with_one_line_on_stderr(ringsipd, case):
    args = BAD[case]()
    p = _run(ringsipd, args)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, f"{args}: exit {p.returncode}, stderr={p.stderr!r}"
    assert len(lines) == 1, f"{args}: expected one line on stderr, got {p.stderr!r}"
    assert p.stdout == "", f"{args}: expected nothing on stdout, got {p.stdout!r}"


def test_listen_port_already_in_use_exits_2_with_one_line_on_stderr(ringsipd):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        p = _run(ringsipd, ["--listen", f"udp:127.0.0.1:{port}", "--forward", FWD])
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and p.stdout == "", (p.returncode, p.stderr, p.stdout)
