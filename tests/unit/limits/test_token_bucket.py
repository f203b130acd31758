"""The in-memory token buckets: refill math on an injected clock, all-or-nothing admission, the tokens
rule and charges, and the OpenAI headers / 429 built from a decision."""

from __future__ import annotations

import pytest

from gomodel_proxy.core.errors import RateLimitError
from gomodel_proxy.limits.token_bucket import (
    Decision,
    Limit,
    MemoryRateLimiter,
    RateLimiter,
    format_reset,
    rate_limit_error,
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rl(clock: Clock) -> MemoryRateLimiter:
    return MemoryRateLimiter(clock=clock)


def test_memory_limiter_satisfies_the_protocol(rl: MemoryRateLimiter) -> None:
    limiter: RateLimiter = rl  # mypy checks the structure; the assert checks it is the same object
    assert limiter is rl


async def test_bucket_starts_full_then_refuses_with_the_wait_until_one_request_refills(
    rl: MemoryRateLimiter, clock: Clock
) -> None:
    key = Limit("key:a", rpm=3, tpm=0)
    remaining = [(await rl.acquire([key], 10)).remaining_requests for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = await rl.acquire([key], 10)
    assert not refused.allowed
    assert refused.refused_by == "key:a rpm"
    assert refused.retry_after_s == pytest.approx(20.0)  # 1 request at 3/min
    assert refused.limit_tokens is None and refused.remaining_tokens is None
    clock.t += 19.9
    assert not (await rl.acquire([key], 10)).allowed
    assert (await rl.acquire([key], 10)).retry_after_s == pytest.approx(0.1)
    clock.t += 0.1
    again = await rl.acquire([key], 10)
    assert again.allowed and again.remaining_requests == 0 and again.retry_after_s == 0


async def test_refill_is_continuous_and_capped_at_capacity(rl: MemoryRateLimiter, clock: Clock) -> None:
    key = Limit("key:a", rpm=60, tpm=0)
    for _ in range(60):
        assert (await rl.acquire([key], 0)).allowed
    clock.t += 0.5
    half = await rl.acquire([key], 0)
    assert not half.allowed and half.retry_after_s == pytest.approx(0.5)
    clock.t += 3600  # an hour idle refills only to capacity
    first = await rl.acquire([key], 0)
    assert first.remaining_requests == 59
    assert first.reset_requests_s == pytest.approx(1.0)  # one request short of full, at 1/s


async def test_refusal_by_one_limit_takes_nothing_from_the_others(rl: MemoryRateLimiter) -> None:
    key, user = Limit("key:k", rpm=10, tpm=1000), Limit("user:u", rpm=1, tpm=0)
    team = Limit("team:t", rpm=0, tpm=100)
    ok = await rl.acquire([key, user, team], 50)
    assert ok.allowed
    assert (ok.limit_requests, ok.remaining_requests) == (1, 0)  # the user's bucket is the tightest
    assert (ok.limit_tokens, ok.remaining_tokens) == (100, 50)  # the team's
    by_user = await rl.acquire([key, user, team], 10)
    assert not by_user.allowed and by_user.refused_by == "user:u rpm"
    by_team = await rl.acquire([key, team], 80)  # the team holds 50 < 80
    assert not by_team.allowed and by_team.refused_by == "team:t tpm"
    assert by_team.limit_tokens == 100 and by_team.remaining_tokens == 50
    assert by_team.retry_after_s == pytest.approx(30 * 60 / 100)
    alone = await rl.acquire([key], 0)
    assert alone.remaining_requests == 8  # 10 - the first - this one: the refusals took nothing
    assert alone.remaining_tokens == 950


async def test_the_longest_wait_names_the_refusal(rl: MemoryRateLimiter) -> None:
    fast, slow = Limit("key:fast", rpm=600, tpm=0), Limit("global", rpm=1, tpm=0)
    for _ in range(1):
        await rl.acquire([fast, slow], 0)
    for _ in range(599):
        await rl.acquire([fast], 0)
    both = await rl.acquire([fast, slow], 0)
    assert both.refused_by == "global rpm" and both.retry_after_s == pytest.approx(60.0)
    assert both.limit_requests == 1


async def test_a_request_bigger_than_the_limit_passes_on_a_full_bucket_and_then_waits(
    rl: MemoryRateLimiter, clock: Clock
) -> None:
    key = Limit("key:k", rpm=0, tpm=100)
    big = await rl.acquire([key], 500)
    assert big.allowed and big.remaining_tokens == 0 and big.limit_requests is None
    assert big.reset_tokens_s == pytest.approx(500 * 0.6)  # from -400 back to 100 at 100/min
    small = await rl.acquire([key], 1)
    assert not small.allowed and small.retry_after_s == pytest.approx(401 * 0.6)
    clock.t += 240.0  # back to 0: a request of 0 tokens passes, 1 token does not yet
    assert (await rl.acquire([key], 0)).allowed
    assert not (await rl.acquire([key], 1)).allowed
    clock.t += 60.0
    assert (await rl.acquire([key], 500)).allowed  # full again: the oversized request passes again


async def test_charges_take_below_zero_and_give_back_up_to_capacity(rl: MemoryRateLimiter) -> None:
    key = Limit("key:k", rpm=5, tpm=100)
    assert (await rl.acquire([key], 100)).remaining_tokens == 0
    await rl.charge([key], -60)  # the estimate was 60 too high
    assert (await rl.acquire([key], 60)).allowed
    await rl.charge([key], 50)  # the answer was longer than estimated: -50
    refused = await rl.acquire([key], 0)
    assert not refused.allowed and refused.refused_by == "key:k tpm"
    assert refused.retry_after_s == pytest.approx(50 * 0.6)
    await rl.charge([key], -1000)
    full = await rl.acquire([key], 0)
    assert full.allowed and full.remaining_tokens == 100 and full.reset_tokens_s == 0
    assert full.remaining_requests == 2  # charges never touch the request bucket (5 - 3 acquires)


async def test_no_limit_at_all_passes_with_no_headers(rl: MemoryRateLimiter) -> None:
    d = await rl.acquire([Limit("key:k", 0, 0)], 10**9)
    assert d.allowed and not d.degraded and d.headers() == {}
    d = await rl.acquire([], 1)
    assert d.allowed and d.refused_by is None


async def test_idle_full_buckets_are_swept(rl: MemoryRateLimiter, clock: Clock) -> None:
    for i in range(4096):
        await rl.acquire([Limit(f"key:{i}", rpm=10, tpm=0)], 0)
    clock.t += 61.0  # all of those are full again
    for i in range(4096):
        await rl.acquire([Limit(f"key:new{i}", rpm=10, tpm=0)], 0)
    assert len(rl._requests) == 4096
    assert all(name.startswith("key:new") for name in rl._requests)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0s"), (0.25, "250ms"), (0.0004, "1ms"), (0.6, "600ms"), (1.0, "1s"), (8.64, "8.64s"),
    (59.9999, "1m0s"), (360.0, "6m0s"), (90.5, "1m30.5s"), (3600.0, "1h0m0s"), (3725.25, "1h2m5.25s"),
])
def test_reset_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_headers_and_the_429_name_the_refusing_limit(rl: MemoryRateLimiter) -> None:
    key = Limit("key:k_1", rpm=100, tpm=10_000)
    for _ in range(100):
        ok = await rl.acquire([key], 10)
    assert ok.headers() == {
        "x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "10000", "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "6s",
    }
    refused = await rl.acquire([key], 10)
    headers = refused.headers()
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "600"
    err = rate_limit_error(refused)
    assert isinstance(err, RateLimitError) and err.status == 429
    assert err.message == "Rate limit reached for key:k_1 (rpm): 100 requests per minute; retry in 0.6 s."
    assert err.headers == headers


def test_the_429_for_tokens_counts_tokens() -> None:
    d = Decision(False, 12.34, "team:t tpm", None, None, None, 5000, 3, 59.9)
    err = rate_limit_error(d)
    assert err.message == "Rate limit reached for team:t (tpm): 5000 tokens per minute; retry in 12.4 s."
    assert err.headers["retry-after"] == "13" and err.headers["retry-after-ms"] == "12340"
    assert "x-ratelimit-limit-requests" not in err.headers
    assert err.headers["x-ratelimit-reset-tokens"] == "59.9s"
