"""A randomized model test of chained async(): many calls at once on one shard, each with a chain of random
operations (sleeps, execs, sleeps that time out, execs that fail, launch()es between hops) and some
CANCELled by their caller mid-chain. Every resume route logs the `$avp` values it sees; the model (this file)
knows what each must be. Afterwards no transaction, suspension, descriptor or child process is left.

Seeded and reproducible: RINGSIP_MODEL_SEED picks the seed (default fixed), RINGSIP_MODEL_CALLS the count.
"""

import os
import random
import re
import signal
import socket
import time

import harness as h
from conftest import start_script

HOPS = 5
SEED = int(os.environ.get("RINGSIP_MODEL_SEED", "20261207"))
CALLS = int(os.environ.get("RINGSIP_MODEL_CALLS", "60"))

# Each op: the statement that starts it (the resume route is h{n+1}) and the $rc its resume route sees.
OPS = {
    "sleep": ('async(usleep($hdr(X-Arg{n})), h{next}, 2000);', 1),
    "slow": ('async(usleep(400000), h{next}, 30);', -2),
    "exec": ('async(exec("printf %s $avp(v{n})", "", $avp(out)), h{next}, 2000);', 1),
    # exec's $rc says whether the command ran (1), not how it exited: OpenSIPS's exec does the same.
    "exit3": ('async(exec("exit 3", "", $avp(out)), h{next}, 2000);', 1),
    # A web service that is down: the operation fails and its resume route runs with a negative $rc.
    "refused": ('async(rest_get("http://127.0.0.1:1/down", $avp(out)), h{next}, 2000);', -1),
    "launch": ('launch(usleep(3000), reported); async(usleep(1000), h{next}, 2000);', 1),
}


def hop_route(n: int) -> str:
    # The last hop only answers: plans have at most HOPS operations.
    cases = "" if n == HOPS else "\n".join(f'    case "{name}":\n        {stmt.format(n=n, next=n + 1)}\n        break;'
                                          for name, (stmt, _) in OPS.items())
    seen = " ".join(f"v{i}=[$avp(v{i})]" for i in range(HOPS + 1))
    return f"""
route[h{n}] {{
    xlog("L_ERR", "model $ci h{n} rc=$rc {seen} m=[$(avp(m)[0]),$(avp(m)[1])] out=[$avp(out)]\\n");
    $avp(v{n}) = $hdr(X-Val{n});
    $avp(m) = "m{n}";
    switch ($hdr(X-Op{n})) {{
{cases}
    default:
        if (!t_was_cancelled()) {{
            t_reply(299, "model done");
        }}
    }}
}}"""


SCRIPT = """
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "sipmsgops.so"
loadmodule "cfgutils.so"
loadmodule "exec.so"
loadmodule "rest_client.so"
modparam("tm", "fr_inv_timeout", 10)
route {
    $avp(v0) = $hdr(X-Val0);
    route(h0);
}
route[reported] {
    xlog("L_ERR", "model-launch rc=$rc\\n");
}
""" + "".join(hop_route(n) for n in range(HOPS + 1))


def value(rng: random.Random) -> str:
    size = rng.choice([0, 1, 7, 100, 1000])
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(size))


def plan(rng: random.Random, call: int) -> dict:
    hops = rng.randint(1, HOPS)
    ops = [rng.choice(list(OPS)) for _ in range(hops)]
    return {
        "call": f"model-{SEED}-{call}",
        "ops": ops,
        "args": [rng.randint(0, 20000) for _ in range(hops)],
        # exec's printf reads the value as its format: keep it to plain characters (value() does).
        "vals": [value(rng) for _ in range(HOPS + 1)],
        "cancel": rng.random() < 0.2,
    }


def invite(p: dict, port: int, me: int) -> bytes:
    extra = "".join(f"X-Op{i}: {op}\r\nX-Arg{i}: {p['args'][i]}\r\n" for i, op in enumerate(p["ops"]))
    extra += "".join(f"X-Val{i}: {v}\r\n" for i, v in enumerate(p["vals"]))
    return (f"INVITE sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{p['call']}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:a@127.0.0.1>;tag=f-{p['call']}\r\nTo: <sip:svc@127.0.0.1>\r\n"
            f"Call-ID: {p['call']}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def cancel(p: dict, port: int, me: int) -> bytes:
    return (f"CANCEL sip:svc@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{p['call']}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:a@127.0.0.1>;tag=f-{p['call']}\r\nTo: <sip:svc@127.0.0.1>\r\n"
            f"Call-ID: {p['call']}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()


def expected_lines(p: dict) -> list[str]:
    """What each hop's xlog line says, from the model."""
    lines, rc, out = [], 0, ""
    for n in range(len(p["ops"]) + 1):
        seen = " ".join(f"v{i}=[{p['vals'][i] if i < n or i == 0 else ''}]" for i in range(HOPS + 1))
        m = f"m{n - 1},m{n - 2}" if n >= 2 else ("m0," if n == 1 else ",")
        lines.append(f"model {p['call']} h{n} rc={rc} {seen} m=[{m}] out=[{out}]")
        op = p["ops"][n] if n < len(p["ops"]) else None
        if op is None:
            break
        rc = OPS[op][1]
        if op == "exec":
            out = p["vals"][n]
        elif op == "exit3":
            out = ""
    return lines


def fds_and_children(pid: int) -> tuple[int, list[int]]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    children = [c for c in h.descendants(pid)]
    return fds, children


def test_random_chains_with_timeouts_failures_launches_and_cancels_keep_every_avp_and_leave_nothing(
        procs, ringsipd, tmp_path):
    rng = random.Random(SEED)
    plans = [plan(rng, i) for i in range(CALLS)]
    port = h.free_udp_ports(1)[0]
    script = tmp_path / "model.cfg"
    script.write_text(SCRIPT)
    proc = start_script(procs, ringsipd, script, port)
    pid = proc.popen.pid
    time.sleep(0.2)
    fds_before, _ = fds_and_children(pid)
    sockets = []
    try:
        for p in plans:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((h.LOOPBACK, 0))
            sockets.append(s)
            s.sendto(invite(p, port, s.getsockname()[1]), (h.LOOPBACK, port))
        time.sleep(0.005)
        for p, s in zip(plans, sockets):
            if p["cancel"]:
                s.sendto(cancel(p, port, s.getsockname()[1]), (h.LOOPBACK, port))
        for p, s in zip(plans, sockets):
            s.settimeout(8)
            while True:
                text = s.recv(65536).decode(errors="replace")
                first = text.split("\r\n", 1)[0]
                if first.startswith("SIP/2.0 1") or "CSeq: 1 CANCEL" in text:
                    continue
                break
            if first.startswith("SIP/2.0 487"):
                # The ACK of a negative final, as a caller sends it: the transaction ends at once (no Timer H).
                to = re.search(r"^To: (.*)$", text, re.M).group(1).strip()
                s.sendto(cancel(p, port, s.getsockname()[1]).replace(b"CANCEL ", b"ACK ", 1)
                         .replace(b"CSeq: 1 CANCEL", b"CSeq: 1 ACK")
                         .replace(b"To: <sip:svc@127.0.0.1>", f"To: {to}".encode()), (h.LOOPBACK, port))
            want = "SIP/2.0 487" if p["cancel"] else "SIP/2.0 299 model done"
            # A CANCEL that arrives after the chain answered finds nothing to cancel: the 299 stands.
            assert first.startswith(want) or (p["cancel"] and first.startswith("SIP/2.0 299")), (p, first)
    finally:
        for s in sockets:
            s.close()

    def model_lines():
        return [line for line in proc.stderr().splitlines() if line.startswith("model ")]
    total = sum(len(p["ops"]) + 1 for p in plans)
    assert h.wait_until(lambda: len(model_lines()) >= total, 10), (len(model_lines()), total)
    by_call: dict[str, list[str]] = {}
    for line in model_lines():
        by_call.setdefault(line.split()[1], []).append(line)
    for p in plans:
        got = by_call.get(p["call"], [])
        want = expected_lines(p)
        for g, w in zip(got, want):
            assert g == w, f"seed {SEED}, {p}:\n got  {g[:300]}\n want {w[:300]}"
        assert len(got) == len(want), (p, got)
    launches = sum(p["ops"].count("launch") for p in plans)
    assert h.wait_until(lambda: proc.stderr().count("model-launch rc=1") >= launches, 5)

    # Nothing left: no suspension, no transaction past its wait timer, no descriptor, no child.
    counters = []

    def settled():
        proc.signal(signal.SIGUSR1)
        time.sleep(0.3)
        counters[:] = [line for line in proc.stdout().splitlines() if "transactions=" in line]
        rows = re.findall(r"transactions=(\d+) .*async=(\d+)", counters[-1] if counters else "")
        return rows == [("0", "0")]
    assert h.wait_until(settled, 15), counters[-1:]
    fds_after, children = fds_and_children(pid)
    assert children == [], children
    assert fds_after <= fds_before, (fds_before, fds_after)
