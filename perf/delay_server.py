#!/usr/bin/env python3
"""perf/delay_server.py: the HTTP back-end of the async-rest and blocking-rest scenarios.

    python3 perf/delay_server.py [--port P]

HTTP/1.1 with keep-alive on 127.0.0.1 (a free port unless --port), one asyncio event loop: a request
waiting out its delay costs a timer, not a thread, so thousands can wait at once (the threaded
Tests/OpsTests/Fixtures/http_fixture.py spends a thread each and ran out of CPU first). Prints its port on
the first line of stdout once listening.
  GET /delay?ms=N    200 text/plain "slept N" after N ms
  anything else      200 text/plain "ok" at once
"""
import argparse
import asyncio
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, _, rest = head.partition(b"\r\n")
            parts = line.split()
            target = parts[1].decode() if len(parts) > 1 else "/"
            length = 0
            for h in rest.split(b"\r\n"):
                if h[:15].lower() == b"content-length:":
                    length = int(h[15:].strip() or 0)
            if length:
                await reader.readexactly(length)
            body = b"ok"
            if target.startswith("/delay"):
                ms = 0
                for kv in target.partition("?")[2].split("&"):
                    if kv.startswith("ms="):
                        ms = int(kv[3:] or 0)
                await asyncio.sleep(ms / 1000)
                body = b"slept %d" % ms
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
