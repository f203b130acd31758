"""The answer stores: the local one (with its snapshot) and the Redis one, against the real Redis."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from gomodel_proxy.cache.memory_store import CachedAnswer
from gomodel_proxy.cache.store import (
    MAGIC,
    AnswerStore,
    CacheUnavailableError,
    LocalAnswerStore,
    RedisAnswerStore,
    decode_answer,
    encode_answer,
    mask_url,
)

META = {"usage": {"input_tokens": 12, "output_tokens": 3, "cached_tokens": 0, "reasoning_tokens": 0},
        "provider": "openai", "model": "gpt-4o-mini"}


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def answer(body: bytes = b'{"ok":true}', *, stored_at: float = 1000.0, ttl_s: float = 60.0,
           stream: bool = False, meta: dict[str, object] | None = None) -> CachedAnswer:
    return CachedAnswer(status=200, content_type="application/json", body=body, stored_at=stored_at, ttl_s=ttl_s,
                        stream=stream, meta=META if meta is None else meta)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- local ---------------------------------------------------------------------------------------------


async def test_local_store_put_get_and_protocol() -> None:
    store: AnswerStore = LocalAnswerStore(100_000, clock=Clock())
    await store.put("k", answer())
    got = await store.get("k")
    assert got is not None and got.meta == META
    assert await store.get("other") is None
    await store.close()


async def test_local_store_without_snapshot_start_and_close_are_harmless() -> None:
    store = LocalAnswerStore(100_000)
    await store.start()
    await store.put("k", answer(stored_at=time.time()))
    assert store.memory.entries == 1
    await store.close()
    await store.close()  # twice is fine
    assert await store.get("k") is None  # closed: nothing served
    await store.put("k2", answer(stored_at=time.time()))
    assert store.memory.entries == 1  # nor stored


async def test_local_store_snapshot_round_trip_keeps_meta(tmp_path: Path) -> None:
    path = tmp_path / "snap" / "cache.json"
    first = LocalAnswerStore(100_000, snapshot=path, clock=Clock())
    await first.start()  # no file yet: empty
    assert first.memory.entries == 0
    await first.put("k", answer(b"body", stream=True))
    await first.put("inf", answer(ttl_s=math.inf, meta={}))
    await first.close()
    assert path.is_file()
    second = LocalAnswerStore(100_000, snapshot=path, clock=Clock())
    await second.start()
    got = await second.get("k")
    assert got is not None
    assert (got.body, got.stream, got.meta, got.ttl_s) == (b"body", True, META, 60.0)
    inf = await second.get("inf")
    assert inf is not None and inf.ttl_s == math.inf and inf.meta == {}


async def test_local_store_corrupt_snapshot_starts_cold(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(b"garbage")
    store = LocalAnswerStore(100_000, snapshot=path)
    await store.start()
    assert store.memory.entries == 0


_ENTRY = b'"key": "k", "status": 200, "content_type": "a", "body": "", "age": 0, "ttl_s": 9, "stream": false'


@pytest.mark.parametrize(
    ("entry", "loads"),
    [
        (b'{' + _ENTRY + b', "meta": {"model": "m"}}', True),
        (b'{' + _ENTRY + b'}', False),  # version 2 requires meta
        (b'{' + _ENTRY + b', "meta": []}', False),
        (b'{' + _ENTRY.replace(b'"status": 200', b'"status": true') + b', "meta": {}}', False),
        (b'{' + _ENTRY.replace(b'"ttl_s": 9', b'"ttl_s": "9"') + b', "meta": {}}', False),
        (b'{' + _ENTRY.replace(b'"stream": false', b'"stream": 0') + b', "meta": {}}', False),
    ],
)
async def test_local_store_snapshot_v2_layout(tmp_path: Path, entry: bytes, loads: bool) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(b'{"version": 2, "saved_at": 9e12, "entries": [' + entry + b"]}")
    store = LocalAnswerStore(100_000, snapshot=path, clock=Clock())
    await store.start()
    got = await store.get("k")
    assert (got is not None) == loads
    if got is not None:
        assert got.meta == {"model": "m"}


async def test_local_store_v1_snapshot_loads_with_empty_meta(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(b'{"version": 1, "saved_at": 9e12, "entries": [{' + _ENTRY + b"}]}")
    store = LocalAnswerStore(100_000, snapshot=path, clock=Clock())
    await store.start()
    got = await store.get("k")
    assert got is not None and got.meta == {}


async def test_local_store_close_reports_an_unwritable_snapshot(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = LocalAnswerStore(100_000, snapshot=blocker / "cache.json", clock=Clock())
    await store.put("k", answer())
    with pytest.raises(OSError):
        await store.close()


# -- the Redis value layout ----------------------------------------------------------------------------


def test_encode_decode_round_trip_dates_by_wall_clock() -> None:
    value = encode_answer(answer(b"\x00binary\xff", stored_at=990.0, ttl_s=30.0), wall_now=5000.0, now=1000.0)
    assert value.startswith(MAGIC) and value.endswith(b"\x00binary\xff")
    # read by another process, whose monotonic clock reads 20 and whose wall clock is 3 s later
    got = decode_answer(value, wall_now=5003.0, now=20.0)
    assert got.body == b"\x00binary\xff"
    assert got.stored_at == pytest.approx(20.0 - 13.0)
    assert (got.status, got.content_type, got.ttl_s, got.stream, got.meta) == (
        200, "application/json", 30.0, False, META)


def test_encode_decode_infinite_ttl() -> None:
    got = decode_answer(encode_answer(answer(ttl_s=math.inf), wall_now=1.0, now=1000.0), wall_now=1.0, now=5.0)
    assert got.ttl_s == math.inf


def _value(header: object, body: bytes = b"") -> bytes:
    raw = orjson.dumps(header)
    return MAGIC + struct.pack(">I", len(raw)) + raw + body


GOOD = {"status": 200, "content_type": "a", "stream": False, "ttl_s": 5, "age": 0, "wall": 0, "meta": {}}


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"GMC1",
        b"XXXX\x00\x00\x00\x00",
        MAGIC + struct.pack(">I", 100) + b"{}",
        MAGIC + struct.pack(">I", 3) + b"{{{",
        _value([1, 2]),
        _value({**GOOD, "meta": []}),
        _value({**GOOD, "status": "200"}),
        _value({**GOOD, "status": True}),
        _value({**GOOD, "stream": 1}),
        _value({**GOOD, "content_type": 1}),
        _value({**GOOD, "age": "0"}),
        _value({k: v for k, v in GOOD.items() if k != "wall"}),
    ],
)
def test_malformed_values_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_answer(value, wall_now=0.0, now=0.0)
    assert decode_answer(_value(GOOD, b"b"), wall_now=0.0, now=0.0).body == b"b"  # the control case decodes


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("redis://:s3cret@cache.local:6380/2") == "redis://:***@cache.local:6380/2"
    assert mask_url("rediss://user:s3cret@[::1]/0") == "rediss://user:***@[::1]/0"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("redis://:pw@host:notaport/0") == "<unparsable redis url>"


@pytest.mark.parametrize("url", ["redis://:pw-x@host:notaport/0", "redis://:pw-x@[::1/0"])
def test_unusable_url_is_refused_without_password(url: str) -> None:
    with pytest.raises(ValueError, match="not a usable Redis URL") as info:
        RedisAnswerStore(url)
    assert "pw-x" not in str(info.value)


# -- Redis (real) --------------------------------------------------------------------------------------


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisAnswerStore]:
    store = RedisAnswerStore(redis_url, prefix=redis_key_prefix, timeout_s=1.0)
    yield store
    await store.close()


async def test_redis_round_trip_with_ttl(redis_store: RedisAnswerStore, raw_redis: aioredis.Redis,
                                         redis_key_prefix: str) -> None:
    stored = answer(b"data: x\n\n", stored_at=time.time() - 10.0, ttl_s=70.0, stream=True)
    await redis_store.put("chat:abc", stored)
    got = await redis_store.get("chat:abc")
    assert got is not None
    assert (got.body, got.stream, got.status, got.content_type, got.meta, got.ttl_s) == (
        stored.body, True, 200, "application/json", META, 70.0)
    assert got.stored_at == pytest.approx(stored.stored_at, abs=0.5)
    pttl = await raw_redis.pttl(redis_key_prefix + "chat:abc")
    assert 58_000 < pttl <= 60_000  # the rest of its TTL, not the whole
    assert await redis_store.get("chat:missing") is None


async def test_redis_infinite_ttl_has_no_expiry(redis_store: RedisAnswerStore, raw_redis: aioredis.Redis,
                                                redis_key_prefix: str) -> None:
    await redis_store.put("k", answer(stored_at=time.time(), ttl_s=math.inf))
    assert await raw_redis.pttl(redis_key_prefix + "k") == -1
    got = await redis_store.get("k")
    assert got is not None and got.ttl_s == math.inf


async def test_redis_expires_by_px(redis_store: RedisAnswerStore) -> None:
    await redis_store.put("k", answer(stored_at=time.time(), ttl_s=0.05))
    await asyncio.sleep(0.15)
    assert await redis_store.get("k") is None


async def test_redis_refuses_expired_and_oversize(redis_url: str, redis_key_prefix: str,
                                                  raw_redis: aioredis.Redis) -> None:
    store = RedisAnswerStore(redis_url, prefix=redis_key_prefix, max_entry_bytes=1000)
    try:
        await store.put("old", answer(stored_at=time.time() - 100.0, ttl_s=10.0))
        await store.put("big", answer(b"x" * 2000, stored_at=time.time()))
        assert await raw_redis.exists(redis_key_prefix + "old", redis_key_prefix + "big") == 0
        assert store.oversize == 1
    finally:
        await store.close()


async def test_redis_answer_expired_by_clock_is_a_miss(redis_url: str, redis_key_prefix: str) -> None:
    clock, wall = Clock(1000.0), Clock(5000.0)
    store = RedisAnswerStore(redis_url, prefix=redis_key_prefix, clock=clock, wall=wall)
    try:
        await store.put("k", answer(stored_at=995.0, ttl_s=30.0))
        wall.now += 26.0  # Redis has not expired it yet (its PX is real time); the answer knows it is stale
        assert await store.get("k") is None
    finally:
        await store.close()


@pytest.mark.parametrize("value", [b"garbage", MAGIC + b"\x00\x00\x00\x02{}"])
async def test_redis_corrupt_value_is_a_miss_and_deleted(redis_store: RedisAnswerStore, raw_redis: aioredis.Redis,
                                                         redis_key_prefix: str, value: bytes) -> None:
    await raw_redis.set(redis_key_prefix + "k", value)
    assert await redis_store.get("k") is None
    assert await raw_redis.exists(redis_key_prefix + "k") == 0
    assert redis_store.corrupt == 1


async def test_redis_wrong_type_is_a_miss_and_deleted(redis_store: RedisAnswerStore, raw_redis: aioredis.Redis,
                                                      redis_key_prefix: str) -> None:
    await raw_redis.rpush(redis_key_prefix + "k", "x")
    assert await redis_store.get("k") is None
    assert await raw_redis.exists(redis_key_prefix + "k") == 0


async def test_redis_shared_between_instances(redis_url: str, redis_key_prefix: str) -> None:
    one = RedisAnswerStore(redis_url, prefix=redis_key_prefix)
    two = RedisAnswerStore(redis_url, prefix=redis_key_prefix)
    try:
        await one.put("k", answer(b"shared", stored_at=time.time()))
        got = await two.get("k")
        assert got is not None and got.body == b"shared"
    finally:
        await one.close()
        await two.close()


async def test_redis_down_raises_quickly_without_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    store = RedisAnswerStore(url, timeout_s=0.25)
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailableError) as info:
            await store.get("k")
        with pytest.raises(CacheUnavailableError):
            await store.put("k", answer(stored_at=time.time()))
        assert time.monotonic() - started < 1.0
        assert "hunter2" not in str(info.value)
        assert "127.0.0.1" in str(info.value)
    finally:
        await store.close()


async def test_redis_silent_server_times_out() -> None:
    """A server that accepts and never answers costs about ``timeout_s``, never a hang."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisAnswerStore(f"redis://:pw-secret@127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailableError) as info:
            await store.get("k")
        assert time.monotonic() - started < 1.0
        assert "pw-secret" not in str(info.value)
    finally:
        await store.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_redis_refusing_writes_is_unavailable(redis_store: RedisAnswerStore, raw_redis: aioredis.Redis,
                                                    redis_key_prefix: str) -> None:
    """An error answer from Redis other than WRONGTYPE (here: a bad argument) is unavailability, not a crash."""
    bad = answer(stored_at=time.time())
    with pytest.raises(CacheUnavailableError, match="RespError: ERR invalid expire time"):
        await redis_store._call("SET", redis_key_prefix + "x", "v", "PX", -5)
    await redis_store.put("fine", bad)
    assert await redis_store.get("fine") is not None
