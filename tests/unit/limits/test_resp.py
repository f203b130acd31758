"""The limiters' RESP connection: encoding, replies in order, errors in place, set-up, broken peers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from gomodel_proxy.limits.resp import RespConnection, RespError, RespPipeline, encode, parse_redis_url


def test_encode_writes_an_array_of_bulk_strings() -> None:
    assert encode(("SET", b"k\r\n", 12)) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n"


async def test_replies_come_back_in_order_with_errors_in_place(redis_url: str, redis_key_prefix: str) -> None:
    conn = RespConnection(redis_url.rsplit("/", 1)[0] + "/1", 1.0)  # database 1: SELECT on connect
    await conn.connect()
    key = f"{redis_key_prefix}resp"
    try:
        replies = await conn.roundtrip([("SET", key, "v"), ("INCR", key), ("GET", key), ("CLIENT", "INFO")])
        assert replies[0] == b"OK" and isinstance(replies[1], RespError) and replies[2] == b"v"
        assert b" db=1 " in replies[3]
        await conn.roundtrip([("DEL", key)])
    finally:
        conn.close()
    assert not conn.connected
    with pytest.raises(ConnectionError):
        await conn.roundtrip([("PING",)])


Serve = Callable[[bytes], Awaitable[bytes | None]]


@pytest.fixture
async def fake_redis() -> AsyncIterator[Callable[[Serve], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Serve) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(65536)
            reply = await answer(data)
            if reply is not None:
                writer.write(reply)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_refused_password_fails_the_connection(fake_redis: Callable[[Serve], Awaitable[int]]) -> None:
    async def refuse(data: bytes) -> bytes:
        assert b"AUTH" in data and b"s3cret" in data
        return b"-WRONGPASS invalid username-password pair\r\n"

    port = await fake_redis(refuse)
    conn = RespConnection(f"redis://:s3cret@127.0.0.1:{port}/0", 1.0)
    with pytest.raises(ConnectionError, match="WRONGPASS"):
        await conn.connect()
    assert not conn.connected


async def test_a_peer_that_hangs_up_or_stays_silent_breaks_the_connection(
    fake_redis: Callable[[Serve], Awaitable[int]]
) -> None:
    async def hang_up(data: bytes) -> None:
        return None

    async def silent(data: bytes) -> None:
        await asyncio.sleep(1)

    for answer, error in ((hang_up, ConnectionError), (silent, TimeoutError)):
        conn = RespConnection(f"redis://127.0.0.1:{await fake_redis(answer)}/0", 0.2)
        await conn.connect()
        with pytest.raises(error):
            await conn.roundtrip([("PING",)])
        assert not conn.connected  # a half-read connection is never reused


async def test_a_pipeline_batches_concurrent_callers_and_routes_each_reply(redis_url: str,
                                                                           redis_key_prefix: str) -> None:
    pipeline = RespPipeline(redis_url, 1.0)
    try:
        keys = [f"{redis_key_prefix}p{i}" for i in range(50)]
        assert await asyncio.gather(*[pipeline.call("SET", k, f"v{i}") for i, k in enumerate(keys)]) == [b"OK"] * 50
        writes: list[int] = []
        real = pipeline.connection.roundtrip

        async def counting(commands: Any) -> list[Any]:
            writes.append(len(commands))
            return await real(commands)

        pipeline.connection.roundtrip = counting  # type: ignore[method-assign]
        replies = await asyncio.gather(*[pipeline.call("GET", k) for k in keys], pipeline.call("LPUSH", keys[0], 1))
        assert replies[:50] == [f"v{i}".encode() for i in range(50)]
        assert isinstance(replies[50], RespError) and "WRONGTYPE" in str(replies[50])  # returned, not raised
        assert sum(writes) == 51 and len(writes) < 51  # round trips shared
        await pipeline.call("DEL", *keys)
    finally:
        await pipeline.close()
    assert not pipeline.connection.connected


async def test_a_pipeline_fails_the_calls_of_a_broken_round_trip_then_reconnects(
    fake_redis: Callable[[Serve], Awaitable[int]], redis_url: str
) -> None:
    async def hang_up(data: bytes) -> None:
        return None

    broken = RespPipeline(f"redis://127.0.0.1:{await fake_redis(hang_up)}/0", 0.3)
    results = await asyncio.gather(broken.call("PING"), broken.call("PING"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    await broken.close()
    closed = RespPipeline("redis://127.0.0.1:1/0", 0.3)  # nothing listens on port 1
    with pytest.raises(ConnectionError):
        await closed.call("PING")
    await closed.close()
    pipeline = RespPipeline(redis_url, 1.0)
    assert await pipeline.call("PING") == b"PONG"
    pipeline.connection.close()  # lost between calls: the next call reconnects
    assert await pipeline.call("PING") == b"PONG"
    await pipeline.close()


async def test_a_silent_redis_times_the_caller_out(fake_redis: Callable[[Serve], Awaitable[int]]) -> None:
    async def silent(data: bytes) -> None:
        await asyncio.sleep(2)

    pipeline = RespPipeline(f"redis://127.0.0.1:{await fake_redis(silent)}/0", 0.2)
    with pytest.raises(TimeoutError):
        await pipeline.call("PING")
    await pipeline.close()


async def test_closing_a_pipeline_mid_round_trip_cancels_its_callers(
    fake_redis: Callable[[Serve], Awaitable[int]]
) -> None:
    async def silent(data: bytes) -> None:
        await asyncio.sleep(2)

    pipeline = RespPipeline(f"redis://127.0.0.1:{await fake_redis(silent)}/0", 1.0)
    caller = asyncio.create_task(pipeline.call("PING"))
    await asyncio.sleep(0.05)
    await pipeline.close()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not pipeline.connection.connected


@pytest.mark.parametrize(("url", "parsed"), [
    ("redis://127.0.0.1:6379/0", {"host": "127.0.0.1", "port": 6379, "db": 0, "tls": False}),
    ("redis://:pw@cache:6380/3", {"host": "cache", "port": 6380, "password": "pw", "db": 3, "tls": False}),
    ("rediss://bob:p%40ss@cache/2", {"host": "cache", "username": "bob", "password": "p@ss", "db": 2, "tls": True}),
    ("unix:///run/redis.sock?db=4", {"path": "/run/redis.sock", "db": 4, "tls": False}),
    ("redis://cache/1?db=5", {"host": "cache", "db": 5, "tls": False}),
])
def test_redis_urls_read_as_redis_py_reads_them(url: str, parsed: dict[str, object]) -> None:
    assert parse_redis_url(url) == parsed


@pytest.mark.parametrize(("url", "says"), [
    ("http://cache:6379", "schemes"),
    ("redis://:s3cret@cache:63x9/0", "Port could not be cast"),
    ("redis://:s3cret@cache/zero", "Database could not be cast"),
])
def test_a_bad_redis_url_names_the_part_and_never_the_password(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_redis_url(url)
    assert "s3cret" not in str(caught.value)
