"""Usage over time, aggregated in the database, on SQLite and PostgreSQL, against a Python reference."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from gomodel_proxy.billing.timeseries import BUCKETS, FILTERS, Bucket, default_bucket, usage_timeseries
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import usage_records as usage_table

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
START, END = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)


def record(n: int, at: datetime, *, key: str | None = "k1", user: str | None = "u1", team: str | None = "t1",
           model: str = "gpt-4o-mini", provider: str = "openai", status: int = 200, outcome: str = "ok",
           cost: float = 0.001, tokens: tuple[int, int] = (10, 5), latency: float = 10.0,
           ttfb: float | None = None) -> dict[str, Any]:
    return {
        "id": f"c{n:05d}", "request_id": f"r{n}", "created_at": at, "key_id": key, "user_id": user,
        "team_id": team, "provider": provider, "model_requested": model, "model": model,
        "endpoint": "/v1/chat/completions", "status": status, "outcome": outcome, "stream": False,
        "input_tokens": tokens[0], "output_tokens": tokens[1], "cost": cost, "latency_ms": latency,
        "ttfb_ms": ttfb,
    }


def nearest_rank(values: list[float], p: int) -> float | None:
    """The smallest value with at least p% of ``values`` at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def truncate(at: datetime, bucket: Bucket) -> datetime:
    at = at.astimezone(UTC)
    if bucket == "minute":
        return at.replace(second=0, microsecond=0)
    if bucket == "hour":
        return at.replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def reference(rows: list[dict[str, Any]], start: datetime, end: datetime, bucket: Bucket,
              filters: dict[str, str] | None = None) -> list[dict[str, Any]]:
    groups: dict[datetime, list[dict[str, Any]]] = {}
    for row in rows:
        if not start <= row["created_at"] < end:
            continue
        if any(row[FILTERS[name]] != value for name, value in (filters or {}).items()):
            continue
        groups.setdefault(truncate(row["created_at"], bucket), []).append(row)
    points = []
    for t in sorted(groups):
        group = groups[t]
        ttfbs = [r["ttfb_ms"] for r in group if r["ttfb_ms"] is not None]
        points.append({
            "t": t,
            "requests": len(group),
            "errors": sum(1 for r in group if r["status"] >= 400 or r["outcome"] not in ("ok", "cached")),
            "input_tokens": sum(r["input_tokens"] for r in group),
            "output_tokens": sum(r["output_tokens"] for r in group),
            "cost_usd": Decimal(repr(math.fsum(r["cost"] for r in group))).quantize(Decimal("1e-9")),
            "latency_ms_p50": nearest_rank([r["latency_ms"] for r in group], 50),
            "latency_ms_p99": nearest_rank([r["latency_ms"] for r in group], 99),
            "ttfb_ms_p50": nearest_rank(ttfbs, 50),
            "ttfb_ms_p99": nearest_rank(ttfbs, 99),
        })
    return points


