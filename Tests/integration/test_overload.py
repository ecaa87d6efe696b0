"""Overload and faults: a shard past its limit sheds new calls with 503 + Retry-After and keeps answering
OPTIONS; when the load falls back it serves every call again. A callee that stops reading leaves the proxy
answering too, its memory bounded by max_transactions.

The script makes each initial INVITE expensive on purpose (a long while loop), so one shard saturates at a
rate sipp produces with ease; perf/overload measures the same at length (RSS, recovery time).
"""

import signal
import socket
import threading
import time
from pathlib import Path

import harness as h
from conftest import describe, start_script

SCENARIOS = Path(__file__).resolve().parents[2] / "perf" / "scenarios" / "overload"


def script(tmp: Path, port: int, uas_port: int, loops: int, extra: str = "") -> Path:
    text = (SCENARIOS / "ringsip.cfg").read_text()
    text = text.replace("@LISTEN@", f"127.0.0.1:{port}").replace("@UAS@", f"127.0.0.1:{uas_port}")
    text = text.replace("@LOOPS@", str(loops)).replace('loadmodule "tm.so"\n', 'loadmodule "tm.so"\n' + extra, 1)
    if "max_transactions" in extra:
        text = text.replace('modparam("tm", "max_transactions", 16384)\n', "")
    path = tmp / "overload.cfg"
    path.write_text(text)
    return path


class Pinger:
    """OPTIONS every 100 ms on a thread; how many went unanswered for a second."""

    def __init__(self, port: int):
        self.port = port
        self.sent = 0
        self.unanswered = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((h.LOOPBACK, 0))
            me = s.getsockname()[1]
            while not self.done.is_set():
                self.sent += 1
                n = self.sent
                s.sendto((f"OPTIONS sip:ping@127.0.0.1:{self.port} SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ping{n}\r\nMax-Forwards: 70\r\n"
                          f"From: <sip:m@127.0.0.1>;tag=m{n}\r\nTo: <sip:ping@127.0.0.1>\r\n"
                          f"Call-ID: ping-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
                         (h.LOOPBACK, self.port))
                end = time.monotonic() + 1.0
                answered = False
                while not answered and time.monotonic() < end:
                    s.settimeout(max(0.001, end - time.monotonic()))
                    try:
                        data = s.recv(65536)
                    except socket.timeout:
                        break
                    answered = data.startswith(b"SIP/2.0 200 ") and f"branch=z9hG4bK-ping{n}\r".encode() in data
                if not answered:
                    self.unanswered += 1
                self.done.wait(0.1)

    def stop(self):
        self.done.set()
        self.thread.join(5)


def shed_count(daemon: h.Proc) -> int:
    return h.dump_counters(daemon).get("shed", 0)


def test_a_shard_past_its_limit_sheds_503_with_retry_after_answers_options_and_recovers(procs, ringsipd, tmp_path):
    uas_port, port = h.free_udp_ports(2)
    h.start_uas(procs, uas_port, scenario=SCENARIOS / "uas.xml")
    daemon = start_script(procs, ringsipd, script(tmp_path, port, uas_port, loops=30_000), port)
    pinger = Pinger(port)
    try:
        quiet = h.run_uacs(procs, port, rate=40, calls=120, timeout=20, scenario=SCENARIOS / "uac.xml", tag="quiet")
        assert quiet.failed == 0 and quiet.successful == 120, describe(quiet)
        assert shed_count(daemon) == 0
        # Far past the shard's rate (each INVITE costs it about a millisecond): the surge is shed, not queued.
        seen_503 = []

        def probe():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((h.LOOPBACK, 0))
                me = s.getsockname()[1]
                for n in range(20):
                    s.sendto((f"INVITE sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
                              f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-probe{n}\r\nMax-Forwards: 70\r\n"
                              f"From: <sip:p@127.0.0.1>;tag=p{n}\r\nTo: <sip:probe@127.0.0.1>\r\n"
                              f"Call-ID: probe-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
                             (h.LOOPBACK, port))
                    s.settimeout(0.1)
                    try:
                        while True:
                            data = s.recv(65536).decode(errors="replace")
                            if data.startswith("SIP/2.0 503 "):
                                seen_503.append(data)
                    except socket.timeout:
                        pass
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        surge = h.run_uacs(procs, port, rate=2000, calls=8000, timeout=40, scenario=SCENARIOS / "uac.xml",
                           tag="surge", on_started=prober.start)
        prober.join(10)
        shed = shed_count(daemon)
        assert shed > 0, describe(surge)
        assert seen_503, "no INVITE sent during the surge was answered 503"
        assert "\r\nRetry-After: 2\r\n" in seen_503[0], seen_503[0]
        time.sleep(3)  # recovery: a tenth of the admitted share back every 100 ms once the load is gone
        after = h.run_uacs(procs, port, rate=40, calls=120, timeout=20, scenario=SCENARIOS / "uac.xml", tag="after")
        assert after.failed == 0 and after.successful == 120, describe(after)
        assert shed_count(daemon) == shed
    finally:
        pinger.stop()
    assert pinger.sent > 50 and pinger.unanswered == 0, (pinger.sent, pinger.unanswered)
    assert daemon.alive()


def test_a_callee_that_stops_reading_leaves_the_proxy_answering_and_bounded(procs, ringsipd, tmp_path):
    # The callee's sipp is stopped (SIGSTOP) for 4 s under load: the proxy keeps sending into its socket, keeps
    # answering OPTIONS, holds at most max_transactions and answers 503 past them (counted as table_full); when
    # the callee reads again the calls still waiting complete. No call is lost without an answer.
    uas_port, port = h.free_udp_ports(2)
    uas = h.start_uas(procs, uas_port, scenario=SCENARIOS / "uas.xml")
    # wt_timer 1: answered transactions linger 1 s, so ~1,000 are live at 500 calls/s before the stall.
    extra = 'modparam("tm", "max_transactions", 1500)\nmodparam("tm", "wt_timer", 1)\n'
    daemon = start_script(procs, ringsipd, script(tmp_path, port, uas_port, loops=1, extra=extra), port)
    pinger = Pinger(port)
    stalls = []

    def stall():
        time.sleep(2)
        uas.signal(signal.SIGSTOP)
        time.sleep(4)
        stalls.append(h.dump_counters(daemon))
        uas.signal(signal.SIGCONT)

    try:
        res = h.run_uacs(procs, port, rate=500, calls=6000, timeout=60, scenario=SCENARIOS / "uac.xml",
                         on_started=lambda: threading.Thread(target=stall, daemon=True).start())
    finally:
        pinger.stop()
    assert stalls, "the stall did not happen"
    during = stalls[0]
    assert during["transactions"] <= 1500 and during["table_full"] > 0, during
    # Every call ended with an answer: the callee's 200, or the proxy's 503 for an INVITE (a call the scenario
    # ends) or for a BYE that found the table full (a call sipp counts failed) — each such 503 counted.
    counted = h.dump_counters(daemon)
    assert res.successful + res.failed == 6000 and res.failed <= counted["table_full"], (describe(res), counted)
    assert res.successful >= 3000, describe(res)
    assert pinger.unanswered == 0, (pinger.sent, pinger.unanswered)
    # Once the callee reads again and the backlog has drained, calls go through as before.
    time.sleep(1.5)
    again = h.run_uacs(procs, port, rate=100, calls=200, timeout=20, scenario=SCENARIOS / "uac.xml", tag="again")
    assert again.failed == 0 and again.successful == 200, describe(again)
    assert h.dump_counters(daemon)["table_full"] == counted["table_full"]
    assert daemon.alive()
