"""A fast mock OpenAI-compatible upstream for the benchmark.

It does as little as possible per request, so that the figures measure the gateway rather than the
mock: every answer is prebuilt bytes. A non-streaming request gets a ~650 B ``chat.completion`` with
``usage``; a streaming one gets 20 SSE chunks (role, 17 content, finish, and a usage-only chunk when the
request asked ``stream_options.include_usage``, as OpenAI does) then ``data: [DONE]``, written one event
per write with no delay in between.

Paced streams, for the per-chunk delay phase of bench/run.py: ``POST /v1/chat/completions`` with
``"bench_paced": true`` in the body (an OpenAI-format stream; the gateway's ``openai_compatible``
provider forwards the field) and every streamed ``POST /v1/messages`` (an Anthropic Messages stream,
what the gateway's ``anthropic`` provider asks for) send ``--paced-chunks`` text chunks
``--paced-gap-ms`` apart. The text of chunk ``n`` is ``t=<ns> n=<n>;``, where ``<ns>`` is
``time.monotonic_ns()`` taken just before the write: the client (same host, same clock) subtracts it
from the moment it reads the chunk. The events around the text chunks go out at once, before the first
gap and after the last chunk.

Ticker-paced streams, for the many-streams phase of bench/perf.py: ``"bench_ticker": true`` in a streamed chat
body gives the same OpenAI-format paced stream, but instead of one timer per stream a single ticker task
wakes every ``--ticker-gap-ms / --ticker-slots`` ms and releases the streams of one slot (streams are dealt
to the slots in turn), so each stream gets its next chunk every ``--ticker-gap-ms`` and 10,000 streams cost
one timer, not 10,000. The send time is still taken just before each write.

``--anthropic-nonstream``: answer a non-streamed ``POST /v1/messages`` with a prebuilt Messages answer
(by default such a request gets a 400, as before), for bench/perf.py's translated route at load.

Run: ``python bench/upstream.py [--port 0] [--cpu 1] [--paced-chunks 20] [--paced-gap-ms 5]
[--ticker-gap-ms 20] [--ticker-slots 20] [--anthropic-nonstream]``; it prints ``READY <port>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
    if body.get("bench_ticker") is True:
        return await _ticker_paced(request, request.app[PACED_CHAT][include_usage], request.app[TICKER])
    if body.get("bench_paced") is True:
        return await _paced(request, request.app[PACED_CHAT][include_usage], _SSE_HEADERS)
    response = web.StreamResponse(headers=_SSE_HEADERS)
    try:
        await response.prepare(request)
        for event in _STREAM_USAGE if include_usage else _STREAM_PLAIN:
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client left mid-stream (the load generator stops with connections open): not news
    return response


# -- paced streams: the per-chunk delay phase --------------------------------------------------------------
#: Where the text goes in a paced chunk: the chunk is prebuilt around this marker, split on it.
_MARK = "@@TEXT@@"


def paced_text(send_ns: int, n: int) -> bytes:
    """The text of paced chunk ``n``: its send time (``time.monotonic_ns()``) and its number."""
    return b"t=%d n=%d;" % (send_ns, n)


@dataclass(frozen=True)
class PacedStream:
    """A paced stream's bytes: ``head`` at once, then ``chunks`` times prefix + text + suffix, then ``tail``."""

    head: list[bytes]
    prefix: bytes
    suffix: bytes
    tail: list[bytes]
    chunks: int
    gap_s: float

    def events(self, texts: list[bytes]) -> list[bytes]:
        """The whole stream with these texts, unpaced (for the in-process translator measurement)."""
        return [*self.head, *(self.prefix + text + self.suffix for text in texts), *self.tail]


def paced_chat_stream(chunks: int, gap_s: float, *, include_usage: bool) -> PacedStream:
    """The OpenAI-format paced stream: the role chunk, the text chunks, finish, [usage], ``[DONE]``."""
    events = stream_events(include_usage=include_usage)
    prefix, _, suffix = _chunk({"content": _MARK}, None, with_usage=include_usage).partition(_MARK.encode())
    return PacedStream(head=events[:1], prefix=prefix, suffix=suffix, tail=events[-(3 if include_usage else 2):],
                       chunks=chunks, gap_s=gap_s)


