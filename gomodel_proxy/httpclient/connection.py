"""One keep-alive HTTP/1.1 connection: an ``asyncio.Protocol`` whose answers llhttp (httptools) parses.

This is the hot path of every proxied request, so it is written to do little per request: the request is
one ``transport.write`` of prebuilt bytes, parser callbacks append to plain lists, a waiting reader costs
one future, and the read-idle timeout is one timer per connection that is only re-armed when it fires
(checked against the time of the last byte) instead of a timer created and cancelled per wait.

The connection holds the state of one exchange at a time; :class:`~.response.Response` reads the body
from it and hands it back to its pool (:class:`~.pool.Pool`) or aborts it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterable
from contextlib import suppress
from typing import Protocol, cast

import httptools

from gomodel_proxy.httpclient.errors import (
    StaleConnectionError,
    body_length_mismatch,
    closed_before_answer,
    closed_mid_body,
    invalid_response,
    read_timeout,
)

#: Unread body bytes above which reading pauses (the consumer is slower than the provider). Reading resumes
#: when the reader takes the buffer, which it always takes whole: the low-water mark is an empty buffer.
HIGH_WATER = 256 * 1024
#: Request bodies larger than this are written in slices of this size, each after the transport drained.
WRITE_SLICE = 256 * 1024


class Owner(Protocol):
    """The pool a connection belongs to."""

    def put_back(self, conn: Connection) -> None:
        """Take the connection back for another request (its answer was whole and keeps it alive)."""

    def discard(self, conn: Connection) -> None:
        """Forget the connection: it is closed and its slot is free."""


class _UnexpectedMessage(Exception):
    """A second answer began on the connection: the peer sent bytes nobody asked for."""


class _NoCallbacks:
    """The callbacks of a parser nobody feeds."""


#: A closed connection's parser: the parser holds its connection (for the callbacks) and the connection its
#: parser, a cycle that kept every closed connection, and the call it last served, until a full collection.
_DETACHED = httptools.HttpResponseParser(_NoCallbacks())


class Connection(asyncio.Protocol):
    __slots__ = (
        "body", "buffered", "closed", "complete", "counted", "exc", "got_bytes", "head_done", "idle_since",
        "in_flight", "informational", "keep_alive", "label", "last_activity", "loop", "no_body", "owner",
        "parser", "raw_headers", "read_paused", "read_timeout_s", "request_sent", "reused", "status", "timer",
        "transport", "waiter", "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, owner: Owner, label: str, read_timeout_s: float) -> None:
        self.loop = loop
        self.owner = owner
        self.label = label
        self.read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        #: The transport is gone or going: never to be used again.
        self.closed = False
        #: It has carried a complete exchange before (a failure before any byte may be a stale keep-alive).
        self.reused = False
        #: It holds one of its pool's slots (set by the pool once connected; given back once, by ``discard``).
        self.counted = False
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        self.read_paused = False
        self.write_paused = False
        self.waiter: asyncio.Future[None] | None = None
        # The exchange in progress (reset by ``_begin``).
        self.in_flight = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.exc: BaseException | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.got_bytes = False
        self.keep_alive = False
        self.request_sent = True
        self.informational = False
        #: The request was HEAD: the answer ends with its head.
        self.no_body = False

    # -- the exchange -------------------------------------------------------------------------------
    async def exchange(
        self, data: bytes, large_body: bytes | None, stream: AsyncIterable[bytes] | None = None, *,
        no_body: bool = False,
    ) -> None:
        """Send a request (``data``: head and small body; ``large_body`` sent in drained slices; ``stream``
        sent as it yields, framed by ``data``'s Content-Length or chunked) and return once the answer's head
        arrived; raises the gateway's error when none does. ``no_body``: the answer has none (HEAD)."""
        self._begin()
        self.no_body = no_body
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if large_body is not None:
            await self._write_slices(transport, large_body)
        elif stream is not None:
            await self._write_stream(transport, stream, getattr(stream, "length", None))
        while not self.head_done:
            exc = self.exc
            if exc is not None:
                if stream is not None and isinstance(exc, StaleConnectionError):
                    # Part of a stream is gone with the connection: it cannot be sent again.
                    exc = closed_before_answer(self.label)
                raise exc
            await self.wait()

    def _begin(self) -> None:
        if self.closed:
            # Closed between leaving the pool and now: a keep-alive the server ended.
            raise StaleConnectionError() if self.reused else closed_before_answer(self.label)
        self.in_flight = True
        self.status = 0
        self.raw_headers = []
        self.head_done = False
        self.complete = False
        self.exc = None
        self.body.clear()
        self.buffered = 0
        self.got_bytes = False
        self.keep_alive = False
        self.request_sent = True
        now = self.loop.time()
        self.last_activity = now
        if self.timer is None:
            self.timer = self.loop.call_at(now + self.read_timeout_s, self._on_timer)

    async def _write_slices(self, transport: asyncio.Transport, body: bytes) -> None:
        view = memoryview(body)
        for start in range(0, len(view), WRITE_SLICE):
            while self.write_paused and not self.head_done and self.exc is None:
                await self.wait()
            if self.head_done or self.exc is not None:
                # Answered (or failed) before the body was sent: the connection's state is unknown.
                self.request_sent = False
                return
            transport.write(view[start : start + WRITE_SLICE])

    async def _write_stream(
        self, transport: asyncio.Transport, stream: AsyncIterable[bytes], length: int | None
    ) -> None:
        """Write the body as the source yields it, each piece once the transport drained (flat memory)."""
        chunked = length is None
        sent = 0
        async for piece in stream:
            if not piece:
                continue
            while self.write_paused and not self.head_done and self.exc is None:
                await self.wait()
            if self.head_done or self.exc is not None:
                self.request_sent = False  # answered (or failed) before the body was sent
                return
            sent += len(piece)
            if length is not None and sent > length:
                raise body_length_mismatch(length)
            if chunked:
                transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
            else:
                transport.write(piece)
            # Sending is progress: the read timeout counts from the body's last byte, not from the head.
            self.last_activity = self.loop.time()
        if length is not None and sent != length:
            raise body_length_mismatch(length)
        if chunked and self.exc is None and not self.closed:
            transport.write(b"0\r\n\r\n")

    def wait(self) -> asyncio.Future[None]:
        """A future resolved at the next progress of the exchange (head, body bytes, end, error, drain)."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        return waiter

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def take(self) -> bytes:
        """Every body byte buffered so far, as one bytes object (the caller saw ``body`` non-empty)."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.read_paused:
            self.read_paused = False
            # Time spent paused was the consumer's, not the provider's.
            self.last_activity = self.loop.time()
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and self.request_sent and not self.closed

    def fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc`` (raised to the reader after the bytes it already has)."""
        self.exc = exc
        self.in_flight = False
        self.abort()
        self._wake()

    def abort(self) -> None:
        """Drop the connection at once (the provider sees the request go away) and free its slot."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self.owner.discard(self)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.in_flight:
            return  # re-armed by the next request
        now = self.loop.time()
        if self.read_paused:
            self.timer = self.loop.call_at(now + self.read_timeout_s, self._on_timer)
            return
        deadline = self.last_activity + self.read_timeout_s
        if now < deadline:
            self.timer = self.loop.call_at(deadline, self._on_timer)
            return
        self.fail(read_timeout(self.label))

    # -- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's; a stream connection's has Transport's methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            # Bytes nobody asked for (an idle connection's 408, trailing garbage): not reusable.
            self.abort()
            return
        self.last_activity = self.loop.time()
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if self.complete:
                self.abort()  # the answer is whole; only what followed it was wrong
            else:
                self.fail(invalid_response(self.label))

    def eof_received(self) -> bool | None:
        return None  # close; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.in_flight:
            self.in_flight = False
            if self.head_done and self._ends_at_eof():
                self.complete = True
            elif not self.got_bytes:
                self.exc = StaleConnectionError() if self.reused else closed_before_answer(self.label)
            else:
                self.exc = closed_mid_body(self.label)
        self._wake()
        self.owner.discard(self)
        self.parser = _DETACHED  # the parser and this connection hold each other: a cycle left to the collector

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.last_activity = self.loop.time()
        self._wake()

    def _ends_at_eof(self) -> bool:
        """Whether the answer's body is delimited by the connection's end (no length, not chunked)."""
        if self.status in (204, 304):
            return False
        return not any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.raw_headers)

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete or not self.in_flight:
            raise _UnexpectedMessage

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: the real answer follows on the same connection.
            self.informational = True
            self.raw_headers = []
            return
        self.status = status
        self.head_done = True
        if self.no_body:
            # A HEAD answer: nothing follows its head, whatever Content-Length says. The parser expects a
            # body, so the connection is not reused.
            self.complete = True
            self.in_flight = False
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.no_body:
            return  # bytes after a HEAD answer's head are no part of it (the connection is not reused)
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.in_flight = False
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()
