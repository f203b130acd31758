"""server.http1 without sockets: the request facade, the stream writer's framing and back-pressure, the
serialization of whole answers, idle sweeping. (tests/e2e/test_http1.py drives it over real connections.)"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_writer import HttpVersion10, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

from gomodel_proxy.server import http1
from gomodel_proxy.server.http1 import (
    HOT_PATHS,
    Http1Protocol,
    Http1Server,
    ParsedRequest,
    TransportWriter,
    hot_routes,
    http_date,
    serialize,
)
from tests.support.live_objects import live


class FakeTransport:
    """What the protocol and the writer use of a transport: writes recorded, closing tracked."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.reading_paused = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.7", 51000) if name == "peername" else default


def server() -> Http1Server:
    app = web.Application()
    return Http1Server(app, web.Server(lambda request: None), {}, body_limit=0)  # type: ignore[arg-type, return-value]


def connected() -> tuple[Http1Protocol, FakeTransport]:
    protocol = server()()
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def request(protocol: Http1Protocol, transport: FakeTransport, target: str = "/v1/chat/completions?a=1&b=2",
            body: bytes = b"{}") -> ParsedRequest:
    headers = CIMultiDictProxy(CIMultiDict([("Content-Type", "application/json"), ("X-Thing", "1")]))
    return ParsedRequest(protocol.app, "POST", target, headers, body, HttpVersion11, True,
                         TransportWriter(protocol), transport)  # type: ignore[arg-type]


async def test_parsed_request_is_the_part_of_aiohttps_request_the_routes_use() -> None:
    protocol, transport = connected()
    req = request(protocol, transport)
    assert req.app is protocol.app and req.method == "POST"
    assert req.path == "/v1/chat/completions"
    assert req.rel_url.path == "/v1/chat/completions" and dict(req.query) == {"a": "1", "b": "2"}
    assert req.headers["content-type"] == "application/json"
    assert req.keep_alive and req.version == HttpVersion11
    assert req.transport is transport  # type: ignore[comparison-overlap]
    assert req.remote == "203.0.113.7"
    assert await req.read() == b"{}" and req.body_exists and not req.can_read_body
    key = web.RequestKey("k", int)
    req[key] = 1  # the per-request state the edge keeps its call record in
    assert req[key] == 1


async def test_stream_writer_frames_chunks_and_ends_the_body() -> None:
    protocol, transport = connected()
    writer = TransportWriter(protocol)
    writer.enable_chunking()
    await writer.write_headers("HTTP/1.1 200 OK", CIMultiDict([("Content-Type", "text/event-stream")]))
    assert transport.written == []  # headers go with the first write or send_headers
    await writer.write(b"data: 1\n\n")
    await writer.write(b"")  # nothing to frame: nothing written
    await writer.write_eof(b"data: [DONE]\n\n")
    assert transport.written == [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
        b"9\r\ndata: 1\n\n\r\n",
        b"e\r\ndata: [DONE]\n\n\r\n",
        b"0\r\n\r\n",
    ]
    assert writer.output_size == sum(len(w) for w in transport.written)
    with pytest.raises(NotImplementedError):
        writer.enable_compression()


async def test_unchunked_writer_and_headers_sent_alone() -> None:
    protocol, transport = connected()
    writer = TransportWriter(protocol)
    await writer.write_headers("HTTP/1.0 200 OK", CIMultiDict([("Content-Length", "2")]))
    writer.send_headers()
    await writer.write(memoryview(b"ok"))
    await writer.write_eof()
    assert transport.written == [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"]
    other = TransportWriter(protocol)
    await other.write_headers("HTTP/1.1 204 No Content", CIMultiDict())
    await other.write_eof()  # no body: the head alone
    assert transport.written[-1] == b"HTTP/1.1 204 No Content\r\n\r\n"


async def test_writer_waits_while_the_client_reads_slowly_and_fails_once_it_is_gone() -> None:
    protocol, transport = connected()
    writer = TransportWriter(protocol)
    protocol.pause_writing()
    waiting = asyncio.create_task(writer.write(b"x"))
    await asyncio.sleep(0.01)
    assert not waiting.done() and transport.written == [b"x"]  # written, then waiting for the drain
    protocol.resume_writing()
    await asyncio.wait_for(waiting, 1)
    await writer.drain()  # not paused: returns at once
    protocol.pause_writing()
    drained = asyncio.create_task(writer.drain())
    await asyncio.sleep(0.01)
    protocol.connection_lost(None)  # the client left while the writer waited
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(drained, 1)
    with pytest.raises(ConnectionResetError):
        await writer.write(b"more")
    with pytest.raises(ConnectionResetError):
        await protocol.drained()


async def test_serialize_whole_answers() -> None:
    response = web.Response(status=200, body=b'{"a":1}', headers={"X-Request-ID": "r1", "Content-Length": "99"},
                            content_type="application/json")
    raw = serialize(response, HttpVersion11, keep_alive=True)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b'{"a":1}'
    assert b"Content-Length: 7" in lines and b"Content-Length: 99" not in lines  # its own, from the body
    assert b"X-Request-ID: r1" in lines and b"Date: " + http_date() in lines
    assert b"Connection: close" not in lines
    closing = serialize(web.Response(status=204), HttpVersion11, keep_alive=False)
    assert b"Connection: close\r\n" in closing and b"Content-Length" not in closing
    old = serialize(web.Response(status=200, text="hi"), HttpVersion10, keep_alive=True)
    assert old.startswith(b"HTTP/1.0 200 OK\r\n") and b"Connection: keep-alive\r\n" in old
    bare = serialize(web.Response(status=599, body=b"x"), HttpVersion11, keep_alive=True)
    assert bare.startswith(b"HTTP/1.1 599 Unknown\r\n")
    assert b"Content-Type: application/octet-stream\r\n" in bare


async def test_idle_connections_are_swept_and_busy_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = server()
    idle, busy = srv(), srv()
    idle_transport, busy_transport = FakeTransport(), FakeTransport()
    idle.connection_made(idle_transport)  # type: ignore[arg-type]
    busy.connection_made(busy_transport)  # type: ignore[arg-type]
    busy.busy = True
    monkeypatch.setattr(http1, "KEEPALIVE_S", -1.0)  # every idle connection is past the keep-alive
    srv._sweep()
    assert idle_transport.closing and not busy_transport.closing
    assert srv._sweeper is not None
    srv._sweeper.cancel()


def test_hot_routes_are_the_model_apis_posts() -> None:
    app = web.Application()

    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.Response()

    for path in HOT_PATHS:
        app.router.add_post(path, handler)
    app.router.add_get("/v1/chat/completions", handler)  # a GET on a hot path stays aiohttp's
    app.router.add_post("/v1/other", handler)
    routes = hot_routes(app)
    assert set(routes) == {p.encode() for p in HOT_PATHS}


async def test_a_closed_connection_is_freed_at_once_not_left_to_the_garbage_collector() -> None:
    """The parser holds its protocol and the protocol its parser: the cycle is cut when the connection
    ends, so a finished connection (and what its last request held) goes with its last reference, not at
    the next full collection, which the gateway's thresholds make rare (RSS grew with every connection)."""
    gc.collect()
    before = live(Http1Protocol)
    gc.disable()
    try:
        for _ in range(20):
            protocol, _transport = connected()
            protocol.connection_lost(None)
            del protocol, _transport
        assert live(Http1Protocol) == before
    finally:
        gc.enable()
