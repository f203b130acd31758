"""A fast mock OpenAI-compatible upstream for the benchmark.

It does as little as possible per request, so that the figures measure the gateway rather than the
mock: every answer is prebuilt bytes. A non-streaming request gets a ~650 B ``chat.completion`` with
``usage``; a streaming one gets 20 SSE chunks (role, 17 content, finish, and a usage-only chunk when the
request asked ``stream_options.include_usage``, as OpenAI does) then ``data: [DONE]``, written one event
per write with no delay in between.

Run: ``python bench/upstream.py [--port 0] [--cpu 1]``; it prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

import orjson
import uvloop
from aiohttp import web

_ID = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
_CREATED = 1741569952
_MODEL = "gpt-4o-mini-2024-07-18"
_FINGERPRINT = "fp_06737a9306"
_USAGE = {
    "prompt_tokens": 19,
    "completion_tokens": 17,
    "total_tokens": 36,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
    },
}
_WORDS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?", " I", " am", " happy", " to",
          " answer", " any", " question", "."]

#: The non-streaming answer (about 650 bytes, shaped like OpenAI's).
COMPLETION = orjson.dumps({
    "id": _ID,
    "object": "chat.completion",
    "created": _CREATED,
    "model": _MODEL,
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "".join(_WORDS), "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": _USAGE,
    "service_tier": "default",
    "system_fingerprint": _FINGERPRINT,
})


def _chunk(delta: dict[str, object], finish: str | None, *, with_usage: bool) -> bytes:
    payload: dict[str, object] = {
        "id": _ID, "object": "chat.completion.chunk", "created": _CREATED, "model": _MODEL,
        "service_tier": "default", "system_fingerprint": _FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if with_usage:
        # With include_usage, OpenAI puts "usage":null in every chunk and the figures in a last one.
        payload["usage"] = None
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def stream_events(*, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer: 20 chunks (19 without usage), then ``[DONE]``."""
    events = [_chunk({"role": "assistant", "content": "", "refusal": None}, None, with_usage=include_usage)]
    events += [_chunk({"content": w}, None, with_usage=include_usage) for w in _WORDS]
    events.append(_chunk({}, "stop", with_usage=include_usage))
    if include_usage:
        usage_chunk = {
            "id": _ID, "object": "chat.completion.chunk", "created": _CREATED, "model": _MODEL,
            "service_tier": "default", "system_fingerprint": _FINGERPRINT, "choices": [], "usage": _USAGE,
        }
        events.append(b"data: " + orjson.dumps(usage_chunk) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


_STREAM_USAGE = stream_events(include_usage=True)
_STREAM_PLAIN = stream_events(include_usage=False)
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if body.get("stream") is not True:
        return web.Response(body=COMPLETION, content_type="application/json")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    response = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        await response.prepare(request)
        for event in _STREAM_USAGE if include_usage else _STREAM_PLAIN:
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left mid-stream (the load generator stops with connections open): not news
    return response


async def models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "bench-model", "object": "model",
                                                          "created": 0, "owned_by": "bench"}]})


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    await site.start()
    print(f"READY {runner.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed as READY <port>)")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
