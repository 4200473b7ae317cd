#!/usr/bin/env python3
"""Open N keep-alive client connections to HOST:PORT, send one request on each, then
hold them all open (stdlib asyncio only).

Protocol with the caller (bench.py), one JSON object per stdout line:
  {"event": "ready", "opened": N, "ok": K, "failed": F, "seconds": S}
      once every connection has been opened and has received its response;
  then the script waits for a line on stdin, checks which connections the server has
  closed meanwhile, prints
  {"event": "done", "still_open": N, "closed_by_server": C}
  and closes everything.

Requests are sent with bounded concurrency (--concurrency) so that the proxy's
upstream pool stays small and the memory measured is that of idle client connections.
"""

import argparse
import asyncio
import json
import resource
import sys
import time


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, needed))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def read_response(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    status_ok = head.startswith(b"HTTP/1.1 200")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return status_ok


async def open_one(host, port, path, sem, conns, stats):
    async with sem:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            ok = await asyncio.wait_for(read_response(reader), 30)
            conns.append((reader, writer))
            stats["ok" if ok else "failed"] += 1
        except Exception as e:  # noqa: BLE001 - counted and reported
            stats["failed"] += 1
            stats.setdefault("errors", {}).setdefault(type(e).__name__, 0)
            stats["errors"][type(e).__name__] += 1


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=64)
    a = p.parse_args()
    raise_nofile(a.n + 256)

    sem = asyncio.Semaphore(a.concurrency)
    conns: list = []
    stats = {"ok": 0, "failed": 0}
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(a.host, a.port, a.path, sem, conns, stats) for _ in range(a.n)))
    ready = {
        "event": "ready",
        "opened": len(conns),
        "ok": stats["ok"],
        "failed": stats["failed"],
        "errors": stats.get("errors", {}),
        "seconds": round(time.monotonic() - t0, 2),
    }
    print(json.dumps(ready), flush=True)

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)

    # The event loop kept running while we waited, so a connection the server closed
    # has had its EOF (or reset) delivered to its reader by now.
    await asyncio.sleep(0.2)
    closed = sum(1 for reader, _ in conns if reader.at_eof() or reader.exception() is not None)
    print(json.dumps({"event": "done", "still_open": len(conns) - closed, "closed_by_server": closed}), flush=True)
    for _, writer in conns:
        writer.close()


if __name__ == "__main__":
    asyncio.run(main())
