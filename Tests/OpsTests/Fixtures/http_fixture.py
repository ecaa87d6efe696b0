#!/usr/bin/env python3
"""The HTTP server HTTPRunnerTests talk to: HTTP/1.1 with keep-alive, one thread per connection.

Prints its port on the first line of stdout once listening (bound to 127.0.0.1, a free port).
With `--tls CERT KEY` it speaks HTTPS instead.
  GET  /hello            200 text/plain "hello"
  POST|PUT /echo         200, the request body back with the request's Content-Type; X-Method: the method
  GET  /status/N         status N, text/plain "status N"
  GET  /delay?ms=N       200 "slept N" after N ms
  GET  /big?n=N          200, N bytes of "x"
  GET  /connections      200, the number of distinct client connections (ip, port) seen so far
  GET  /header?name=H    200, the value of request header H (empty when absent)
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

seen = set()
seen_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def handle_one_request(self):
        with seen_lock:
            seen.add(self.client_address)
        super().handle_one_request()

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/hello":
            self.reply(200, b"hello")
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            self.reply(code, b"status %d" % code)
        elif url.path == "/delay":
            ms = int(query.get("ms", ["0"])[0])
            time.sleep(ms / 1000)
            self.reply(200, b"slept %d" % ms)
        elif url.path == "/big":
            self.reply(200, b"x" * int(query.get("n", ["0"])[0]))
        elif url.path == "/connections":
            with seen_lock:
                count = len(seen)
            self.reply(200, str(count).encode())
        elif url.path == "/header":
            name = query.get("name", [""])[0]
            self.reply(200, (self.headers.get(name) or "").encode())
        else:
            self.reply(404, b"not found")

    def echo(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.reply(200, body, self.headers.get("Content-Type") or "application/octet-stream",
                   {"X-Method": self.command})

    do_POST = echo
    do_PUT = echo


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
