"""The usage writer on SQLite and PostgreSQL: batching, idempotence, outages, the spool and its replay."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text

from gomodel_proxy.billing.usage import RECORD_COLUMNS, new_call_id, usage_record, usage_row
from gomodel_proxy.billing.usage_writer import UsageWriter
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import usage_records
from tests.support.tcp_proxy import TcpProxy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class RecordingLogger:
    """Keeps what the writer logged: ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.events.append((level, event, fields))
        return log

    def names(self) -> list[str]:
        return [e[1] for e in self.events]


def make_row(n: int = 0, **overrides: Any) -> dict[str, Any]:
    call = CallRecord(request_id=f"req-{n}", endpoint="/v1/chat/completions", started=100.0, stream=True,
                      model_requested="gpt", provider="openai", model="gpt-4o-mini", status=200,
                      usage=Usage(input_tokens=10, output_tokens=5, cached_tokens=2), first_byte_at=100.05,
                      finished=100.25, principal=Principal(kind="key", key_id="k1", user_id="u1", team_id="t1"),
                      cost=Decimal("0.000123"))
    row = usage_row(call, new_call_id(), T0)
    row.update(overrides)
    return row


async def table_ids(db: Database) -> list[str]:
    async with db.connect_once() as conn:
        return list((await conn.execute(select(usage_records.c.id))).scalars().all())


async def count(db: Database) -> int:
    async with db.connect_once() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


async def dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return proc.pid


def spool_lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def writer(db: Database, spool: Path, **kw: Any) -> UsageWriter:
    kw.setdefault("logger", RecordingLogger())
    kw.setdefault("flush_interval_s", 0.05)
    return UsageWriter(db, spool, **kw)


# -- the row ----------------------------------------------------------------------------------------
def test_usage_row_holds_every_column_and_survives_a_json_round_trip() -> None:
    row = make_row(1)
    assert set(row) == {c.name for c in usage_records.columns}
    assert len(row["id"]) == 24 and int(row["id"], 16) >= 0
    long_id = usage_row(CallRecord(request_id="r" * 300, endpoint="/v1/chat/completions"), "c", T0)
    assert long_id["request_id"] == "r" * 128  # cut to the column's width
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (10, 5, 2)
    assert row["cost"] == pytest.approx(0.000123) and isinstance(row["cost"], float)
    assert row["latency_ms"] == pytest.approx(250.0) and row["ttfb_ms"] == pytest.approx(50.0)
    assert (row["key_id"], row["user_id"], row["team_id"]) == ("k1", "u1", "t1")
    back = orjson.loads(orjson.dumps(row))
    assert datetime.fromisoformat(back["created_at"]) == T0
    bare = usage_row(CallRecord(request_id="x", endpoint="/v1/embeddings", started=1.0, finished=2.0), "c", T0)
    assert bare["input_tokens"] == 0 and bare["cost"] == 0.0 and bare["ttfb_ms"] is None
    assert bare["key_id"] is None and bare["error"] is None


# -- batching and idempotence -----------------------------------------------------------------------
async def test_rows_are_written_in_few_batches(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path, batch_size=200, flush_interval_s=0.5)
    await w.start()
    rows = [make_row(i) for i in range(1000)]
    for row in rows:
        w.submit(row)
    await wait_until(lambda: w.written == 1000)
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert 5 <= w.batches <= 8  # full batches go at once, not one transaction per row
    assert w.pending == 0 and w.spooled == 0 and w.state == "ok"
    await w.close()


async def test_a_partial_batch_goes_after_the_flush_interval(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path, batch_size=500, flush_interval_s=0.1)
    await w.start()
    for i in range(3):
        w.submit(make_row(i))
    assert w.pending == 3
    await wait_until(lambda: w.written == 3, timeout=2)
    assert await count(db) == 3 and w.batches == 1
    await w.close()


