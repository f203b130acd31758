"""``audit.backend: file``: JSON lines appended to one file, rotated by size and by age.

Each batch is serialized and appended in a worker thread (one ``write`` per batch, the file kept open),
so the event loop never waits on the disk. Before a batch, the file is rotated when it holds
``max_file_mb`` or its first entry is ``rotate_s`` old: it is renamed ``<stem>.<UTC time>.<suffix>``
(``audit.20250301T120000.123456Z.jsonl``) and a new one begun; beyond ``keep_files`` rotated files,
the oldest are deleted. ``query`` reads the current and rotated files back for ``GET /admin/audit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from gomodel_proxy.audit.query import AuditQuery, sort_key
from gomodel_proxy.core.slices import never, sliced

_STAMP = "%Y%m%dT%H%M%S.%fZ"


class FileSink:
    name = "file"

    def __init__(self, path: Path, *, max_bytes: int = 100 * 1024 * 1024, rotate_s: float = 86_400.0,
                 keep_files: int = 7) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.rotate_s = rotate_s
        self.keep_files = keep_files
        self._file: IO[bytes] | None = None
        self._size = 0
        #: When the current file's first entry was written (wall clock); None: the file is empty.
        self._began: float | None = None
        self._lock = threading.Lock()
        #: Set by the pipeline (``PacedSink``): true while it is behind, and serialization is not sliced.
        self.hurry: Callable[[], bool] = never

    # -- AuditSink -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._open)

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        # Serialized here (orjson: ~1 us an entry); the thread only writes bytes, which releases the GIL:
        # a thread running Python code would fight the event loop for it and stretch request latencies.
        # Into one growing buffer: each line's bytes are freed at once and their memory reused. A list of a
        # thousand lines joined at the end costs 4x as much in a busy process (every line a fresh
        # allocation past the small-object allocator, the heap grown and trimmed again each batch).
        # In slices, the loop served between two: a thousand entries at once would hold it for milliseconds.
        data = bytearray()
        async for part in sliced(entries, hurry=self.hurry):
            for entry in part:
                data += orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        await asyncio.to_thread(self._write, bytes(data))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    # -- in the worker thread ------------------------------------------------------------------------
    def _open(self) -> None:
        with self._lock:
            if self._file is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
            self._began = self._first_ts() if self._size else None

    def _first_ts(self) -> float:
        """When the existing file began: its first entry's ``ts`` (its mtime when unreadable)."""
        try:
            with self.path.open("rb") as f:
                ts = orjson.loads(f.readline()).get("ts")
            if isinstance(ts, int | float):
                return float(ts)
        except (OSError, orjson.JSONDecodeError, AttributeError):
            pass
        return self.path.stat().st_mtime

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                raise OSError("the audit file is closed")
            now = time.time()
            if self._size and (self._size >= self.max_bytes or
                               (self._began is not None and now - self._began >= self.rotate_s)):
                self._rotate(now)
            self._file.write(data)
            self._file.flush()
            if not self._size:
                self._began = now
            self._size += len(data)

    def _rotate(self, now: float) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)
        target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
        n = 1
        while target.exists():  # two rotations within a microsecond: never overwrite one
            target = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
            n += 1
        os.replace(self.path, target)
        self._file = self.path.open("ab")
        self._size, self._began = 0, None
        for old in self.rotated()[self.keep_files:]:
            with contextlib.suppress(OSError):
                old.unlink()

    def _close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def rotated(self) -> list[Path]:
        """The rotated files, newest first."""
        prefix, suffix = f"{self.path.stem}.", self.path.suffix
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return []
        found = [n for n in names if n.startswith(prefix) and n.endswith(suffix) and n != self.path.name
                 and n[len(prefix):len(prefix) + 1].isdigit()]
        return [self.path.parent / n for n in sorted(found, reverse=True)]

    def _rotated_at(self, path: Path) -> float:
        """When a rotated file was rotated (from its name); +inf when the name does not say."""
        text = path.name[len(self.path.stem) + 1:len(path.name) - len(self.path.suffix)].split("-")[0]
        try:
            return datetime.strptime(text, _STAMP).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return float("inf")

    # -- reading back ----------------------------------------------------------------------------------
    async def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._query, q)

    def _query(self, q: AuditQuery) -> list[dict[str, Any]]:
        want = q.limit + 1
        best: list[tuple[tuple[float, str], int, dict[str, Any]]] = []  # a min-heap of the newest `want`
        n = 0
        for path in [self.path, *self.rotated()]:
            if path != self.path and q.start is not None and self._rotated_at(path) < q.start:
                break  # every entry of it (and of older files) began before it was rotated: too old
            try:
                data = path.read_bytes()
            except OSError:
                continue  # rotated away or deleted meanwhile
            for line in data.splitlines():
                try:
                    e = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(e, dict) or not q.matches(e):
                    continue
                n += 1
                item = (sort_key(e), n, e)
                if len(best) < want:
                    heapq.heappush(best, item)
                elif item[0] > best[0][0]:
                    heapq.heapreplace(best, item)
        return [e for _, _, e in sorted(best, key=lambda t: t[0], reverse=True)]

