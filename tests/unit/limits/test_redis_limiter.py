"""The Redis token buckets on the real Redis: the same behaviours as in memory, exactness when two
gateway instances race, the stored layout, and the failure policy when Redis is down and back."""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, cast

import pytest
import redis.asyncio as aioredis

from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.limits.redis_guard import RedisGuard
from gomodel_proxy.limits.redis_limiter import RedisRateLimiter, _Lease
from gomodel_proxy.limits.token_bucket import Limit, RateLimiter


class Log:
    """Records what the guard logs."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append(event)


MakeGuard = Callable[..., Awaitable[RedisGuard]]


@pytest.fixture
async def make_guard(redis_url: str, redis_key_prefix: str) -> AsyncIterator[MakeGuard]:
    """Guards (each with its own client, like separate gateway processes) sharing the test's prefix."""
    guards: list[RedisGuard] = []

    async def make(url: str = redis_url, on_failure: Literal["open", "closed"] = "open",
                   retry_s: float = 0.2, timeout_ms: float = 1000.0) -> RedisGuard:
        config = RedisConfig(url=url, key_prefix=redis_key_prefix, timeout_ms=timeout_ms,
                             on_failure=on_failure, retry_s=retry_s)
        guard = RedisGuard(config, Log())
        guards.append(guard)
        return guard

    yield make
    for guard in guards:
        await guard.close()


@pytest.fixture
async def rl(make_guard: MakeGuard) -> RedisRateLimiter:
    return RedisRateLimiter(await make_guard())


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def test_redis_limiter_satisfies_the_protocol(rl: RedisRateLimiter) -> None:
    limiter: RateLimiter = rl
    assert limiter is rl


