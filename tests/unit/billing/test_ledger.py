"""The budget ledger, in memory and in the real Redis: reserve/settle arithmetic, all or nothing over
several budgets, one seed per counter, periods, the failure policy, and no overshoot under concurrency
from two gateway processes (two ledgers with clients of their own)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from gomodel_proxy.billing.ledger import (
    UNCHECKED,
    BudgetLedger,
    BudgetLimit,
    MemoryLedger,
    RedisLedger,
    budget_exceeded,
    from_nano,
    to_nano,
)
from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import BudgetExceededError, ServiceUnavailableError
from gomodel_proxy.limits.redis_guard import RedisGuard

D = Decimal
# Dates far enough ahead that the Redis keys' EXPIREAT (period end + 1 day) is never in the past.
NOV_27 = datetime(2031, 11, 27, 13, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = NOV_27) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Seeds:
    """A database stand-in: what was spent per budget id, and who asked when."""

    def __init__(self, spent: dict[str, Decimal] | None = None, delay: float = 0.0) -> None:
        self.spent = spent or {}
        self.delay = delay
        self.calls: list[tuple[str, datetime]] = []

    async def __call__(self, budget: BudgetLimit, start: datetime) -> Decimal:
        self.calls.append((budget.id, start))
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.spent.get(budget.id, D(0))


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **_: Any) -> None:
        self.warnings.append(event)


def make_guard(url: str, prefix: str, *, on_failure: str = "open", timeout_ms: float = 3000) -> RedisGuard:
    config = RedisConfig(url=url, key_prefix=prefix, timeout_ms=timeout_ms, on_failure=on_failure, retry_s=0.05)  # type: ignore[arg-type]
    return RedisGuard(config, Log())


MakeLedger = Callable[..., BudgetLedger]


@pytest.fixture
async def opened() -> AsyncIterator[list[BudgetLedger | RedisGuard]]:
    """Ledgers and guards a test made, closed after it (ledgers first: they use the guards)."""
    things: list[BudgetLedger | RedisGuard] = []
    yield things
    for thing in things:
        await thing.close()


@pytest.fixture(params=["memory", "redis"])
def make_ledger(request: pytest.FixtureRequest, opened: list[BudgetLedger | RedisGuard]) -> MakeLedger:
    """Ledgers of one backend; on Redis all of a test's ledgers share its key prefix (one gateway cluster).

    Sync on purpose: it asks for the (async) Redis fixtures only on the Redis leg, so the memory leg
    runs without Redis, and pytest-asyncio cannot set an async fixture up from inside a running one.
    """
    backend: str = request.param
    url = prefix = ""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_key_prefix")

    def make(seed: Seeds, clock: Clock | None = None) -> BudgetLedger:
        ledger: BudgetLedger
        if backend == "memory":
            ledger = MemoryLedger(seed, clock=clock or Clock())
        else:
            guard = make_guard(url, prefix)
            ledger = RedisLedger(guard, seed, clock=clock or Clock())
            opened.append(guard)
        opened.insert(0, ledger)
        return ledger

    return make


TEAM = BudgetLimit("team:research", D("10"), "monthly")


# -- both backends ---------------------------------------------------------------------------------
async def test_reserve_and_settle_arithmetic(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds())
    first = await ledger.reserve([TEAM], D("2"))
    assert first.amount_nano == 2_000_000_000 and first.tags == ("m2031-11",)
    assert await ledger.status(TEAM) == (D(0), D(2))
    second = await ledger.reserve([TEAM], D("3"))
    assert await ledger.status(TEAM) == (D(0), D(5))
    await ledger.settle(first, D("1.5"))
    assert await ledger.status(TEAM) == (D("1.5"), D(3))
    # More than reserved: added whole (the money is spent either way).
    await ledger.settle(second, D("4.000000001"))
    assert await ledger.status(TEAM) == (D("5.500000001"), D(0))


async def test_exact_fit_passes_and_one_nano_more_is_refused(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds({TEAM.id: D("9.5")}))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve([TEAM], D("0.500000001"))
    reservation = await ledger.reserve([TEAM], D("0.5"))
    assert await ledger.status(TEAM) == (D("9.5"), D("0.5"))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve([TEAM], D("0.000000001"))
    await ledger.settle(reservation, D("0.2"))
    assert await ledger.status(TEAM) == (D("9.7"), D(0))


async def test_refusal_names_the_budget_and_takes_nothing(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds({TEAM.id: D("9")}))
    with pytest.raises(BudgetExceededError) as caught:
        await ledger.reserve([TEAM], D("2"))
    error = caught.value
    assert error.status == 429 and error.error_type == "insufficient_quota" and error.code == "budget_exceeded"
    assert "team:research" in error.message and "$10.00" in error.message and "$1.00" in error.message
    assert "monthly, resets 2031-12-01T00:00:00Z" in error.message
    assert error.headers["Retry-After"] == str(3 * 86400 + 11 * 3600)  # to 2031-12-01 from the 27th, 13:00
    assert await ledger.status(TEAM) == (D(9), D(0))


async def test_all_or_nothing_over_several_budgets(make_ledger: MakeLedger) -> None:
    roomy = BudgetLimit("user:alice", D("100"), "daily")
    tight = BudgetLimit("key:k_1", D("1"), "weekly")
    everyone = BudgetLimit("global", D("1000"), "total")
    ledger = make_ledger(Seeds())
    with pytest.raises(BudgetExceededError, match="key:k_1"):
        await ledger.reserve([roomy, tight, everyone], D("2"))
    for budget in (roomy, tight, everyone):
        assert await ledger.status(budget) == (D(0), D(0)), budget.id
    reservation = await ledger.reserve([roomy, tight, everyone], D("0.75"))
    assert reservation.tags == ("d2031-11-27", "w2031-W48", "total")
    for budget in (roomy, tight, everyone):
        assert await ledger.status(budget) == (D(0), D("0.75")), budget.id
    await ledger.settle(reservation, D("0.25"))
    for budget in (roomy, tight, everyone):
        assert await ledger.status(budget) == (D("0.25"), D(0)), budget.id


async def test_a_budget_listed_twice_is_charged_once(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds())
    reservation = await ledger.reserve([TEAM, TEAM], D("6"))
    assert reservation.budgets == (TEAM,)
    assert await ledger.status(TEAM) == (D(0), D(6))
    await ledger.settle(reservation, D("6"))
    assert await ledger.status(TEAM) == (D(6), D(0))


async def test_seeded_once_under_concurrent_first_use(make_ledger: MakeLedger) -> None:
    seeds = Seeds({TEAM.id: D("1")}, delay=0.05)
    other = BudgetLimit("user:bob", D("10"), "daily")
    ledger = make_ledger(seeds)
    reservations = await asyncio.gather(*(ledger.reserve([TEAM, other], D("0.1")) for _ in range(30)))
    assert len(reservations) == 30
    assert sorted(seeds.calls) == [
        (TEAM.id, datetime(2031, 11, 1, tzinfo=UTC)), ("user:bob", datetime(2031, 11, 27, tzinfo=UTC)),
    ]
    assert await ledger.status(TEAM) == (D(1), D("3.0"))
    assert len(seeds.calls) == 2


async def test_settle_hits_the_reservations_period(make_ledger: MakeLedger) -> None:
    clock = Clock(datetime(2031, 11, 30, 23, 59, 59, tzinfo=UTC))
    ledger = make_ledger(Seeds(), clock)
    reservation = await ledger.reserve([TEAM], D("2"))
    clock.now = datetime(2031, 12, 1, 0, 0, 1, tzinfo=UTC)  # the call ended in the next month
    await ledger.settle(reservation, D("1.25"))
    assert await ledger.status(TEAM) == (D(0), D(0))  # December: untouched
    clock.now = datetime(2031, 11, 30, 12, tzinfo=UTC)
    assert await ledger.status(TEAM) == (D("1.25"), D(0))  # November: released and charged


async def test_a_new_period_starts_from_the_seed(make_ledger: MakeLedger) -> None:
    clock = Clock(datetime(2031, 11, 27, 23, 0, tzinfo=UTC))
    daily = BudgetLimit("key:k_2", D("1"), "daily")
    seeds = Seeds()
    ledger = make_ledger(seeds, clock)
    await ledger.settle(await ledger.reserve([daily], D("1")), D("1"))
    with pytest.raises(BudgetExceededError, match="daily, resets 2031-11-28T00:00:00Z"):
        await ledger.reserve([daily], D("0.01"))
    clock.now = datetime(2031, 11, 28, 0, 0, 1, tzinfo=UTC)
    await ledger.reserve([daily], D("0.5"))
    assert await ledger.status(daily) == (D(0), D("0.5"))
    days = [datetime(2031, 11, 27, tzinfo=UTC), datetime(2031, 11, 28, tzinfo=UTC)]
    assert [start for _, start in seeds.calls] == days


async def test_forget_reseeds(make_ledger: MakeLedger) -> None:
    seeds = Seeds()
    ledger = make_ledger(seeds)
    await ledger.settle(await ledger.reserve([TEAM], D("3")), D("3"))
    assert await ledger.status(TEAM) == (D(3), D(0))
    seeds.spent[TEAM.id] = D("2.5")  # what the usage records say
    await ledger.forget(TEAM.id)
    assert await ledger.status(TEAM) == (D("2.5"), D(0))
    assert len(seeds.calls) == 2


async def test_a_raised_maximum_applies_at_once(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds({TEAM.id: D(10)}))
    with pytest.raises(BudgetExceededError, match="used up"):
        await ledger.reserve([TEAM], D("1"))
    raised = BudgetLimit(TEAM.id, D(20), "monthly")
    await ledger.reserve([raised], D("1"))
    assert await ledger.status(raised) == (D(10), D(1))


async def test_no_budgets_and_bad_amounts(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds())
    reservation = await ledger.reserve([], D("5"))
    assert reservation.budgets == ()
    await ledger.settle(reservation, D("5"))
    with pytest.raises(ValueError, match="non-negative"):
        await ledger.reserve([TEAM], D("-1"))
    with pytest.raises(ValueError, match="finite"):
        await ledger.reserve([TEAM], D("NaN"))
    with pytest.raises(ValueError, match="non-negative"):
        await ledger.reserve_nano([TEAM], -1)
    assert await ledger.status(TEAM) == (D(0), D(0))


async def test_the_nano_entry_points_match_the_decimal_ones(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Seeds())
    held = await ledger.reserve_nano([TEAM], 2_500_000_000)
    assert await ledger.status(TEAM) == (D(0), D("2.5"))
    ledger.settle_nowait_nano(held, 1_000_000_001)
    for _ in range(50):  # Redis: applied with the next pipeline
        if await ledger.status(TEAM) == (D("1.000000001"), D(0)):
            break
    assert await ledger.status(TEAM) == (D("1.000000001"), D(0))
    with pytest.raises(BudgetExceededError):
        await ledger.reserve_nano([TEAM], 9_000_000_000)


# -- the message and the money ---------------------------------------------------------------------
def test_budget_exceeded_message() -> None:
    now = datetime(2026, 11, 27, 12, tzinfo=UTC)
    error = budget_exceeded(TEAM, D(10), D(0), now)
    assert error.message == (
        "Budget team:research is used up for this period: $10.00 of $10.00 (monthly, resets 2026-12-01T00:00:00Z)."
    )
    assert error.headers == {"Retry-After": str(3 * 86400 + 12 * 3600)}
    partial = budget_exceeded(TEAM, D("9.5"), D("0.25"), now, requested=D("0.3"))
    assert "has $0.25 of $10.00 left" in partial.message and "$0.25 of it held" in partial.message
    assert "($0.30;" in partial.message
    forever = budget_exceeded(BudgetLimit("global", D("0.5"), "total"), D("0.5"), D(0), now)
    assert forever.message == "Budget global is used up: $0.50 of $0.50 (total, never resets)."
    assert "Retry-After" not in forever.headers


def test_nano_conversion() -> None:
    assert to_nano(D("0.0000000001")) == 1  # a reservation rounds up
    assert to_nano(D("1.2345678905"), "ROUND_HALF_EVEN") == 1_234_567_890
    assert from_nano(1_500_000_000) == D("1.5")
    assert from_nano(to_nano(D("123.456789012"))) == D("123.456789012")


# -- Redis -----------------------------------------------------------------------------------------
async def test_redis_layout_and_expiry(redis_url: str, redis_key_prefix: str) -> None:
    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, Seeds({TEAM.id: D("1.5")}), clock=Clock())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        everyone = BudgetLimit("global", D(100), "total")
        await ledger.reserve([TEAM, everyone], D("0.25"))
        key = f"{redis_key_prefix}bud:team:research:m2031-11"
        assert await client.hgetall(key) == {"spent": "1500000000", "reserved": "250000000"}
        assert await client.expiretime(key) == int(datetime(2031, 12, 2, tzinfo=UTC).timestamp())
        assert await client.ttl(f"{redis_key_prefix}bud:global:total") == -1
    finally:
        await client.aclose()
        await ledger.close()
        await guard.close()


async def test_redis_settle_does_not_recreate_a_flushed_counter(redis_url: str, redis_key_prefix: str) -> None:
    seeds = Seeds({TEAM.id: D(4)})
    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, seeds, clock=Clock())
    client = aioredis.Redis.from_url(redis_url)
    try:
        reservation = await ledger.reserve([TEAM], D(1))
        key = f"{redis_key_prefix}bud:team:research:m2031-11"
        await client.delete(key)  # Redis flushed (or evicted) mid-call
        await ledger.settle(reservation, D(1))
        assert await client.exists(key) == 0  # a bare {spent: 1} would stop the seeding and lose the 4
        seeds.spent[TEAM.id] = D(5)  # the usage record of that call reached the database
        assert await ledger.status(TEAM) == (D(5), D(0))
    finally:
        await client.aclose()
        await ledger.close()
        await guard.close()


async def _race(ledgers: list[RedisLedger], budget: BudgetLimit, amount: Decimal, actual: Decimal, tries: int,
                watch: RedisLedger) -> int:
    """``tries`` concurrent reserve/settle pairs spread over ``ledgers``; returns how many got through,
    checking meanwhile that spent + reserved never exceeds the maximum."""
    over: list[tuple[Decimal, Decimal]] = []
    done = asyncio.Event()

    async def watcher() -> None:
        while not done.is_set():
            spent, reserved = await watch.status(budget)
            if spent + reserved > budget.max_usd:
                over.append((spent, reserved))
            await asyncio.sleep(0.001)

    async def one(i: int) -> bool:
        ledger = ledgers[i % len(ledgers)]
        await asyncio.sleep(random.random() * 0.01)
        try:
            reservation = await ledger.reserve([budget], amount)
        except BudgetExceededError:
            return False
        await asyncio.sleep(random.random() * 0.01)  # the provider call
        await ledger.settle(reservation, actual)
        return True

    watching = asyncio.create_task(watcher())
    results = await asyncio.gather(*(one(i) for i in range(tries)))
    done.set()
    await watching
    assert over == []
    return sum(results)


@pytest.mark.parametrize("actual", [D("0.1"), D("0.04")])
async def test_redis_never_overshoots_across_two_processes(
    redis_url: str, redis_key_prefix: str, actual: Decimal,
) -> None:
    n, amount, already = 25, D("0.1"), D("0.5")
    budget = BudgetLimit("team:race", already + n * amount, "monthly")
    seeds = [Seeds({budget.id: already}, delay=0.02) for _ in range(3)]
    guards = [make_guard(redis_url, redis_key_prefix) for _ in range(3)]  # a client (connections) each
    ledgers = [RedisLedger(guard, seed, clock=Clock()) for guard, seed in zip(guards, seeds, strict=True)]
    try:
        passed = await _race(ledgers[:2], budget, amount, actual, 4 * n, watch=ledgers[2])
        spent, reserved = await ledgers[2].status(budget)
        assert reserved == 0
        if actual == amount:
            assert passed == n
            assert spent == budget.max_usd  # the seed counted once although both processes seeded at once
        else:
            assert passed >= n
            assert spent == already + passed * actual <= budget.max_usd
        assert sum(len(s.calls) for s in seeds[:2]) <= 2  # at most one seed per process
    finally:
        for ledger in ledgers:
            await ledger.close()
        for guard in guards:
            await guard.close()


async def test_memory_never_overshoots() -> None:
    budget = BudgetLimit("team:race", D("2.5"), "daily")
    ledger = MemoryLedger(Seeds(delay=0.01), clock=Clock())

    async def one() -> bool:
        await asyncio.sleep(random.random() * 0.005)
        try:
            reservation = await ledger.reserve([budget], D("0.1"))
        except BudgetExceededError:
            return False
        await asyncio.sleep(random.random() * 0.005)
        await ledger.settle(reservation, D("0.1"))
        return True

    assert sum(await asyncio.gather(*(one() for _ in range(100)))) == 25
    assert await ledger.status(budget) == (D("2.5"), D(0))


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_down(policy: str) -> None:
    guard = make_guard("redis://127.0.0.1:1/0", "gmtest:down:", on_failure=policy, timeout_ms=500)
    seeds = Seeds({TEAM.id: D(3)})
    ledger = RedisLedger(guard, seeds, clock=Clock())
    try:
        if policy == "open":
            reservation = await ledger.reserve([TEAM], D(1))
            assert reservation == UNCHECKED
            await ledger.settle(reservation, D(1))  # ignored, no error
        else:
            with pytest.raises(ServiceUnavailableError) as caught:
                await ledger.reserve([TEAM], D(1))
            assert caught.value.status == 503 and "budgets" in caught.value.message
        assert guard.degraded == 1
        # A reservation made before the outage: its settle is dropped, not raised.
        await ledger.settle(type(UNCHECKED)((TEAM,), 1_000_000_000, ("m2031-11",)), D(1))
        await ledger.forget(TEAM.id)
        assert await ledger.status(TEAM) == (D(3), D(0))  # the database's figure
    finally:
        await ledger.close()
        await guard.close()


# -- leases (Redis) --------------------------------------------------------------------------------
BIG = BudgetLimit("team:big", D(1000), "monthly")  # a thousandth: $1, a lease of 100 requests of $0.01


async def test_redis_leases_a_big_budget_ahead_and_settles_through_the_lease(
    redis_url: str, redis_key_prefix: str
) -> None:
    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, Seeds(), clock=Clock())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{redis_key_prefix}bud:team:big:m2031-11"
    try:
        first = await ledger.reserve([BIG], D("0.01"))
        assert await client.hgetall(key) == {"spent": "0", "reserved": str(10_000_000 + 1_000_000_000)}
        assert await ledger.status(BIG) == (D(0), D("0.01"))  # its own lease is not a request's hold
        calls = guard.calls
        held = [await ledger.reserve([BIG], D("0.01")) for _ in range(100)]
        assert guard.calls == calls and ledger.leased == 100 and ledger.asked == 1  # no round trip
        for reservation in [first, *held]:
            ledger.settle_nowait(reservation, D("0.004"))
        await ledger.reserve([BIG], D("0.01"))  # the lease has room again (it got the holds back)
        assert ledger.asked == 1
        spent, reserved = await ledger.status(BIG)
        assert spent == D("0.404") and reserved == D("0.01")
        stored = await client.hgetall(key)
        assert int(stored["spent"]) == 404_000_000
        assert int(stored["reserved"]) == 1_010_000_000 - 404_000_000  # the lease paid the costs
    finally:
        await ledger.close()
        await guard.close()
    try:  # closed: the lease went back, only the open request's $0.01 stays held
        stored = await client.hgetall(key)
        assert int(stored["reserved"]) == 10_000_000 and int(stored["spent"]) == 404_000_000
    finally:
        await client.aclose()


async def test_redis_small_budgets_are_decided_in_redis_every_time(redis_url: str, redis_key_prefix: str) -> None:
    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, Seeds(), clock=Clock())
    try:
        for _ in range(3):  # a thousandth of $10 is less than one request's $0.02: no lease
            await ledger.reserve([TEAM], D("0.02"))
        assert ledger.asked == 3 and ledger.leased == 0 and not ledger._leases.by_key
    finally:
        await ledger.close()
        await guard.close()


async def test_redis_idle_leases_go_back_and_forget_drops_them(
    redis_url: str, redis_key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gomodel_proxy.limits import leases  # noqa: PLC0415

    monkeypatch.setattr(leases, "LEASE_IDLE_S", 0.1)
    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, Seeds(), clock=Clock())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    key = f"{redis_key_prefix}bud:team:big:m2031-11"
    try:
        reservation = await ledger.reserve([BIG], D("0.01"))
        ledger.settle_nowait(reservation, D("0.01"))
        await asyncio.sleep(0.35)
        assert await client.hgetall(key) == {"spent": "10000000", "reserved": "0"}
        assert not ledger._leases.by_key
        await ledger.reserve([BIG], D("0.01"))
        assert ledger._leases.by_key
        await ledger.forget(BIG.id)
        assert not ledger._leases.by_key and await client.exists(key) == 0
    finally:
        await client.aclose()
        await ledger.close()
        await guard.close()


async def test_redis_leasing_instances_never_overshoot(redis_url: str, redis_key_prefix: str) -> None:
    budget = BudgetLimit("team:leased", D(10), "monthly")  # a thousandth: $0.01, leases of 10 requests
    amount = D("0.001")
    guards = [make_guard(redis_url, redis_key_prefix) for _ in range(3)]
    ledgers = [RedisLedger(guard, Seeds(), clock=Clock()) for guard in guards]
    try:
        passed = 0
        for _ in range(40):  # waves of 300 reservations on two instances, all settled at their worst case
            passed += await _race(ledgers[:2], budget, amount, amount, 300, watch=ledgers[2])
        assert sum(ledger.leased for ledger in ledgers[:2]) > 0
        assert 10_000 - 2 * 10 <= passed <= 10_000  # all but at most a lease per instance was used
        spent, _ = await ledgers[2].status(budget)
        assert spent == passed * amount <= budget.max_usd
    finally:
        for ledger in ledgers:
            await ledger.close()
        for guard in guards:
            await guard.close()


async def test_redis_lease_settlements_are_sent_together(redis_url: str, redis_key_prefix: str) -> None:
    from gomodel_proxy.limits.redis_guard import LINGER_S  # noqa: PLC0415

    guard = make_guard(redis_url, redis_key_prefix)
    ledger = RedisLedger(guard, Seeds(), clock=Clock())
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        held = [await ledger.reserve([BIG], D("0.01")) for _ in range(50)]
        calls = guard.calls
        for reservation in held:
            ledger.settle_nowait(reservation, D("0.002"))
        await asyncio.sleep(LINGER_S * 4)
        assert guard.calls == calls + 1  # fifty settlements of one counter: one call
        stored = await client.hgetall(f"{redis_key_prefix}bud:team:big:m2031-11")
        assert int(stored["spent"]) == 100_000_000
    finally:
        await client.aclose()
        await ledger.close()
        await guard.close()
