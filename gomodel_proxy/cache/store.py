"""Where cached answers live: one process's memory, or a Redis that every gateway instance shares.

The gateway talks to either through :class:`AnswerStore`, so the request chain does not care which it has.
``CachedAnswer.stored_at`` is read against each store's ``clock``, by default the wall clock (``time.time``),
which is what the request chain stamps answers with; pass another clock to both sides or neither.

* :class:`LocalAnswerStore` wraps :class:`MemoryStore`; its optional snapshot file keeps the cache warm across
  restarts. The file is read and written in a worker thread so that a large snapshot never stalls the event loop.
* :class:`RedisAnswerStore` keeps one Redis string per key, expiring through ``PX`` so that Redis, not the
  gateway, forgets old answers. A cache must never make a request slower than having no cache: every call is
  bounded by ``timeout_s`` (connect and round trip, no retries), and a Redis that cannot answer raises
  :class:`CacheUnavailableError`, which the caller treats as "no cache" for that request. Its message never
  carries the URL's password.

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

from gomodel_proxy.cache.answer_store import AnswerStore, CacheUnavailableError
from gomodel_proxy.cache.memory_store import CachedAnswer, MemoryStore
from gomodel_proxy.limits.resp import RespError, RespPipeline

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

    Spoken through the gateway's own pipelined RESP connection (``limits.resp``, hiredis): concurrent
    lookups share round trips, at a few microseconds of client CPU each (redis-py's client costs ~30).
    Raises ``ValueError`` (without the password) for a URL that cannot be used.
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
            self._redis = RespPipeline(url, timeout_s)
        except ValueError:
            raise ValueError(f"not a usable Redis URL: {self._where}") from None
        #: Values read that did not decode (each was deleted), and answers too large to store.
        self.corrupt = 0
        self.oversize = 0

    async def get(self, key: str) -> CachedAnswer | None:
        """The answer under ``key``, or ``None`` (a value that does not decode is deleted and missed)."""
        name = self._prefix + key
        value = await self._call("GET", name)
        if value is None:
            return None
        try:
            if isinstance(value, RespError) or not isinstance(value, bytes):  # WRONGTYPE: not this store's
                raise ValueError("not a cached answer")
            answer = decode_answer(value, wall_now=self._wall(), now=self._clock())
        except ValueError:
            self.corrupt += 1
            await self._call("DEL", name)
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
        name = self._prefix + key
        if math.isfinite(remaining):
            reply = await self._call("SET", name, value, "PX", math.ceil(remaining * 1000))
        else:
            reply = await self._call("SET", name, value)
        if isinstance(reply, RespError):
            raise self._unavailable(reply)

    async def close(self) -> None:
        """Close the connection."""
        await self._redis.close()

    async def _call(self, *command: bytes | str | int) -> Any:
        """One command within the timeout; Redis unreachable, slow or refusing (out of memory, read-only
        replica, ...) is :class:`CacheUnavailableError`. ``WRONGTYPE`` comes back as a ``RespError`` reply."""
        try:
            reply = await self._redis.call(*command)
        except (OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        if isinstance(reply, RespError) and not str(reply).startswith("WRONGTYPE"):
            raise self._unavailable(reply)
        return reply

    def _unavailable(self, exc: BaseException) -> CacheUnavailableError:
        detail = str(exc) or "timed out"
        if self._password:
            detail = detail.replace(self._password, "***")
        return CacheUnavailableError(f"Redis cache at {self._where} unavailable: {type(exc).__name__}: {detail}")