async def test_exhaustion_refusal_and_the_stored_buckets(
    rl: RedisRateLimiter, raw: aioredis.Redis, redis_key_prefix: str
) -> None:
    key = Limit("key:a", rpm=3, tpm=600)
    remaining = [(await rl.acquire([key], 100)).remaining_requests for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = await rl.acquire([key], 100)
    assert not refused.allowed and refused.refused_by == "key:a rpm"
    assert 19.0 < refused.retry_after_s <= 20.0
    assert refused.remaining_tokens == 300  # 600 - 3 * 100 (+ a trickle): the refusal took nothing
    bucket = await raw.hgetall(f"{redis_key_prefix}rl:key:a:tpm")
    assert 300 <= float(bucket["tokens"]) < 301
    server_s, server_us = await raw.time()
    assert abs(int(bucket["ts"]) - (server_s * 1_000_000 + server_us)) < 2_000_000  # Redis's clock, in µs
    # Expiry: about the time to refill fully, plus 1 s (3 requests at 3/min: 60 s; 300 tokens: 30 s).
    assert 59_000 < await raw.pttl(f"{redis_key_prefix}rl:key:a:rpm") <= 61_000
    assert 29_000 < await raw.pttl(f"{redis_key_prefix}rl:key:a:tpm") <= 31_000


async def test_refusal_by_one_limit_takes_nothing_from_the_others(rl: RedisRateLimiter) -> None:
    key, user = Limit("key:k", rpm=10, tpm=1000), Limit("user:u", rpm=1, tpm=0)
    team = Limit("team:t", rpm=0, tpm=100)
    ok = await rl.acquire([key, user, team], 50)
    assert ok.allowed and (ok.limit_requests, ok.remaining_requests) == (1, 0)
    assert (ok.limit_tokens, ok.remaining_tokens) == (100, 50)
    by_user = await rl.acquire([key, user, team], 10)
    assert not by_user.allowed and by_user.refused_by == "user:u rpm"
    by_team = await rl.acquire([key, team], 80)
    assert not by_team.allowed and by_team.refused_by == "team:t tpm"
    assert 17.0 < by_team.retry_after_s <= 18.0  # 30 tokens short at 100/min
    alone = await rl.acquire([key], 0)
    assert alone.remaining_requests == 8 and alone.remaining_tokens == 950


async def test_tokens_rule_charges_and_refill(rl: RedisRateLimiter) -> None:
    key = Limit("key:k", rpm=0, tpm=100)
    big = await rl.acquire([key], 500)  # bigger than the limit: passes on a full bucket
    assert big.allowed and big.remaining_tokens == 0 and big.limit_requests is None
    assert 299.0 < big.reset_tokens_s <= 300.0  # type: ignore[operator]
    assert not (await rl.acquire([key], 0)).allowed  # negative: even 0 tokens wait
    await rl.charge([key], -450)  # give back most of the over-estimate: 50 left
    assert (await rl.acquire([key], 40)).allowed
    refused = await rl.acquire([key], 40)  # ~10 left
    assert not refused.allowed and 17.0 < refused.retry_after_s <= 18.0
    await rl.charge([key], -10_000)  # capped at capacity
    full = await rl.acquire([key], 0)
    assert full.remaining_tokens == 100
    await rl.charge([key], 0)
    await rl.charge([Limit("key:k", rpm=5, tpm=0)], 10)  # no token bucket: nothing to do

    fast = Limit("key:fast", rpm=0, tpm=6000)  # 100 tokens/s
    assert (await rl.acquire([fast], 6000)).allowed
    waiting = await rl.acquire([fast], 10)
    assert not waiting.allowed and 0 < waiting.retry_after_s <= 0.1
    await asyncio.sleep(waiting.retry_after_s + 0.02)
    assert (await rl.acquire([fast], 10)).allowed


async def test_unlimited_requests_skip_redis(make_guard: MakeGuard) -> None:
    guard = await make_guard(url=f"redis://127.0.0.1:{free_port()}/0")
    d = await RedisRateLimiter(guard).acquire([Limit("key:k", 0, 0)], 10)
    assert d.allowed and not d.degraded and guard.degraded == 0


async def test_two_instances_racing_let_exactly_the_limit_through(make_guard: MakeGuard, redis_url: str) -> None:
    # Each "process" has its own connection.
    guards = [await make_guard() for _ in range(2)]
    limiters = [RedisRateLimiter(guard) for guard in guards]
    for limiter in limiters:  # connect beforehand (and load the script) so the burst is only the scripts
        await limiter.acquire([Limit("key:warm", 1000, 0)], 0)
    limit = Limit("key:hot", rpm=100, tpm=0)
    started = time.monotonic()
    decisions = await asyncio.gather(*(limiters[i % 2].acquire([limit], 0) for i in range(300)))
    elapsed = time.monotonic() - started
    allowed = sum(d.allowed for d in decisions)
    refilled = math.floor(elapsed * 100 / 60)  # whole requests the bucket can have regained meanwhile
    assert 100 <= allowed <= 100 + refilled
    if elapsed < 0.6:
        assert allowed == 100, (allowed, elapsed)
    assert all(d.refused_by == "key:hot rpm" for d in decisions if not d.allowed)
    assert sum(not d.allowed for d in decisions) == 300 - allowed
    assert not any(d.degraded for d in decisions)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_fail_open_passes_degraded_and_drops_charges(make_guard: MakeGuard) -> None:
    guard = await make_guard(url=f"redis://127.0.0.1:{free_port()}/0", on_failure="open")
    rl = RedisRateLimiter(guard)
    d = await rl.acquire([Limit("key:k", rpm=1, tpm=1)], 10)
    assert d.allowed and d.degraded and d.headers() == {}
    await rl.charge([Limit("key:k", rpm=1, tpm=1)], 10)  # dropped, no error
    assert guard.degraded == 1 and guard.logger.warnings == ["redis unreachable"]


async def test_redis_down_fail_closed_answers_503(make_guard: MakeGuard) -> None:
    guard = await make_guard(url=f"redis://127.0.0.1:{free_port()}/0", on_failure="closed")
    with pytest.raises(ServiceUnavailableError) as caught:
        await RedisRateLimiter(guard).acquire([Limit("key:k", rpm=1, tpm=0)], 0)
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"


class Proxy:
    """A TCP relay to the test Redis that can be cut and restored, to play an outage."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()
        self.server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


async def test_outage_then_recovery_after_retry_s(make_guard: MakeGuard, redis_url: str) -> None:
    target = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = Proxy((target["host"], target["port"]))
    await proxy.start()
    guard = await make_guard(url=f"redis://127.0.0.1:{proxy.port}/{target.get('db', 0)}",
                             retry_s=0.3, timeout_ms=300)
    rl = RedisRateLimiter(guard)
    key = Limit("key:k", rpm=10, tpm=0)
    try:
        assert (await rl.acquire([key], 0)).remaining_requests == 9
        await proxy.stop()
        down = await rl.acquire([key], 0)
        assert down.allowed and down.degraded
        started = time.monotonic()
        resting = await rl.acquire([key], 0)  # within retry_s: answered without waiting on Redis
        assert resting.degraded and time.monotonic() - started < 0.05
        await proxy.start()
        await asyncio.sleep(0.35)
        back = await rl.acquire([key], 0)
        assert back.allowed and not back.degraded
        assert back.remaining_requests == 8  # the bucket survived; degraded passes took nothing
        assert guard.degraded == 2
        assert guard.logger.warnings == ["redis unreachable", "redis reachable again"]
    finally:
        if proxy.server is not None:
            await proxy.stop()


# -- leases ---------------------------------------------------------------------------------------------
async def _level(raw: aioredis.Redis, prefix: str, name: str) -> float:
    return float((await raw.hgetall(f"{prefix}rl:{name}"))["tokens"])


async def test_a_big_bucket_is_leased_ahead_and_served_without_redis(
    make_guard: MakeGuard, raw: aioredis.Redis, redis_key_prefix: str
) -> None:
    guard = await make_guard()
    rl = RedisRateLimiter(guard, lease_share=10)  # a tenth ahead, so that the slow refill shows the amounts
    limit = Limit("key:big", rpm=1_000, tpm=0)  # a lease of 100 requests; refills 16.7 a second
    first = await rl.acquire([limit], 0)
    assert first.allowed and first.remaining_requests == 999  # as if only this request had been taken
    assert 899 <= await _level(raw, redis_key_prefix, "key:big:rpm") < 901  # 1 + 100 leased
    calls = guard.calls
    served = [await rl.acquire([limit], 0) for _ in range(100)]
    assert all(d.allowed for d in served) and guard.calls == calls  # the lease, no round trip
    assert [d.remaining_requests for d in served[:3]] == [998, 997, 996]
    assert rl.leased == 100 and rl.asked == 1
    await rl.acquire([limit], 0)  # the lease is used up: Redis again, with a new lease
    assert guard.calls == calls + 1 and rl.asked == 2
    assert 798 <= await _level(raw, redis_key_prefix, "key:big:rpm") < 805


async def test_small_buckets_and_lease_share_zero_are_decided_in_redis_every_time(make_guard: MakeGuard) -> None:
    guard = await make_guard()
    small = RedisRateLimiter(guard)
    for _ in range(5):
        assert (await small.acquire([Limit("key:small", rpm=999, tpm=999)], 1)).allowed
    assert small.asked == 5 and small.leased == 0
    exact = RedisRateLimiter(guard, lease_share=0)
    for _ in range(5):
        assert (await exact.acquire([Limit("key:exact", rpm=100_000, tpm=0)], 0)).allowed
    assert exact.asked == 5 and exact.leased == 0


async def test_idle_leases_and_a_closed_limiter_give_their_units_back(
    make_guard: MakeGuard, raw: aioredis.Redis, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gomodel_proxy.limits import leases  # noqa: PLC0415

    monkeypatch.setattr(leases, "LEASE_IDLE_S", 0.1)
    guard = await make_guard()
    rl = RedisRateLimiter(guard)
    limit = Limit("key:idle", rpm=60_000, tpm=60_000)  # leases of 60 requests and 60 tokens
    assert (await rl.acquire([limit], 10)).allowed
    assert await _level(raw, redis_key_prefix, "key:idle:rpm") < 59_940
    assert await _level(raw, redis_key_prefix, "key:idle:tpm") < 59_931
    await asyncio.sleep(0.35)  # idle past LEASE_IDLE_S: the sweep hands the units back with the next batch
    assert 59_999 <= await _level(raw, redis_key_prefix, "key:idle:rpm") <= 60_000
    assert 59_990 <= await _level(raw, redis_key_prefix, "key:idle:tpm") <= 60_000
    assert not rl._leases.by_key

    other = Limit("key:closing", rpm=60_000, tpm=0)
    assert (await rl.acquire([other], 0)).allowed
    await rl.close()
    await guard.close()  # sends what waits: the lease's 60 units
    assert 59_999 <= await _level(raw, redis_key_prefix, "key:closing:rpm") <= 60_000


async def test_token_corrections_go_to_the_lease_and_its_excess_or_debt_to_redis(
    make_guard: MakeGuard, raw: aioredis.Redis, redis_key_prefix: str
) -> None:
    guard = await make_guard()
    rl = RedisRateLimiter(guard, lease_share=10)
    limit = Limit("key:tok", rpm=0, tpm=1_000)  # block of 100 tokens; refills 16.7 a second
    assert (await rl.acquire([limit], 50)).allowed  # 50 + 100 leased
    lease = rl._leases.by_key[f"{redis_key_prefix}rl:key:tok:tpm"]
    assert lease.held == 100
    rl.charge_nowait([limit], -30)  # an over-estimate given back: kept in the lease
    assert lease.held == 130
    rl.charge_nowait([limit], -100)  # 230 > twice the block: the surplus over one block goes back to Redis
    assert lease.held == 100
    await asyncio.sleep(0.05)
    assert 980 <= await _level(raw, redis_key_prefix, "key:tok:tpm") < 984  # 1,000 - 150 + 130
    rl.charge_nowait([limit], 160)  # used more than estimated, beyond the lease: the debt goes to Redis
    assert lease.held == 0
    await asyncio.sleep(0.05)
    assert 920 <= await _level(raw, redis_key_prefix, "key:tok:tpm") < 926  # and 160 - 100 more


async def test_a_refusal_by_an_exact_bucket_takes_nothing_from_a_lease(make_guard: MakeGuard) -> None:
    rl = RedisRateLimiter(await make_guard())
    big, small = Limit("key:b", rpm=100_000, tpm=0), Limit("user:s", rpm=1, tpm=0)
    assert (await rl.acquire([big], 0)).allowed  # leases 100 of key:b
    lease = next(iter(rl._leases.by_key.values()))
    assert lease.held == 100
    assert (await rl.acquire([big, small], 0)).allowed  # key:b from the lease, user:s in Redis
    assert lease.held == 99
    refused = await rl.acquire([big, small], 0)
    assert not refused.allowed and refused.refused_by == "user:s rpm"
    assert lease.held == 99


async def test_two_instances_with_leases_never_admit_more_than_the_limit(make_guard: MakeGuard) -> None:
    limiters = [RedisRateLimiter(await make_guard()) for _ in range(2)]
    for limiter in limiters:
        await limiter.acquire([Limit("key:warm2", 1000, 0)], 0)
    limit = Limit("key:hot2", rpm=5_000, tpm=0)  # leases of 5
    started = time.monotonic()
    decisions = []
    for _ in range(120):  # waves of 50 concurrent requests, as under load: leases form between waves
        decisions += await asyncio.gather(*(limiters[i % 2].acquire([limit], 0) for i in range(50)))
    elapsed = time.monotonic() - started
    allowed = sum(d.allowed for d in decisions)
    refilled = math.floor(elapsed * 5_000 / 60)
    assert allowed <= 5_000 + refilled
    assert allowed >= 5_000 - 2 * 5  # at most a lease per instance left unused
    assert sum(limiter.leased for limiter in limiters) > 0


async def test_a_request_served_by_leases_decides_as_the_general_path_does() -> None:
    """``_from_leases`` (the usual admission) and ``acquire``'s general path give the same ``Decision``,
    headers included, and take the same units from the same leases."""

    class Up:  # a guard that is up; nothing here reaches Redis (every bucket is leased)
        prefix = "t:"
        available = True

        def script(self, source: str) -> str:
            return source

    def leased() -> RedisRateLimiter:
        rl = RedisRateLimiter(cast(Any, Up()))
        for name, cap, unit, held in (("key:a:rpm", 10_000, True, 7.0), ("key:a:tpm", 1_000_000, False, 900.0),
                                      ("team:t:rpm", 50_000, True, 30.0)):
            rl._leases.by_key[f"t:rl:{name}"] = _Lease(held, cap * 0.5, cap // 1000, cap, unit, 0.0)
        return rl

    limits = [Limit("key:a", 10_000, 1_000_000), Limit("team:t", 50_000, 0)]
    fast, general = leased(), leased()
    general._from_leases = lambda *_: None  # type: ignore[method-assign]
    for tokens in (100, 0, 250):
        a, b = await fast.acquire(limits, tokens), await general.acquire(limits, tokens)
        assert a == b and a.headers() == b.headers() and a.allowed
    assert {k: v.held for k, v in fast._leases.by_key.items()} == {
        k: v.held for k, v in general._leases.by_key.items()}
    assert fast.leased == general.leased == 3 and fast.asked == general.asked == 0
    # a lease short of the request's tokens: not served from leases (Redis decides)
    assert fast._from_leases(limits, 10_000) is None
