"""The file and SQL stores: writes (rotation by size and age, keep_files; batched idempotent inserts on
SQLite and real PostgreSQL) and the reads of ``GET /admin/audit`` (filters, newest first, cursor pages)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gomodel_proxy.audit.build import build_audit, build_sink
from gomodel_proxy.audit.file_sink import FileSink
from gomodel_proxy.audit.pipeline import AuditLogger, NoopAuditLogger
from gomodel_proxy.audit.postgres_sink import SqlAuditSink, audit_table
from gomodel_proxy.audit.query import AuditQuery, decode_cursor, encode_cursor
from gomodel_proxy.config.schema import Config
from gomodel_proxy.storage.database import Database


def entry(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"e{i:04d}", "kind": "request", "ts": 1_000.0 + i, "request_id": f"r{i}",
            "key_id": "k1" if i % 2 else "k2", "model_requested": "m1" if i % 3 else "alias", "model": "m1",
            "provider": "p", "status": 200 if i % 5 else 500, **kw}


async def pages(sink: Any, q: AuditQuery) -> list[list[str]]:
    """Every page of ``q``, following cursors as the admin route does."""
    out: list[list[str]] = []
    after = None
    while True:
        found = await sink.query(AuditQuery(**{**{f: getattr(q, f) for f in q.__slots__}, "after": after}))
        page = found[:q.limit]
        out.append([e["id"] for e in page])
        if len(found) <= q.limit:
            return out
        after = decode_cursor(encode_cursor(page[-1]))


def expected(q: AuditQuery, n: int) -> list[str]:
    return [e["id"] for e in sorted((entry(i) for i in range(n)), key=lambda e: e["ts"], reverse=True)
            if q.matches(e)]


QUERIES = [
    AuditQuery(limit=7),
    AuditQuery(key_id="k1", limit=4),
    AuditQuery(model="alias", limit=3),
    AuditQuery(status=500, limit=2),
    AuditQuery(start=1_010.0, end=1_020.0, limit=100),
    AuditQuery(kind="attempt"),
    AuditQuery(request_id="r3"),
]


async def check_queries(sink: Any, n: int) -> None:
    for q in QUERIES:
        got = await pages(sink, q)
        assert [i for page in got for i in page] == expected(q, n), q
        assert all(0 < len(p) <= q.limit for p in got[:-1])


# -- file ------------------------------------------------------------------------------------------
async def test_the_file_store_appends_json_lines_and_reads_them_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "audit.jsonl"
    sink = FileSink(path)
    await sink.start()
    await sink.write([entry(i) for i in range(20)])
    await sink.write([entry(i) for i in range(20, 30)])
    await sink.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [e["id"] for e in lines] == [f"e{i:04d}" for i in range(30)]
    await check_queries(sink, 30)
    with pytest.raises(OSError):
        await sink.write([entry(99)])  # closed


async def test_the_file_rotates_by_size_keeps_the_newest_and_still_reads_across(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(orjson.dumps(entry(0)) + b"\n")  # an earlier run's file: appended to
    sink = FileSink(path, max_bytes=600, keep_files=100)
    await sink.start()
    for i in range(1, 30):
        await sink.write([entry(i)])
    rotated = sink.rotated()
    # The earlier file began in 1970 (entry 0's ts): rotated by age at once; the others by size.
    assert rotated[-1].read_bytes() == orjson.dumps(entry(0)) + b"\n"
    assert len(rotated) >= 5 and all(p.stat().st_size >= 600 for p in rotated[:-1])
    await check_queries(sink, 30)
    # A query starting after a rotated file was rotated skips it (and every older one).
    assert await sink.query(AuditQuery(start=time.time() + 10)) == []
    sink.keep_files = 2
    for i in range(30, 40):
        await sink.write([entry(i)])
    assert len(sink.rotated()) == 2
    await sink.close()
    with_bad = tmp_path / "audit.jsonl"
    with_bad.write_bytes(with_bad.read_bytes() + b"not json\n[1]\n")
    got = await sink.query(AuditQuery(limit=1000))
    assert got[0]["id"] == "e0039" and len(got) < 40  # the deleted files' entries are gone


async def test_the_file_rotates_by_age_of_its_first_entry(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(orjson.dumps({"ts": time.time() - 100, "id": "old"}) + b"\n")
    sink = FileSink(path, rotate_s=50)
    await sink.start()
    await sink.write([entry(1)])  # the file began 100 s ago: rotated first
    assert len(sink.rotated()) == 1
    await sink.write([entry(2)])  # the new file is young: not rotated
    assert len(sink.rotated()) == 1
    await sink.close()
    (tmp_path / "b.jsonl").write_bytes(b"no json\n")
    sink = FileSink(tmp_path / "b.jsonl", rotate_s=50)
    await sink.start()  # an unreadable first line: its age is the file's mtime
    assert sink._began is not None and sink._began == pytest.approx(os.path.getmtime(tmp_path / "b.jsonl"))
    await sink.close()
    assert sink._rotated_at(tmp_path / "b.x.jsonl") == float("inf")


# -- SQL -------------------------------------------------------------------------------------------
@pytest.fixture
async def sql_sink(db_factory: Callable[[], Database]) -> AsyncIterator[SqlAuditSink]:
    sink = SqlAuditSink(db_factory(), "audit_t")
    await sink.start()
    await sink.start()  # created once, idempotent
    yield sink
    await sink.close()


async def test_the_sql_store_inserts_batches_once_and_reads_them_back(sql_sink: SqlAuditSink) -> None:
    batch = [entry(i) for i in range(30)]
    await sql_sink.write(batch)
    await sql_sink.write(batch[:10])  # a batch replayed after a failure that had in fact been written
    await sql_sink.write([])
    got = await sql_sink.query(AuditQuery(limit=1000))
    assert len(got) == 30 and got[0] == batch[-1]
    await check_queries(sql_sink, 30)


async def test_the_sql_store_keeps_odd_values(sql_sink: SqlAuditSink) -> None:
    odd = entry(1, status=True, key_id=None, model="x" * 400, request_body="nul \x00 byte ü")
    await sql_sink.write([odd])
    (got,) = await sql_sink.query(AuditQuery())
    assert got["request_body"] == "nul \x00 byte ü" and got["model"] == "x" * 400


async def test_big_batches_are_split_into_statements(sql_sink: SqlAuditSink) -> None:
    await sql_sink.write([entry(i) for i in range(4500)])
    assert len(await sql_sink.query(AuditQuery(limit=1000, start=0))) == 1001


def test_the_table_name_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="not a table name"):
        audit_table("x; drop table y")


# -- cursors and building --------------------------------------------------------------------------
def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    assert decode_cursor(encode_cursor({"ts": 12.5, "id": "abc"})) == (12.5, "abc")
    for bad in ("", "!!!", "bm90IGpzb24", encode_cursor({"ts": "x", "id": "a"})):
        with pytest.raises(ValueError):
            decode_cursor(bad)
    assert not AuditQuery().matches({"ts": "not a number"})


def config(tmp_path: Path, **audit: Any) -> Config:
    cfg = Config()
    cfg.cache.dir = str(tmp_path)
    cfg.features.audit_logging = True
    for k, v in audit.items():
        setattr(cfg.audit, k, v)
    return cfg


def test_building_follows_the_configuration(tmp_path: Path) -> None:
    cfg = config(tmp_path, backend="file", include_bodies=True, max_body_kb=2, flush_interval_ms=50)
    audit = build_audit(cfg, logger=None)
    assert isinstance(audit, AuditLogger) and isinstance(audit.sink, FileSink)
    assert audit.sink.path == tmp_path / "audit.jsonl" and audit.body_limit == 2048
    assert audit.spill_dir == tmp_path and audit.flush_interval_s == 0.05
    cfg.audit.include_bodies = False
    assert build_audit(cfg, logger=None).body_limit == 0
    cfg.audit.backend = "postgres"
    cfg.database.url = "postgresql+asyncpg://u@h/db"
    cfg.database.schema = "s1"
    sink = build_sink(cfg)
    assert isinstance(sink, SqlAuditSink) and sink.db.schema == "s1" and sink.table.name == "gomodel_audit"
    cfg.audit.url = "postgresql+asyncpg://u@other/db"
    sink = build_sink(cfg)
    assert isinstance(sink, SqlAuditSink) and sink.db.schema is None and sink.db.url.host == "other"
    cfg.audit.backend = "noop"
    assert isinstance(build_audit(cfg, logger=None), NoopAuditLogger)
    cfg.audit.backend = "file"
    cfg.features.audit_logging = False
    assert isinstance(build_audit(cfg, logger=None), NoopAuditLogger)


def test_other_backends_come_from_their_own_module(tmp_path: Path) -> None:
    cfg = config(tmp_path, backend="mongodb", url="mongodb://127.0.0.1:1/db")
    sink = build_sink(cfg)
    assert type(sink).__name__ == "MongoDBAuditSink" and sink.name == "mongodb"
