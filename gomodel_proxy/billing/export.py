"""Reading the usage records back: grouped reports (JSON or CSV), the raw listing, and spend per subject.

The same queries on SQLite and PostgreSQL; the only difference is how a timestamp becomes its UTC day
(``date()`` on SQLite, ``to_char()`` on PostgreSQL), picked by ``db.backend``. Days come out as
``YYYY-MM-DD`` strings on both, so that reports compare and serialise alike. Periods are half-open:
``start <= created_at < end``.

SQLAlchemy is imported on the first call (in a worker thread: ``load_sqlalchemy``), not with this module,
which the admin API imports at start-up.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gomodel_proxy.storage.database import Database, load_sqlalchemy

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Select

#: What a report can be grouped by, and the column each name becomes in its rows.
GROUPS: dict[str, str] = {
    "key": "key_id", "user": "user_id", "team": "team_id", "model": "model", "provider": "provider",
    "day": "day",
}
#: What records can be filtered on (equality), and the column each name tests.
FILTERS: dict[str, str] = {
    "key": "key_id", "user": "user_id", "team": "team_id", "model": "model", "provider": "provider",
}
#: The figures of every report row, after its group columns.
METRICS = ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost", "errors")
#: Budget scopes ``spend_since`` knows, and the column each one sums by.
SCOPES: dict[str, str | None] = {"key": "key_id", "user": "user_id", "team": "team_id", "global": None}

_COST_QUANTUM = Decimal("1e-9")


def report_columns(group_by: Sequence[str]) -> list[str]:
    """The columns of ``usage_report`` rows, in order (what ``to_csv`` wants)."""
    _check_names(group_by, GROUPS, "group_by")
    return [GROUPS[g] for g in group_by] + list(METRICS)


async def usage_report(
    db: Database,
    *,
    start: datetime,
    end: datetime,
    group_by: Sequence[str],
    filters: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Requests, tokens, cost (USD) and errors (status >= 400) per group, ordered by the group columns."""
    _check_names(group_by, GROUPS, "group_by")
    if len(set(group_by)) != len(group_by):
        raise ValueError(f"group_by names a column twice: {list(group_by)}")
    await load_sqlalchemy()
    from sqlalchemy import case, func, select  # noqa: PLC0415 - loaded above, off the loop

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    t = _table.c
    keys: list[ColumnElement[Any]] = []
    for name in group_by:
        expr = _day(db) if name == "day" else t[GROUPS[name]]
        keys.append(expr.label(GROUPS[name]))
    figures = [
        func.count().label("requests"),
        func.coalesce(func.sum(t.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(t.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(t.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(t.reasoning_tokens), 0).label("reasoning_tokens"),
        func.coalesce(func.sum(t.cost), 0.0).label("cost"),
        func.coalesce(func.sum(case((t.status >= 400, 1), else_=0)), 0).label("errors"),
    ]
    query = _where(select(*keys, *figures), start, end, filters)
    if keys:
        # NULLs (no key, no user) sort first on both backends (PostgreSQL puts them last by default).
        query = query.group_by(*keys).order_by(*(k.asc().nulls_first() for k in keys))
    async with db.connect_once() as conn:
        result = (await conn.execute(query)).mappings().all()
    rows: list[dict[str, Any]] = []
    for r in result:
        if not keys and not r["requests"]:
            continue  # no group and no record: no row rather than a row of zeros
        row: dict[str, Any] = {GROUPS[g]: r[GROUPS[g]] for g in group_by}
        if "day" in row and row["day"] is not None:
            row["day"] = str(row["day"])
        for name in METRICS:
            row[name] = round(float(r[name]), 9) if name == "cost" else int(r[name])
        rows.append(row)
    return rows


def to_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV with a header line (missing values and ``None`` as empty cells)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return out.getvalue()


async def spend_since(db: Database, *, scope: str, subject_id: str, start: datetime) -> Decimal:
    """USD spent by a key, user, team (``scope``) or everyone (``global``) since ``start``, to 1e-9.

    The budget ledger seeds its live counters with it, so it sums the records, not a cached figure.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown budget scope {scope!r}; accepted: {', '.join(SCOPES)}")
    await load_sqlalchemy()
    from sqlalchemy import func, select  # noqa: PLC0415 - loaded above, off the loop

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    t = _table.c
    query = select(func.coalesce(func.sum(t.cost), 0.0)).where(t.created_at >= start)
    column = SCOPES[scope]
    if column is not None:
        query = query.where(t[column] == subject_id)
    async with db.connect_once() as conn:
        total = (await conn.execute(query)).scalar_one()
    return Decimal(repr(float(total))).quantize(_COST_QUANTUM)


async def usage_records(
    db: Database,
    *,
    start: datetime,
    end: datetime,
    filters: Mapping[str, str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """The records themselves, newest first (then by id, so that pages do not overlap)."""
    if limit < 0 or offset < 0:
        raise ValueError("limit and offset cannot be negative")
    await load_sqlalchemy()
    from sqlalchemy import select  # noqa: PLC0415 - loaded above, off the loop

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    t = _table.c
    query = _where(select(_table), start, end, filters)
    query = query.order_by(t.created_at.desc(), t.id.desc()).limit(limit).offset(offset)
    async with db.connect_once() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


def _where(query: Select[Any], start: datetime, end: datetime, filters: Mapping[str, str] | None) -> Select[Any]:
    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415 - loaded by the caller

    t = _table.c
    filters = filters or {}
    _check_names(filters, FILTERS, "filter")
    query = query.where(t.created_at >= start, t.created_at < end)
    for name, value in filters.items():
        query = query.where(t[FILTERS[name]] == value)
    return query


def _day(db: Database) -> ColumnElement[Any]:
    """The UTC day of ``created_at`` (stored as UTC without an offset) as ``YYYY-MM-DD`` text."""
    from sqlalchemy import func  # noqa: PLC0415 - loaded by the caller

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    col = _table.c.created_at
    if db.backend == "postgresql":
        return func.to_char(col, "YYYY-MM-DD")
    return func.date(col)


def _check_names(names: Sequence[str] | Mapping[str, str], accepted: Mapping[str, str], what: str) -> None:
    unknown = [n for n in names if n not in accepted]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}")