#: Anthropic's stream framing, as recorded from the real API (shared/fixtures/anthropic/messages/
#: stream-text-haiku45.response.sse): an ``event:`` line before each ``data:`` line, and the spaces
#: the API puts before the closing brace of some events, kept as recorded.
_ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
_ANTHROPIC_ID = "msg_01T8kTq7cYyYJeQ5DxcVUc6D"
_PAD = " " * 15


def _anthropic_event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


def anthropic_stream(chunks: int, gap_s: float) -> PacedStream:
    """The Anthropic Messages paced stream: message_start, content_block_start, ping, the text_delta
    events, content_block_stop, message_delta (stop reason and usage), message_stop."""
    usage = {"input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 1, "service_tier": "standard", "inference_geo": "not_available"}
    message = {"model": _ANTHROPIC_MODEL, "id": _ANTHROPIC_ID, "type": "message", "role": "assistant",
               "content": [], "stop_reason": None, "stop_sequence": None, "stop_details": None, "usage": usage}
    start = orjson.dumps({"type": "message_start", "message": message}).decode()
    final_usage = {"input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": chunks}
    delta = orjson.dumps({"type": "message_delta",
                          "delta": {"stop_reason": "end_turn", "stop_sequence": None, "stop_details": None},
                          "usage": final_usage}).decode()
    text = _anthropic_event(
        "content_block_delta",
        '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"' + _MARK + '"}' + _PAD + "}",
    )
    prefix, _, suffix = text.partition(_MARK.encode())
    return PacedStream(
        head=[
            _anthropic_event("message_start", start[:-1] + " }"),
            _anthropic_event("content_block_start",
                             '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}'
                             + _PAD + "}"),
            _anthropic_event("ping", '{"type": "ping"}'),
        ],
        prefix=prefix, suffix=suffix,
        tail=[
            _anthropic_event("content_block_stop", '{"type":"content_block_stop","index":0    }'),
            _anthropic_event("message_delta", delta),
            _anthropic_event("message_stop", '{"type":"message_stop"   }'),
        ],
        chunks=chunks, gap_s=gap_s,
    )


PACED_CHAT: web.AppKey[dict[bool, PacedStream]] = web.AppKey("paced_chat", dict)
PACED_MESSAGES: web.AppKey[PacedStream] = web.AppKey("paced_messages", PacedStream)
ANTHROPIC_NONSTREAM: web.AppKey[bool] = web.AppKey("anthropic_nonstream", bool)


async def _paced(request: web.Request, stream: PacedStream, headers: dict[str, str]) -> web.StreamResponse:
    async def gap(_n: int) -> None:
        await asyncio.sleep(stream.gap_s)

    return await _write_paced(request, stream, headers, gap)


async def _write_paced(request: web.Request, stream: PacedStream, headers: dict[str, str],
                       wait: Callable[[int], Awaitable[None]]) -> web.StreamResponse:
    """The head events, then each text chunk after ``wait(n)`` stamped with its send time, then the tail."""
    response = web.StreamResponse(headers=headers)
    prefix, suffix = stream.prefix, stream.suffix
    try:
        await response.prepare(request)
        for event in stream.head:
            await response.write(event)
        for n in range(stream.chunks):
            await wait(n)
            sent = time.monotonic_ns()  # just before the write: the client reads it back from the text
            await response.write(prefix + paced_text(sent, n) + suffix)
        for event in stream.tail:
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response


class Ticker:
    """One timer for every ticker-paced stream: ``slots`` futures, one of which is resolved (and replaced)
    per tick of ``gap_s / slots``; a stream waits on the future of its own slot, so it is released once
    per ``gap_s``, and the streams are spread evenly over the gap instead of all writing at once."""

    def __init__(self, gap_s: float, slots: int) -> None:
        self.tick_s = gap_s / max(1, slots)
        self.slots = max(1, slots)
        self.waiting: list[asyncio.Future[None] | None] = [None] * self.slots
        self.dealt = 0
        self.task: asyncio.Task[None] | None = None

    def slot(self) -> int:
        self.dealt += 1
        return self.dealt % self.slots

    def wait(self, slot: int) -> asyncio.Future[None]:
        fut = self.waiting[slot]
        if fut is None:
            fut = self.waiting[slot] = asyncio.get_running_loop().create_future()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())
        return fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while any(f is not None for f in self.waiting):
            await asyncio.sleep(max(0.0, start + (tick + 1) * self.tick_s - loop.time()))
            # the timer is coarse (uvloop: 1 ms): release every slot whose time has come, so that a slot keeps
            # its cadence on average; more than one whole gap behind, the schedule restarts from now (no burst)
            due = int((loop.time() - start) / self.tick_s)
            if due - tick > self.slots:
                start, tick, due = loop.time(), 0, 1
            while tick < due:
                slot = tick % self.slots
                tick += 1
                fut, self.waiting[slot] = self.waiting[slot], None
                if fut is not None and not fut.done():
                    fut.set_result(None)


