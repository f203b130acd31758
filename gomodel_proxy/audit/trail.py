"""The audit trail: what the gateway decided about a request, written off the request path.

``log_middleware_step`` (the architecture's name) takes one entry (a flat JSON-able mapping: request id,
step, decision; never a secret or the matched text) and returns at once: entries go to a bounded queue that
a background task writes in batches. A full queue never blocks a request: the entry is counted in
``dropped`` and the drop logged once a second at most.

Backends: ``noop`` (nothing is kept: the decisions are still in the log and the metrics) and ``file``
(JSON lines appended to ``audit.path``, written in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson


class AuditTrail(Protocol):
    def log_middleware_step(self, entry: Mapping[str, Any]) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class NoopAuditTrail:
    """Keeps nothing (``audit.backend: noop``)."""

    def log_middleware_step(self, entry: Mapping[str, Any]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class FileAuditTrail:
    """JSON lines appended to a file by a background task; drained at shutdown."""

    def __init__(self, path: Path, *, logger: Any, max_queue: int = 10_000, batch: int = 500) -> None:
        self.path = path
        self.logger = logger
        self.batch = batch
        self.dropped = 0
        self.written = 0
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        #: The batch being written: close() waits for it rather than cancelling it with the drain task.
        self._inflight: asyncio.Future[None] | None = None
        self._last_drop_log = -math.inf

    def log_middleware_step(self, entry: Mapping[str, Any]) -> None:
        line = orjson.dumps({"ts": time.time(), **entry}) + b"\n"
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 1.0:
                self._last_drop_log = now
                self.logger.error("audit queue full; entries dropped", dropped=self.dropped)

    async def start(self) -> None:
        await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="gomodel-audit")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._inflight is not None:
            await self._inflight
            self._inflight = None
        await self._write_pending()

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            lines = [first]
            while len(lines) < self.batch and not self._queue.empty():
                lines.append(self._queue.get_nowait())
            # Shielded: cancelling the drain (close) must not drop a batch already taken from the queue.
            self._inflight = asyncio.ensure_future(self._write(lines))
            await asyncio.shield(self._inflight)

    async def _write_pending(self) -> None:
        lines: list[bytes] = []
        while not self._queue.empty():
            lines.append(self._queue.get_nowait())
        if lines:
            await self._write(lines)

    async def _write(self, lines: list[bytes]) -> None:
        try:
            await asyncio.to_thread(self._append, b"".join(lines))
            self.written += len(lines)
        except OSError as exc:
            self.dropped += len(lines)
            self.logger.error("audit file cannot be written", path=str(self.path), error=str(exc)[:200],
                              dropped=len(lines))

    def _append(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)
