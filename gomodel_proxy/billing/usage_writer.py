"""The usage writer: usage rows batched to the database in the background, spooled to disk when it is down.

A request hands its row to ``submit()`` (never blocks, never raises) and goes on. A background task
inserts what waits every ``flush_interval_s``, or as soon as ``batch_size`` rows wait, one batch per
transaction with ``INSERT ... ON CONFLICT (id) DO NOTHING`` semantics: the id is the gateway's call id,
so writing a row twice (a replay, a commit whose answer was lost) bills it once.

On PostgreSQL the writer keeps an asyncpg connection of its own (``Database.connect_driver``: same URL
and schema; this path never imports SQLAlchemy) and a batch is a ``COPY`` into a session temporary table
(``ON COMMIT DELETE ROWS``) then ``INSERT INTO usage_records SELECT ... ON CONFLICT (id) DO NOTHING``
from it: 4 to 6 µs of CPU per row, less than half what SQLAlchemy's executemany costs
(``bench/usage_writer_bench.py``). A connection that broke while idle is replaced once, at once, before
the database counts as down. On SQLite a batch is a multi-row ``INSERT ... ON CONFLICT (id) DO NOTHING``
through SQLAlchemy.

When a batch fails (any database error, or no answer within ``flush_timeout_s``) it is appended to the
spool file ``spool_dir/usage-spool-<pid>.jsonl`` (one orjson line per row, fsync'd) and the writer is
``spooling``: later batches go to the spool too, and ``SELECT 1`` probes the database about once a second.
When it answers, the spool is replayed in batches and removed. Replay also takes the spool files of
processes that died (``usage-spool-<pid>.jsonl`` whose pid is gone): a file is claimed by renaming it to
``...jsonl.replaying-<our pid>`` (atomic: one process wins), inserted, then deleted; a crash mid-replay
leaves the ``.replaying-`` file, which a later start takes over once its owner is dead.

Rows the database refuses as data (a ``NOT NULL`` or length violation, a value the driver cannot encode:
retrying cannot help) are written to ``usage-rejected-<pid>.jsonl`` and logged, so that one bad row
neither blocks the others forever nor disappears.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gomodel_proxy.billing.usage import RECORD_COLUMNS
from gomodel_proxy.core.process import pid_alive
from gomodel_proxy.core.slices import paced
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.records import USAGE_COLUMNS

SPOOL_PREFIX = "usage-spool-"
REPLAYING = ".replaying-"
#: Seconds between two ``SELECT 1`` probes while the database is down.
PROBE_INTERVAL_S = 1.0
#: Column defaults, for a row without some columns (a spool file written by an older version).
_DEFAULTS: dict[str, Any] = {
    "key_id": None, "user_id": None, "team_id": None, "model_requested": "", "stream": False,
    "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "reasoning_tokens": 0,
    "cache_write_tokens": 0, "estimated": False, "cost": 0.0, "latency_ms": 0.0, "ttfb_ms": None,
    "outcome": "ok", "error": None,
}
#: ``tables.usage_records``' columns (``storage.records``: this module does not import SQLAlchemy, which
#: only the SQLite path loads, on its first batch).
_COLUMNS = list(USAGE_COLUMNS)
#: The columns in the order of a record (a row as handed to the driver): ``created_at`` last.
_ORDER = list(RECORD_COLUMNS)
#: What ``submit`` takes: a record (``usage.usage_record``: a tuple in ``_ORDER``, an aware UTC ``created_at``
#: last), which is what requests hand over, or a row as a dict by column (a spool file's line, a caller's own).
Row = dict[str, Any] | tuple[Any, ...]
#: A row's values in that order but ``created_at``, when it has every column (``usage_row`` rows do).
_VALUES = operator.itemgetter(*_ORDER[:-1])
#: PostgreSQL: the session temporary table a batch is copied into (a name of its own: ``pg_temp`` comes
#: first in the search path, so the name ``usage_records`` would hide the real table). Its ``created_at``
#: is ``timestamptz``, so that asyncpg takes the aware datetime as it is (its encoder converts to UTC) and
#: the INSERT stores it as UTC without an offset, as ``UTCDateTime`` does: no per-row ``replace()`` here.
_STAGE = "usage_records_in"
_STAGE_SQL = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (LIKE usage_records) ON COMMIT DELETE ROWS; "
    f"ALTER TABLE pg_temp.{_STAGE} ALTER COLUMN created_at TYPE timestamptz"
)
# Column names from tables.py: nothing of a client is spliced.
_FROM_STAGE_SQL = (
    f"INSERT INTO usage_records ({', '.join(_ORDER)}) "  # noqa: S608
    f"SELECT {', '.join(_ORDER[:-1])}, created_at AT TIME ZONE 'UTC' FROM pg_temp.{_STAGE} "
    "ON CONFLICT (id) DO NOTHING"
)
#: Serialises appends, claims and reads of spool files between the worker threads of this process.
_FILE_LOCK = threading.Lock()


class UsageWriter:
    """Batches usage rows into ``usage_records``; a spool file keeps them while the database is down."""

    def __init__(
        self,
        db: Database,
        spool_dir: Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        logger: Any,
        max_queue: int = 1_000_000,
        flush_timeout_s: float = 5.0,
    ) -> None:
        self.db = db
        self.spool_dir = Path(spool_dir)
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.max_queue = max(1, max_queue)
        self.log = logger
        #: Rows written by normal flushes, spooled to disk, and replayed from spool files.
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        #: Transactions that inserted a batch (normal flushes and replays).
        self.batches = 0
        #: Rows the database refused as data (written to the rejected file).
        self.rejected = 0
        self._buffer: deque[Row] = deque()
        self._inflight: list[Row] = []
        self._spilling = 0
        self._spill_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        #: Set when there is work again after none: an idle writer waits on it with no timer running, so a
        #: gateway without traffic is not woken five times a second.
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._down = False
        self._last_probe = 0.0
        #: A spool file may hold rows to replay (ours, or a dead process's): checked at start.
        self._spool_dirty = True
        self._closing = False
        self._closed = False
        self._deadline: float | None = None
        self._pid = os.getpid()
        #: PostgreSQL: the writer's own asyncpg connection (opened at the first batch, None when broken).
        self._pg: Any = None

    # -- public ---------------------------------------------------------------------------------
    @property
    def spool_path(self) -> Path:
        return self.spool_dir / f"{SPOOL_PREFIX}{self._pid}.jsonl"

    @property
    def state(self) -> str:
        """``ok``, or ``spooling`` while the database is down (rows go to the spool file)."""
        return "spooling" if self._down else "ok"

    @property
    def pending(self) -> int:
        """Rows in memory, neither in the database nor in a spool file yet."""
        return len(self._buffer) + len(self._inflight) + self._spilling

    def submit(self, row: Row) -> None:
        """Queue ``row`` for the database. Called from a request's ``finally``: never blocks, never raises."""
        try:
            if self._closed:
                self._late(row)
                return
            buffer = self._buffer
            buffer.append(row)
            waiting = len(buffer)
            if waiting >= self.max_queue:
                self._spill()
            elif waiting >= self.batch_size:
                self._wake.set()
            elif waiting == 1:
                self._arrived.set()
        except Exception as exc:  # pragma: no cover - defensive: a usage row must never fail a request
            self.log.error("usage_submit_failed", error=repr(exc))

    async def start(self) -> None:
        """Start the background task (which first replays spool files left by earlier processes)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Stop the task and flush what is left: to the database if it answers in time, else to the spool."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s
        self._closing = True
        self._wake.set()
        self._arrived.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closed = True
        leftovers = self._inflight + list(self._buffer)
        self._inflight = []
        self._buffer.clear()
        if leftovers and not self._down and self._remaining() > 0:
            leftovers = await self._flush_rows(leftovers, replay=False)
        if leftovers:
            await self._spool(leftovers)
        await self._close_pg()
        if self._spill_tasks:
            await asyncio.gather(*self._spill_tasks, return_exceptions=True)
        self.log.info("usage_writer_closed", written=self.written, spooled=self.spooled,
                      replayed=self.replayed, state=self.state)

    # -- background task ------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._closing:
            if not (self._buffer or self._down or self._spool_dirty):
                self._arrived.clear()
                await self._arrived.wait()  # idle: nothing to write, replay or probe
                continue
            if self._down or len(self._buffer) < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # pragma: no cover - a bug here must not stop usage recording
                self.log.error("usage_writer_error", error=repr(exc))
        # close(): the rest, while the deadline allows (close() spools what is still left).
        if not self._down and self._buffer:
            rest = self._take(len(self._buffer))
            self._inflight = rest
            self._inflight = await self._flush_rows(rest, replay=False)

    async def _tick(self) -> None:
        if self._down and time.monotonic() - self._last_probe >= PROBE_INTERVAL_S:
            self._last_probe = time.monotonic()
            if await self._probe():
                self.log.info("usage_database_back", spool_dir=str(self.spool_dir))
                self._down = False
        if self._down:
            if self._buffer:
                await self._spool_taken(len(self._buffer))
            return
        while self._buffer and not self._down and not self._closing:
            batch = self._take(self.batch_size)
            self._inflight = batch
            left = await self._flush_rows(batch, replay=False)
            self._inflight = []
            if left:
                await self._spool(left)
        if self._spool_dirty and not self._down and not self._closing and len(self._buffer) < self.batch_size:
            await self._replay_all()

    def _behind(self) -> bool:
        """Another full batch waits behind the one being written."""
        return len(self._buffer) >= self.batch_size

    def _take(self, n: int) -> list[Row]:
        return [self._buffer.popleft() for _ in range(min(n, len(self._buffer)))]

    async def _spool_taken(self, n: int) -> None:
        rows = self._take(n)
        self._inflight = rows
        await self._spool(rows)
        self._inflight = []

    # -- database -------------------------------------------------------------------------------
    def _remaining(self) -> float:
        """How long the next database call may take (shorter once close() set a deadline)."""
        if self._deadline is None:
            return self.flush_timeout_s
        return min(self.flush_timeout_s, self._deadline - asyncio.get_running_loop().time())

    async def _insert(self, rows: list[Row]) -> None:
        """One batch in one transaction, ``ON CONFLICT (id) DO NOTHING``; raises what the database raised.

        PostgreSQL: ``COPY`` into the stage table then ``INSERT ... SELECT`` on the writer's own asyncpg
        connection. SQLite: multi-row INSERTs through SQLAlchemy, the SQL written once and the rows handed
        over as tuples (SQLAlchemy's per-row parameter processing would cost about as much again).
        """
        if self.db.backend == "postgresql":
            await self._copy([_record(row, True) for row in rows])
        else:
            params = [_record(row, False) for row in rows]
            async with self.db.begin() as conn:
                # The whole batch as one statement (one step of the engine, one release of the GIL by its
                # thread) rather than a step per row, each a GIL handover with the event loop.
                for start in range(0, len(params), _SQLITE_ROWS):
                    chunk = params[start:start + _SQLITE_ROWS]
                    flat = tuple(value for row in chunk for value in row)
                    await conn.exec_driver_sql(_sqlite_multirow(len(chunk)), flat)
        self.batches += 1

    async def _copy(self, records: list[tuple[Any, ...]]) -> None:
        """PostgreSQL: ``records`` in one transaction; a kept connection that fails is replaced once."""
        conn = self._pg
        if conn is not None and not conn.is_closed():
            try:
                await _copy_batch(conn, records, self._behind)
            except Exception as exc:
                if _is_data_error(exc):
                    raise
                # It may have broken while idle (the server restarted, a firewall forgot it): once more on
                # a new one. Harmless if the first one had in fact committed: ON CONFLICT DO NOTHING.
                self._drop_pg()
            else:
                return
        self._drop_pg()
        conn = await self.db.connect_driver()
        try:
            await conn.execute(_STAGE_SQL)
        except BaseException:
            conn.terminate()
            raise
        self._pg = conn
        await _copy_batch(conn, records, self._behind)

    def _drop_pg(self) -> None:
        conn, self._pg = self._pg, None
        if conn is not None:
            conn.terminate()

    async def _close_pg(self) -> None:
        conn, self._pg = self._pg, None
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), 1.0)
        except Exception:  # a connection that cannot close cleanly is cut
            conn.terminate()

    async def _flush_rows(self, rows: list[Row], *, replay: bool) -> list[Row]:
        """Insert ``rows`` in batches; the rows not written (the database failed: now ``down``)."""
        for i in range(0, len(rows), self.batch_size):
            batch = rows[i:i + self.batch_size]
            if not await self._write(batch):
                return rows[i:]
            if replay:
                self.replayed += len(batch)
            else:
                self.written += len(batch)
        return []

    async def _write(self, rows: list[Row]) -> bool:
        """One batch in one transaction; False (and ``down``) when the database failed or was too slow."""
        try:
            await asyncio.wait_for(self._insert(rows), max(self._remaining(), 0.001))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_data_error(exc):
                return await self._salvage(rows)
            self._went_down(exc)
            return False
        return True

    async def _salvage(self, rows: list[Row]) -> bool:
        """A batch refused as data: insert row by row, the rows refused go to the rejected file."""
        refused: list[Row] = []
        for row in rows:
            try:
                await asyncio.wait_for(self._insert([row]), max(self._remaining(), 0.001))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not _is_data_error(exc):
                    self._went_down(exc)
                    return False
                refused.append(row)
                self.log.error("usage_row_rejected", id=_as_dict(row).get("id"), error=_short(exc))
        if refused:
            path = self.spool_dir / f"usage-rejected-{self._pid}.jsonl"
            await asyncio.to_thread(_append, path, _encode(refused))
            self.rejected += len(refused)
        return True

    def _went_down(self, exc: BaseException) -> None:
        if not self._down:
            self.log.warning("usage_database_down", error=_short(exc), spool=str(self.spool_path))
        self._down = True
        self._last_probe = time.monotonic()

    async def _probe(self) -> bool:
        try:
            await asyncio.wait_for(self.db.ping(), max(min(self._remaining(), 2.0), 0.001))
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    # -- spool ----------------------------------------------------------------------------------
    async def _spool(self, rows: list[Row]) -> None:
        """Append ``rows`` to this process's spool file (fsync'd); they stay in memory if that fails."""
        if not rows:
            return
        try:
            await asyncio.to_thread(_append, self.spool_path, _encode(rows))
        except OSError as exc:
            if self._closed:
                self.log.error("usage_rows_lost", rows=len(rows), spool=str(self.spool_path), error=repr(exc))
            else:
                self.log.error("usage_spool_failed", rows=len(rows), spool=str(self.spool_path), error=repr(exc))
                self._buffer.extendleft(reversed(rows))
            return
        self.spooled += len(rows)
        self._spool_dirty = True
        self._arrived.set()  # an idle writer replays it once the database takes rows again

    def _spill(self) -> None:
        """The buffer reached ``max_queue``: hand it all to the spool now rather than grow without end."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a caller outside one): the synchronous append, like after close()
            while self._buffer:
                self._late(self._buffer.popleft())
            return
        rows = list(self._buffer)
        self._buffer.clear()
        self._spilling += len(rows)
        self.log.warning("usage_queue_full", rows=len(rows), spool=str(self.spool_path))

        async def spill() -> None:
            try:
                await self._spool(rows)
            finally:
                self._spilling -= len(rows)

        task = loop.create_task(spill())
        self._spill_tasks.add(task)
        task.add_done_callback(self._spill_tasks.discard)

    def _late(self, row: Row) -> None:
        """A row submitted after close(): straight to the spool file, a small synchronous append at
        shutdown (no task is left to hand it to, and losing it is worse than a brief block)."""
        try:
            _append(self.spool_path, _encode([row]))
            self.spooled += 1
        except OSError as exc:
            self.log.error("usage_rows_lost", rows=1, spool=str(self.spool_path), error=repr(exc))

    async def _replay_all(self) -> None:
        """Replay every spool file this process may take; stops (and goes ``down``) at the first failure."""
        self._spool_dirty = False
        claimed = await asyncio.to_thread(_claim_all, self.spool_dir, self._pid)
        for path in claimed:
            rows, bad = await asyncio.to_thread(_read, path)
            if bad:
                self.log.warning("usage_spool_unreadable_lines", file=str(path), lines=bad)
            if await self._flush_rows(rows, replay=True):
                self._spool_dirty = True
                return
            await asyncio.to_thread(path.unlink, missing_ok=True)
            self.log.info("usage_spool_replayed", file=str(path), rows=len(rows))


