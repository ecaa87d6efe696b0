"""With io_uring switched off (kernel.io_uring_disabled), ringsipd refuses to start in one sentence."""

import os
import subprocess

import harness as h
import pytest

SYSCTL = "/proc/sys/kernel/io_uring_disabled"


def test_disabled_io_uring_is_refused_with_one_sentence_and_exit_1(ringsipd):
    if not os.access(SYSCTL, os.W_OK):
        pytest.skip(f"{SYSCTL} is not writable here (needs root on Linux 6.6+)")
    with open(SYSCTL) as f:
        before = f.read().strip()
    port = h.free_udp_ports(1)[0]
    try:
        with open(SYSCTL, "w") as f:
            f.write("2")
        p = subprocess.run([str(ringsipd), "--listen", f"udp:127.0.0.1:{port}", "--forward", "udp:127.0.0.1:5070"],
                           capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    finally:
        with open(SYSCTL, "w") as f:
            f.write(before)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert len(lines) == 1, p.stderr
    assert "io_uring is disabled on this machine (kernel.io_uring_disabled=2)" in lines[0], lines[0]
