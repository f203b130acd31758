"""Where cached answers live: one process's memory, or a Redis that every gateway instance shares.

The gateway talks to either through :class:`AnswerStore`, so the request chain does not care which it has.
``CachedAnswer.stored_at`` is read against each store's ``clock``, by default the wall clock (``time.time``),
which is what the request chain stamps answers with; pass another clock to both sides or neither.

* :class:`LocalAnswerStore` wraps :class:`MemoryStore`; its optional snapshot file keeps the cache warm across
  restarts. The file is read and written in a worker thread so that a large snapshot never stalls the event loop.
* :class:`RedisAnswerStore` keeps one Redis string per key, expiring through ``PX`` so that Redis, not the
  gateway, forgets old answers. A cache must never make a request slower than having no cache: every call is
  bounded by ``timeout_s`` (short socket and connect timeouts, no retries, and an outer deadline), and a Redis
  that cannot answer raises :class:`CacheUnavailableError`, which the caller treats as "no cache" for that
  request. Its message never carries the URL's password.

The Redis value is a small binary layout rather than pickle (which would run code from whoever can write to
Redis): ``MAGIC``, a 4-byte big-endian header length, an orjson header (status, content type, stream flag,
TTL, age, the wall time of the write, meta), then the body bytes untouched. An entry travels as its age plus the
wall time of the write, so a store given a monotonic clock (each process's has its own origin) still dates it
right. A value that does not decode reads as a miss and is deleted, so one bad write cannot keep failing.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from gomodel_proxy.cache.answer_store import AnswerStore, CacheUnavailableError
from gomodel_proxy.cache.memory_store import CachedAnswer, MemoryStore

__all__ = ["AnswerStore", "CacheUnavailableError", "LocalAnswerStore", "RedisAnswerStore"]

#: First bytes of every value this module writes; a bump makes old values misses (and deletes them).
MAGIC = b"GMC1"
_LENGTH = struct.Struct(">I")
#: Default bound on a Redis value: larger answers are not shared (they would slow every reader down).
DEFAULT_MAX_ENTRY_BYTES = 8 * 1024 * 1024


class LocalAnswerStore:
    """This process's :class:`MemoryStore`, optionally loaded from a snapshot at start and saved at close.

    Call :meth:`start` before serving: until it returns, the store is empty. After :meth:`close` it holds
    nothing and stores nothing, so the snapshot being written cannot change under the writer.
    """

    def __init__(self, max_bytes: int, *, snapshot: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._max_bytes = max_bytes
        self._snapshot = snapshot
        self._clock = clock
        self._memory = MemoryStore(max_bytes, clock=clock)
        self._closed = False

    @property
    def memory(self) -> MemoryStore:
        """The underlying store (for its counters)."""
        return self._memory

    async def start(self) -> None:
        """Load the snapshot, if one is configured (a missing or corrupt one gives an empty store)."""
        if self._snapshot is not None:
            self._memory = await asyncio.to_thread(MemoryStore.load, self._snapshot, self._max_bytes, self._clock)

    async def get(self, key: str) -> CachedAnswer | None:
        """The live answer for ``key``, or ``None``."""
        return None if self._closed else self._memory.get(key)

    async def put(self, key: str, answer: CachedAnswer) -> None:
        """Store ``answer`` (see :meth:`MemoryStore.put` for what is refused)."""
        if not self._closed:
            self._memory.put(key, answer)

    async def close(self) -> None:
        """Stop serving and save the snapshot, if configured; raises ``OSError`` when it cannot be written."""
        if self._closed:
            return
        self._closed = True
        if self._snapshot is not None:
            await asyncio.to_thread(self._memory.save, self._snapshot)


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``: where it points stays readable."""
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        port = parts.port
    except ValueError:
        return "<unparsable redis url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def encode_answer(answer: CachedAnswer, *, wall_now: float, now: float) -> bytes:
    """The Redis value of ``answer`` (its age measured at ``now`` on its clock, written at ``wall_now``)."""
    header = orjson.dumps({
        "status": answer.status,
        "content_type": answer.content_type,
        "stream": answer.stream,
        "ttl_s": answer.ttl_s if math.isfinite(answer.ttl_s) else None,
        "age": max(0.0, now - answer.stored_at),
        "wall": wall_now,
        "meta": dict(answer.meta),
    })
    return MAGIC + _LENGTH.pack(len(header)) + header + answer.body


