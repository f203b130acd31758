"""Usage over time: requests, errors, tokens, cost and latency percentiles per minute, hour or day.

Everything is aggregated in the database (one query, whatever the number of records); Python only
renders the few hundred points that come back. The same query runs on SQLite and PostgreSQL; only the
truncation of ``created_at`` (stored as UTC without an offset) to its bucket differs: ``date_trunc`` on
PostgreSQL, ``strftime`` on SQLite, both rendered as ``YYYY-MM-DD HH:MM:SS`` text so that buckets
compare, group and serialise alike. Periods are half-open: ``start <= created_at < end``.

Definitions (the same on both backends, because both compute them with the same SQL):

* ``errors``: records whose ``status`` is 400 or more, or whose ``outcome`` is neither ``ok`` nor
  ``cached`` (a cache hit is a success). The second half catches what the status cannot: a stream that
  failed after its ``200`` was sent (``upstream_error``, ``guardrail_blocked``) keeps status 200.
* percentiles: nearest rank. The p-th percentile of a bucket's n values is the smallest value v such
  that at least p% of them are <= v, i.e. the value of rank ceil(p * n / 100) in ascending order.
  Computed with ``row_number()``/``count()`` windows and integer arithmetic (``rank * 100 >= p * n``),
  so no floating-point rounding can move a rank. ``ttfb_ms`` percentiles ignore records without a time
  to first byte, and are ``None`` for a bucket where no record has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from gomodel_proxy.storage.database import Database, load_sqlalchemy

if TYPE_CHECKING:  # SQLAlchemy is imported on the first call, off the loop (the admin API imports this module)
    from sqlalchemy import ColumnElement

Bucket = Literal["minute", "hour", "day"]
BUCKETS: tuple[Bucket, ...] = ("minute", "hour", "day")
#: What points can be filtered on (equality), by the names ``/admin/usage`` uses, and the column of each.
FILTERS = {"key": "key_id", "user": "user_id", "team": "team_id", "model": "model", "provider": "provider"}
#: Outcomes that are not failures (``CallRecord.outcome``); any other one is an error.
OK_OUTCOMES = ("ok", "cached")
#: The percentiles of every point (nearest rank).
PERCENTILES = (50, 99)

#: The longest period each bucket is chosen for by default (at most ~500 points): 360 minutes, 504 hours.
_DEFAULT_LIMITS: tuple[tuple[timedelta, Bucket], ...] = (
    (timedelta(hours=6), "minute"),
    (timedelta(days=21), "hour"),
)
_SQLITE_FORMATS: dict[Bucket, str] = {
    "minute": "%Y-%m-%d %H:%M:00",
    "hour": "%Y-%m-%d %H:00:00",
    "day": "%Y-%m-%d 00:00:00",
}
_COST_QUANTUM = Decimal("1e-9")


def default_bucket(start: datetime, end: datetime) -> Bucket:
    """The bucket that gives a chart of at most ~500 points over ``start``..``end``."""
    span = end - start
    for longest, bucket in _DEFAULT_LIMITS:
        if span <= longest:
            return bucket
    return "day"


def _bucket_of(db: Database, bucket: Bucket) -> ColumnElement[Any]:
    """``created_at`` truncated to the start of its bucket, as ``YYYY-MM-DD HH:MM:SS`` text (UTC)."""
    from sqlalchemy import func, literal_column  # noqa: PLC0415 - loaded by the caller

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    col = _table.c.created_at
    if db.backend == "postgresql":
        # A literal unit (one of three fixed words, never client text): PostgreSQL then sees one expression.
        unit: ColumnElement[str] = literal_column(f"'{bucket}'")
        return func.to_char(func.date_trunc(unit, col), "YYYY-MM-DD HH24:MI:SS")
    return func.strftime(_SQLITE_FORMATS[bucket], col)


async def usage_timeseries(
    db: Database,
    *,
    start: datetime,
    end: datetime,
    bucket: Bucket,
    filters: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One point per bucket holding records, ascending: ``t`` (aware UTC datetime of the bucket's start),
    ``requests``, ``errors``, ``input_tokens``, ``output_tokens``, ``cost_usd`` (``Decimal``, to 1e-9),
    ``latency_ms_p50``/``_p99`` and ``ttfb_ms_p50``/``_p99`` (``None`` when no record has a ttfb)."""
    if bucket not in BUCKETS:
        raise ValueError(f"unknown bucket {bucket!r}; accepted: {', '.join(BUCKETS)}")
    filters = filters or {}
    unknown = [n for n in filters if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter {', '.join(map(repr, unknown))}; accepted: {', '.join(FILTERS)}")
    await load_sqlalchemy()
    from sqlalchemy import and_, case, func, or_, select  # noqa: PLC0415 - loaded above, off the loop

    from gomodel_proxy.storage.tables import usage_records as _table  # noqa: PLC0415

    t = _table.c

    # 1. The period's records, each with its bucket.
    rows = select(
        _bucket_of(db, bucket).label("b"),
        case((or_(t.status >= 400, t.outcome.not_in(OK_OUTCOMES)), 1), else_=0).label("err"),
        t.input_tokens, t.output_tokens, t.cost, t.latency_ms, t.ttfb_ms,
    ).where(t.created_at >= start, t.created_at < end)
    for name, value in filters.items():
        rows = rows.where(t[FILTERS[name]] == value)
    rows_sq = rows.subquery("r")

    # 2. Each record's rank in its bucket, by latency and by ttfb (records without one ranked last).
    r = rows_sq.c
    ranked = select(
        r.b, r.err, r.input_tokens, r.output_tokens, r.cost, r.latency_ms, r.ttfb_ms,
        func.row_number().over(partition_by=r.b, order_by=r.latency_ms).label("lat_rank"),
        func.count().over(partition_by=r.b).label("n"),
        func.row_number().over(partition_by=r.b, order_by=r.ttfb_ms.asc().nulls_last()).label("ttfb_rank"),
        func.count(r.ttfb_ms).over(partition_by=r.b).label("ttfb_n"),
    ).subquery("k")

    # 3. One point per bucket; a percentile is the smallest value whose rank reaches ceil(p * n / 100).
    k = ranked.c
    percentiles: list[ColumnElement[Any]] = []
    for p in PERCENTILES:
        percentiles.append(
            func.min(case((k.lat_rank * 100 >= k.n * p, k.latency_ms))).label(f"latency_ms_p{p}")
        )
    for p in PERCENTILES:
        reached = and_(k.ttfb_ms.is_not(None), k.ttfb_rank * 100 >= k.ttfb_n * p)
        percentiles.append(func.min(case((reached, k.ttfb_ms))).label(f"ttfb_ms_p{p}"))
    query = (
        select(
            k.b,
            func.count().label("requests"),
            func.sum(k.err).label("errors"),
            func.sum(k.input_tokens).label("input_tokens"),
            func.sum(k.output_tokens).label("output_tokens"),
            func.sum(k.cost).label("cost"),
            *percentiles,
        )
        .group_by(k.b)
        .order_by(k.b)
    )
    async with db.connect_once() as conn:
        result = (await conn.execute(query)).mappings().all()
    points: list[dict[str, Any]] = []
    for row in result:
        point: dict[str, Any] = {
            "t": datetime.fromisoformat(str(row["b"])).replace(tzinfo=UTC),
            "requests": int(row["requests"]),
            "errors": int(row["errors"] or 0),
            "input_tokens": int(row["input_tokens"] or 0),
            "output_tokens": int(row["output_tokens"] or 0),
            "cost_usd": Decimal(repr(float(row["cost"] or 0.0))).quantize(_COST_QUANTUM),
        }
        for name in ("latency_ms", "ttfb_ms"):
            for p in PERCENTILES:
                value = row[f"{name}_p{p}"]
                point[f"{name}_p{p}"] = None if value is None else float(value)
        points.append(point)
    return points
