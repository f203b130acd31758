"""The yardstick for bench/run.py: a plain aiohttp relay with no features at all.

It forwards ``POST /v1/chat/completions`` to the upstream through one keep-alive ``ClientSession``
and returns the answer: whole for JSON, piped chunk by chunk for ``text/event-stream``. No parsing,
no auth, no logging, no metrics: what any Python relay must spend, and nothing more.

Run: ``python bench/relay.py --upstream http://127.0.0.1:PORT [--port 0]``; prints ``READY <port>``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import aiohttp
import uvloop
from aiohttp import web

PATH = "/v1/chat/completions"


async def serve(host: str, port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # keep-alive, no limit
    url = upstream.rstrip("/") + PATH

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as up:
            content_type = up.headers.get("Content-Type", "application/json")
            if not content_type.startswith("text/event-stream"):
                return web.Response(status=up.status, body=await up.read(), headers={"Content-Type": content_type})
            response = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
            try:
                await response.prepare(request)
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except ConnectionResetError:
                pass  # the client left mid-stream (the load generator stops with connections open)
            return response

    app = web.Application()
    app.router.add_post(PATH, relay)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=2048).start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed as READY <port>)")
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8001")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
