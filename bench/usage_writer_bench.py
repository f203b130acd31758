"""CPU per usage row of ``UsageWriter`` on PostgreSQL: the ``COPY`` path next to the SQLAlchemy one it replaced.

    .venv/bin/python bench/usage_writer_bench.py                     # 20,000 rows, batches of 200 and 500
    .venv/bin/python bench/usage_writer_bench.py --rows 50000 --rounds 5 --batch 100 200 500

Makes a throw-away schema in the test database (``GOMODEL_TEST_PG_URL``, else
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``), builds ``--rows`` realistic rows with ``usage_row``
and, per batch size and round, alternating old and new, submits them to a writer and closes it (``close()``
flushes what waits in batches of ``batch_size``, through the writer's own code), timing the process's CPU
(``time.process_time()``: this process only, not the server's) and the wall clock. The schema is dropped
at the end.

"old" is the writer with its ``_insert`` of before: ``exec_driver_sql`` of a single-row
``INSERT ... ON CONFLICT (id) DO NOTHING`` with the batch as executemany parameters, through SQLAlchemy's
pooled connection (greenlet, adapter), the rows prepared as the writer used to (dict of every column, then
a tuple). "new" is the writer as it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from usage_timeseries_bench import drop_schema

from gomodel_proxy.billing import usage_writer as uw
from gomodel_proxy.billing.usage import new_call_id, usage_row
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.storage.database import Database

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_OLD_SQL = (
    f"INSERT INTO usage_records ({', '.join(uw._COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(uw._COLUMNS) + 1))}) ON CONFLICT (id) DO NOTHING"
)

_CREATED_AT = uw._COLUMNS.index("created_at")


class _Quiet:
    def __getattr__(self, _level: str) -> Any:
        return lambda *_a, **_kw: None


def _old_prepare(row: dict[str, Any]) -> dict[str, Any]:
    out = {c: row.get(c, uw._DEFAULTS.get(c)) for c in uw._COLUMNS}
    created = out["created_at"]
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            out["created_at"] = datetime.fromisoformat(created)
    return out


def _old_params(row: dict[str, Any]) -> tuple[Any, ...]:
    values = [row[c] for c in uw._COLUMNS]
    created = values[_CREATED_AT]
    if not isinstance(created, datetime) or created.tzinfo is None or created.utcoffset() is None:
        raise ValueError(f"usage row {row.get('id')!r}: created_at must be an aware datetime")
    values[_CREATED_AT] = created.astimezone(UTC).replace(tzinfo=None)
    return tuple(values)


class OldWriter(uw.UsageWriter):
    """The writer with the PostgreSQL insert it had before the ``COPY`` path (for comparison only)."""

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        params = [_old_params(_old_prepare(row)) for row in rows]
        async with self.db.begin() as conn:
            await conn.exec_driver_sql(_OLD_SQL, params)
        self.batches += 1


def make_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        call = CallRecord(
            request_id=f"req-{uuid.uuid4().hex[:16]}", endpoint="/v1/chat/completions", started=100.0,
            stream=bool(i % 2), model_requested="gpt-4o-mini", provider="openai", model="gpt-4o-mini-2024-07-18",
            status=200, usage=Usage(input_tokens=120 + i % 50, output_tokens=40 + i % 17, cached_tokens=i % 3),
            first_byte_at=100.05, finished=100.25,
            principal=Principal(kind="key", key_id="k_ab12cd34", user_id="alice", team_id="research"),
            cost=Decimal("0.000123"),
        )
        rows.append(usage_row(call, new_call_id(), datetime.now(UTC)))
    return rows


async def run_once(
    kind: str, db: Database, rows: list[dict[str, Any]], batch: int, spool: Path
) -> tuple[float, float, float]:
    """µs per row to write ``rows`` through a writer of ``kind``: CPU (user + system), system CPU alone
    (mostly the kernel's loopback TCP, charged to the sender), wall."""
    cls = OldWriter if kind == "old" else uw.UsageWriter
    writer = cls(db, spool, batch_size=batch, flush_interval_s=30, logger=_Quiet(), flush_timeout_s=30)
    gc.collect()
    times0, cpu0, wall0 = os.times(), time.process_time(), time.perf_counter()
    await writer.start()
    for row in rows:
        writer.submit(row)
    await writer.close(timeout_s=120)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    system = os.times().system - times0.system
    if writer.written != len(rows) or writer.spooled or writer.rejected:
        raise SystemExit(f"{kind}: written {writer.written}/{len(rows)}, spooled {writer.spooled}, "
                         f"rejected {writer.rejected}")
    return cpu / len(rows) * 1e6, system / len(rows) * 1e6, wall / len(rows) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("GOMODEL_TEST_PG_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=20_000, help="rows per run (default 20000)")
    parser.add_argument("--batch", type=int, nargs="+", default=[200, 500], help="batch sizes (default 200 500)")
    parser.add_argument("--rounds", type=int, default=3, help="old/new pairs per batch size (default 3)")
    args = parser.parse_args()

    schema = f"bench_uw_{uuid.uuid4().hex[:10]}"
    db = Database(args.url, pool_size=2, max_overflow=2, schema=schema)
    await db.connect()
    total = 0
    try:
        with tempfile.TemporaryDirectory(prefix="usage-bench-") as spool:
            # Warm both paths (connections, prepared statements, the stage table), unmeasured.
            for kind in ("old", "new"):
                await run_once(kind, db, make_rows(1000), 500, Path(spool))
                total += 1000
            print(f"{args.rows} rows per run, {args.rounds} rounds; µs per row, CPU of this process "
                  "(user + system; the system part apart), wall")
            print(f"{'batch':>6} {'path':>4}  {'CPU median':>10}  {'CPU each round':<32} {'of it sys':>9} "
                  f"{'wall median':>11}")
            for batch in args.batch:
                figures: dict[str, list[tuple[float, float, float]]] = {"old": [], "new": []}
                for i in range(args.rounds):
                    for kind in ("old", "new") if i % 2 == 0 else ("new", "old"):
                        rows = make_rows(args.rows)
                        figures[kind].append(await run_once(kind, db, rows, batch, Path(spool)))
                        total += len(rows)
                for kind, runs in figures.items():
                    cpu = [c for c, _, _ in runs]
                    each = " ".join(f"{c:.2f}" for c in cpu)
                    system = statistics.median(s for _, s, _ in runs)
                    wall = statistics.median(w for _, _, w in runs)
                    print(f"{batch:>6} {kind:>4}  {statistics.median(cpu):>10.2f}  {each:<32} {system:>9.2f} "
                          f"{wall:>11.2f}")
        async with db.connect_once() as conn:
            stored = (await conn.exec_driver_sql("SELECT count(*) FROM usage_records")).scalar_one()
        if stored != total:
            raise SystemExit(f"{stored} rows stored, {total} written")
        print(f"{stored} rows stored, as many as written")
    finally:
        await db.close()
        await drop_schema(args.url, schema)


if __name__ == "__main__":
    asyncio.run(main())
