"""The 49 RFC 4475 torture messages through the running daemon, with a stateless and a stateful script that
each call force_rport() (the messages' Via hosts are names, never resolved: answers go to the source port).

Every message the RFC calls valid is forwarded to the callee or answered; every invalid one is answered 400
or dropped, never forwarded; the daemon answers an ordinary request afterwards.
"""

import re
import socket
import time

import harness as h
import pytest
from conftest import REPO, missing, start_script

TORTURE = REPO.parent / "shared" / "rfc4475"

# RFC 4475 §3.1.2 (and §3.3.x) messages a proxy must not forward as they are. The others are valid, or invalid
# in ways the RFC lets an element accept (lwsstart, trws, escruri, baddate, regbadct).
INVALID = {"badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri", "badaspec", "baddn",
           "badvers", "mismatch01", "mismatch02", "bigcode", "insuf", "multi01", "mcl01"}

SCRIPTS = {
    "stateless": """
loadmodule "sl.so"
route {
    force_rport();
    if (!forward("udp:127.0.0.1:@UAS@")) {
        sl_send_reply(500, "Not Forwarded");
    }
}
""",
    "stateful": """
loadmodule "tm.so"
loadmodule "sl.so"
route {
    force_rport();
    if (!t_relay("udp:127.0.0.1:@UAS@")) {
        sl_send_reply(500, "Not Relayed");
    }
}
""",
}


def key(message: bytes) -> str:
    """What identifies the message in a forwarded copy: its Call-ID, else its top Via's branch."""
    text = message.decode(errors="replace")
    m = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", text, re.M | re.I) or re.search(r"branch=([^;\s,]+)", text)
    return m.group(1) if m else text.split("\r\n", 1)[0]


def transaction_id(message: bytes) -> tuple[str, str, str] | None:
    """RFC 3261 §17.2.3: top Via branch and sent-by, and the method."""
    text = message.decode(errors="replace")
    via = re.search(r"^(?:Via|v)\s*:\s*SIP\s*/\s*2\.0\s*/\s*\w+\s+([^;\s]+)[^\r\n]*?branch=([^;\s,]+)", text, re.M | re.I)
    return (via.group(2), via.group(1).lower(), text.split(" ", 1)[0]) if via else None


def drain(sock: socket.socket, seconds: float) -> list[str]:
    got, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65536).decode(errors="replace"))
        except socket.timeout:
            break
    return got


@pytest.mark.parametrize("mode", sorted(SCRIPTS))
def test_every_torture_message_is_forwarded_answered_or_refused_and_the_daemon_lives(procs, ringsipd, tmp_path, mode):
    if not TORTURE.is_dir():
        missing(f"the RFC 4475 messages are not at {TORTURE}")
    files = sorted(TORTURE.glob("*.sip"))
    assert len(files) == 49, len(files)
    port, uas_port = h.free_udp_ports(2)
    script = tmp_path / f"{mode}.cfg"
    script.write_text(SCRIPTS[mode].replace("@UAS@", str(uas_port)))
    start_script(procs, ringsipd, script, port)
    problems = []
    seen = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as uas:
        uas.bind((h.LOOPBACK, uas_port))
        for path in files:
            name = path.stem
            message = path.read_bytes()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
                caller.bind((h.LOOPBACK, 0))
                caller.sendto(message, (h.LOOPBACK, port))
                answers = drain(caller, 0.25)
                # Only this message's copies: the stateful proxy retransmits earlier INVITEs to the silent callee.
                forwarded = [m for m in drain(uas, 0.05) if key(message) in m]
            statuses = [a.split("\r\n", 1)[0] for a in answers]
            if message.startswith(b"SIP/2.0 "):
                # A response whose top Via is not ours is discarded (RFC 3261 §18.1.2), never relayed on.
                if forwarded or answers:
                    problems.append(f"{name}: a response not for us went on: {statuses} / {len(forwarded)} forwarded")
            elif name in INVALID:
                if forwarded:
                    problems.append(f"{name}: invalid, but forwarded")
                if any(not s.startswith("SIP/2.0 400 ") for s in statuses):
                    problems.append(f"{name}: invalid, answered {statuses}")
            elif not forwarded and not answers and not (mode == "stateful" and transaction_id(message) in seen):
                # (Several messages share a branch, sent-by and method: to a stateful proxy a later one is a
                # retransmission of the earlier one's transaction, absorbed while it waits for the callee.)
                problems.append(f"{name}: valid, but neither forwarded nor answered")
            seen.add(transaction_id(message))
        # Still serving: an ordinary request goes through.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
            caller.bind((h.LOOPBACK, 0))
            me = caller.getsockname()[1]
            caller.sendto((f"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-alive\r\n"
                           "Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                           "Call-ID: alive-4475\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                          (h.LOOPBACK, port))
            assert any("Call-ID: alive-4475" in m for m in drain(uas, 2)), "the daemon no longer forwards"
    assert not problems, "\n".join(problems)
