"""The query of ``GET /admin/usage/timeseries`` on a store of 100,000 usage records, SQLite and PostgreSQL.

    .venv/bin/python bench/usage_timeseries_bench.py                 # 100,000 rows over 30 days, 5 rounds
    .venv/bin/python bench/usage_timeseries_bench.py --rows 200000 --rounds 7 --backend sqlite

Seeds ``--rows`` records spread uniformly over the 30 days before a fixed end (a few keys, users, teams,
models and providers; 5% errors; a third without a time to first byte) in a throw-away PostgreSQL schema
(``GOMODEL_TEST_PG_URL``, else ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) and a temporary
SQLite file, then times ``billing.timeseries.usage_timeseries`` (the whole query, from the call to the
points in Python) for the dashboard's three views: 30 days by day, the last 7 days by hour and the last
6 hours by minute, unfiltered and filtered on one key. Prints the median of ``--rounds`` in ms (after one
warm-up). The schema and the file are removed at the end. The dashboard's budget is 1 s per view.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import insert

from gomodel_proxy.billing.timeseries import Bucket, usage_timeseries
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import usage_records

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
END = datetime(2026, 3, 31, tzinfo=UTC)
SPAN = timedelta(days=30)
#: The views timed: name, period before END, bucket.
VIEWS: tuple[tuple[str, timedelta, Bucket], ...] = (
    ("30 days / day", timedelta(days=30), "day"),
    ("7 days / hour", timedelta(days=7), "hour"),
    ("6 h / minute", timedelta(hours=6), "minute"),
)



async def drop_schema(url: str, schema: str) -> None:
    """The scratch schema a run seeded, dropped (``url``: SQLAlchemy's form, ``+asyncpg`` included)."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()

def make_rows(count: int, seed: int = 1) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    models = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku"),
              ("gemini", "gemini-2.0-flash")]
    rows = []
    span_us = int(SPAN.total_seconds() * 1_000_000)
    for n in range(count):
        provider, model = rnd.choice(models)
        key = rnd.randrange(20)
        failed = rnd.random() < 0.05
        rows.append({
            "id": f"b{n:010d}", "request_id": uuid.uuid4().hex, "created_at": END - timedelta(
                microseconds=rnd.randrange(1, span_us)),
            "key_id": f"k{key}", "user_id": f"u{key % 7}", "team_id": f"t{key % 3}", "provider": provider,
            "model_requested": model, "model": model, "endpoint": "/v1/chat/completions",
            "status": rnd.choice([429, 500, 502]) if failed else 200, "stream": rnd.random() < 0.5,
            "input_tokens": rnd.randrange(10, 4000), "output_tokens": rnd.randrange(1, 1000),
            "cost": round(rnd.uniform(0, 0.02), 9), "latency_ms": round(rnd.lognormvariate(6, 0.8), 3),
            "ttfb_ms": None if n % 3 == 0 else round(rnd.lognormvariate(5, 0.7), 3),
            "outcome": "upstream_error" if failed else "ok",
        })
    return rows


async def seed(db: Database, rows: list[dict[str, Any]]) -> float:
    began = time.perf_counter()
    for i in range(0, len(rows), 5000):
        async with db.begin() as conn:
            await conn.execute(insert(usage_records), rows[i:i + 5000])
    return time.perf_counter() - began


async def time_views(db: Database, rounds: int) -> list[tuple[str, float, int]]:
    out = []
    for name, period, bucket in VIEWS:
        for filters in ({}, {"key": "k3"}):  # the API's filter names (timeseries.FILTERS)
            label = name + (" key=k3" if filters else "")
            await usage_timeseries(db, start=END - period, end=END, bucket=bucket, filters=filters)  # warm-up
            times = []
            points: list[dict[str, Any]] = []
            for _ in range(rounds):
                began = time.perf_counter()
                points = await usage_timeseries(db, start=END - period, end=END, bucket=bucket, filters=filters)
                times.append((time.perf_counter() - began) * 1000)
            out.append((label, statistics.median(times), len(points)))
    return out


async def run_backend(backend: str, rows: list[dict[str, Any]], rounds: int, pg_url: str) -> None:
    schema: str | None = None
    folder: tempfile.TemporaryDirectory[str] | None = None
    if backend == "postgresql":
        url, schema = pg_url, f"bench_{uuid.uuid4().hex[:10]}"
    else:
        folder = tempfile.TemporaryDirectory(prefix="gomodel-timeseries-")
        url = f"sqlite+aiosqlite:///{Path(folder.name) / 'usage.db'}"
    db = Database(url, schema=schema)
    try:
        await db.connect()
        seconds = await seed(db, rows)
        print(f"\n{backend}: {len(rows):,} rows seeded in {seconds:.1f} s; median of {rounds} (ms):")
        for label, ms, points in await time_views(db, rounds):
            print(f"  {label:<28} {ms:8.1f} ms  {points:5d} points")
    finally:
        await db.close()
        if schema is not None:
            await drop_schema(url, schema)
        if folder is not None:
            folder.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["both", "sqlite", "postgresql"], default="both")
    args = parser.parse_args()
    pg_url = os.environ.get("GOMODEL_TEST_PG_URL", DEFAULT_URL)
    rows = make_rows(args.rows)
    for backend in ("sqlite", "postgresql"):
        if args.backend in ("both", backend):
            await run_backend(backend, rows, args.rounds, pg_url)


if __name__ == "__main__":
    asyncio.run(main())
