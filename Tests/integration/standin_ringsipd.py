#!/usr/bin/env python3
"""A stand-in for ringsipd with the same command line and output contract, in Python.

It exists to test the integration suite and perf harness themselves before (or without) the real
daemon: `RINGSIPD=Tests/integration/standin_ringsipd.py make integration`. It is a minimal, slow,
single-threaded stateless relay (RFC 3261 §16.11); it is not the product and is never benchmarked.

Contract it shares with ringsipd (what Tests/integration checks):
  ringsipd --listen udp:IP:PORT [--listen ...] --forward udp:IP:PORT [--shards N] [--cpus LIST]
           [--log-level debug|info|notice|warning|error]
  * bad flags or an unusable address: one line on stderr, nothing on stdout, exit 2;
  * SIGUSR1: one counters line per shard on stdout; SIGTERM/SIGINT: the same lines, then exit 0:
        shard 0: received=12 sent=10 parse_errors=1 dropped=1 stale=0 handoffs=0
"""

import hashlib
import os
import re
import selectors
import signal
import socket
import sys

LEVELS = ("debug", "info", "notice", "warning", "error")
COUNTERS = ("received", "sent", "parse_errors", "dropped", "stale", "handoffs")


class UsageError(Exception):
    pass


def parse_addr(flag, value):
    m = re.fullmatch(r"udp:(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})", value)
    if not m:
        raise UsageError(f"{flag} {value!r}: expected udp:IPV4:PORT")
    ip, port = m.group(1), int(m.group(2))
    if not 0 < port < 65536 or any(int(o) > 255 for o in ip.split(".")):
        raise UsageError(f"{flag} {value!r}: address or port out of range")
    return ip, port


def parse_args(argv):
    listens, forward, shards, cpus, level = [], None, 1, None, "info"
    i = 0
    while i < len(argv):
        arg = argv[i]
        if "=" in arg and arg.startswith("--"):
            arg, value = arg.split("=", 1)
        else:
            value = None
        if arg not in ("--listen", "--forward", "--shards", "--cpus", "--log-level"):
            raise UsageError(f"unknown option {argv[i]!r}")
        if value is None:
            i += 1
            if i >= len(argv):
                raise UsageError(f"{arg} needs a value")
            value = argv[i]
        if arg == "--listen":
            listens.append(parse_addr(arg, value))
        elif arg == "--forward":
            forward = parse_addr(arg, value)
        elif arg == "--shards":
            if not value.isdigit() or not 1 <= int(value) <= 64:
                raise UsageError(f"--shards {value!r}: expected a number from 1 to 64")
            shards = int(value)
        elif arg == "--cpus":
            if not re.fullmatch(r"\d+(,\d+)*", value):
                raise UsageError(f"--cpus {value!r}: expected a comma-separated list of CPU numbers")
            cpus = [int(c) for c in value.split(",")]
            if any(c >= os.cpu_count() for c in cpus):
                raise UsageError(f"--cpus {value!r}: this machine has CPUs 0-{os.cpu_count() - 1}")
        elif arg == "--log-level":
            if value not in LEVELS:
                raise UsageError(f"--log-level {value!r}: expected one of {', '.join(LEVELS)}")
            level = value
        i += 1
    if not listens:
        raise UsageError("missing --listen udp:IP:PORT")
    if forward is None:
        raise UsageError("missing --forward udp:IP:PORT")
    return listens, forward, shards, cpus, level


HEADER_END = b"\r\n\r\n"
VIA_RE = re.compile(rb"^(via|v)[ \t]*:[ \t]*", re.I)
CL_RE = re.compile(rb"^(content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", re.I)
REQ_RE = re.compile(rb"^([A-Za-z]+) (\S+) SIP/2\.0$")
RES_RE = re.compile(rb"^SIP/2\.0 [1-6]\d\d ")
SENT_BY_RE = re.compile(rb"SIP/2\.0/UDP[ \t]+([^;:, \t]+)(?::(\d+))?([^,]*)", re.I)


