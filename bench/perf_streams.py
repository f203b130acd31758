"""The many-streams client of bench/perf.py: N concurrent paced streams, every chunk timed and checked.

Why a client of its own: 10,000 streams held open at once need one event loop with a protocol per connection
(no thread, no task per read), and a timestamp taken the moment each read returns. Each connection sends one
streamed chat request whose body asks the mock for a ticker-paced stream (``"bench_ticker": true``,
bench/upstream.py): ``chunks`` text chunks ``gap`` apart, the text of chunk n being ``t=<send ns> n=<n>;``
where ``<send ns>`` is the mock's ``time.monotonic_ns()`` just before its write. The client decodes the chunked
transfer coding, finds each stamp as soon as the read completing it returns, and keeps ``receive - send``.

A stream is complete when it answered 200, its ``chunks`` stamps came numbered 0..chunks-1 in order, ``data:
[DONE]`` came and the chunked body ended. Every stamp missing from a stream (a failed connection, a reset, a
gap in the numbering, a timeout) is a lost frame.

The client's own lateness is measured too, since on a 2-core machine it shares its core with the mock: a
probe task sleeps 5 ms again and again and records how late it wakes (the event loop's lag). A stamp can only
be read once the loop gets to it, so that lag bounds what the direct figures can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from run import ChunkedDecoder, percentile

_STAMP = re.compile(rb't=(\d+) n=(\d+);')
_DONE = b"data: [DONE]"


def raise_nofile() -> int:
    """Raise this process's open-file limit as far as it may go (root: 1M; else the hard limit); children
    started afterwards inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, 262_144, 65_536):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


@dataclass
class Tally:
    """What all the streams of one run add up to."""

    chunks: int
    delays_ns: list[int] = field(default_factory=list)
    complete: int = 0
    lost_frames: int = 0
    problems: list[str] = field(default_factory=list)
    stretch: list[float] = field(default_factory=list)  # per stream: (last stamp - first) / nominal
    open_now: int = 0
    open_peak: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


class _Stream(asyncio.Protocol):
    """One paced stream on its own connection; checks it as it comes."""

    __slots__ = ("buf", "decoder", "done_evt", "finished", "first_ns", "gap_ns", "headers_done", "last_ns",
                 "next_n", "request", "saw_done", "tally", "text", "transport")

    def __init__(self, request: bytes, tally: Tally, gap_ns: int) -> None:
        self.request = request
        self.tally = tally
        self.gap_ns = gap_ns
        self.buf = b""
        self.text = b""
        self.headers_done = False
        self.decoder = ChunkedDecoder()
        self.next_n = 0
        self.saw_done = False
        self.finished = False
        self.first_ns = 0
        self.last_ns = 0
        self.transport: asyncio.Transport | None = None
        self.done_evt = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tally.open_now += 1
        self.tally.open_peak = max(self.tally.open_peak, self.tally.open_now)
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if not self.headers_done:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            data, self.buf = self.buf[end + 4:], b""
            self.headers_done = True
            status = head[9:12]
            if status != b"200" or b"chunked" not in head.lower():
                self._end(f"HTTP {status.decode('latin-1')}: {(head + data)[:200]!r}")
                return
        self.text += self.decoder.feed(data)
        text = self.text
        last = 0
        tally = self.tally
        for m in _STAMP.finditer(text):
            sent, n = int(m[1]), int(m[2])
            tally.delays_ns.append(now - sent)
            if n != self.next_n:
                tally.problem(f"chunk {n} came where {self.next_n} was due")
            else:
                self.next_n += 1
            if not self.first_ns:
                self.first_ns = now
            self.last_ns = now
            last = m.end()
        if _DONE in text:
            self.saw_done = True
        self.text = text[last:][-256:]
        if self.decoder.done:
            self._end(None)

    def _end(self, problem: str | None) -> None:
        if self.finished:
            return
        self.finished = True
        tally = self.tally
        chunks = tally.chunks
        if problem is None and (self.next_n != chunks or not self.saw_done):
            problem = f"stream ended with {self.next_n} of {chunks} chunks in order" + (
                "" if self.saw_done else ", no data: [DONE]")
        if problem is None:
            tally.complete += 1
            if chunks > 1:
                tally.stretch.append((self.last_ns - self.first_ns) / ((chunks - 1) * self.gap_ns))
        else:
            tally.problem(problem)
        tally.lost_frames += chunks - self.next_n
        if self.transport is not None:
            tally.open_now -= 1
            self.transport.close()
        if not self.done_evt.done():
            self.done_evt.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished:
            self._end(f"connection lost after {self.next_n} chunks ({exc or 'closed by the server'})")

    def abort(self, why: str) -> None:
        self._end(why)


