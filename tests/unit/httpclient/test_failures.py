"""Failures become the gateway's errors, name the provider, and leave no connection half-used."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.core.errors import UpstreamConnectionError, UpstreamTimeoutError
from gomodel_proxy.httpclient import HttpClient
from gomodel_proxy.httpclient.resolver import Resolver
from tests.support.mock_upstream import unused_port_url

from .conftest import read_request


class Watched:
    """A handler that records when its client went away."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.gone_at = 0.0

    def mark(self) -> None:
        self.gone_at = time.perf_counter()
        self.gone.set()


def streaming(pieces: list[bytes], *, then: str, watched: Watched | None = None, gap: float = 0.0) -> Any:
    """A chunked answer that writes ``pieces`` and then stalls, drops the connection, or ends."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for piece in pieces:
                await response.write(piece)
                await asyncio.sleep(gap)
            if then == "stall":
                await asyncio.sleep(30)
            elif then == "drop":
                await asyncio.sleep(0.02)
                assert request.transport is not None
                request.transport.abort()
                await asyncio.sleep(5)
            await response.write_eof()
            return response
        except asyncio.CancelledError:
            if watched is not None:
                watched.mark()
            raise

    return handler


async def test_connection_refused(make_client: Any) -> None:
    client: HttpClient = make_client(unused_port_url(), name="down")
    with pytest.raises(UpstreamConnectionError) as caught:
        await client.request("GET", "/models")
    assert caught.value.message == "provider 'down' could not be reached: ConnectionRefusedError"
    assert caught.value.status == 502 and caught.value.code == "upstream_unreachable"


async def test_connect_timeout(make_client: Any, monkeypatch: Any) -> None:
    async def hang(self: Resolver, host: str) -> Any:
        await asyncio.sleep(30)

    monkeypatch.setattr(Resolver, "resolve", hang)
    client = make_client("http://api.example.test/v1", name="slow", connect_timeout_s=0.2)
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeoutError, match="provider 'slow'"):
        await client.request("GET", "/models")
    assert 0.15 < time.perf_counter() - started < 1.5
    assert client.pool.open_connections == 0


async def test_dns_failure_is_unreachable(make_client: Any, monkeypatch: Any) -> None:
    async def fail(self: Resolver, host: str) -> Any:
        raise OSError(None, "Domain name not found")

    monkeypatch.setattr(Resolver, "resolve", fail)
    client = make_client("https://no-such-host.invalid/v1", name="nx")
    with pytest.raises(UpstreamConnectionError, match="provider 'nx' could not be reached"):
        await client.request("GET", "/models")


async def test_read_timeout_before_headers(app_server: Any, make_client: Any) -> None:
    watched = Watched()

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            watched.mark()
            raise
        return web.Response()

    server = await app_server({("POST", "/v1/slow"): slow})
    client = make_client(server.url(), name="hang", read_timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeoutError) as caught:
        await client.request("POST", "/slow", b"", b"{}")
    elapsed = time.perf_counter() - started
    assert caught.value.message == "provider 'hang' did not answer in time" and caught.value.status == 504
    assert 0.25 < elapsed < 1.5
    await asyncio.wait_for(watched.gone.wait(), 1)  # the provider saw us go
    assert client.pool.open_connections == 0


@pytest.mark.parametrize("mode", ["chunks", "read"])
async def test_read_timeout_mid_body(app_server: Any, make_client: Any, mode: str) -> None:
    server = await app_server({("GET", "/v1/s"): streaming([b"one", b"two"], then="stall")})
    client = make_client(server.url(), read_timeout_s=0.3)
    resp = await client.request("GET", "/s")
    got: list[bytes] = []
    with pytest.raises(UpstreamTimeoutError, match="did not answer in time"):
        if mode == "chunks":
            async for chunk in resp.chunks():
                got.append(chunk)
        else:
            await resp.read()
    resp.release()
    if mode == "chunks":
        assert b"".join(got) == b"onetwo"  # what arrived is delivered before the error
    assert client.pool.open_connections == 0


async def test_read_timeout_is_an_idle_limit_not_a_deadline(app_server: Any, make_client: Any) -> None:
    pieces = [b"p%d" % i for i in range(8)]
    server = await app_server({("GET", "/v1/s"): streaming(pieces, then="end", gap=0.1)})
    client = make_client(server.url(), read_timeout_s=0.35)
    for _ in range(2):  # the second one on the reused connection and its long-lived timer
        resp = await client.request("GET", "/s")
        assert await resp.read() == b"".join(pieces)  # 0.8 s in all, never 0.35 s silent
        resp.release()
    assert server.connections == 1


@pytest.mark.parametrize("mode", ["chunks", "read"])
async def test_connection_dropped_mid_body(app_server: Any, make_client: Any, mode: str) -> None:
    server = await app_server({("GET", "/v1/s"): streaming([b"data: 1\n\n", b"data: 2\n\n"], then="drop")})
    client = make_client(server.url(), name="flaky")
    resp = await client.request("GET", "/s")
    got: list[bytes] = []
    with pytest.raises(UpstreamConnectionError) as caught:
        if mode == "chunks":
            async for chunk in resp.chunks():
                got.append(chunk)
        else:
            await resp.read()
    resp.release()
    assert caught.value.message == "provider 'flaky' closed the connection before the response ended"
    if mode == "chunks":
        assert b"".join(got) == b"data: 1\n\ndata: 2\n\n"
    assert client.pool.open_connections == 0


async def test_content_length_body_cut_short(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
        await writer.drain()
        writer.transport.abort()

    server = await raw_server(handler)
    resp = await make_client(server.url()).request("GET", "/x")
    with pytest.raises(UpstreamConnectionError, match="before the response ended"):
        await resp.read()
    resp.release()


async def test_release_of_a_half_read_body_closes_the_connection(app_server: Any, make_client: Any) -> None:
    watched = Watched()
    server = await app_server({("GET", "/v1/s"): streaming([b"first"], then="stall", watched=watched)})
    client = make_client(server.url())
    resp = await client.request("GET", "/s")
    assert await resp.chunks().__anext__() == b"first"
    released_at = time.perf_counter()
    resp.release()
    assert client.pool.open_connections == 0 and client.pool.idle_connections == 0
    await asyncio.wait_for(watched.gone.wait(), 1)
    assert watched.gone_at - released_at < 0.5


async def test_release_of_a_whole_but_unread_answer_keeps_the_connection(app_server: Any, make_client: Any) -> None:
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=b"small")

    server = await app_server({("GET", "/v1/small"): small})
    client = make_client(server.url())
    resp = await client.request("GET", "/small")
    await asyncio.sleep(0.05)  # the body is in, just not read: the connection is clean for the next one
    resp.release()
    assert client.pool.idle_connections == 1
    resp = await client.request("GET", "/small")
    assert await resp.read() == b"small"
    resp.release()
    assert server.connections == 1


async def test_cancelled_while_waiting_for_headers_aborts_at_once(app_server: Any, make_client: Any) -> None:
    watched = Watched()

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            watched.mark()
            raise
        return web.Response()

    server = await app_server({("POST", "/v1/slow"): slow})
    client = make_client(server.url())
    task = asyncio.create_task(client.request("POST", "/slow", b"", b"{}"))
    await asyncio.sleep(0.1)
    task.cancel()
    cancelled_at = time.perf_counter()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.pool.open_connections == 0
    await asyncio.wait_for(watched.gone.wait(), 1)
    assert watched.gone_at - cancelled_at < 0.5


@pytest.mark.parametrize("mode", ["chunks", "read"])
async def test_cancelled_while_reading_the_body_aborts_at_once(app_server: Any, make_client: Any, mode: str) -> None:
    watched = Watched()
    server = await app_server({("GET", "/v1/s"): streaming([b"first"], then="stall", watched=watched)})
    client = make_client(server.url())
    resp = await client.request("GET", "/s")

    async def consume() -> None:
        if mode == "chunks":
            async for _ in resp.chunks():
                pass
        else:
            await resp.read()

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.pool.open_connections == 0  # before any release()
    await asyncio.wait_for(watched.gone.wait(), 1)
    resp.release()


async def test_invalid_response_is_an_upstream_error(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server = await raw_server(handler)
    client = make_client(server.url(), name="weird")
    with pytest.raises(UpstreamConnectionError, match="provider 'weird' sent an invalid HTTP response"):
        await client.request("GET", "/x")
    assert client.pool.open_connections == 0


async def test_bytes_after_the_answer_make_the_connection_unusable(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server = await raw_server(handler)
    client = make_client(server.url())
    resp = await client.request("GET", "/x")
    assert await resp.read() == b"ok"
    resp.release()
    assert client.pool.open_connections == 0


async def test_unsolicited_bytes_on_an_idle_connection_close_it(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    server = await raw_server(handler)
    client = make_client(server.url())
    resp = await client.request("GET", "/x")
    assert await resp.read() == b"ok"
    resp.release()
    assert client.pool.idle_connections == 1
    await asyncio.sleep(0.3)
    assert client.pool.open_connections == 0


async def test_early_answer_while_the_body_is_sent(raw_server: Any, make_client: Any) -> None:
    """A server refusing a big body (413) before reading it: the answer comes through, no deadlock."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
        await writer.drain()
        await asyncio.sleep(2)

    server = await raw_server(handler)
    client = make_client(server.url(), read_timeout_s=3)
    resp = await asyncio.wait_for(client.request("POST", "/up", b"", b"z" * (32 * 1024 * 1024)), 2.5)
    assert resp.status == 413 and await resp.read() == b"too big!"
    resp.release()
    assert client.pool.open_connections == 0  # the body was not all sent: never reused
