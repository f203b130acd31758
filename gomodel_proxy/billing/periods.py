"""Budget periods: calendar windows in UTC, and the tag that names the current one.

A budget's counter is keyed by its period's tag, so a new period starts from zero (re-seeded from the
database) without anyone resetting anything: ``d2026-11-27`` (a UTC day), ``w2026-W48`` (an ISO week,
Monday 00:00 UTC; its year is the ISO year, so 2027-01-01 is in ``w2026-W53``), ``m2026-11`` (a calendar
month) and ``total`` (never ends).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

Period = Literal["daily", "weekly", "monthly", "total"]
PERIODS: tuple[Period, ...] = get_args(Period)

#: Where a ``total`` period starts (what the database seed sums from).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """The default clock of the ledgers (replaced in tests to cross period boundaries)."""
    return datetime.now(UTC)


def _utc(now: datetime) -> datetime:
    # A naive datetime would silently be read as local time by astimezone(): refuse it instead.
    if now.tzinfo is UTC:
        return now
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("budget periods need an aware datetime (UTC)")
    return now.astimezone(UTC)


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime | None]:
    """The period containing ``now``: (start, end), end exclusive; ``total`` has no end."""
    now = _utc(now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    if period == "total":
        return EPOCH, None
    raise ValueError(f"unknown budget period {period!r}")


def period_tag(period: Period, now: datetime) -> str:
    """The name of the period containing ``now`` (part of the counter's key); asked on every
    reservation, so remembered per day (a string format costs more than the lookup)."""
    now = _utc(now)
    key = (period, now.year, now.month, now.day)
    tag = _TAGS.get(key)
    if tag is None:
        if len(_TAGS) > 64:
            _TAGS.clear()
        tag = _TAGS[key] = _period_tag(period, now)
    return tag


_TAGS: dict[tuple[str, int, int, int], str] = {}


def _period_tag(period: Period, now: datetime) -> str:
    if period == "daily":
        return f"d{now:%Y-%m-%d}"
    if period == "weekly":
        year, week, _ = now.isocalendar()
        return f"w{year:04d}-W{week:02d}"
    if period == "monthly":
        return f"m{now:%Y-%m}"
    if period == "total":
        return "total"
    raise ValueError(f"unknown budget period {period!r}")


def seconds_left(period: Period, now: datetime) -> float | None:
    """Seconds until the period resets (``None`` for ``total``, which never does)."""
    _, end = period_bounds(period, now)
    return None if end is None else (end - _utc(now)).total_seconds()