def decode_answer(value: bytes, *, wall_now: float, now: float) -> CachedAnswer:
    """The answer in a Redis value, dated on this process's clock; raises ``ValueError`` when malformed."""
    start = len(MAGIC) + _LENGTH.size
    if len(value) < start or not value.startswith(MAGIC):
        raise ValueError("not a cached answer")
    (length,) = _LENGTH.unpack_from(value, len(MAGIC))
    if len(value) < start + length:
        raise ValueError("truncated header")
    try:
        header: Any = orjson.loads(value[start:start + length])
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
        ttl = header["ttl_s"]
        age = _number(header["age"]) + max(0.0, wall_now - _number(header["wall"]))
        meta = header["meta"]
        if not isinstance(meta, dict):
            raise TypeError("meta is not an object")
        status, content_type, stream = header["status"], header["content_type"], header["stream"]
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError("status is not an integer")
        if not isinstance(content_type, str) or not isinstance(stream, bool):
            raise TypeError("content_type or stream malformed")
        return CachedAnswer(
            status=status, content_type=content_type, body=value[start + length:], stored_at=now - age,
            ttl_s=math.inf if ttl is None else _number(ttl), stream=stream, meta=meta,
        )
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"malformed header: {exc}") from exc


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


class RedisAnswerStore:
    """Answers in a Redis shared by every gateway instance, under ``prefix + key``, expired by Redis.

    Raises ``ValueError`` (without the password) for a URL redis-py cannot use.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "gomodel:cache:",
        timeout_s: float = 0.25,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        clock: Callable[[], float] = time.time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._where = mask_url(url)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._wall = wall
        try:
            self._password = urlsplit(url).password or ""
            self._client = aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
        except ValueError:
            raise ValueError(f"not a usable Redis URL: {self._where}") from None
        #: Values read that did not decode (each was deleted), and answers too large to store.
        self.corrupt = 0
        self.oversize = 0

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer under ``key``, or ``None`` (a value that does not decode is deleted and missed)."""
        name = self._prefix + key
        try:
            value = await self._call(self._client.get(name))
        except ResponseError:  # not a string (WRONGTYPE): nothing this store wrote
            value = b""
        if value is None:
            return None
        try:
            answer = decode_answer(value, wall_now=self._wall(), now=self._clock())
        except ValueError:
            self.corrupt += 1
            await self._call(self._client.delete(name))
            return None
        return None if answer.expired(self._clock()) else answer

    async def put(self, key: str, answer: CachedAnswer) -> None:
        """Store ``answer`` for the rest of its TTL; an expired or oversize answer is not stored."""
        now = self._clock()
        value = encode_answer(answer, wall_now=self._wall(), now=now)
        if len(value) > self._max_entry_bytes:
            self.oversize += 1
            return
        remaining = answer.stored_at + answer.ttl_s - now
        if remaining <= 0:
            return
        px = math.ceil(remaining * 1000) if math.isfinite(remaining) else None
        await self._call(self._client.set(self._prefix + key, value, px=px))

    async def close(self) -> None:
        """Close the connections."""
        await self._client.aclose()

    async def _call(self, command: Any) -> Any:
        """Await a Redis command within ``timeout_s``; Redis unreachable, slow or refusing (out of memory,
        read-only replica, ...) is :class:`CacheUnavailableError`. A ``WRONGTYPE`` error passes through."""
        try:
            async with asyncio.timeout(self._timeout_s):
                return await command
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                raise
            raise self._unavailable(exc) from None
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> CacheUnavailableError:
        detail = str(exc) or "timed out"
        if self._password:
            detail = detail.replace(self._password, "***")
        return CacheUnavailableError(f"Redis cache at {self._where} unavailable: {type(exc).__name__}: {detail}")
