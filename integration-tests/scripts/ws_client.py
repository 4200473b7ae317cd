"""A WebSocket client for the proxy tests: `ws_client.py URL`. Checks a text echo, a
1 MB binary echo and a close code chosen by the server; prints one line per check and
exits non-zero on the first failure."""
import asyncio
import os
import sys

import websockets


async def main(url):
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send("hello")
        got = await asyncio.wait_for(ws.recv(), 10)
        assert got == "hello", got
        print("text echo ok", flush=True)

        big = os.urandom(1_000_000)
        await ws.send(big)
        got = await asyncio.wait_for(ws.recv(), 20)
        assert got == big, len(got)
        print("1 MB echo ok", flush=True)

        await ws.send("close-4001")
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected the server to close")
        except websockets.ConnectionClosed as closed:
            assert closed.code == 4001, closed.code
            assert closed.reason == "bye", closed.reason
        print("close code 4001 ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