def _rows() -> list[dict[str, Any]]:
    """Three hours on 1 March (10:00, 11:00, 12:00), a few rows on 2 March, some outside the period."""
    rnd = random.Random(7)
    rows: list[dict[str, Any]] = []
    n = 0
    for hour, count in ((0, 7), (1, 101), (2, 3)):
        for i in range(count):
            n += 1
            at = T0 + timedelta(hours=hour, minutes=rnd.randrange(3), seconds=rnd.randrange(60),
                                microseconds=rnd.randrange(1_000_000))
            rows.append(record(
                n, at, key=rnd.choice(["k1", "k2", None]), user=rnd.choice(["u1", "u2"]),
                model=rnd.choice(["gpt-4o", "gpt-4o-mini"]), provider=rnd.choice(["openai", "anthropic"]),
                status=rnd.choice([200, 200, 200, 429, 500, 499]),
                outcome=rnd.choice(["ok", "ok", "cached", "upstream_error", "guardrail_blocked"]),
                cost=round(rnd.uniform(0, 0.01), 9), tokens=(rnd.randrange(1000), rnd.randrange(500)),
                latency=round(rnd.uniform(1, 5000), 3), ttfb=None if i % 3 == 0 else round(rnd.uniform(1, 900), 3),
            ))
    # A row exactly at a bucket start, at the start of the next minute of it, and one a microsecond before.
    rows.append(record(9001, T0 + timedelta(hours=3), latency=1.0, ttfb=None))
    rows.append(record(9002, T0 + timedelta(hours=3) - timedelta(microseconds=1), latency=2.0, ttfb=None))
    rows.append(record(9003, T0 + timedelta(hours=3, minutes=1), latency=3.0, ttfb=None))
    # Another day; given at UTC-02:00 (22:30 there is 00:30 UTC on the 3rd).
    rows.append(record(9004, datetime(2026, 3, 2, 22, 30, tzinfo=timezone(timedelta(hours=-2))), latency=4.0))
    rows.append(record(9005, datetime(2026, 3, 2, 5, 0, tzinfo=UTC), status=200, outcome="cached", ttfb=3.5))
    # Outside the half-open period: before it, and at its end.
    rows.append(record(9006, START - timedelta(microseconds=1)))
    rows.append(record(9007, END))
    return rows


ROWS = _rows()


@pytest.fixture
async def seeded(db: Database) -> Database:
    async with db.begin() as conn:
        await conn.execute(insert(usage_table), ROWS)
    return db


def _close(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [p["t"] for p in got] == [p["t"] for p in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for name, value in w.items():
            if isinstance(value, float):
                assert g[name] == pytest.approx(value, abs=1e-9), (g["t"], name)
            else:
                assert g[name] == value, (g["t"], name)


@pytest.mark.parametrize("bucket", BUCKETS)
async def test_points_match_the_python_reference(seeded: Database, bucket: Bucket) -> None:
    got = await usage_timeseries(seeded, start=START, end=END, bucket=bucket)
    want = reference(ROWS, START, END, bucket)
    _close(got, want)
    assert sum(p["requests"] for p in got) == len(ROWS) - 2  # the two outside the period
    assert all(p["t"].tzinfo is UTC for p in got)


async def test_hour_buckets_in_detail(seeded: Database) -> None:
    got = await usage_timeseries(seeded, start=START, end=END, bucket="hour")
    assert [(p["t"], p["requests"]) for p in got] == [
        (T0, 7), (T0 + timedelta(hours=1), 101), (T0 + timedelta(hours=2), 3 + 1),  # 12:59:59.999999
        (T0 + timedelta(hours=3), 2),  # 13:00:00 exactly, and 13:01
        (datetime(2026, 3, 2, 5, tzinfo=UTC), 1),
        (datetime(2026, 3, 3, 0, tzinfo=UTC), 1),
    ]
    last_hour = got[3]
    assert last_hour["latency_ms_p50"] == 1.0 and last_hour["latency_ms_p99"] == 3.0
    assert last_hour["ttfb_ms_p50"] is None and last_hour["ttfb_ms_p99"] is None  # no ttfb at all: null
    assert last_hour["errors"] == 0 and last_hour["cost_usd"] == Decimal("0.002000000")
    cached = got[4]
    assert cached["errors"] == 0 and cached["ttfb_ms_p50"] == cached["ttfb_ms_p99"] == 3.5  # a hit is no error


async def test_nearest_rank_on_known_values(db: Database) -> None:
    # 1..100 ms: p50 is 50 and p99 is 99 (not an interpolation); 10 values: p50 is the 5th, p99 the 10th.
    rows = [record(i, T0 + timedelta(seconds=i % 60), latency=float(101 - i), ttfb=float(i) if i % 2 else None)
            for i in range(1, 101)]
    rows += [record(200 + i, T0 + timedelta(hours=1), latency=float(i * 10)) for i in range(1, 11)]
    async with db.begin() as conn:
        await conn.execute(insert(usage_table), rows)
    first, second = await usage_timeseries(db, start=START, end=END, bucket="hour")
    assert (first["latency_ms_p50"], first["latency_ms_p99"]) == (50.0, 99.0)
    odd = [float(i) for i in range(1, 101, 2)]  # the 50 ttfbs: 1, 3, ..., 99
    assert (first["ttfb_ms_p50"], first["ttfb_ms_p99"]) == (nearest_rank(odd, 50), nearest_rank(odd, 99)) == (
        49.0, 99.0)
    assert (second["latency_ms_p50"], second["latency_ms_p99"]) == (50.0, 100.0)
    assert second["ttfb_ms_p50"] is None


async def test_errors_count_status_and_outcome(db: Database) -> None:
    rows = [
        record(1, T0, status=200, outcome="ok"),
        record(2, T0, status=200, outcome="cached"),
        record(3, T0, status=200, outcome="upstream_error"),  # a stream that failed after its 200
        record(4, T0, status=200, outcome="guardrail_blocked"),
        record(5, T0, status=429, outcome="error"),
        record(6, T0, status=499, outcome="client_disconnected"),
        record(7, T0, status=502, outcome="upstream_error"),
    ]
    async with db.begin() as conn:
        await conn.execute(insert(usage_table), rows)
    (point,) = await usage_timeseries(db, start=START, end=END, bucket="day")
    assert point["requests"] == 7 and point["errors"] == 5


@pytest.mark.parametrize("filters", [
    {"key": "k1"}, {"user": "u2"}, {"team": "t1"}, {"model": "gpt-4o"}, {"provider": "anthropic"},
    {"key": "k2", "model": "gpt-4o-mini", "provider": "openai"}, {"key": "nobody"},
])
async def test_filters(seeded: Database, filters: dict[str, str]) -> None:
    got = await usage_timeseries(seeded, start=START, end=END, bucket="hour", filters=filters)
    _close(got, reference(ROWS, START, END, "hour", filters))
    if filters == {"key": "nobody"}:
        assert got == []


async def test_minute_boundaries_and_a_narrow_period(seeded: Database) -> None:
    start = T0 + timedelta(hours=2, minutes=59)
    got = await usage_timeseries(seeded, start=start, end=start + timedelta(minutes=3), bucket="minute")
    assert [(p["t"], p["requests"]) for p in got] == [
        (start, 1), (T0 + timedelta(hours=3), 1), (T0 + timedelta(hours=3, minutes=1), 1),
    ]
    # The row exactly at the end of a period is not in it; the one at its start is.
    edge = await usage_timeseries(seeded, start=T0 + timedelta(hours=3), end=T0 + timedelta(hours=3, minutes=1),
                                  bucket="minute")
    assert [(p["t"], p["requests"]) for p in edge] == [(T0 + timedelta(hours=3), 1)]


async def test_empty_store_and_bad_arguments(db: Database) -> None:
    assert await usage_timeseries(db, start=START, end=END, bucket="day") == []
    with pytest.raises(ValueError, match="unknown bucket 'week'"):
        await usage_timeseries(db, start=START, end=END, bucket="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown filter 'key_id'; accepted: key, user"):
        await usage_timeseries(db, start=START, end=END, bucket="day", filters={"key_id": "k1"})


def test_default_bucket_keeps_charts_under_about_500_points() -> None:
    assert default_bucket(START, START + timedelta(hours=6)) == "minute"
    assert default_bucket(START, START + timedelta(hours=6, seconds=1)) == "hour"
    assert default_bucket(START, START + timedelta(days=21)) == "hour"
    assert default_bucket(START, START + timedelta(days=21, seconds=1)) == "day"
    assert default_bucket(START, START + timedelta(days=31)) == "day"
