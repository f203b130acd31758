"""Budget periods: UTC calendar windows, ISO weeks across year ends, month ends, and their tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gomodel_proxy.billing.periods import EPOCH, Period, period_bounds, period_tag, seconds_left


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(("period", "now", "start", "end", "tag"), [
    ("daily", at(2026, 11, 27, 13, 5), at(2026, 11, 27), at(2026, 11, 28), "d2026-11-27"),
    ("daily", at(2026, 12, 31, 23, 59, 59), at(2026, 12, 31), at(2027, 1, 1), "d2026-12-31"),
    ("daily", at(2028, 2, 28, 12), at(2028, 2, 28), at(2028, 2, 29), "d2028-02-28"),
    # ISO weeks start on Monday; their year is the ISO year (the one holding the week's Thursday).
    ("weekly", at(2026, 11, 27, 13), at(2026, 11, 23), at(2026, 11, 30), "w2026-W48"),
    ("weekly", at(2026, 11, 23), at(2026, 11, 23), at(2026, 11, 30), "w2026-W48"),
    ("weekly", at(2026, 11, 22, 23, 59, 59), at(2026, 11, 16), at(2026, 11, 23), "w2026-W47"),
    ("weekly", at(2026, 1, 1, 8), at(2025, 12, 29), at(2026, 1, 5), "w2026-W01"),
    ("weekly", at(2027, 1, 1, 8), at(2026, 12, 28), at(2027, 1, 4), "w2026-W53"),
    ("weekly", at(2024, 12, 30), at(2024, 12, 30), at(2025, 1, 6), "w2025-W01"),
    ("monthly", at(2026, 11, 27), at(2026, 11, 1), at(2026, 12, 1), "m2026-11"),
    ("monthly", at(2026, 12, 31, 23, 59, 59), at(2026, 12, 1), at(2027, 1, 1), "m2026-12"),
    ("monthly", at(2028, 2, 29, 10), at(2028, 2, 1), at(2028, 3, 1), "m2028-02"),
    ("monthly", at(2027, 1, 1), at(2027, 1, 1), at(2027, 2, 1), "m2027-01"),
    ("total", at(2026, 11, 27), EPOCH, None, "total"),
])
def test_bounds_and_tag(period: Period, now: datetime, start: datetime, end: datetime | None, tag: str) -> None:
    assert period_bounds(period, now) == (start, end)
    assert period_tag(period, now) == tag
    assert start <= now and (end is None or now < end)


def test_epoch_is_aware_utc_1970() -> None:
    start, end = period_bounds("total", at(2026, 1, 1))
    assert start == datetime(1970, 1, 1, tzinfo=UTC) and start.utcoffset() == timedelta(0)
    assert end is None


def test_other_offsets_are_read_in_utc() -> None:
    # 01:00 at UTC+5 on the 1st is still the previous day (and month) in UTC.
    now = datetime(2026, 12, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    assert period_tag("daily", now) == "d2026-11-30"
    assert period_tag("monthly", now) == "m2026-11"
    start, end = period_bounds("monthly", now)
    assert (start, end) == (at(2026, 11, 1), at(2026, 12, 1))
    assert start.tzinfo == UTC


def test_seconds_left() -> None:
    assert seconds_left("daily", at(2026, 11, 27, 23, 59, 30)) == 30.0
    assert seconds_left("weekly", at(2026, 11, 29, 23)) == 3600.0
    assert seconds_left("monthly", at(2026, 11, 30, 12)) == 12 * 3600.0
    assert seconds_left("monthly", at(2026, 11, 1)) == 30 * 86400.0
    assert seconds_left("total", at(2026, 11, 27)) is None


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        period_tag("daily", datetime(2026, 11, 27))  # naive: the point of the test
    with pytest.raises(ValueError, match="aware"):
        period_bounds("monthly", datetime(2026, 11, 27))


def test_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="hourly"):
        period_bounds("hourly", at(2026, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hourly"):
        period_tag("hourly", at(2026, 1, 1))  # type: ignore[arg-type]