#: Rows per SQLite statement (its limit is 32,766 bound values; a row has about 25).
_SQLITE_ROWS = 1000


@functools.lru_cache(maxsize=64)
def _sqlite_multirow(rows: int) -> str:
    """``INSERT ... VALUES (?, ...), (?, ...) ... ON CONFLICT (id) DO NOTHING`` for ``rows`` rows."""
    one = "(" + ", ".join("?" * len(_ORDER)) + ")"
    values = ", ".join([one] * rows)
    # Column names from tables.py, values bound: nothing of a client is spliced.
    return f"INSERT INTO usage_records ({', '.join(_ORDER)}) VALUES {values} ON CONFLICT (id) DO NOTHING"  # noqa: S608


def _record(row: Row, postgres: bool) -> tuple[Any, ...]:
    """A row as the driver takes it: every column in ``_ORDER`` (defaults filled), ``created_at`` last, an
    aware datetime for PostgreSQL (the stage table's ``timestamptz``), UTC without an offset in SQLAlchemy's
    text form for SQLite (as ``UTCDateTime`` stores it). ``created_at`` may be an ISO string (a row back
    from a spool file); a naive one is refused (``ValueError``: the row goes to the rejected file). A record
    (a tuple: what requests submit) is already in that form for PostgreSQL."""
    if isinstance(row, tuple):
        if len(row) != len(_ORDER):
            raise ValueError(f"a usage record has {len(_ORDER)} values, not {len(row)}")
        created = row[-1]
        if type(created) is not datetime or created.tzinfo is not UTC:
            created = _aware(_as_dict(row), created)
        if postgres:
            return row if created is row[-1] else (*row[:-1], created)
        return (*row[:-1], created.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds"))
    created = row.get("created_at")
    if type(created) is not datetime or created.tzinfo is not UTC:  # the usual case skips this
        created = _aware(row, created)
    try:
        values: tuple[Any, ...] = _VALUES(row)
    except KeyError:  # a row without some columns (a spool file of an older version): the defaults
        values = tuple([row.get(c, _DEFAULTS.get(c)) for c in _ORDER[:-1]])
    if postgres:
        return (*values, created)
    return (*values, created.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds"))


def _aware(row: dict[str, Any], created: Any) -> datetime:
    """``created_at`` as an aware datetime (read back from its ISO form after a spool trip), or ValueError."""
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            created = datetime.fromisoformat(created)
    if not isinstance(created, datetime) or created.tzinfo is None or created.utcoffset() is None:
        raise ValueError(f"usage row {row.get('id')!r}: created_at must be an aware datetime, not {created!r}")
    return created


async def _copy_batch(conn: Any, records: list[tuple[Any, ...]], behind: Callable[[], bool]) -> None:
    """``records`` copied into the stage table and inserted from it, in one transaction. On a data error
    the transaction is rolled back and the connection kept; on any other failure (cancellation by a
    timeout included) the connection is cut: its state is unknown, and the server rolls back."""
    tr = conn.transaction()
    try:
        await tr.start()
        # Fed row by row with a turn of the loop between slices: asyncpg encodes what it is given at once,
        # and a batch of 500 rows encoded in one go would hold the loop for a millisecond or more. Not while
        # ``behind``: on a saturated loop the writer would fall ever further behind.
        await conn.copy_records_to_table(_STAGE, records=paced(records, hurry=behind), columns=_ORDER,
                                         schema_name="pg_temp")
        await conn.execute(_FROM_STAGE_SQL)
        await tr.commit()
    except BaseException as exc:
        if _is_data_error(exc) and not conn.is_closed():
            try:
                await tr.rollback()
            except BaseException:
                conn.terminate()
                raise
        else:
            conn.terminate()
        raise


def _is_data_error(exc: BaseException) -> bool:
    """The database refused the rows themselves (retrying cannot help), not a failure of the database."""
    # TypeError, ValueError: a value the driver cannot encode for its column (asyncpg's COPY raises
    # TypeError, its DataError is a ValueError), or a naive created_at.
    if isinstance(exc, ValueError | TypeError):
        return True
    # SQLAlchemy's (the SQLite path): when it is not imported, ``exc`` cannot be one of its errors.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    # asyncpg's own errors (the PostgreSQL path): SQLSTATE class 22 (data exception, e.g. a value too
    # long) or 23 (integrity constraint violation, e.g. NOT NULL).
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23"):
        return True
    # A StatementError that is no DBAPIError failed before reaching the database (a bind value refused).
    return sa_exc is not None and isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _as_dict(row: Row) -> dict[str, Any]:
    """A row as a dict by column (a record's values named by ``_ORDER``)."""
    return dict(zip(_ORDER, row, strict=False)) if isinstance(row, tuple) else row


def _encode(rows: Iterable[Row]) -> bytes:
    """Rows as spool (or rejected) file lines: one JSON object by column each, whatever form they came in."""
    return b"".join(orjson.dumps(_as_dict(r), option=orjson.OPT_APPEND_NEWLINE) for r in rows)


def _append(path: Path, data: bytes) -> None:
    with _FILE_LOCK:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def _claim_all(spool_dir: Path, pid: int) -> list[Path]:
    """Rename the spool files this process may replay to ``...replaying-<pid>``; the claimed paths.

    Ours and dead processes' spool files, and ``.replaying-`` files of dead owners (a crash mid-replay)
    or ours (a replay that failed). A live process's files are its own business.
    """
    claimed: list[Path] = []
    with _FILE_LOCK:
        try:
            names = sorted(p.name for p in spool_dir.iterdir() if p.name.startswith(SPOOL_PREFIX))
        except FileNotFoundError:
            return []
        for name in names:
            base, sep, owner = name.partition(REPLAYING)
            if not base.endswith(".jsonl"):
                continue
            try:
                owner_pid = int(owner if sep else base[len(SPOOL_PREFIX):-len(".jsonl")])
            except ValueError:
                continue
            target = spool_dir / f"{base}{REPLAYING}{pid}"
            if sep and owner_pid == pid:
                claimed.append(target)
                continue
            if owner_pid != pid and pid_alive(owner_pid):
                continue
            try:
                os.rename(spool_dir / name, target)
            except FileNotFoundError:  # another process claimed it first
                continue
            claimed.append(target)
    return claimed


def _read(path: Path) -> tuple[list[Row], int]:
    """The rows of a spool file, and how many lines could not be read (a line cut by a crash)."""
    rows: list[Row] = []
    bad = 0
    with _FILE_LOCK:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad
