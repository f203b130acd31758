"""Usage reports, the raw listing and spend per subject, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from gomodel_proxy.billing.export import report_columns, spend_since, to_csv, usage_records, usage_report
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import usage_records as usage_table

DAY1 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
START, END = DAY1, DAY1 + timedelta(days=3)


def record(n: int, at: datetime, *, key: str | None = "k1", user: str | None = "u1", team: str | None = "t1",
           model: str = "gpt-4o-mini", provider: str = "openai", status: int = 200, cost: float = 0.001,
           tokens: tuple[int, int, int, int] = (10, 5, 2, 1)) -> dict[str, Any]:
    return {
        "id": f"c{n:04d}", "request_id": f"r{n}", "created_at": at, "key_id": key, "user_id": user,
        "team_id": team, "provider": provider, "model_requested": model, "model": model,
        "endpoint": "/v1/chat/completions", "status": status, "stream": False,
        "input_tokens": tokens[0], "output_tokens": tokens[1], "cached_tokens": tokens[2],
        "reasoning_tokens": tokens[3], "cost": cost, "latency_ms": 10.0,
    }


@pytest.fixture
async def seeded(db: Database) -> Database:
    rows = [
        record(1, DAY1 + timedelta(hours=1)),
        record(2, DAY1 + timedelta(hours=23, minutes=59)),
        record(3, DAY1 + timedelta(days=1, hours=2), key="k2", user="u2", cost=0.002, status=429),
        record(4, DAY1 + timedelta(days=1, hours=3), key="k2", user="u2", model="claude-3-5-haiku",
               provider="anthropic", cost=0.000000123456, tokens=(100, 50, 0, 0)),
        # 23:30 at UTC-02:00 is 01:30 UTC on the next day: days are UTC days.
        record(5, datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-2))), key=None, user=None,
               team=None, status=502, cost=0.0),
        record(6, DAY1 - timedelta(seconds=1)),  # before the period
        record(7, END),  # the end is excluded
    ]
    async with db.begin() as conn:
        await conn.execute(insert(usage_table), rows)
    return db


async def test_report_by_key_counts_tokens_cost_and_errors(seeded: Database) -> None:
    rows = await usage_report(seeded, start=START, end=END, group_by=["key"])
    assert [r["key_id"] for r in rows] == [None, "k1", "k2"]  # NULL first on both backends
    none, k1, k2 = rows
    assert k1 == {"key_id": "k1", "requests": 2, "input_tokens": 20, "output_tokens": 10, "cached_tokens": 4,
                  "reasoning_tokens": 2, "cost": 0.002, "errors": 0}
    assert k2["requests"] == 2 and k2["errors"] == 1 and k2["input_tokens"] == 110
    assert k2["cost"] == 0.002000123  # rounded to 1e-9 USD
    assert none["errors"] == 1 and none["cost"] == 0.0
    assert list(k1) == report_columns(["key"])


async def test_report_by_utc_day_and_model(seeded: Database) -> None:
    rows = await usage_report(seeded, start=START, end=END, group_by=["day", "model"])
    assert [(r["day"], r["model"], r["requests"]) for r in rows] == [
        ("2026-03-01", "gpt-4o-mini", 2),
        ("2026-03-02", "claude-3-5-haiku", 1),
        ("2026-03-02", "gpt-4o-mini", 1),
        ("2026-03-03", "gpt-4o-mini", 1),
    ]


async def test_report_filters_and_totals(seeded: Database) -> None:
    rows = await usage_report(seeded, start=START, end=END, group_by=["provider"], filters={"user": "u2"})
    assert [(r["provider"], r["requests"]) for r in rows] == [("anthropic", 1), ("openai", 1)]
    total = await usage_report(seeded, start=START, end=END, group_by=[])
    assert len(total) == 1 and total[0]["requests"] == 5 and total[0]["errors"] == 2
    nothing = await usage_report(seeded, start=END + timedelta(days=1), end=END + timedelta(days=2), group_by=[])
    assert nothing == []
    teams = await usage_report(seeded, start=START, end=END, group_by=["team", "user"],
                               filters={"model": "gpt-4o-mini"})
    assert [(r["team_id"], r["user_id"], r["requests"]) for r in teams] == [(None, None, 1), ("t1", "u1", 2),
                                                                             ("t1", "u2", 1)]


async def test_unknown_names_are_refused_with_the_accepted_ones(db: Database) -> None:
    with pytest.raises(ValueError, match=r"unknown group_by 'colour'; accepted: key, user, team, model"):
        await usage_report(db, start=START, end=END, group_by=["key", "colour"])
    with pytest.raises(ValueError, match=r"unknown filter 'day'; accepted: key, user, team, model, provider"):
        await usage_report(db, start=START, end=END, group_by=["key"], filters={"day": "2026-03-01"})
    with pytest.raises(ValueError, match="twice"):
        await usage_report(db, start=START, end=END, group_by=["key", "key"])
    with pytest.raises(ValueError, match="accepted: key, user, team, global"):
        await spend_since(db, scope="org", subject_id="x", start=START)


async def test_csv_has_a_header_and_empty_cells_for_none(seeded: Database) -> None:
    rows = await usage_report(seeded, start=START, end=END, group_by=["key", "day"])
    columns = report_columns(["key", "day"])
    text = to_csv(rows, columns)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == ["key_id", "day", "requests", "input_tokens", "output_tokens", "cached_tokens",
                         "reasoning_tokens", "cost", "errors"]
    assert parsed[1] == ["", "2026-03-03", "1", "10", "5", "2", "1", "0.0", "1"]
    assert len(parsed) == 1 + len(rows) == 4


async def test_spend_since_per_scope(seeded: Database) -> None:
    # "Since" has no end: the record at END counts, and the one before START once start moves back.
    assert await spend_since(seeded, scope="key", subject_id="k1", start=START) == Decimal("0.003000000")
    assert await spend_since(seeded, scope="key", subject_id="k1", start=START - timedelta(days=1)) == Decimal(
        "0.004000000")
    assert await spend_since(seeded, scope="user", subject_id="u2", start=START) == Decimal("0.002000123")
    assert await spend_since(seeded, scope="team", subject_id="t1", start=DAY1 + timedelta(days=1)) == Decimal(
        "0.003000123")
    assert await spend_since(seeded, scope="global", subject_id="", start=START) == Decimal("0.005000123")
    assert await spend_since(seeded, scope="key", subject_id="nobody", start=START) == Decimal(0)


async def test_records_listing_pages_newest_first(seeded: Database) -> None:
    first = await usage_records(seeded, start=START, end=END, filters=None, limit=2, offset=0)
    second = await usage_records(seeded, start=START, end=END, filters=None, limit=2, offset=2)
    assert [r["id"] for r in first + second] == ["c0005", "c0004", "c0003", "c0002"]
    assert first[0]["created_at"] == datetime(2026, 3, 3, 1, 30, tzinfo=UTC)
    only = await usage_records(seeded, start=START, end=END, filters={"key": "k2", "provider": "openai"},
                               limit=10, offset=0)
    assert [(r["id"], r["status"]) for r in only] == [("c0003", 429)]
    with pytest.raises(ValueError):
        await usage_records(seeded, start=START, end=END, filters=None, limit=-1, offset=0)
