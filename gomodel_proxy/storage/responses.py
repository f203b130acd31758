"""Stored Responses: which provider owns a response id, and the content of converted responses.

A response forwarded natively (OpenAI, Azure, xAI) is stored by its provider; the gateway keeps only
its owner, so that ``GET``/``DELETE /v1/responses/{id}`` reach the right one. A response converted
through chat completions is stored here whole, with its conversation (as Responses input items), so
that ``GET`` and ``previous_response_id`` work for every provider.

The interface is four calls (put, get, delete, history) so that the backend can change without
touching the routes. The default backend is SQLite (stdlib ``sqlite3``), every call run in a worker
thread so that the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson


@dataclass(slots=True)
class StoredResponse:
    """One response the gateway answered: its owner and, when converted, its content."""

    id: str
    provider: str
    model: str = ""
    #: The Responses object (converted responses only; the provider keeps native ones).
    response: dict[str, Any] | None = None
    #: The conversation up to and including this response, as Responses input items (converted only).
    items: list[dict[str, Any]] | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def native(self) -> bool:
        return self.response is None


class ResponseStore(Protocol):
    """Where stored responses live."""

    async def put(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str) -> StoredResponse | None:
        """The record without its conversation items (see :meth:`history`)."""
        ...

    async def delete(self, response_id: str) -> bool:
        """Whether there was such a response."""
        ...

    async def history(self, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation items of a converted response; ``None`` when unknown or native."""
        ...

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    response BLOB,
    items BLOB
)
"""


class SQLiteResponseStore:
    """Responses in one SQLite file; one connection, used by one worker thread at a time."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        # Opened on first use, so that a gateway whose clients never use the Responses API makes no file.
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA journal_mode=WAL")  # several gateway workers may share the file
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connect().execute(sql, params).fetchall()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        """Run a statement; the number of rows it changed."""
        with self._lock:
            return self._connect().execute(sql, params).rowcount

    async def put(self, record: StoredResponse) -> None:
        response = orjson.dumps(record.response) if record.response is not None else None
        items = orjson.dumps(record.items) if record.items is not None else None
        await asyncio.to_thread(
            self._execute,
            "INSERT OR REPLACE INTO responses (id, provider, model, created_at, response, items) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (record.id, record.provider, record.model, record.created_at, response, items),
        )

    async def get(self, response_id: str) -> StoredResponse | None:
        rows = await asyncio.to_thread(
            self._query, "SELECT provider, model, created_at, response FROM responses WHERE id = ?", (response_id,)
        )
        if not rows:
            return None
        provider, model, created_at, response = rows[0]
        return StoredResponse(
            id=response_id, provider=provider, model=model, created_at=created_at,
            response=orjson.loads(response) if response is not None else None,
        )

    async def delete(self, response_id: str) -> bool:
        changed = await asyncio.to_thread(self._execute, "DELETE FROM responses WHERE id = ?", (response_id,))
        return changed > 0

    async def history(self, response_id: str) -> list[dict[str, Any]] | None:
        rows = await asyncio.to_thread(self._query, "SELECT items FROM responses WHERE id = ?", (response_id,))
        if not rows or rows[0][0] is None:
            return None
        items: list[dict[str, Any]] = orjson.loads(rows[0][0])
        return items

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)