async def test_the_same_call_id_twice_is_one_row(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    await w.start()
    row = make_row(7)
    w.submit(row)
    w.submit(dict(row))
    await wait_until(lambda: w.written == 2)
    w.submit(dict(row))
    await w.close()
    assert await table_ids(db) == [row["id"]]


async def test_close_flushes_what_is_left(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path, flush_interval_s=30)
    await w.start()
    rows = [make_row(i) for i in range(40)]
    for row in rows:
        w.submit(row)
    await w.close()
    assert await count(db) == 40 and w.pending == 0
    assert not list(tmp_path.glob("usage-spool-*"))


async def test_a_row_the_database_refuses_is_set_aside_and_the_others_go_in(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    await w.start()
    good = [make_row(i) for i in range(5)]
    bad = make_row(99, created_at=datetime(2026, 3, 1, 12, 0))  # naive: refused by the column type
    for row in [*good[:2], bad, *good[2:]]:
        w.submit(row)
    await wait_until(lambda: w.rejected == 1)
    await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in good)
    rejected = spool_lines(tmp_path / f"usage-rejected-{os.getpid()}.jsonl")
    assert [r["id"] for r in rejected] == [bad["id"]]
    assert w.state == "ok" and "usage_row_rejected" in w.log.names()


# -- spool files ------------------------------------------------------------------------------------
async def test_leftover_spool_files_of_dead_processes_are_replayed_once(db: Database, tmp_path: Path) -> None:
    rows = [make_row(i) for i in range(30)]
    data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    first, second = await dead_pid(), await dead_pid()
    # The same rows twice (a replay that crashed after inserting, then copied): billed once.
    (tmp_path / f"usage-spool-{first}.jsonl").write_bytes(data)
    (tmp_path / f"usage-spool-{second}.jsonl.replaying-{first}").write_bytes(data[: len(data) // 2] + b'{"cut')
    # A live process's files are its own.
    live = os.getppid()
    (tmp_path / f"usage-spool-{live}.jsonl").write_bytes(orjson.dumps(make_row(500)) + b"\n")
    (tmp_path / f"usage-spool-{live + 1}.jsonl.replaying-{live}").write_bytes(b"")
    w = writer(db, tmp_path)
    await w.start()
    await wait_until(lambda: not list(tmp_path.glob(f"usage-spool-{first}*")))
    await wait_until(lambda: not list(tmp_path.glob(f"usage-spool-{second}*")))
    await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert w.replayed >= 30 and w.written == 0
    assert "usage_spool_unreadable_lines" in w.log.names()  # the line cut by the crash
    assert (tmp_path / f"usage-spool-{live}.jsonl").exists()
    assert (tmp_path / f"usage-spool-{live + 1}.jsonl.replaying-{live}").exists()


async def test_a_full_queue_spills_to_the_spool_and_nothing_is_lost(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path, batch_size=1000, max_queue=10, flush_interval_s=30)
    await w.start()
    rows = [make_row(i) for i in range(25)]
    for row in rows:
        w.submit(row)
    await wait_until(lambda: w.spooled == 20)
    assert len(spool_lines(w.spool_path)) == 20 and "usage_queue_full" in w.log.names()
    await w.close()
    assert await count(db) == 5
    again = writer(db, tmp_path)  # the next start replays the spill
    await again.start()
    await wait_until(lambda: again.replayed == 20)
    await again.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert not w.spool_path.exists()


async def test_a_row_submitted_after_close_goes_to_the_spool(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    await w.start()
    await w.close()
    late = make_row(1)
    w.submit(late)
    assert [r["id"] for r in spool_lines(w.spool_path)] == [late["id"]] and w.spooled == 1


# -- the database going down ------------------------------------------------------------------------
class Outage:
    """Makes the writer's database fail and come back: a TCP cut on PostgreSQL, the table moved away on
    SQLite (an embedded file cannot "go down"; a missing table fails every insert as well)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.proxy: TcpProxy | None = None
        self.target = db

    async def __aenter__(self) -> Outage:
        if self.db.backend == "postgresql":
            self.proxy = await TcpProxy(self.db.url.host or "127.0.0.1", self.db.url.port or 5432).start()
            url = self.db.url.set(port=self.proxy.port).render_as_string(hide_password=False)
            self.target = Database(url, pool_size=2, max_overflow=2, schema=self.db.schema)
            await self.target.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.target is not self.db:
            await self.target.close()
        if self.proxy is not None:
            await self.proxy.stop()

    async def down(self) -> None:
        if self.proxy is not None:
            await self.proxy.stop()
        else:
            async with self.db.begin() as conn:
                await conn.execute(text("ALTER TABLE usage_records RENAME TO usage_records_away"))

    async def up(self) -> None:
        if self.proxy is not None:
            await self.proxy.start()
        else:
            async with self.db.begin() as conn:
                await conn.execute(text("ALTER TABLE usage_records_away RENAME TO usage_records"))


async def test_the_database_stopped_mid_load_then_restarted_loses_nothing(db: Database, tmp_path: Path) -> None:
    async with Outage(db) as outage:
        w = writer(outage.target, tmp_path, batch_size=50, flush_interval_s=0.05)
        await w.start()
        submitted: list[str] = []
        slowest = 0.0
        stop = asyncio.Event()

        async def load() -> None:
            nonlocal slowest
            n = 0
            while not stop.is_set():
                for _ in range(5):
                    row = make_row(n)
                    n += 1
                    began = time.perf_counter()
                    w.submit(row)
                    slowest = max(slowest, time.perf_counter() - began)
                    submitted.append(row["id"])
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(load())
        await wait_until(lambda: w.written >= 100)
        await outage.down()
        await wait_until(lambda: w.state == "spooling")
        await asyncio.sleep(1.5)
        assert w.spool_path.exists() and w.spooled > 0
        await outage.up()
        await wait_until(lambda: w.state == "ok" and w.replayed > 0 and not w.spool_path.exists(), timeout=8)
        await asyncio.sleep(0.2)
        stop.set()
        await producer
        await w.close()
        ids = await table_ids(db)
        assert len(ids) == len(submitted) == len(set(submitted))
        assert set(ids) == set(submitted)
        assert w.replayed >= w.spooled > 0 and w.pending == 0
        assert not list(tmp_path.glob("usage-spool-*"))
        assert slowest < 0.01  # submit() never waited on the database
        assert "usage_database_down" in w.log.names() and "usage_database_back" in w.log.names()


async def test_close_with_the_database_down_spools_and_the_next_start_replays(db: Database, tmp_path: Path) -> None:
    rows = [make_row(i) for i in range(60)]
    async with Outage(db) as outage:
        w = writer(outage.target, tmp_path, flush_interval_s=30)
        await w.start()
        for row in rows:
            w.submit(row)
        await outage.down()
        began = time.monotonic()
        await w.close(timeout_s=3)
        assert time.monotonic() - began < 4
        assert w.pending == 0 and w.spooled == 60 and w.state == "spooling"
        assert sorted(r["id"] for r in spool_lines(w.spool_path)) == sorted(r["id"] for r in rows)
        await outage.up()
    # "The next process": a new writer on a reachable database (the same pid owns the spool file).
    again = writer(db, tmp_path)
    await again.start()
    await wait_until(lambda: again.replayed == 60)
    await again.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert not list(tmp_path.glob("usage-spool-*"))


async def test_a_hanging_database_times_out_to_the_spool(db: Database, tmp_path: Path) -> None:
    if db.backend != "postgresql":
        pytest.skip("a server that accepts but never answers needs a network database (TcpProxy.pause)")
    async with Outage(db) as outage:
        assert outage.proxy is not None
        w = writer(outage.target, tmp_path, flush_timeout_s=0.5)
        await w.start()
        outage.proxy.pause()
        rows = [make_row(i) for i in range(20)]
        for row in rows[:10]:
            w.submit(row)
        await wait_until(lambda: w.spooled == 10, timeout=3)
        assert w.state == "spooling" and w.written == 0
        for row in rows[10:]:
            w.submit(row)
        began = time.monotonic()
        await w.close(timeout_s=1)
        assert time.monotonic() - began < 2.5
        assert w.pending == 0 and w.spooled == 20
        outage.proxy.resume()
    again = writer(db, tmp_path)
    await again.start()
    await wait_until(lambda: again.replayed == 20)
    await again.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)


# -- the PostgreSQL path (COPY into a stage table on the writer's own asyncpg connection) -------------
def pg_only(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("the writer's COPY path is PostgreSQL's")


async def stored_rows(db: Database) -> dict[str, dict[str, Any]]:
    async with db.connect_once() as conn:
        return {r["id"]: dict(r) for r in (await conn.execute(select(usage_records))).mappings().all()}


async def test_rows_land_with_their_values_and_types(db: Database, tmp_path: Path) -> None:
    """On both backends: every column as written, ``created_at`` in any zone or as a spooled ISO string
    stored as UTC, and a row missing columns (a spool file of an older version) gets the defaults."""
    plus2 = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))  # = T0
    full = make_row(1, estimated=True, error="boom", outcome="upstream_error", cost=1.5)
    zoned = make_row(2, created_at=plus2, stream=False, ttfb_ms=None)
    spooled = orjson.loads(orjson.dumps(make_row(3)))  # created_at as "2026-03-01T12:00:00+00:00"
    short = {"id": new_call_id(), "request_id": "r-short", "created_at": T0, "provider": "p", "model": "m",
             "endpoint": "/v1/embeddings", "status": 500}
    w = writer(db, tmp_path)
    await w.start()
    for row in (full, zoned, spooled, short):
        w.submit(row)
    await w.close()
    assert w.written == 4 and w.rejected == 0 and w.spooled == 0
    stored = await stored_rows(db)
    for row in (full, zoned, spooled):
        got = stored[row["id"]]
        assert got["created_at"] == T0 and got["created_at"].tzinfo is not None
        for column in _COLUMN_NAMES - {"created_at"}:
            assert got[column] == row[column], column
            assert type(got[column]) is type(row[column]), column
    assert stored[full["id"]]["estimated"] is True and stored[full["id"]]["error"] == "boom"
    assert stored[zoned["id"]]["stream"] is False and stored[zoned["id"]]["ttfb_ms"] is None
    assert isinstance(stored[full["id"]]["cost"], float) and isinstance(stored[full["id"]]["status"], int)
    got = stored[short["id"]]
    assert (got["model_requested"], got["stream"], got["input_tokens"], got["cost"], got["outcome"]) == (
        "", False, 0, 0.0, "ok")
    assert got["key_id"] is None and got["ttfb_ms"] is None and got["created_at"] == T0
    if db.backend == "postgresql":  # UTC without an offset, as UTCDateTime stores it
        async with db.connect_once() as conn:
            raw = (await conn.execute(text("SELECT created_at::text FROM usage_records WHERE id = :id"),
                                      {"id": zoned["id"]})).scalar_one()
        assert raw == "2026-03-01 12:00:00"


_COLUMN_NAMES = {c.name for c in usage_records.columns}


def make_call(n: int) -> CallRecord:
    return CallRecord(request_id=f"rec-{n}", endpoint="/v1/chat/completions", started=100.0, stream=True,
                      model_requested="gpt", provider="openai", model="gpt-4o-mini", status=200,
                      usage=Usage(input_tokens=10, output_tokens=5, cached_tokens=2), first_byte_at=100.05,
                      finished=100.25, principal=Principal(kind="key", key_id="k1", user_id="u1", team_id="t1"),
                      cost=Decimal("0.000123"))


async def test_records_as_requests_submit_them_are_stored_like_rows(db: Database, tmp_path: Path) -> None:
    """``usage_record`` tuples (what requests submit) and ``usage_row`` dicts store the same values."""
    w = writer(db, tmp_path)
    await w.start()
    records = [usage_record(make_call(i), new_call_id(), T0) for i in range(3)]
    for record in records:
        w.submit(record)
    await wait_until(lambda: w.written == 3)
    await w.close()
    stored = await stored_rows(db)
    for record in records:
        row = dict(zip(RECORD_COLUMNS, record, strict=True))
        got = stored[row["id"]]
        assert got["created_at"] == T0
        for column in _COLUMN_NAMES - {"created_at"}:
            assert got[column] == row[column], column


async def test_records_spooled_while_the_database_is_down_are_replayed(db: Database, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    records = [usage_record(make_call(i), new_call_id(), T0) for i in range(3)]
    await w.close()  # closed: a late record goes straight to the spool file, as a row by column
    for record in records:
        w.submit(record)
    lines = [orjson.loads(line) for line in w.spool_path.read_bytes().splitlines()]
    assert lines == [orjson.loads(orjson.dumps(dict(zip(RECORD_COLUMNS, r, strict=True)))) for r in records]
    again = writer(db, tmp_path)
    await again.start()  # replays the spool file left by the closed writer (this process's)
    await wait_until(lambda: again.replayed == 3)
    await again.close()
    assert sorted(await table_ids(db)) == sorted(r[0] for r in records)


async def test_postgres_duplicates_in_a_batch_and_across_batches_are_one_row(db: Database, tmp_path: Path) -> None:
    pg_only(db)
    w = writer(db, tmp_path, batch_size=10)
    await w.start()
    rows = [make_row(i) for i in range(8)]
    for row in [*rows, dict(rows[0]), dict(rows[3])]:  # one batch of 10 holding two duplicates
        w.submit(row)
    await wait_until(lambda: w.written == 10)
    assert w._pg is not None  # the COPY path, on the writer's own connection
    for row in rows[:5]:  # again, later: a replay of rows already written
        w.submit(dict(row))
    await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert w.written == 15 and w.rejected == 0 and w.state == "ok" and w._pg is None  # closed


async def test_postgres_rows_refused_as_data_go_to_the_rejected_file(db: Database, tmp_path: Path) -> None:
    """Refused by the server (too long: SQLSTATE 22001; NULL in a NOT NULL column: 23502) or by the driver
    (a value it cannot encode for the column): set aside, the batch's other rows land, nothing goes down."""
    pg_only(db)
    w = writer(db, tmp_path, batch_size=50, flush_interval_s=0.2)
    await w.start()
    good = [make_row(i) for i in range(6)]
    bad = [make_row(90, request_id="r" * 200), make_row(91, provider=None), make_row(92, status="two hundred"),
           make_row(93, created_at="2026-03-01T12:00:00")]  # naive once read back from a spool file
    for row in [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[3], bad[3], *good[4:]]:
        w.submit(row)
    await wait_until(lambda: w.rejected == 4)
    more = make_row(7)
    w.submit(more)  # the connection is still good after the refusals
    await wait_until(lambda: w.written == 11)
    await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in [*good, more])
    rejected = spool_lines(tmp_path / f"usage-rejected-{os.getpid()}.jsonl")
    assert sorted(r["id"] for r in rejected) == sorted(r["id"] for r in bad)
    assert w.state == "ok" and w.spooled == 0 and "usage_database_down" not in w.log.names()
    assert w.log.names().count("usage_row_rejected") == 4


async def test_postgres_a_connection_cut_while_idle_is_replaced_without_going_down(
    db: Database, tmp_path: Path
) -> None:
    pg_only(db)
    w = writer(db, tmp_path)
    await w.start()
    first = [make_row(i) for i in range(5)]
    for row in first:
        w.submit(row)
    await wait_until(lambda: w.written == 5)
    pid = w._pg.get_server_pid()
    async with db.connect_once() as conn:  # as a server restart or an idle timeout would
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.1)
    second = [make_row(i) for i in range(5)]
    for row in second:
        w.submit(row)
    await wait_until(lambda: w.written == 10)
    assert w._pg.get_server_pid() != pid
    await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in [*first, *second])
    assert w.state == "ok" and w.spooled == 0 and "usage_database_down" not in w.log.names()


async def test_postgres_unreachable_from_the_start_spools_then_replays(db: Database, tmp_path: Path) -> None:
    pg_only(db)
    rows = [make_row(i) for i in range(30)]
    async with Outage(db) as outage:
        await outage.down()  # before the writer ever opened its connection
        w = writer(outage.target, tmp_path, flush_timeout_s=2)
        await w.start()
        for row in rows[:20]:
            w.submit(row)
        await wait_until(lambda: w.spooled == 20 and w.state == "spooling")
        assert w.written == 0 and "usage_database_down" in w.log.names()
        assert [r["id"] for r in spool_lines(w.spool_path)] == [r["id"] for r in rows[:20]]
        await outage.up()
        for row in rows[20:]:  # spooled too while the writer still counts the database as down
            w.submit(row)
        await wait_until(lambda: w.state == "ok" and w.replayed + w.written == 30, timeout=8)
        assert w.replayed >= 20 and not w.spool_path.exists()
        await w.close()
    assert sorted(await table_ids(db)) == sorted(r["id"] for r in rows)
    assert not list(tmp_path.glob("usage-spool-*"))


# -- idle ------------------------------------------------------------------------------------------
async def test_an_idle_writer_sleeps_without_a_timer_and_wakes_for_the_next_row(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = writer(db, tmp_path, flush_interval_s=0.02)
    ticks = 0
    tick = w._tick

    async def counted() -> None:
        nonlocal ticks
        ticks += 1
        await tick()

    monkeypatch.setattr(w, "_tick", counted)
    await w.start()
    await wait_until(lambda: not w._spool_dirty)  # the start's look for spool files is done
    await asyncio.sleep(0.05)
    idle_from = ticks
    await asyncio.sleep(0.3)  # 15 flush intervals with nothing to write
    assert ticks == idle_from
    row = make_row(1)
    w.submit(row)
    await wait_until(lambda: w.written == 1)
    assert await table_ids(db) == [row["id"]]
    # A batch still gathers for one interval: rows that come meanwhile go in the same transaction.
    batches = w.batches
    for n in range(2, 6):
        w.submit(make_row(n))
    await wait_until(lambda: w.written == 5)
    assert w.batches == batches + 1
    await w.close()
