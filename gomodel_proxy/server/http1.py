"""The gateway's own HTTP/1.1 server for the API routes, in front of aiohttp's for everything else.

Why: aiohttp's server (its protocol, request and response writer) cost about half of the CPU of a proxied
request. This protocol parses requests with llhttp (``httptools``, as the upstream client does), reads the
body whole (it is JSON the route parses anyway), runs the route's usual aiohttp handler behind the edge
middleware, and writes a whole answer as one ``transport.write``. Streams use aiohttp's ``StreamResponse``
on top of :class:`TransportWriter`, so that every route keeps its one implementation.

Only the hot routes (:data:`HOT_PATHS`: POSTs of the model APIs) are served here. Any other request on a
connection hands the connection over to aiohttp: the connection's bytes since that request began are given
to a fresh aiohttp protocol, which serves it and the rest of the connection exactly as before. A request
that cannot be handed over (it was pipelined behind another one in the same packet) is refused with a 400
that says why, and the connection closes; HTTP clients do not pipeline in practice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import HttpVersion, HttpVersion10, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, PayloadTooLargeError
from gomodel_proxy.server.middlewares import edge_middleware
from gomodel_proxy.server.state import STATE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Routes this server answers itself (POST only); every other request goes to aiohttp's router.
HOT_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/messages")

#: How long a keep-alive connection may stay idle before it is closed (aiohttp's default too).
KEEPALIVE_S = 75.0
#: Reason phrases by status.
_REASONS = {s.value: s.phrase.encode("latin-1") for s in HTTPStatus}


class _HandOff(Exception):
    """Raised from a parser callback to stop parsing: the request is aiohttp's to serve."""


class _Refused(Exception):
    """Raised from a parser callback: the request is answered with an error and the connection closed."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


#: The second and the ``Date`` value formatted for it.
_date_cache: list[Any] = [0, b""]


def http_date() -> bytes:
    """The ``Date`` header's value, formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True).encode("ascii")]
    value: bytes = _date_cache[1]
    return value


def _version(parser: httptools.HttpRequestParser) -> HttpVersion:
    return HttpVersion11 if parser.get_http_version() == "1.1" else HttpVersion10


class ParsedRequest(web.Request):
    """A request read by :class:`Http1Protocol`, as the part of aiohttp's ``Request`` the API routes use.

    aiohttp's constructor is not called: it wants its own protocol, message and payload stream. The body
    is already whole (``read()`` returns it), the headers are a ``CIMultiDictProxy`` as aiohttp's are, and
    ``response.prepare(request)`` of a stream writes through the connection's :class:`TransportWriter`.
    """

    ATTRS = web.Request.ATTRS | frozenset(["_app", "_path", "_target", "_keep_alive", "_transport"])

    def __init__(self, app: web.Application, method: str, target: str, headers: CIMultiDictProxy[str],  # noqa: PLR0917
                 body: bytes, version: HttpVersion, keep_alive: bool, writer: TransportWriter,
                 transport: asyncio.Transport) -> None:
        self._app = app
        self._method = method
        self._target = target
        self._path = target.partition("?")[0]
        self._headers = headers
        self._read_bytes = body
        self._version = version
        self._keep_alive = keep_alive
        self._payload_writer = writer
        self._transport = transport
        self._state = {}
        self._cache = {}
        self._post = None
        self._task = None  # type: ignore[assignment]  # the serving task sets it
        self._client_max_size = 0
        self._client_max_fields = 0
        self._match_info = None
        self._transport_sslcontext = None
        self._transport_peername = transport.get_extra_info("peername")
        self._transport_sockname = None

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def method(self) -> str:
        return self._method

    @property
    def path(self) -> str:
        return self._path

    @property
    def rel_url(self) -> URL:
        return URL(self._target, encoded=True)

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.rel_url.query

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._headers

    @property
    def keep_alive(self) -> bool:
        return self._keep_alive

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    @property
    def remote(self) -> str | None:
        peer = self._transport_peername
        return str(peer[0]) if isinstance(peer, (list, tuple)) and peer else None

    @property
    def can_read_body(self) -> bool:
        return False

    @property
    def body_exists(self) -> bool:
        return bool(self._read_bytes)

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        """No ``on_response_prepare`` signals: the gateway registers none."""


class TransportWriter(AbstractStreamWriter):
    """aiohttp's writer interface over the connection's transport, for streamed answers.

    Each ``write`` is one ``transport.write`` (a chunk's size line, the bytes and the CRLF joined into one
    buffer); it waits only when the transport asked the protocol to pause (the client reads slowly).
    """

    def __init__(self, protocol: Http1Protocol) -> None:
        self._protocol = protocol
        self._chunked = False
        self._head = b""
        self.buffer_size = 0
        self.output_size = 0
        self.length: int | None = 0

    def enable_chunking(self) -> None:
        self._chunked = True

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise NotImplementedError("the gateway does not compress what it relays")

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        lines = [status_line.encode("latin-1"), b"\r\n"]
        for name, value in headers.items():
            lines += (name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)

    def send_headers(self) -> None:
        head, self._head = self._head, b""
        if head:
            self._send(head)

    def _send(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)
        self.output_size += len(data)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._head:
            self.send_headers()
        if not chunk:
            return
        if self._chunked:
            self._send(b"%x\r\n%b\r\n" % (len(chunk), bytes(chunk)))
        else:
            self._send(bytes(chunk))
        if self._protocol.write_paused:
            await self._protocol.drained()

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            await self.write(chunk)
        elif self._head:
            self.send_headers()
        if self._chunked:
            self._send(b"0\r\n\r\n")

    async def drain(self) -> None:
        if self._protocol.write_paused:
            await self._protocol.drained()


class _NoCallbacks:
    """The callbacks of a parser nobody feeds."""


#: What a connection's parser is replaced with once it is closed or handed to aiohttp. The parser holds its
#: protocol (for the callbacks) and the protocol its parser: left as it is, that cycle kept every finished
#: connection (and what its last request held) until a full collection of the garbage collector, which
#: the gateway's thresholds make rare: RSS grew by ~1 MB per 256 connections opened and closed.
_DETACHED = httptools.HttpRequestParser(_NoCallbacks())


