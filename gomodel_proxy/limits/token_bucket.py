"""Rate limits as token buckets: requests per minute and tokens per minute, in this process's memory.

Each limit (a key, a user, a team, the whole gateway) owns up to two buckets: one of requests (capacity
``rpm``) and one of tokens (capacity ``tpm``), both refilled continuously at capacity/60 per second and
starting full. A request is admitted only when every bucket it is subject to has room, and then takes
from all of them: all or nothing, so a refusal by one limit never spends another's allowance.

``MemoryRateLimiter`` is exact for one process; ``redis_limiter.RedisRateLimiter`` shares the buckets
between instances. Both answer a ``Decision`` that also carries OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gomodel_proxy.core.errors import RateLimitError


@dataclass(frozen=True, slots=True)
class Limit:
    """One party's limits; ``name`` is ``key:<id>``, ``user:<id>``, ``team:<id>`` or ``global``."""

    name: str
    rpm: int  # 0: no request limit
    tpm: int  # 0: no token limit


@dataclass(slots=True)
class Decision:
    """The answer to one ``acquire``, with the tightest request and token bucket for the headers.

    When refused, the refusing bucket is the one reported for its dimension, so the 429's headers and
    message describe the limit that actually refused.
    """

    allowed: bool
    retry_after_s: float
    refused_by: str | None
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_s: float | None
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_s: float | None
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers (only dimensions that have a limit), plus retry-after when refused."""
        out: dict[str, str] = {}
        if self.limit_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests or 0)
            out["x-ratelimit-reset-requests"] = format_reset(self.reset_requests_s or 0.0)
        if self.limit_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens or 0)
            out["x-ratelimit-reset-tokens"] = format_reset(self.reset_tokens_s or 0.0)
        if not self.allowed:
            out["retry-after"] = str(max(1, math.ceil(self.retry_after_s)))
            out["retry-after-ms"] = str(max(1, _ceil_ms(self.retry_after_s)))
        return out


class RateLimiter(Protocol):
    """What the gateway calls around each request: ``acquire`` before, ``charge`` after, ``close`` at exit."""

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take 1 request and ``tokens`` from every bucket, all or nothing.

        A token bucket admits when it holds at least ``min(tokens, capacity)`` (so a request bigger
        than the whole limit still passes when the bucket is full) and refuses below that.
        """
        ...

    async def charge(self, limits: Sequence[Limit], tokens: int) -> None:
        """Add ``tokens`` (negative: give back an over-estimate) to the token buckets; never refuses."""
        ...

    def charge_nowait(self, limits: Sequence[Limit], tokens: int) -> None:
        """``charge`` without waiting for it (the request's end never waits on a settlement)."""
        ...

    async def close(self) -> None: ...


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it (Go style): ``250ms``, ``1s``, ``8.64s``, ``6m0s``, ``1h0m0s``.

    Rounded up to the millisecond so a client waiting that long never arrives early.
    """
    ms = _ceil_ms(seconds)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}" if ms % 1000 == 0 else f"{ms / 1000:.3f}".rstrip("0")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rate_limit_error(decision: Decision) -> RateLimitError:
    """The 429 for a refused decision, naming the limit that refused and when to retry."""
    refused_by = decision.refused_by or "rate limit"
    name, _, dimension = refused_by.rpartition(" ")
    if dimension == "tpm":
        what = f"{decision.limit_tokens} tokens per minute"
    else:
        what = f"{decision.limit_requests} requests per minute"
    retry = math.ceil(decision.retry_after_s * 10 - 1e-9) / 10
    error = RateLimitError(
        f"Rate limit reached for {name} ({dimension}): {what}; retry in {retry:.1f} s.",
        headers=decision.headers(),
    )
    scope = name.partition(":")[0]
    if scope in ("key", "user", "team", "global") and dimension in ("rpm", "tpm"):
        error.scope, error.dimension = scope, dimension
    return error


def _ceil_ms(seconds: float) -> int:
    # The epsilon keeps float noise (0.6 s computing as 600.0000001 ms) from adding a millisecond.
    return max(0, math.ceil(seconds * 1000 - 1e-6))


def unlimited(degraded: bool = False) -> Decision:
    """A pass with no headers: for requests under no limit, or let through while Redis is down."""
    return Decision(True, 0.0, None, None, None, None, None, None, None, degraded)


def decide(
    allowed: bool,
    tokens: int,
    *,
    req_limits: Sequence[Limit],
    req_levels: Sequence[float],
    tok_limits: Sequence[Limit],
    tok_levels: Sequence[float],
) -> Decision:
    """Build the ``Decision`` from each bucket's level after the admission (taken from when allowed).

    Shared by the memory and the Redis limiter so both report (and refuse) identically. When refused,
    the levels are unchanged, so the buckets lacking room are found again here; the one that needs the
    longest wait names the refusal, and its wait is the retry-after.
    """
    refused_by: str | None = None
    refused_dim = ""
    refused_idx = -1
    wait = 0.0
    if not allowed:
        for i, limit in enumerate(req_limits):
            level = req_levels[i]
            if level < 1.0:
                w = (1.0 - level) * 60.0 / limit.rpm
                if w > wait or refused_idx < 0:
                    wait, refused_dim, refused_idx = w, "rpm", i
        for i, limit in enumerate(tok_limits):
            level = tok_levels[i]
            need = min(tokens, limit.tpm)
            if level < need:
                w = (need - level) * 60.0 / limit.tpm
                if w > wait or refused_idx < 0:
                    wait, refused_dim, refused_idx = w, "tpm", i
        if refused_idx < 0:  # pragma: no cover - the caller refused, so some bucket lacks room
            refused_dim, refused_idx = ("rpm", 0) if req_limits else ("tpm", 0)
        limit = req_limits[refused_idx] if refused_dim == "rpm" else tok_limits[refused_idx]
        refused_by = f"{limit.name} {refused_dim}"
        wait = max(wait, 0.001)

    lim_r = rem_r = None
    reset_r: float | None = None
    if req_limits:
        idx = refused_idx if refused_dim == "rpm" else _tightest(req_limits, req_levels, True)
        cap = req_limits[idx].rpm
        level = req_levels[idx]
        lim_r, rem_r, reset_r = cap, int(level) if level > 0 else 0, max(0.0, (cap - level) * 60.0 / cap)
    lim_t = rem_t = None
    reset_t: float | None = None
    if tok_limits:
        idx = refused_idx if refused_dim == "tpm" else _tightest(tok_limits, tok_levels, False)
        cap = tok_limits[idx].tpm
        level = tok_levels[idx]
        lim_t, rem_t, reset_t = cap, int(level) if level > 0 else 0, max(0.0, (cap - level) * 60.0 / cap)
    return Decision(allowed, wait, refused_by, lim_r, rem_r, reset_r, lim_t, rem_t, reset_t)


def _tightest(limits: Sequence[Limit], levels: Sequence[float], requests: bool) -> int:
    """The bucket with the fewest whole units left; on a tie, the one slowest to refill fully."""
    if len(limits) == 1:
        return 0
    best, best_rem, best_reset = 0, -1, 0.0
    for i, limit in enumerate(limits):
        cap = limit.rpm if requests else limit.tpm
        level = levels[i]
        rem = int(level) if level > 0 else 0
        reset = (cap - level) / cap
        if best_rem < 0 or rem < best_rem or (rem == best_rem and reset > best_reset):
            best, best_rem, best_reset = i, rem, reset
    return best


class MemoryRateLimiter:
    """Buckets in this process's memory: exact for one instance, no I/O, nothing awaited.

    A bucket is ``[level, last update]``; its level is brought up to date only when touched. Buckets
    that have refilled completely are equal to absent ones, so they are swept now and then to keep the
    maps as small as the set of recently active parties.
    """

    _SWEEP_EVERY = 4096
    _SWEEP_ABOVE = 1024

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, list[float]] = {}
        self._tokens: dict[str, list[float]] = {}
        self._calls = 0

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take 1 request and ``tokens`` from every bucket of ``limits``, all or nothing."""
        tokens = max(tokens, 0)
        now = self._clock()
        bucket = self._bucket
        req_limits: list[Limit] = []
        req_buckets: list[list[float]] = []
        tok_limits: list[Limit] = []
        tok_buckets: list[list[float]] = []
        allowed = True
        for limit in limits:
            if limit.rpm > 0:
                b = bucket(self._requests, limit.name, limit.rpm, now)
                if b[0] < 1.0:
                    allowed = False
                req_limits.append(limit)
                req_buckets.append(b)
            if limit.tpm > 0:
                b = bucket(self._tokens, limit.name, limit.tpm, now)
                if b[0] < (tokens if tokens < limit.tpm else limit.tpm):
                    allowed = False
                tok_limits.append(limit)
                tok_buckets.append(b)
        if not req_limits and not tok_limits:
            return unlimited()
        if allowed:
            for b in req_buckets:
                b[0] -= 1.0
            for b in tok_buckets:
                b[0] -= tokens
        self._calls += 1
        if self._calls % self._SWEEP_EVERY == 0:
            self._sweep(now)
        return decide(
            allowed, tokens, req_limits=req_limits, req_levels=[b[0] for b in req_buckets],
            tok_limits=tok_limits, tok_levels=[b[0] for b in tok_buckets],
        )

    async def charge(self, limits: Sequence[Limit], tokens: int) -> None:
        """Add ``tokens`` to the token buckets (negative gives back, never above capacity)."""
        self.charge_nowait(limits, tokens)

    def charge_nowait(self, limits: Sequence[Limit], tokens: int) -> None:
        if tokens == 0:
            return
        now = self._clock()
        for limit in limits:
            if limit.tpm > 0:
                b = self._bucket(self._tokens, limit.name, limit.tpm, now)
                b[0] = min(float(limit.tpm), b[0] - tokens)

    async def close(self) -> None:
        self._requests.clear()
        self._tokens.clear()

    @staticmethod
    def _bucket(buckets: dict[str, list[float]], name: str, capacity: int, now: float) -> list[float]:
        """The bucket brought up to ``now``: refilled at capacity/60 per second, never above capacity."""
        b = buckets.get(name)
        if b is None:
            b = buckets[name] = [float(capacity), now, float(capacity)]
            return b
        level = b[0]
        elapsed = now - b[1]
        if elapsed > 0:
            level += elapsed * capacity / 60.0
            b[1] = now
        b[0] = level if level < capacity else capacity  # also when the limit was lowered since
        b[2] = capacity
        return b

    def _sweep(self, now: float) -> None:
        """Forget buckets that are full by now (they behave exactly like new ones)."""
        for buckets in (self._requests, self._tokens):
            if len(buckets) <= self._SWEEP_ABOVE:
                continue
            full = [
                name for name, (level, ts, cap) in buckets.items() if level + (now - ts) * cap / 60.0 >= cap
            ]
            for name in full:
                del buckets[name]
