"""A real phone for the integration tests: baresip (Debian's), configured in a folder of its own, audio from a
sine generator into a bridge (no sound card), driven and watched through its ctrl_tcp module (netstring-framed
JSON: commands in, responses and events out)."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import harness as h

MODULES = Path("/usr/lib/baresip/modules")


def available() -> bool:
    return shutil.which("baresip") is not None and (MODULES / "ctrl_tcp.so").exists()


class Phone:
    """One baresip with one account, `user`@example.com, registered through the proxy at 127.0.0.1:`proxy_port`."""

    def __init__(self, procs: h.ProcGroup, folder: Path, user: str, proxy_port: int, answer: str = "auto",
                 regint: int = 600, extra_account: str = "", transport: str = "udp"):
        self.user = user
        # "tcp": the phone reaches its outbound proxy (and registers) over TCP.
        self.transport = transport
        self.aor = f"sip:{user}@example.com"
        self.buffer = b""
        self.events: list[dict] = []
        # A port found free can still be taken before baresip binds it: start again on other ports (twice at most).
        for attempt in range(3):
            try:
                self._start(procs, folder, proxy_port, answer, regint, extra_account)
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                procs.stop(self.proc)

    def _start(self, procs: h.ProcGroup, folder: Path, proxy_port: int, answer: str, regint: int,
               extra_account: str) -> None:
        user = self.user
        # baresip listens for SIP on UDP and TCP at once: the port must be free for both, and outside the
        # kernel's ephemeral range, where any new connection may take it meanwhile.
        sip_port = free_port_for_udp_and_tcp()
        self.control_port = free_port_for_udp_and_tcp(avoid=sip_port)
        self.sip_port = sip_port
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config").write_text(
            "poll_method epoll\n"
            f"sip_listen 127.0.0.1:{sip_port}\n"
            "audio_player aubridge,none\naudio_source aubridge,none\naudio_alert aubridge,none\n"
            "call_local_timeout 30\n"
            f"module_path {MODULES}\n"
            "module g711.so\nmodule aubridge.so\n"
            "module_tmp uuid.so\nmodule_tmp account.so\n"
            "module_app menu.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.control_port}\n")
        (folder / "accounts").write_text(
            f"<{self.aor}>;regint={regint};outbound=\"sip:127.0.0.1:{proxy_port}"
            f"{';transport=tcp' if self.transport == 'tcp' else ''};lr\";"
            f"answermode={answer};audio_codecs=pcmu{extra_account}\n")
        (folder / "contacts").write_text("")
        self.proc = procs.start(f"baresip-{user}", ["baresip", "-f", str(folder)])
        self.control = self._connect()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 10
        while True:
            try:
                return socket.create_connection((h.LOOPBACK, self.control_port), timeout=1)
            except OSError:
                if time.monotonic() > deadline or not self.proc.alive():
                    raise RuntimeError(f"baresip {self.user} did not open its control port: {self.proc.stderr()[-1500:]}")
                time.sleep(0.05)

    def command(self, command: str, params: str = "", seconds: float = 5) -> dict:
        """Runs a command; returns its response (events read meanwhile are kept for `wait_event`)."""
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        self.control.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is None:
                continue
            if message.get("response"):
                return message
            if message.get("event"):
                self.events.append(message)
        raise AssertionError(f"baresip {self.user}: no response to {command}")

    def wait_registered(self, seconds: float = 10) -> None:
        """Until the account's registration is up (asked with `reginfo`: the REGISTER_OK event may come before
        the control connection)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if "OK" in self.command("reginfo").get("data", ""):
                return
            time.sleep(0.1)
        raise AssertionError(f"baresip {self.user} did not register: {self.proc.stdout()[-2000:]}")

    def _read(self, timeout: float) -> dict | None:
        self.control.settimeout(max(timeout, 0.01))
        while True:
            colon = self.buffer.find(b":")
            if colon > 0:
                length = int(self.buffer[:colon])
                if len(self.buffer) >= colon + length + 2:
                    body = self.buffer[colon + 1:colon + 1 + length]
                    self.buffer = self.buffer[colon + length + 2:]
                    return json.loads(body)
            try:
                chunk = self.control.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def wait_event(self, kind: str, seconds: float = 10) -> dict:
        """The first event of `kind` (REGISTER_OK, CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED, …), seen now or
        earlier; fails with every event seen when it does not come."""
        for event in self.events:
            if event.get("type") == kind:
                self.events.remove(event)
                return event
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self._read(deadline - time.monotonic())
            if message is None:
                continue
            if message.get("event"):
                if message.get("type") == kind:
                    return message
                self.events.append(message)
        raise AssertionError(f"baresip {self.user}: no {kind} in {seconds} s; events: {self.events}; "
                             f"log: {self.proc.stdout()[-2000:]}")


def free_port_for_udp_and_tcp(avoid: int = 0) -> int:
    return h.free_udp_tcp_port(avoid)