class Http1Protocol(asyncio.Protocol):
    """One client connection: requests parsed by llhttp, served one at a time in arrival order."""

    __slots__ = (
        "app",
        "body",
        "body_limit",
        "body_size",
        "busy",
        "chunk",
        "completed_in_chunk",
        "drain_waiter",
        "headers",
        "idle_since",
        "loop",
        "parser",
        "pending",
        "raw",
        "routes",
        "server",
        "task",
        "transport",
        "url",
        "write_paused",
    )

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.app = server.app
        self.routes = server.routes
        self.body_limit = server.body_limit
        # Kept rather than asked for per request: ``get_running_loop`` and ``current_task`` without a loop
        # check the process id with a ``getpid`` system call each time.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.pending: deque[Callable[[], Awaitable[None]]] = deque()
        #: The task serving the queued requests (``None`` between requests), and whether one is running.
        self.task: asyncio.Task[None] | None = None
        self.busy = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.idle_since = time.monotonic()
        #: The bytes of the request being read, from its first one (None: it began mid-packet, behind another).
        self.raw: list[bytes] | None = None
        self.chunk = b""
        self.completed_in_chunk = False

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self.pending.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # the client left: stop its upstream request at once
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))
        self.parser = _DETACHED

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if self.drain_waiter is None:
            self.drain_waiter = self.loop.create_future()
        await self.drain_waiter

    def data_received(self, data: bytes) -> None:
        self.chunk = data
        self.completed_in_chunk = False
        if self.raw is not None:
            self.raw.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HandOff):
                self._hand_off()
            elif isinstance(cause, _Refused):
                self._refuse(cause.error)
            else:  # pragma: no cover - a bug in a callback: never leave the client waiting
                raise
        except httptools.HttpParserUpgrade:
            self._hand_off()  # an Upgrade (or CONNECT): aiohttp knows what to do with it
        except httptools.HttpParserError as exc:
            self._refuse(InvalidRequestError(f"The request is not valid HTTP/1.1: {exc}."))

    def eof_received(self) -> bool | None:
        # The client closed its side: it is gone, as for aiohttp (the transport closes, and
        # ``connection_lost`` cancels what is being served for it).
        return None

    # -- llhttp callbacks -----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.body_size = 0
        # Known from its first byte only when no other request ended earlier in this packet.
        self.raw = None if self.completed_in_chunk else [self.chunk]

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        path = self.url.partition(b"?")[0]
        if parser.get_method() != b"POST" or path not in self.routes or any(
            name.lower() == "expect" for name, _ in self.headers
        ):
            raise _HandOff
        if self.body_limit and not parser.should_upgrade():
            for name, value in self.headers:
                if name.lower() == "content-length" and value.isdigit() and int(value) > self.body_limit:
                    raise _Refused(self._too_large())
        self.raw = None  # served here: the bytes need not be kept for a hand-over

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_limit and self.body_size > self.body_limit:
            raise _Refused(self._too_large())
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.completed_in_chunk = True
        self.raw = None
        parser = self.parser
        transport = self.transport
        assert transport is not None
        writer = TransportWriter(self)
        request = ParsedRequest(
            self.app, "POST", self.url.decode("utf-8", "surrogateescape"),
            CIMultiDictProxy(CIMultiDict(self.headers)), b"".join(self.body), _version(parser),
            parser.should_keep_alive(), writer, transport,
        )
        handler = self.routes[self.url.partition(b"?")[0]]
        self.pending.append(lambda: self._serve(request, handler))
        self._wake()

    # -- serving --------------------------------------------------------------------------------------
    def _wake(self) -> None:
        """Serve the next queued request, in a task of its own, unless one is being served.

        A task per request: each request's context variables (its call record, the key that served it)
        start fresh, as under aiohttp; pipelined requests wait their turn and are answered in order.
        """
        if self.task is None and self.pending:
            self.busy = True
            self.task = self.loop.create_task(self._run(self.pending.popleft()))

    async def _run(self, serve: Callable[[], Awaitable[None]]) -> None:
        try:
            await serve()
        except asyncio.CancelledError:
            # The client left, or shutdown cut what was being served: an answer may be half written,
            # so the connection cannot carry another one (aiohttp closes it too).
            self.pending.clear()
            if self.transport is not None:
                self.transport.close()
            raise
        finally:
            self.busy = False
            self.task = None
            self.idle_since = time.monotonic()
            if self.pending and self.transport is not None:
                self._wake()

    async def _serve(self, request: ParsedRequest, handler: Handler) -> None:
        request._task = self.task  # type: ignore[assignment]  # the task running this (``_wake``)
        response = await edge_middleware(request, handler)
        transport = self.transport
        if transport is None:
            return
        if not response.prepared:
            transport.write(serialize(response, request.version, request.keep_alive))
        elif not response._eof_sent:  # a stream its handler did not end (it raised): end it here
            await response.write_eof()
        if not request.keep_alive:
            transport.close()

    def _too_large(self) -> GatewayError:
        limit = self.body_limit / (1024 * 1024)
        return PayloadTooLargeError(f"The request body is larger than the gateway accepts ({limit:g} MiB).")

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` after whatever is being served, then close: the connection's framing is lost."""
        transport = self.transport
        if transport is None:
            return
        transport.pause_reading()
        body = error.to_anthropic_json() if self.url.startswith(b"/v1/messages") else error.to_json()
        data = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\nDate: %s\r\n\r\n%b") % (
            error.status, _REASONS.get(error.status, b""), len(body), http_date(), body)

        async def write_and_close() -> None:
            if self.transport is not None:
                self.transport.write(data)
                self.transport.close()

        self.pending.append(write_and_close)
        self._wake()

    def _hand_off(self) -> None:
        """Give the connection to aiohttp, with the bytes of the request being read from its first one."""
        raw = self.raw
        if raw is None or self.busy:
            self._refuse(InvalidRequestError(
                "This request was pipelined behind another on the same connection, and the gateway answers "
                "pipelined requests only on its API routes; send it on its own connection.",
                code="pipelining_not_supported",
            ))
            return
        transport = self.transport
        assert transport is not None
        self.server.connections.discard(self)
        protocol = self.server.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        for data in raw:
            protocol.data_received(data)
        self.parser = _DETACHED

    def close_if_idle(self, idle_before: float) -> bool:
        """Close the connection if no request is being served and it has been idle since ``idle_before``."""
        if not self.busy and self.idle_since < idle_before and self.transport is not None:
            self.transport.close()
            return True
        return False


def serialize(response: web.StreamResponse, version: HttpVersion, keep_alive: bool) -> bytes:
    """A whole aiohttp ``Response`` as the bytes of its status line, headers and body."""
    body = response.body if isinstance(response, web.Response) else None
    if body is None:
        data = b""
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    else:  # a Payload (never from the API routes, which answer bytes)
        data = body._value if isinstance(getattr(body, "_value", None), bytes) else b""
    status = response.status
    headers = response.headers
    # The pieces joined as they are: an f-string per header formats each name through ``istr.__format__``
    # (multidict's str subclass), which costs twice the join here (13 headers: 2.3 us against 1.3).
    parts: list[str] = []
    for name, value in headers.items():
        if name not in _FRAMING_HEADERS:
            parts += (name, ": ", value, "\r\n")
    try:
        head = "".join(parts).encode("latin-1")
    except TypeError:  # a value set as something else than a str (aiohttp takes them): formatted instead
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()
                        if name not in _FRAMING_HEADERS]).encode("latin-1")
    extra = b""
    if data and "Content-Type" not in headers:
        extra += b"Content-Type: application/octet-stream\r\n"
    if not keep_alive and version == HttpVersion11:
        extra += b"Connection: close\r\n"
    elif keep_alive and version == HttpVersion10:
        extra += b"Connection: keep-alive\r\n"
    length = b"Content-Length: %d\r\n" % len(data) if status >= 200 and status not in (204, 304) else b""
    return b"".join((
        _STATUS_LINES[version.minor].get(status) or b"HTTP/1.%d %d Unknown\r\n" % (version.minor, status),
        head, extra, b"Date: ", http_date(), b"\r\n", length, b"\r\n", data,
    ))


#: Headers ``serialize`` writes itself from the body it sends.
_FRAMING_HEADERS = frozenset(["Content-Length", "content-length", "Transfer-Encoding", "transfer-encoding"])
#: Status lines by HTTP minor version and status.
_STATUS_LINES = {
    minor: {code: b"HTTP/1.%d %d %s\r\n" % (minor, code, phrase) for code, phrase in _REASONS.items()}
    for minor in (0, 1)
}


class Http1Server:
    """The listening side: the protocol factory, its connections, and the aiohttp server it hands off to."""

    def __init__(self, app: web.Application, fallback: web.Server, routes: dict[bytes, Handler],
                 body_limit: int) -> None:
        self.app = app
        self.fallback = fallback
        self.routes = routes
        self.body_limit = body_limit
        self.connections: set[Http1Protocol] = set()
        #: Seconds busy connections get at shutdown; ``None``: ``server.shutdown_grace_s`` + 1.
        self.shutdown_timeout: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> Http1Protocol:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE_S / 5, self._sweep)
        return Http1Protocol(self)

    def _sweep(self) -> None:
        """Close keep-alive connections idle for longer than ``KEEPALIVE_S`` (one timer for all of them)."""
        idle_before = time.monotonic() - KEEPALIVE_S
        for conn in list(self.connections):
            conn.close_if_idle(idle_before)
        self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE_S / 5, self._sweep)

    async def shutdown(self, grace_s: float) -> None:
        """Close idle connections now; give busy ones ``grace_s`` to finish, then close them too."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        deadline = time.monotonic() + grace_s
        while True:
            for conn in list(self.connections):
                conn.close_if_idle(float("inf"))
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


def hot_routes(app: web.Application) -> dict[bytes, Handler]:
    """The handlers aiohttp's router has for the POSTs of :data:`HOT_PATHS`, by path."""
    routes: dict[bytes, Handler] = {}
    for resource in app.router.resources():
        path = resource.get_info().get("path")
        if path not in HOT_PATHS:
            continue
        for route in resource:
            if route.method == "POST":
                routes[path.encode("ascii")] = route.handler
    return routes


async def listen(app: web.Application, runner: web.AppRunner, host: str, port: int, *,
                 reuse_port: bool = False, backlog: int = 2048, shutdown_timeout: float | None = None,
                 ) -> asyncio.Server:
    """Listen on ``host:port`` with :class:`Http1Protocol`, handing other routes to ``runner``'s server.

    ``runner`` must be set up (the app started). At shutdown, connections still busy get
    ``shutdown_timeout`` seconds (default: ``server.shutdown_grace_s`` + 1, as aiohttp's get in
    ``server.runner``). The returned server's sockets tell the port bound.
    """
    fallback = runner.server
    assert fallback is not None, "the runner must be set up first"
    http1 = Http1Server(app, fallback, hot_routes(app), body_limit=app._client_max_size)
    if shutdown_timeout is not None:
        http1.shutdown_timeout = shutdown_timeout
    app[STATE].http1 = http1
    return await asyncio.get_running_loop().create_server(
        http1, host, port, reuse_port=reuse_port or None, backlog=backlog)
