"""An in-process answer store bounded by bytes, not entries, because answers range from bytes to megabytes.

Least recently used entries are evicted first; an expired entry is dropped when read. Each entry costs
``len(body) + len(key) + ENTRY_OVERHEAD`` bytes, the overhead standing for the dict slot, the dataclass and the
small strings. The optional snapshot (:meth:`MemoryStore.save`, :meth:`MemoryStore.load`) keeps a warm cache
across restarts: entry ages are recorded against the wall clock because the monotonic clock restarts with the
machine, and a missing or corrupt snapshot gives an empty store, since a cache may always start cold.

An answer carries ``meta``, JSON-able facts the gateway needs when it replays it without asking the provider
(usage, provider, model), so that a hit is logged and accounted like the call it stands for.
"""

from __future__ import annotations

import base64
import math
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

#: Bytes charged per entry on top of its key and body.
ENTRY_OVERHEAD = 256

#: Version of the snapshot layout written; a snapshot of a version not in :data:`READABLE_VERSIONS` loads as empty.
SNAPSHOT_VERSION = 2

#: Layouts :meth:`MemoryStore.load` reads: 1 is 2 without ``meta`` (its entries load with empty meta).
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An upstream answer as it was sent to the first caller, replayable to later ones."""

    status: int
    content_type: str
    body: bytes
    stored_at: float
    ttl_s: float
    stream: bool
    #: JSON-able facts about the answer for its replay: ``usage`` (input, output, cached and reasoning
    #: tokens), ``provider``, ``model``.
    meta: Mapping[str, Any] = field(default_factory=dict)

    def expired(self, now: float) -> bool:
        """True from the instant ``stored_at + ttl_s`` is reached."""
        return now >= self.stored_at + self.ttl_s


def entry_size(key: str, answer: CachedAnswer) -> int:
    """The bytes an entry is charged against ``max_bytes``."""
    return len(answer.body) + len(key) + ENTRY_OVERHEAD


class MemoryStore:
    """A byte-bounded LRU map of cache keys to answers, with hit, miss and eviction counters."""

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def max_bytes(self) -> int:
        """The bound on :attr:`bytes_used`."""
        return self._max_bytes

    @property
    def bytes_used(self) -> int:
        """Bytes charged for the entries held, expired ones included until they are read or evicted."""
        return self._bytes

    @property
    def entries(self) -> int:
        """Entries held, expired ones included until they are read or evicted."""
        return len(self._entries)

    @property
    def hits(self) -> int:
        """Reads that returned an answer."""
        return self._hits

    @property
    def misses(self) -> int:
        """Reads that found nothing or only an expired answer."""
        return self._misses

    @property
    def evictions(self) -> int:
        """Entries dropped to make room; expiry and :meth:`delete` are not counted."""
        return self._evictions

    def get(self, key: str) -> CachedAnswer | None:
        """The live answer for ``key``, which becomes the most recently used; an expired one is dropped."""
        answer = self._entries.get(key)
        if answer is None:
            self._misses += 1
            return None
        if answer.expired(self._clock()):
            self._remove(key)
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store or replace an answer, evicting the least recently used until it fits.

        An answer larger than the whole store, or already expired, is not stored (and an older answer under
        the same key is dropped, since the caller meant to replace it).
        """
        size = entry_size(key, answer)
        if key in self._entries:
            self._remove(key)
        if size > self._max_bytes or answer.expired(self._clock()):
            return
        while self._bytes + size > self._max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self._evictions += 1
        self._entries[key] = answer
        self._bytes += size

    def delete(self, key: str) -> None:
        """Drop ``key`` if held."""
        if key in self._entries:
            self._remove(key)

    def _remove(self, key: str) -> None:
        answer = self._entries.pop(key)
        self._bytes -= entry_size(key, answer)

    def save(self, path: Path, *, wall: Callable[[], float] = time.time) -> None:
        """Write the live entries, least recently used first, atomically: a reader sees the old file or the new."""
        now = self._clock()
        entries = [
            {
                "key": key,
                "status": answer.status,
                "content_type": answer.content_type,
                "body": base64.b64encode(answer.body).decode("ascii"),
                "age": now - answer.stored_at,
                "ttl_s": answer.ttl_s if math.isfinite(answer.ttl_s) else None,
                "stream": answer.stream,
                "meta": dict(answer.meta),
            }
            for key, answer in self._entries.items()
            if not answer.expired(now)
        ]
        data = orjson.dumps({"version": SNAPSHOT_VERSION, "saved_at": wall(), "entries": entries})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(
        cls,
        path: Path,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall: Callable[[], float] = time.time,
    ) -> MemoryStore:
        """A store holding the snapshot's entries still live, aged by the wall time since the save.

        A missing, unreadable or malformed snapshot gives an empty store.
        """
        store = cls(max_bytes, clock=clock)
        try:
            answers = _parse_snapshot(path.read_bytes(), now=clock(), wall_now=wall())
        except (OSError, ValueError, TypeError, KeyError):
            return store
        for key, answer in answers:
            store.put(key, answer)
        return store


def _parse_snapshot(data: bytes, *, now: float, wall_now: float) -> list[tuple[str, CachedAnswer]]:
    """Entries of a snapshot, re-dated on this process's clock; raises on any malformed part.

    The wall time between the save and now counts towards every entry's age: the cache was cold meanwhile.
    """
    snapshot: Any = orjson.loads(data)
    version = snapshot.get("version") if isinstance(snapshot, dict) else None
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise ValueError("not a snapshot of a readable version")
    offline = max(0.0, wall_now - _number(snapshot["saved_at"]))
    answers: list[tuple[str, CachedAnswer]] = []
    for entry in snapshot["entries"]:
        ttl = entry["ttl_s"]
        answer = CachedAnswer(
            status=_integer(entry["status"]),
            content_type=_string(entry["content_type"]),
            body=base64.b64decode(_string(entry["body"]), validate=True),
            stored_at=now - _number(entry["age"]) - offline,
            ttl_s=math.inf if ttl is None else _number(ttl),
            stream=_boolean(entry["stream"]),
            meta=_mapping(entry["meta"]) if version >= 2 else {},
        )
        answers.append((_string(entry["key"]), answer))
    return answers


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected a boolean")
    return value
