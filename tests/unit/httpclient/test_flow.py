"""Flow control: a slow reader pauses the provider instead of buffering its answer; big bodies go out
in slices as the socket drains."""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from typing import Any

from aiohttp import web

from gomodel_proxy.httpclient import HttpClient
from gomodel_proxy.httpclient.connection import HIGH_WATER, Connection

MiB = 1024 * 1024


async def test_large_request_body_is_sent_whole_with_backpressure(
    app_server: Any, make_client: Any, monkeypatch: Any
) -> None:
    body = bytes(range(256)) * (40 * MiB // 256)
    pauses: list[int] = []
    original = Connection.pause_writing

    def counting(self: Connection) -> None:
        pauses.append(1)
        original(self)

    monkeypatch.setattr(Connection, "pause_writing", counting)

    async def digest(request: web.Request) -> web.Response:
        sha = hashlib.sha256()
        total = 0
        while True:
            piece = await request.content.read(64 * 1024)
            if not piece:
                break
            sha.update(piece)
            total += len(piece)
            if total < 4 * MiB:
                await asyncio.sleep(0.001)  # a slow start: the client must wait for the socket to drain
        return web.json_response({"sha": sha.hexdigest(), "len": total})

    server = await app_server({("POST", "/v1/up"): digest})
    client: HttpClient = make_client(server.url(), read_timeout_s=10)
    for _ in range(2):
        resp = await client.request("POST", "/up", b"Content-Type: application/octet-stream\r\n", body)
        assert resp.status == 200
        assert await resp.read() == (
            b'{"sha": "' + hashlib.sha256(body).hexdigest().encode() + b'", "len": ' + str(len(body)).encode() + b"}"
        )
        resp.release()
    assert pauses, "the transport never pushed back"
    assert server.connections == 1  # a fully sent request leaves the connection reusable


async def test_slow_reader_of_a_20_mb_answer_keeps_memory_bounded(app_server: Any, make_client: Any) -> None:
    piece = b"0123456789abcdef" * 4096  # 64 KiB
    count = 20 * MiB // len(piece)

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(count):
            await response.write(piece)
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/big"): big})
    client = make_client(server.url())
    resp = await client.request("GET", "/big")
    conn = resp._conn
    total = 0
    largest = 0
    paused_seen = False
    sha = hashlib.sha256()
    tracemalloc.start()
    try:
        async for chunk in resp.chunks():
            total += len(chunk)
            largest = max(largest, len(chunk))
            sha.update(chunk)
            await asyncio.sleep(0.02 if total < 2 * MiB else 0)  # slow at first: the buffer fills and pauses
            paused_seen = paused_seen or conn.read_paused
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    resp.release()
    assert total == 20 * MiB
    assert sha.hexdigest() == hashlib.sha256(piece * count).hexdigest()
    assert paused_seen, "reading never paused while the consumer lagged"
    # What waits in the client is bounded by the high-water mark plus one socket read, never the answer.
    assert largest <= HIGH_WATER + MiB
    assert peak < 8 * MiB, peak
    assert client.pool.idle_connections == 1


async def test_large_answer_read_whole(app_server: Any, make_client: Any) -> None:
    blob = bytes(range(256)) * (12 * MiB // 256)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=blob)

    server = await app_server({("GET", "/v1/big"): big})
    client = make_client(server.url())
    for _ in range(2):
        resp = await client.request("GET", "/big")
        assert await resp.read() == blob
        resp.release()
    assert server.connections == 1


async def test_a_paused_reader_is_not_a_provider_timeout(app_server: Any, make_client: Any) -> None:
    """While the consumer lags (reading paused), the provider's silence is ours, not a timeout."""
    piece = b"x" * 65536

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(200):  # 12.5 MiB: far more than the socket buffers and the high-water mark
            await response.write(piece)
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/big"): big})
    client = make_client(server.url(), read_timeout_s=0.25)
    resp = await client.request("GET", "/big")
    chunks = resp.chunks()
    total = len(await chunks.__anext__())
    await asyncio.sleep(0.2)
    assert resp._conn.read_paused
    await asyncio.sleep(0.6)  # well past the read timeout, paused all along
    async for chunk in chunks:
        total += len(chunk)
    resp.release()
    assert total == 200 * len(piece)
