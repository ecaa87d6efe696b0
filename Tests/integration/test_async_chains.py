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