class Relay:
    def __init__(self, listens, forward, shards):
        self.forward = forward
        self.shards = shards
        self.counters = {k: 0 for k in COUNTERS}
        self.socks = []
        for ip, port in listens:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((ip, port))
            except OSError as e:
                raise UsageError(f"--listen udp:{ip}:{port}: {e.strerror}")
            s.setblocking(False)
            self.socks.append(s)
        self.mine = {f"{ip}:{port}".encode() for ip, port in listens}

    def print_counters(self):
        for shard in range(self.shards):
            c = self.counters if shard == 0 else {k: 0 for k in COUNTERS}
            print(f"shard {shard}: " + " ".join(f"{k}={c[k]}" for k in COUNTERS), flush=True)

    def handle(self, sock, data, src):
        self.counters["received"] += 1
        end = data.find(HEADER_END)
        if end < 0:
            self.counters["parse_errors"] += 1
            return
        lines = data[:end].split(b"\r\n")
        body_len = len(data) - end - 4
        cl = None
        for line in lines[1:]:
            m = CL_RE.match(line)
            if m:
                cl = int(m.group(2))
        if cl is not None and cl > body_len:
            self.counters["parse_errors"] += 1
            return
        vias = [i for i, line in enumerate(lines) if i > 0 and VIA_RE.match(line)]
        if not vias:
            self.counters["parse_errors"] += 1
            return
        local = sock.getsockname()
        if REQ_RE.match(lines[0]):
            top = lines[vias[0]]
            m = SENT_BY_RE.search(top)
            if not m:
                self.counters["parse_errors"] += 1
                return
            if m.group(1) != src[0].encode():
                lines[vias[0]] = top + b";received=" + src[0].encode()
            branch = hashlib.md5(top + src[0].encode() + str(src[1]).encode()).hexdigest()[:16]
            via = f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK-sp-{branch}".encode()
            lines.insert(1, via)
            dest = self.forward
        elif RES_RE.match(lines[0]):
            top_i = vias[0]
            m = SENT_BY_RE.search(lines[top_i])
            if not m or (m.group(1) + b":" + (m.group(2) or b"5060")) not in self.mine:
                self.counters["dropped"] += 1
                return
            colon = lines[top_i].index(b":")
            rest = lines[top_i][colon + 1:]
            if b"," in rest:  # several values on one line: drop the first
                lines[top_i] = lines[top_i][:colon + 1] + b" " + rest.split(b",", 1)[1].strip()
            else:
                del lines[top_i]
            nxt = [i for i, line in enumerate(lines) if i > 0 and VIA_RE.match(line)]
            if not nxt:
                self.counters["dropped"] += 1
                return
            m = SENT_BY_RE.search(lines[nxt[0]])
            if not m:
                self.counters["parse_errors"] += 1
                return
            params = m.group(3)
            rcv = re.search(rb";received=([0-9.]+)", params)
            rport = re.search(rb";rport=(\d+)", params)
            host = (rcv.group(1) if rcv else m.group(1)).decode()
            port = int(rport.group(1) if rport else (m.group(2) or b"5060"))
            dest = (host, port)
        else:
            self.counters["parse_errors"] += 1
            return
        out = b"\r\n".join(lines) + data[end:]
        try:
            sock.sendto(out, dest)
            self.counters["sent"] += 1
        except OSError:
            self.counters["dropped"] += 1


def main():
    try:
        listens, forward, shards, _cpus, _level = parse_args(sys.argv[1:])
        relay = Relay(listens, forward, shards)
    except UsageError as e:
        print(f"ringsipd: {e}", file=sys.stderr)
        return 2
    state = {"stop": False, "dump": False}
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    signal.signal(signal.SIGINT, lambda *_: state.update(stop=True))
    signal.signal(signal.SIGUSR1, lambda *_: state.update(dump=True))
    sel = selectors.DefaultSelector()
    for s in relay.socks:
        sel.register(s, selectors.EVENT_READ)
    while not state["stop"]:
        if state["dump"]:
            state["dump"] = False
            relay.print_counters()
        for key, _ in sel.select(timeout=0.1):
            for _ in range(64):
                try:
                    data, src = key.fileobj.recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                relay.handle(key.fileobj, data, src)
    relay.print_counters()
    return 0


if __name__ == "__main__":
    sys.exit(main())