def request_bytes(port: int, body: bytes, key: str, headers: dict[str, str] | None = None,
                  path: str = "/v1/chat/completions") -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _run(port: int, request: bytes, streams: int, chunks: int, gap_s: float, spread_s: float,
               timeout_s: float, sample: Callable[[], None]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tally = Tally(chunks)
    protos: list[_Stream] = []
    connect_errors: list[str] = []
    lags: list[float] = []
    gap_ns = int(gap_s * 1e9)
    stop = False

    async def lag_probe() -> None:
        while not stop:
            t0 = loop.time()
            await asyncio.sleep(0.005)
            lags.append((loop.time() - t0 - 0.005) * 1000)

    async def sampler() -> None:
        while not stop:
            sample()
            await asyncio.sleep(0.1)

    async def connect(proto: _Stream) -> None:
        try:
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
        except OSError as exc:
            if len(connect_errors) < 5:
                connect_errors.append(f"{type(exc).__name__}: {exc}")
            proto.abort(f"connect failed: {type(exc).__name__}: {exc}")

    probes = [loop.create_task(lag_probe()), loop.create_task(sampler())]
    started = time.perf_counter()
    t0 = loop.time()
    tasks = []
    for i in range(streams):
        due = t0 + spread_s * i / streams
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        proto = _Stream(request, tally, gap_ns)
        protos.append(proto)
        tasks.append(loop.create_task(connect(proto)))
    opened_s = time.perf_counter() - started
    waiters = [p.done_evt for p in protos]
    _, pending = await asyncio.wait(waiters, timeout=timeout_s)
    for proto in protos:
        if not proto.finished:
            proto.abort(f"timed out after {timeout_s:.0f} s with {proto.next_n} chunks")
    await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - started
    stop = True
    for t in probes:
        t.cancel()
    await asyncio.gather(*probes, return_exceptions=True)
    us = [d / 1000 for d in tally.delays_ns]
    return {
        "streams": streams, "chunks_per_stream": chunks, "gap_ms": gap_s * 1000, "spread_s": spread_s,
        "complete": tally.complete, "frames_expected": streams * chunks, "frames_received": len(us),
        "lost_frames": tally.lost_frames, "timed_out": len(pending), "open_peak": tally.open_peak,
        "problems": tally.problems,
        "connect_errors": connect_errors, "seconds": round(seconds, 3), "open_s": round(opened_s, 3),
        "delay_p50_us": percentile(us, 50), "delay_p99_us": percentile(us, 99), "delay_max_us": max(us, default=0.0),
        "stretch_p50": percentile(tally.stretch, 50), "stretch_p99": percentile(tally.stretch, 99),
        "client_lag_p50_ms": percentile(lags, 50), "client_lag_p99_ms": percentile(lags, 99),
        "client_lag_max_ms": max(lags, default=0.0),
    }


def run_streams(port: int, body: bytes, key: str, streams: int, chunks: int, gap_s: float, *,
                spread_s: float = 1.0, timeout_s: float = 120.0, headers: dict[str, str] | None = None,
                sample: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Open ``streams`` paced streams over ``spread_s`` seconds and wait for all of them (or ``timeout_s``)."""
    import uvloop  # noqa: PLC0415 - the gateway's own dependency; the driver needs it only here

    request = request_bytes(port, body, key, headers)
    return uvloop.run(_run(port, request, streams, chunks, gap_s, spread_s, timeout_s, sample))
