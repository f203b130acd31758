"""An in-process mock of an OpenAI-compatible provider: a real aiohttp server on a loopback port.

It answers ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/embeddings``. Tests register a
:class:`Scenario` per model name (the ``model`` of the request the upstream receives): a recorded fixture
replayed (JSON with its recorded status and content type, SSE byte for byte, written in several pieces
with real awaits between them), or a fault (any status and body, a delay before the headers, a delay
between pieces, a connection dropped mid-body, a stream that stalls until the client goes away).

Every request is recorded (:class:`RecordedRequest`: path, headers, raw body, parsed JSON), and each one
tells whether the client (the gateway) went away before the answer was complete, through an
``asyncio.Event`` set as soon as the handler sees the connection closed or is cancelled.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict

from .fixtures import Fixture, load_fixture, split_sse_events

#: Response headers of a recording that describe the recorded connection, not the answer.
_NOT_REPLAYED = frozenset({
    "content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "content-type",
    "date", "server", "alt-svc", "strict-transport-security", "set-cookie",
})
#: Irregular piece sizes for ``split="bytes"``: boundaries land inside events, lines and CRLFs.
_BYTE_PIECES = (1, 7, 64, 3, 211, 2, 33, 512, 5, 97)


@dataclass
class Scenario:
    """How the mock answers one model."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Send the body with chunked encoding in several writes (SSE); otherwise one ``web.Response``.
    stream: bool = False
    #: How a streamed body is cut into writes: "events" (at SSE event boundaries, grouped to at most
    #: ``max_pieces``), "bytes" (irregular sizes, cutting through events) or explicit ``pieces``.
    split: str = "events"
    max_pieces: int = 40
    pieces: list[bytes] | None = None
    delay_before_headers: float = 0.0
    #: Pause between streamed writes (always at least one loop turn).
    chunk_delay: float = 0.001
    #: Write this many pieces, then abort the TCP connection (no terminating chunk).
    drop_after: int | None = None
    #: Write this many pieces, then wait until the client goes away (or ``stall_s`` passes).
    stall_after: int | None = None
    stall_s: float = 60.0

    @classmethod
    def from_fixture(cls, fixture: Fixture | str, **overrides: Any) -> Scenario:
        fx = load_fixture(fixture) if isinstance(fixture, str) else fixture
        headers = {k: str(v) for k, v in fx.recorded_headers.items() if k.lower() not in _NOT_REPLAYED}
        values: dict[str, Any] = {
            "status": fx.status, "body": fx.body, "content_type": fx.content_type,
            "headers": headers, "stream": fx.is_stream,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def error(cls, status: int, body: bytes | dict[str, Any] | str, *, content_type: str | None = None,
              **overrides: Any) -> Scenario:
        if isinstance(body, dict):
            raw, ctype = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            raw, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            raw, ctype = body, "application/octet-stream"
        return cls(status=status, body=raw, content_type=content_type or ctype, **overrides)

    @classmethod
    def sse(cls, events: Iterable[bytes | dict[str, Any] | str], **overrides: Any) -> Scenario:
        """A stream built from payloads: dicts become ``data: <json>``, "[DONE]" the end, bytes stay raw."""
        out = []
        for event in events:
            if isinstance(event, bytes):
                out.append(event)
            elif isinstance(event, str):
                out.append(f"data: {event}\n\n".encode())
            else:
                out.append(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
        values: dict[str, Any] = {"body": b"".join(out), "content_type": "text/event-stream", "stream": True}
        values.update(overrides)
        return cls(**values)

    def split_body(self) -> list[bytes]:
        if self.pieces is not None:
            return list(self.pieces)
        if self.split == "bytes":
            # Scaled up for big bodies so that a stream stays within about 4 * max_pieces writes.
            scale = -(-len(self.body) * len(_BYTE_PIECES) // (sum(_BYTE_PIECES) * 4 * self.max_pieces))
            pieces, pos, i = [], 0, 0
            while pos < len(self.body):
                size = _BYTE_PIECES[i % len(_BYTE_PIECES)] * max(1, scale)
                pieces.append(self.body[pos : pos + size])
                pos, i = pos + size, i + 1
            return pieces
        events = split_sse_events(self.body)
        group = max(1, -(-len(events) // self.max_pieces))
        return [b"".join(events[i : i + group]) for i in range(0, len(events), group)]


@dataclass
class RecordedRequest:
    """One request the mock received."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    #: The query string's parameters (Azure's ``api-version``, Gemini's ``alt``).
    query: dict[str, str] = field(default_factory=dict)
    received_at: float = field(default_factory=time.perf_counter)
    #: Set when the client went away before the answer was complete (cancelled or connection reset).
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    client_gone_at: float | None = None
    #: Set when the handler is over, however it ended.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Pieces of the body written (for streamed scenarios).
    pieces_written: int = 0
    #: The mock itself cut the connection (``drop_after``): not the client going away.
    dropped_by_mock: bool = False

    @property
    def model(self) -> str | None:
        model = self.json.get("model") if isinstance(self.json, dict) else None
        return model if isinstance(model, str) else None

    def _client_went_away(self) -> None:
        if not self.dropped_by_mock and not self.client_gone.is_set():
            self.client_gone_at = time.perf_counter()
            self.client_gone.set()


@dataclass
class Upload:
    """A file the mock received on ``POST /v1/files``, hashed as it arrived (never held whole)."""

    headers: CIMultiDict[str]
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    purpose: str | None = None
    #: Reads it took: many for a streamed body.
    reads: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Download:
    """A ``GET /v1/files/{id}/content`` the mock answered: bytes written, and whether the client left."""

    written: int = 0
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


def download_bytes(size: int, piece: int = 64 * 1024) -> Iterable[bytes]:
    """The deterministic content of a download of ``size`` bytes, in pieces (the same for client and mock)."""
    pattern = bytes(range(256)) * (piece // 256)
    sent = 0
    while sent < size:
        chunk = pattern[: min(piece, size - sent)]
        sent += len(chunk)
        yield chunk


class MockUpstream:
    """The mock server. ``await start()``, register scenarios with :meth:`on`/:meth:`replay`, ``await close()``."""

    def __init__(self, *, model_ids: list[str] | None = None, echo: bool = False) -> None:
        #: What ``GET /v1/models`` lists; ``None``: the models that have a scenario.
        self.model_ids = model_ids
        #: Overrides the ``GET /v1/models`` answer (e.g. an error status).
        self.models_scenario: Scenario | None = None
        self.scenarios: dict[str, Scenario] = {}
        self.requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: Answer any other method and path with what was received (``_echo``) instead of 404/405.
        self.echo = echo
        #: Files received on ``POST /v1/files`` and answers of ``GET /v1/files/{id}/content``.
        self.uploads: list[Upload] = []
        self.downloads: list[Download] = []
        #: Size of every download; ``download_stall_after``: bytes written before it stalls until the client leaves.
        self.download_size = 1024
        self.download_stall_after: int | None = None
        self._file_ids = itertools.count(1)

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> MockUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app)
        # handler_cancellation: a handler learns at once (CancelledError) that its client went away.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def add_routes(self, app: web.Application) -> None:
        """The routes served; subclasses add more (another URL layout, another wire format)."""
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._answer)
        app.router.add_post("/v1/embeddings", self._answer)
        app.router.add_post("/v1/moderations", self._answer)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}/content", self._download)
        if self.echo:
            # Anything else: echoed (method, raw target, headers, body size), for the pass-through's tests.
            app.router.add_route("*", "/{tail:.*}", self._echo)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> MockUpstream:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, as a provider's ``base_url``."""
        return self.url + "/v1"

    # -- scenarios ----------------------------------------------------------------------------------
    def on(self, model: str, scenario: Scenario) -> Scenario:
        self.scenarios[model] = scenario
        return scenario

    def replay(self, model: str, fixture: Fixture | str, **overrides: Any) -> Scenario:
        """Answer ``model`` with a recorded fixture (``overrides`` adjust the :class:`Scenario`)."""
        return self.on(model, Scenario.from_fixture(fixture, **overrides))

    def fail(self, model: str, status: int, body: bytes | dict[str, Any] | str, **overrides: Any) -> Scenario:
        return self.on(model, Scenario.error(status, body, **overrides))

    # -- what was received --------------------------------------------------------------------------
    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def last(self, model: str | None = None) -> RecordedRequest:
        candidates = self.requests if model is None else self.requests_for(model)
        if not candidates:
            raise AssertionError(f"the mock upstream received no request{f' for {model!r}' if model else ''}")
        return candidates[-1]

    # -- handlers -----------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        rec = RecordedRequest(
            method=request.method, path=request.path, headers=CIMultiDict(request.headers), body=raw, json=parsed,
            query=dict(request.query),
        )
        self.requests.append(rec)
        return rec

    async def _models(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            if self.models_scenario is not None:
                return await self._respond(request, self.models_scenario, rec)
            ids = self.model_ids if self.model_ids is not None else sorted(self.scenarios)
            payload = {
                "object": "list",
                "data": [{"id": i, "object": "model", "created": 1700000000, "owned_by": "mock-org"} for i in ids],
            }
            return web.json_response(payload)
        finally:
            rec.done.set()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            scenario = self.scenarios.get(rec.model or "")
            if scenario is None:
                return web.json_response(
                    {"error": {"message": f"mock upstream: no scenario for model {rec.model!r}",
                               "type": "invalid_request_error", "param": "model", "code": "mock_no_scenario"}},
                    status=404,
                )
            return await self._respond(request, scenario, rec)
        except (asyncio.CancelledError, ConnectionResetError):
            rec._client_went_away()
            raise
        finally:
            rec.done.set()

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's file upload (multipart, or a raw body): the file is hashed as it arrives."""
        upload = Upload(headers=CIMultiDict(request.headers))
        self.uploads.append(upload)
        digest = hashlib.sha256()
        try:
            if request.content_type.startswith("multipart/"):
                reader = await request.multipart()
                async for part in reader:
                    if not isinstance(part, BodyPartReader):  # pragma: no cover - nested multipart
                        continue
                    if part.name == "file":
                        upload.filename = part.filename
                        while chunk := await part.read_chunk(256 * 1024):
                            digest.update(chunk)
                            upload.size += len(chunk)
                            upload.reads += 1
                    elif part.name == "purpose":
                        upload.purpose = await part.text()
            else:
                async for chunk in request.content.iter_any():
                    digest.update(chunk)
                    upload.size += len(chunk)
                    upload.reads += 1
            upload.sha256 = digest.hexdigest()
            return web.json_response({
                "id": f"file-{next(self._file_ids)}", "object": "file", "bytes": upload.size,
                "created_at": 1700000000, "filename": upload.filename or "upload", "purpose": upload.purpose
                or "batch", "status": "processed", "sha256": upload.sha256,
            })
        finally:
            upload.done.set()

    async def _download(self, request: web.Request) -> web.StreamResponse:
        """A file's content: ``download_size`` bytes with a Content-Length, written in pieces as they drain."""
        download = Download()
        self.downloads.append(download)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = self.download_size
        try:
            await response.prepare(request)
            for chunk in download_bytes(self.download_size):
                if self.download_stall_after is not None and download.written >= self.download_stall_after:
                    await asyncio.sleep(60)
                await response.write(chunk)
                download.written += len(chunk)
            await response.write_eof()
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            download.client_gone.set()
            raise
        finally:
            download.done.set()

    async def _echo(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        rec = RecordedRequest(
            method=request.method, path=request.raw_path, headers=CIMultiDict(request.headers), body=raw,
            json=None, query=dict(request.query),
        )
        self.requests.append(rec)
        rec.done.set()
        return web.json_response({
            "method": request.method, "target": request.raw_path, "host": request.headers.get("Host"),
            "headers": [[k, v] for k, v in request.headers.items()], "body_size": len(raw),
        }, headers={"X-Echo": "1"})

    async def _respond(self, request: web.Request, sc: Scenario, rec: RecordedRequest) -> web.StreamResponse:
        if sc.delay_before_headers:
            await asyncio.sleep(sc.delay_before_headers)
        headers = {**sc.headers, "Content-Type": sc.content_type}
        if not sc.stream and sc.drop_after is None and sc.stall_after is None:
            return web.Response(status=sc.status, body=sc.body, headers=headers)
        response = web.StreamResponse(status=sc.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i, piece in enumerate(sc.split_body()):
            if sc.drop_after is not None and i >= sc.drop_after:
                return await self._drop(request, response, rec)
            if sc.stall_after is not None and i >= sc.stall_after:
                await asyncio.sleep(sc.stall_s)
            if i:
                await asyncio.sleep(sc.chunk_delay)
            await response.write(piece)
            rec.pieces_written += 1
        if sc.drop_after is not None:
            return await self._drop(request, response, rec)
        if sc.stall_after is not None and rec.pieces_written <= sc.stall_after:
            await asyncio.sleep(sc.stall_s)
        await response.write_eof()
        return response

    async def _drop(
        self, request: web.Request, response: web.StreamResponse, rec: RecordedRequest
    ) -> web.StreamResponse:
        """Cut the connection in the middle of the body: no terminating chunk reaches the client."""
        rec.dropped_by_mock = True
        await asyncio.sleep(0.01)  # let the pieces written so far leave first
        transport = request.transport
        if transport is not None:
            transport.abort()
        # Stay in the handler until aiohttp notices the lost connection and cancels it, so that it never
        # tries to finish the response on the closed socket.
        await asyncio.sleep(5)
        return response


def unused_port_url() -> str:
    """An ``http://127.0.0.1:<port>/v1`` on which nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
