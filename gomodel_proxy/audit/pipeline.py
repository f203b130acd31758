"""The audit logger: entries queued without waiting, written to a sink in batches by background tasks.

The request path only appends to a bounded queue (``log_request``, ``log_response``,
``log_middleware_step``: the architecture's ``AuditLogger``); everything else happens in tasks of
this object's own:

- the *drain* takes a batch (``batch_size`` entries, or what came within ``flush_interval_ms``), builds
  the entries (``audit.entries``: secrets removed) and hands them to the *writer*, one batch in flight;
- the writer gives the batch to the sink with ``timeout_s``; a batch the sink refuses, or does not take
  in time, is *spilled*: appended to a JSON-lines file in ``spill_dir``, and the sink counts as down;
- while it is down, batches go straight to the spill (nothing waits on a dead sink), and the *replayer*
  retries with a growing pause (``retry_s`` doubling up to ``max_retry_s``): each spill file, oldest
  first, is written to the sink and deleted; when none is left the sink is up again;
- a queue that fills while the writer is still busy spills too, so the queue stays far from full; a full
  queue never blocks a caller: the entry is counted in ``dropped`` and the drop logged (once a second);
- ``close()`` (SIGTERM) drains the queue into the sink, or the spill when the sink cannot take it;
  spill files left behind (the sink down at exit, a crash) are replayed at the next start.

Spill files are ``audit-spill-<sink>-<pid>-<n>.jsonl``; the replayer claims one by renaming it, so
processes sharing a ``spill_dir`` never replay a file twice, nor one its (live) writer still appends to.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from gomodel_proxy.audit.entries import request_entries, step_entry
from gomodel_proxy.audit.sink import AuditSink, PacedSink
from gomodel_proxy.core.process import pid_alive
from gomodel_proxy.core.slices import sliced
from gomodel_proxy.core.types import CallRecord

_Item = tuple[str, float, Any]


class NoopAuditLogger:
    """Keeps nothing (``audit.backend: noop``, or ``features.audit_logging`` off)."""

    body_limit = 0
    sink: AuditSink | None = None

    def log_request(self, call: CallRecord) -> None:
        return None

    def log_response(self, entry: Mapping[str, Any]) -> None:
        return None

    def log_middleware_step(self, entry: Mapping[str, Any]) -> None:
        return None

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class AuditLogger:
    """Bounded queue, batch writer, spill and replay around one ``AuditSink``."""

    def __init__(
        self,
        sink: AuditSink,
        *,
        spill_dir: Path,
        logger: Any,
        queue_size: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        timeout_s: float = 5.0,
        body_limit: int = 0,
        settle: Callable[[CallRecord], Any] | None = None,
        retry_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> None:
        self.sink = sink
        if isinstance(sink, PacedSink):
            sink.hurry = self.behind
        self.spill_dir = spill_dir
        self.logger = logger
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        #: The most bytes of each body kept in a request entry (0: no bodies).
        self.body_limit = body_limit
        #: Prices a call that has usage but no cost yet (the usage writer's pricer), before its entry is built.
        self.settle = settle
        self.retry_s = retry_s
        self.max_retry_s = max_retry_s
        # Counters (entries): written by the sink, spilled to files, replayed from them, dropped (queue full).
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.dropped = 0
        #: Whether batches go to the sink (False: it failed; they spill until the replayer got through).
        self.healthy = False
        self._queue: deque[_Item] = deque()
        #: Above this many queued entries, a batch spills rather than wait for a busy writer.
        self._high_water = max(self.batch_size, queue_size // 2)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._closing = False
        self._started_sink = False
        self._drain_task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._sink_lock = asyncio.Lock()
        self._spill_lock = asyncio.Lock()
        self._spill_file: Path | None = None
        self._spill_seq = 0
        self._last_drop_log = -math.inf
        self._last_down_log = -math.inf

    # -- the request path: append, never wait ------------------------------------------------------
    def log_request(self, call: CallRecord) -> None:
        """A finished request: its ``request`` entry and one ``attempt`` entry per provider send."""
        self._put(("call", time.time(), call))

    def log_response(self, entry: Mapping[str, Any]) -> None:
        """A provider's answer reported on its own (``kind: response``), for callers outside the recorder."""
        self._put(("response", time.time(), dict(entry)))

    def log_middleware_step(self, entry: Mapping[str, Any]) -> None:
        """What a middleware step decided (``kind: step``): a guardrail's decision."""
        self._put(("step", time.time(), dict(entry)))

    def _put(self, item: _Item) -> None:
        queue = self._queue
        if len(queue) >= self.queue_size or (self._closing and self._drain_task is None):
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 1.0:
                self._last_drop_log = now
                self.logger.error("audit queue full; entries dropped", dropped=self.dropped,
                                  sink=self.sink.name, queue_size=self.queue_size)
            return
        queue.append(item)
        self._wake.set()

    def behind(self) -> bool:
        """Another full batch waits in the queue: the drain (and a sink that slices its work) catch up at
        once rather than give the loop a turn per slice."""
        return len(self._queue) >= self.batch_size

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.spill_dir.mkdir, parents=True, exist_ok=True)
        await self._start_sink()
        loop = asyncio.get_running_loop()
        self._drain_task = loop.create_task(self._drain(), name=f"gomodel-audit-{self.sink.name}")
        if not self.healthy or len(await asyncio.to_thread(self._spill_files)) > 0:
            self._ensure_replay()

    async def close(self) -> None:
        """Drain the queue (into the sink, or the spill), let the writer and replayer end, close the sink."""
        self._closing = True
        self._wake.set()
        self._stop.set()
        if self._drain_task is None and self._queue:  # never started: drain what was queued all the same
            await asyncio.to_thread(self.spill_dir.mkdir, parents=True, exist_ok=True)
            await self._start_sink()
            self._drain_task = asyncio.get_running_loop().create_task(self._drain())
        if self._drain_task is not None:
            await self._drain_task
            self._drain_task = None
        if self._writing is not None:
            await self._writing
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        if self._started_sink:
            self._started_sink = self.healthy = False
            try:
                await self.sink.close()
            except Exception as exc:
                self.logger.warning("audit sink did not close cleanly", sink=self.sink.name, error=_why(exc))
        if self._queue:  # only what came after the drain ended (a request finishing during shutdown)
            self.dropped += len(self._queue)
            self.logger.error("audit entries lost at shutdown", dropped=len(self._queue), sink=self.sink.name)
            self._queue.clear()
        if self.dropped or self.spilled > self.replayed:  # entries wait in spill files (next start), or were lost
            self.logger.warning("audit closed with entries not in the sink", sink=self.sink.name,
                                written=self.written, spilled=self.spilled, replayed=self.replayed,
                                dropped=self.dropped)

    async def _start_sink(self) -> bool:
        if self._started_sink:
            return True
        try:
            await asyncio.wait_for(self.sink.start(), max(self.timeout_s, 5.0))
        except Exception as exc:
            self._down(exc, "cannot start")
            return False
        self._started_sink = self.healthy = True
        return True

    # -- drain and write -----------------------------------------------------------------------------
    async def _drain(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(queue) < self.batch_size and not self._closing:
                with contextlib.suppress(TimeoutError):  # let a batch gather (close() cuts it short)
                    await asyncio.wait_for(self._stop.wait(), self.flush_interval_s)
            take = min(len(queue), self.batch_size)
            items = [queue.popleft() for _ in range(take)]
            entries: list[dict[str, Any]] = []
            # A batch built at once would hold the loop for milliseconds; sliced, unless the drain is behind.
            async for part in sliced(items, hurry=self.behind):
                try:
                    entries += self._build(part)
                except Exception:  # one by one then: only what cannot be built is lost, and logged
                    for item in part:
                        try:
                            entries += self._build((item,))
                        except Exception:
                            self.logger.exception("audit entry cannot be built", dropped=1)
                            self.dropped += 1
            if entries:
                await self._route(entries)

    def _build(self, items: Sequence[_Item]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        limit = self.body_limit
        settle = self.settle
        for kind, wall, what in items:
            if kind == "call":
                if settle is not None and what.cost is None and what.usage is not None and what.billable:
                    settle(what)
                out.extend(request_entries(what, wall, body_limit=limit))
            else:
                out.append(step_entry(what, wall, kind))
        return out

    async def _route(self, entries: list[dict[str, Any]]) -> None:
        """To the writer when the sink is up and the writer free; to the spill otherwise."""
        while self._writing is not None and not self._writing.done():
            if len(self._queue) >= self._high_water:
                await self._spill(entries)
                return
            await asyncio.wait({self._writing}, timeout=self.flush_interval_s)
        if self.healthy:
            self._writing = asyncio.get_running_loop().create_task(self._write(entries))
            if self._closing:
                await self._writing
        else:
            await self._spill(entries)

    async def _write(self, entries: list[dict[str, Any]]) -> None:
        if await self._to_sink(entries):
            self.written += len(entries)
        else:
            await self._spill(entries)

    async def _to_sink(self, entries: Sequence[dict[str, Any]]) -> bool:
        async with self._sink_lock:
            try:
                await asyncio.wait_for(self.sink.write(entries), self.timeout_s)
            except Exception as exc:  # TimeoutError included: a slow sink counts as down
                self._down(exc, "write failed")
                return False
        return True

    def _down(self, exc: BaseException, what: str) -> None:
        self.healthy = False
        now = time.monotonic()
        if now - self._last_down_log >= 5.0:
            self._last_down_log = now
            self.logger.error(f"audit sink {what}; entries spill to files and are replayed later",
                              sink=self.sink.name, error=_why(exc), spill_dir=str(self.spill_dir))
        self._ensure_replay()

    # -- spill ---------------------------------------------------------------------------------------
    async def _spill(self, entries: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in entries)
        async with self._spill_lock:
            if self._spill_file is None:
                self._spill_seq += 1
                self._spill_file = self.spill_dir / (
                    f"audit-spill-{self.sink.name}-{os.getpid()}-{time.time_ns()}-{self._spill_seq}.jsonl")
            try:
                await asyncio.to_thread(_append, self._spill_file, data)
            except OSError as exc:
                self.dropped += len(entries)
                self.logger.error("audit spill file cannot be written; entries dropped", dropped=len(entries),
                                  path=str(self._spill_file), error=_why(exc))
                return
        self.spilled += len(entries)
        self._ensure_replay()

    def _spill_files(self) -> list[Path]:
        """This sink's spill files that no live process still writes to, oldest first (in a thread)."""
        prefix = f"audit-spill-{self.sink.name}-"
        me = os.getpid()
        out: list[tuple[int, Path]] = []
        try:
            names = os.listdir(self.spill_dir)
        except OSError:
            return []
        for name in names:
            if not name.startswith(prefix) or name.endswith(".tmp"):
                continue
            base, _, claimer = name.partition(".claimed-")
            parts = base[len(prefix):].split("-")
            if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            holder = int(claimer) if claimer.isdigit() else int(parts[0])
            if holder != me and pid_alive(holder):
                continue  # another live gateway's file: it writes or replays it itself
            out.append((int(parts[1]), self.spill_dir / name))
        return [p for _, p in sorted(out)]

    # -- replay --------------------------------------------------------------------------------------
    def _ensure_replay(self) -> None:
        if self._closing or (self._replay_task is not None and not self._replay_task.done()):
            return
        with contextlib.suppress(RuntimeError):  # no running loop: start() replays
            self._replay_task = asyncio.get_running_loop().create_task(self._replay_loop(),
                                                                       name=f"gomodel-audit-replay-{self.sink.name}")

    async def _replay_loop(self) -> None:
        delay = self.retry_s
        while not self._closing:
            await asyncio.sleep(delay)
            if await self._replay_once():
                return
            delay = min(delay * 2, self.max_retry_s)

    async def _replay_once(self) -> bool:
        """Every spill file to the sink; True when none is left and the sink is up again."""
        if not await self._start_sink():
            return False
        while True:
            async with self._spill_lock:
                self._spill_file = None  # later spills start a new file; this one may be claimed
                files = await asyncio.to_thread(self._spill_files)
                if not files:
                    self.healthy = True
                    return True
            for path in files:
                if not await self._replay_file(path):
                    return False

    async def _replay_file(self, path: Path) -> bool:
        claimed = path if path.name.endswith(f".claimed-{os.getpid()}") else path.with_name(
            f"{path.name.split('.claimed')[0]}.claimed-{os.getpid()}")
        try:
            await asyncio.to_thread(os.rename, path, claimed)
            raw = await asyncio.to_thread(claimed.read_bytes)
        except FileNotFoundError:
            return True  # another process took it
        except OSError as exc:
            self.logger.error("audit spill file cannot be read", path=str(path), error=_why(exc))
            return False
        entries: list[dict[str, Any]] = []
        for line in raw.splitlines():
            if not line:
                continue
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:  # a line cut by a crash: the rest of the file is still good
                self.logger.warning("audit spill line unreadable; skipped", path=str(path))
        for start in range(0, len(entries), self.batch_size):
            batch = entries[start:start + self.batch_size]
            if not await self._to_sink(batch):
                rest = b"".join(orjson.dumps(e) + b"\n" for e in entries[start:])
                back = path.with_name(path.name.split(".claimed")[0])
                await asyncio.to_thread(_replace, claimed, back, rest)
                return False
            self.replayed += len(batch)
        await asyncio.to_thread(claimed.unlink, missing_ok=True)
        return True

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "spilled": self.spilled, "replayed": self.replayed,
                "dropped": self.dropped, "queued": len(self._queue)}


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _replace(claimed: Path, back: Path, data: bytes) -> None:
    """What is left of a claimed spill file goes back under its own name, the claim released."""
    tmp = back.with_name(back.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, back)
    claimed.unlink(missing_ok=True)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]