TICKER: web.AppKey[Ticker] = web.AppKey("ticker", Ticker)


async def _ticker_paced(request: web.Request, stream: PacedStream, ticker: Ticker) -> web.StreamResponse:
    slot = ticker.slot()

    async def tick(_n: int) -> None:
        await ticker.wait(slot)

    return await _write_paced(request, stream, _SSE_HEADERS, tick)


#: A non-streamed Anthropic Messages answer (``--anthropic-nonstream``), shaped like the API's.
MESSAGE = orjson.dumps({
    "model": "claude-haiku-4-5-20251001", "id": "msg_01T8kTq7cYyYJeQ5DxcVUc6D", "type": "message",
    "role": "assistant", "content": [{"type": "text", "text": "".join(_WORDS)}], "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 19, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
              "output_tokens": 17, "service_tier": "standard"},
})

_ANTHROPIC_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                          "request-id": "req_011CZknL2bUdgvrtea9HYSrj"}


async def messages(request: web.Request) -> web.StreamResponse:
    """Anthropic's ``POST /v1/messages``: streamed requests get the paced Anthropic stream."""
    body = orjson.loads(await request.read())
    if body.get("stream") is not True and request.app[ANTHROPIC_NONSTREAM]:
        return web.Response(body=MESSAGE, content_type="application/json")
    if body.get("stream") is not True:
        error = {"type": "error", "error": {"type": "invalid_request_error",
                                            "message": "the bench mock answers streamed requests only"}}
        return web.Response(status=400, body=orjson.dumps(error), content_type="application/json")
    return await _paced(request, request.app[PACED_MESSAGES], _ANTHROPIC_SSE_HEADERS)


async def models(_: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "bench-model", "object": "model",
                                                          "created": 0, "owned_by": "bench"}]})


async def serve(host: str, port: int, chunks: int, gap_s: float, ticker_gap_s: float = 0.02,
                ticker_slots: int = 20, anthropic_nonstream: bool = False, backlog: int = 2048) -> None:
    app = web.Application()
    app[TICKER] = Ticker(ticker_gap_s, ticker_slots)
    app[ANTHROPIC_NONSTREAM] = anthropic_nonstream
    app[PACED_CHAT] = {usage: paced_chat_stream(chunks, gap_s, include_usage=usage) for usage in (False, True)}
    app[PACED_MESSAGES] = anthropic_stream(chunks, gap_s)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
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
    parser.add_argument("--paced-chunks", type=int, default=20, help="text chunks per paced stream (default 20)")
    parser.add_argument("--paced-gap-ms", type=float, default=5.0,
                        help="pause before each text chunk of a paced stream, ms (default 5)")
    parser.add_argument("--ticker-gap-ms", type=float, default=20.0,
                        help="ticker-paced streams (bench_ticker): the gap between a stream's chunks, ms (default 20)")
    parser.add_argument("--ticker-slots", type=int, default=20,
                        help="ticker-paced streams: ticks per gap, the streams dealt among them (default 20)")
    parser.add_argument("--anthropic-nonstream", action="store_true",
                        help="answer non-streamed POST /v1/messages (default: 400, streamed requests only)")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog (default 2048)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.host, args.port, args.paced_chunks, args.paced_gap_ms / 1000, args.ticker_gap_ms / 1000,
                     args.ticker_slots, args.anthropic_nonstream, args.backlog))
    return 0


if __name__ == "__main__":
    sys.exit(main())
