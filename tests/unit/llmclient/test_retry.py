"""Backoff with full jitter and the provider's retry-after in its three spellings."""

from __future__ import annotations

import email.utils

import pytest

from gomodel_proxy.config.schema import RetryConfig
from gomodel_proxy.llmclient.retry import RetryPolicy, retry_after_s


def test_retry_after_seconds_ms_and_http_date() -> None:
    assert retry_after_s({"retry-after": "7"}) == 7.0
    assert retry_after_s({"retry-after": " 1.5 "}) == 1.5
    assert retry_after_s({"retry-after-ms": "250"}) == 0.25
    # retry-after-ms wins: it is the more precise of the two.
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert retry_after_s({"retry-after": date}, wall_clock=lambda: 1_000_000.0) == pytest.approx(30.0)
    assert retry_after_s({"retry-after": date}, wall_clock=lambda: 2_000_000.0) == 0.0  # in the past


@pytest.mark.parametrize("value", ["soon", "-3", "nan", ""])
def test_unreadable_retry_after_is_none(value: str) -> None:
    assert retry_after_s({"retry-after": value}) is None


def test_full_jitter_draws_below_the_exponential_ceiling() -> None:
    draws = iter([0.0, 1.0, 0.5, 0.5])
    policy = RetryPolicy(RetryConfig(backoff_base_ms=100, backoff_max_ms=300), rand=lambda: next(draws))
    assert policy.backoff(1) == 0.0
    assert policy.backoff(2) == pytest.approx(0.2)  # 1.0 * 100 ms * 2
    assert policy.backoff(3) == pytest.approx(0.15)  # 0.5 * min(300, 400) ms
    assert policy.backoff(30) == pytest.approx(0.15)  # capped


def test_without_jitter_the_ceiling_itself() -> None:
    policy = RetryPolicy(RetryConfig(backoff_base_ms=100, backoff_max_ms=1000, jitter=False), rand=lambda: 0.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(RetryConfig(backoff_base_ms=100, backoff_max_ms=2000), rand=lambda: 0.5)
    assert policy.delay(1, None) == pytest.approx(0.05)
    assert policy.delay(1, 1.5) == 1.5  # longer than the backoff: the provider's wait
    assert policy.delay(1, 0.01) == pytest.approx(0.05)  # shorter: the backoff
    assert policy.delay(1, 2.5) is None  # past the cap: no retry
