"""A WebSocket echo server for the proxy tests (Debian's python3-websockets).

Prints `listening on PORT` once bound. Echoes every message; on the text message
`close-4001` it closes with code 4001, reason `bye`.
"""
import asyncio
import sys

import websockets


async def handler(ws, path=None):
    async for message in ws:
        if message == "close-4001":
            await ws.close(code=4001, reason="bye")
            return
        await ws.send(message)


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on {port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
