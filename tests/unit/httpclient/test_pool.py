"""Keep-alive reuse, the server ending idle connections, stale-connection retry, the connection cap."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.core.errors import UpstreamConnectionError
from gomodel_proxy.httpclient import HttpClient
from gomodel_proxy.httpclient.connection import Connection
from tests.support.live_objects import live
from tests.support.mock_upstream import unused_port_url

from .conftest import read_request

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"hello")


async def get(client: HttpClient, path: str = "/h", body: bytes | None = None) -> bytes:
    resp = await client.request("POST" if body is not None else "GET", path, b"", body)
    try:
        return await resp.read()
    finally:
        resp.release()


async def test_sequential_requests_share_one_connection(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/h"): hello, ("POST", "/v1/h"): hello})
    client = make_client(server.url())
    for i in range(10):
        assert await get(client, body=b"x" * i if i % 2 else None) == b"hello"
    assert server.connections == 1 and len(server.requests) == 10
    assert client.pool.open_connections == 1 and client.pool.idle_connections == 1


async def test_concurrency_opens_connections_then_reuses_the_latest(app_server: Any, make_client: Any) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(body=request.query.get("n", "").encode())

    server = await app_server({("GET", "/v1/held"): held})
    client = make_client(server.url())
    tasks = [asyncio.create_task(get(client, f"/held?n={i}")) for i in range(4)]
    await asyncio.sleep(0.1)
    gate.set()
    assert sorted(await asyncio.gather(*tasks)) == [b"0", b"1", b"2", b"3"]
    assert server.connections == 4 and client.pool.idle_connections == 4
    last_back = client.pool._idle[-1]
    resp = await client.request("GET", "/held?n=9")
    assert resp._conn is last_back  # LIFO: the most recently used one
    await resp.read()
    resp.release()
    assert server.connections == 4


async def test_connection_close_answer_is_not_reused(app_server: Any, make_client: Any) -> None:
    async def closing(request: web.Request) -> web.Response:
        return web.Response(body=b"bye", headers={"Connection": "close"})

    server = await app_server({("GET", "/v1/c"): closing})
    client = make_client(server.url())
    assert await get(client, "/c") == b"bye"
    assert client.pool.open_connections == 0
    assert await get(client, "/c") == b"bye"
    assert server.connections == 2


async def test_server_ending_idle_keepalive_is_transparent(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/h"): hello}, keepalive_timeout=0.1)
    client = make_client(server.url())
    assert await get(client) == b"hello"
    await asyncio.sleep(0.3)  # the server closes the idle connection; the pool notices
    assert client.pool.open_connections == 0
    assert await get(client) == b"hello"
    assert server.connections == 2


async def test_stale_keepalive_is_retried_once_on_a_new_connection(raw_server: Any, make_client: Any) -> None:
    """The race the pool cannot see: the server drops a kept-alive connection just as a request goes out."""
    requests: list[tuple[int, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_no = server.connections
        _, body = await read_request(reader)
        requests.append((conn_no, body))
        writer.write(OK)
        await writer.drain()
        _, body = await read_request(reader)  # the next request on this connection...
        requests.append((conn_no, body))
        writer.transport.abort()  # ...is never answered

    server = await raw_server(handler)
    client = make_client(server.url())
    assert await get(client, body=b"one") == b"ok"
    assert await get(client, body=b"two") == b"ok"
    assert requests == [(1, b"one"), (1, b"two"), (2, b"two")]
    assert server.connections == 2


async def test_stale_retry_under_a_connection_cap(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        writer.transport.abort()

    server = await raw_server(handler)
    client = make_client(server.url(), max_connections=1)
    for _ in range(3):
        assert await get(client) == b"ok"
    assert server.connections == 3 and client.pool.open_connections == 1


async def test_fresh_connection_closed_without_answer_is_not_retried(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    server = await raw_server(handler)
    client = make_client(server.url())
    with pytest.raises(UpstreamConnectionError, match="provider 'test-up' closed the connection without answering"):
        await get(client, body=b"x")
    assert server.connections == 1
    assert client.pool.open_connections == 0


async def test_retry_that_fails_again_is_an_error(raw_server: Any, make_client: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if server.connections == 1:
            writer.write(OK)
            await writer.drain()
            await read_request(reader)
        writer.transport.abort()

    server = await raw_server(handler)
    client = make_client(server.url())
    assert await get(client) == b"ok"
    with pytest.raises(UpstreamConnectionError, match="without answering"):
        await get(client)
    assert server.connections == 2  # one retry, no more


async def test_idle_connections_close_after_keepalive(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/h"): hello})
    client = make_client(server.url(), keepalive_s=0.15)
    await asyncio.gather(get(client), get(client), get(client))
    assert client.pool.idle_connections >= 2
    await asyncio.sleep(0.05)
    assert await get(client) == b"hello"  # one stays fresh for a while
    await asyncio.sleep(0.4)
    assert client.pool.open_connections == 0 and client.pool.idle_connections == 0
    assert await get(client) == b"hello"


async def test_max_connections_makes_requests_wait_in_order(app_server: Any, make_client: Any) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def held(request: web.Request) -> web.Response:
        n = request.query["n"]
        order.append(n)
        if n == "0":
            await gate.wait()
        return web.Response(body=n.encode())

    server = await app_server({("GET", "/v1/held"): held})
    client = make_client(server.url(), max_connections=1)
    first = asyncio.create_task(get(client, "/held?n=0"))
    await asyncio.sleep(0.05)
    rest = []
    for i in range(1, 5):
        rest.append(asyncio.create_task(get(client, f"/held?n={i}")))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert order == ["0"] and not any(t.done() for t in rest)  # all wait for the one connection
    gate.set()
    assert await first == b"0"
    assert [await t for t in rest] == [b"1", b"2", b"3", b"4"]
    assert order == ["0", "1", "2", "3", "4"]  # served in arrival order
    assert server.connections == 1 and client.pool.open_connections == 1


async def test_cancelled_waiter_leaves_no_slot_behind(app_server: Any, make_client: Any) -> None:
    gate = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await gate.wait()
        return web.Response(body=b"done")

    server = await app_server({("GET", "/v1/held"): held})
    client = make_client(server.url(), max_connections=1)
    first = asyncio.create_task(get(client, "/held"))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(get(client, "/held"))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert await first == b"done"
    assert await get(client, "/held") == b"done"
    assert client.pool.open_connections == 1 and not client.pool._waiters


async def test_failed_connect_frees_its_slot_for_a_waiter(make_client: Any) -> None:
    client = make_client(unused_port_url(), max_connections=1)
    results = await asyncio.gather(*(get(client, "/x") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, UpstreamConnectionError) for r in results)
    assert client.pool.open_connections == 0


async def test_close_aborts_idle_and_busy_connections(app_server: Any, make_client: Any) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"x")
        await asyncio.sleep(30)
        return response

    server = await app_server({("GET", "/v1/h"): hello, ("GET", "/v1/s"): stall})
    client = make_client(server.url())
    assert await get(client) == b"hello"
    busy = await client.request("GET", "/s")
    await client.close()
    assert client.pool.open_connections == 0
    with pytest.raises(UpstreamConnectionError):
        await busy.read()
    busy.release()
    with pytest.raises(UpstreamConnectionError, match="closed"):
        await get(client)


class _Owner:
    def put_back(self, conn: Any) -> None:
        raise AssertionError("not used")

    def discard(self, conn: Any) -> None:
        pass


class _Transport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_a_closed_connection_is_freed_at_once_not_left_to_the_garbage_collector() -> None:
    """The parser holds its connection and the connection its parser: the cycle is cut when the connection
    is lost, so it (and the call it served last) goes with its last reference, not at a full collection."""
    gc.collect()
    before = live(Connection)
    loop = asyncio.get_running_loop()
    gc.disable()
    try:
        for _ in range(20):
            conn = Connection(loop, _Owner(), "upstream", 5.0)
            conn.connection_made(_Transport())  # type: ignore[arg-type]
            conn.connection_lost(None)
            del conn
        assert live(Connection) == before
    finally:
        gc.enable()
