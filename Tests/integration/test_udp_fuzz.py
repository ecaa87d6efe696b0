"""Mutated datagrams against the running daemon (perf/udpfuzz): a stateless and a stateful script each get
20,000 mutations of real SIP messages (byte flips, truncations, spliced and oversized header lines, responses
carrying our branch), and between batches of 2,000 they must answer OPTIONS, keep their descriptors, and hold
their RSS within 64 MiB of the warm level. `make fuzz` runs 1,000,000.
"""

import subprocess
import sys

from conftest import REPO


def test_mutated_datagrams_leave_both_daemons_answering_with_steady_memory_and_descriptors(ringsipd):
    done = subprocess.run([sys.executable, str(REPO / "perf" / "udpfuzz"), "--datagrams", "20000", "--seed", "7",
                           "--ringsipd", str(ringsipd)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "always answered OPTIONS" in done.stdout, done.stdout
