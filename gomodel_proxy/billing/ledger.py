"""The budget ledger: reserve a request's worst-case cost before the provider is called, settle after.

Concurrent requests must never overshoot a budget, so admission is a reservation, not a read: the
request's worst case (estimated input + max output, priced) is held in every budget it is subject to,
atomically and all or none, only while ``spent + reserved + amount <= max`` holds for each of them.
When the call ends, ``settle`` releases the hold and adds the actual cost (whole, even when it exceeds the
hold: the money is spent either way). Holding the worst case is what makes N concurrent requests for the
last dollar safe: at most the ones that fit get through.

Counters are per (budget, period tag) (see ``periods``), in nano-USD integers (exact; Redis adds them with
HINCRBY); the API speaks ``Decimal`` USD. A counter that does not exist yet (first use in the period,
restart, Redis flushed or expired) is seeded from the database (``Seed``: the usage records' cost since the
period started), once per process however many requests arrive at the same time.

``MemoryLedger`` is exact for one gateway process. ``RedisLedger`` shares the counters between processes:
one hash per (budget, tag) at ``{prefix}bud:{id}:{tag}`` with fields ``spent`` and ``reserved``; Lua scripts
make reserve (check all, take all or none), seed (write only if absent, so two processes seeding at once do
not double count) and settle atomic. Redis unreachable: the guard's failure policy (``redis.on_failure``).

*Leases.* An awaited round trip per request costs more CPU than the rest of the request, so a ``RedisLedger``
reserves a little ahead in a big budget: with a request's reservation, up to ``max // lease_share``
(``LEASE_SHARE``: a thousandth of the maximum) more, held in Redis as reserved like any reservation, which
it then hands to its next requests without asking. Settlements pay from the lease (Redis moves that much from
reserved to spent) and what a request held goes back into it. The instances together still never overshoot:
a lease is reserved before it is used. What it costs is that money one instance holds ahead cannot admit a
request on another (at most a thousandth of the maximum per instance), until it is used or, idle for
``leases.LEASE_IDLE_S``, given back. A budget whose thousandth is smaller than a request's worst case is never
leased: each of its reservations is decided in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any, Protocol

from gomodel_proxy.billing.periods import PERIODS, Period, period_bounds, period_tag, seconds_left, utcnow
from gomodel_proxy.core.errors import BudgetExceededError
from gomodel_proxy.limits.leases import LEASE_SHARE, Leases
from gomodel_proxy.limits.redis_guard import LINGER_S, RedisGuard, RedisUnavailable

__all__ = [
    "UNCHECKED",
    "BudgetLedger",
    "BudgetLimit",
    "MemoryLedger",
    "RedisLedger",
    "Reservation",
    "Seed",
    "budget_exceeded",
    "from_nano",
    "to_nano",
]

_NANO_PER_USD = 9  # decimal exponent: 1 USD = 10**9 nano-USD
#: Rounds of "counter missing -> seed -> retry" before a reservation gives up (only an admin deleting
#: the same counters over and over, or Redis evicting them, could need more than one).
_SEED_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """One budget as the limiter sees it; ``max_usd`` and ``period`` come with every call, so an admin's
    change of the maximum takes effect on the next request without touching the counters."""

    id: str  # "key:k_1", "user:alice", "team:research", "global"
    max_usd: Decimal
    period: Period


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` took, so that ``settle`` gives back exactly that, in the same periods."""

    budgets: tuple[BudgetLimit, ...]
    amount_nano: int
    #: The period tag of each budget at reservation time: a call that straddles midnight settles in the
    #: period that holds its reservation, not in the next one.
    tags: tuple[str, ...]


#: A reservation that holds nothing (no budgets apply, or Redis was down and the policy is fail open);
#: ``settle`` ignores it.
UNCHECKED = Reservation((), 0, ())

#: What was spent in a budget's current period according to the database (sum of usage costs since `start`), asked
#: when a counter for (budget, period) does not exist yet (first use, process restart, Redis flushed).
Seed = Callable[[BudgetLimit, datetime], Awaitable[Decimal]]


class BudgetLedger(Protocol):
    """What the gateway needs from a ledger (memory for one process, Redis for several)."""

    async def reserve(self, budgets: Sequence[BudgetLimit], amount: Decimal) -> Reservation:
        """Raises BudgetExceededError (naming the budget id, its max, the period and when it resets) when any budget
        lacks room; takes nothing then."""
        ...

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Release the reservation and add the actual cost (actual may exceed the reservation: it is added whole)."""
        ...

    def settle_nowait(self, reservation: Reservation, actual: Decimal) -> None:
        """``settle`` without waiting for it (the request's end never waits on a settlement)."""
        ...

    async def reserve_nano(self, budgets: Sequence[BudgetLimit], amount_nano: int) -> Reservation:
        """``reserve`` of an amount in nano-USD (no decimal arithmetic on the request's path)."""
        ...

    def settle_nowait_nano(self, reservation: Reservation, actual_nano: int) -> None:
        """``settle_nowait`` of an amount in nano-USD."""
        ...

    async def status(self, budget: BudgetLimit) -> tuple[Decimal, Decimal]:
        """(spent, reserved) in the budget's current period."""
        ...

    async def forget(self, budget_id: str) -> None:
        """Drop the budget's counters (the admin changed or deleted it); the next use re-seeds."""
        ...

    async def close(self) -> None: ...


# -- money -----------------------------------------------------------------------------------------
def to_nano(usd: Decimal, rounding: str = ROUND_CEILING) -> int:
    """USD -> nano-USD; rounds up by default, so that a reservation never holds less than asked."""
    if not usd.is_finite() or usd < 0:
        raise ValueError(f"a budget amount must be a finite, non-negative USD amount, not {usd}")
    return int(usd.scaleb(_NANO_PER_USD).to_integral_value(rounding=rounding))


def from_nano(nano: int) -> Decimal:
    """nano-USD -> USD, exactly."""
    return Decimal(nano).scaleb(-_NANO_PER_USD)


def _max_nano(budget: BudgetLimit) -> int:
    return _max_nano_of(budget.max_usd)


@functools.lru_cache(maxsize=4096)
def _max_nano_of(max_usd: Decimal) -> int:
    # Rounded down: the cap is never looser than configured. A negative maximum admits nothing.
    # Cached: a budget's maximum is read on every reservation and changes only through the admin API.
    return to_nano(max(max_usd, Decimal(0)), ROUND_FLOOR)


def _usd(value: Decimal) -> str:
    """Dollars for people: cents, or the significant decimals of an amount below a cent's precision."""
    cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if cents == value or abs(value) >= 1:
        return f"${cents}"
    return f"${value.quantize(Decimal('0.000001'), rounding=ROUND_HALF_UP).normalize():f}"


def budget_exceeded(
    budget: BudgetLimit, spent: Decimal, reserved: Decimal, now: datetime, *, requested: Decimal | None = None,
) -> BudgetExceededError:
    """The 429 a client gets: which budget, how much of it is gone, and when it resets (``Retry-After``)."""
    left = seconds_left(budget.period, now)
    _, end = period_bounds(budget.period, now)
    when = "total, never resets" if end is None else f"{budget.period}, resets {end:%Y-%m-%dT%H:%M:%SZ}"
    used = spent + reserved
    held = f", {_usd(reserved)} of it held by requests in progress" if reserved > 0 else ""
    if used >= budget.max_usd or requested is None:
        scope = "" if end is None else " for this period"
        detail = f"is used up{scope}: {_usd(used)} of {_usd(budget.max_usd)}{held}"
    else:
        detail = (
            f"has {_usd(budget.max_usd - used)} of {_usd(budget.max_usd)} left{held}, less than this request "
            f"may cost ({_usd(requested)}; lower max_tokens to fit)"
        )
    headers = {} if left is None else {"Retry-After": str(max(1, math.ceil(left)))}
    return BudgetExceededError(f"Budget {budget.id} {detail} ({when}).", headers=headers)


def _unique(budgets: Iterable[BudgetLimit]) -> tuple[BudgetLimit, ...]:
    """One entry per budget id: a budget listed twice must not be charged twice."""
    seen: dict[str, BudgetLimit] = {}
    for budget in budgets:
        seen.setdefault(budget.id, budget)
    return tuple(seen.values())


class _OneFlight:
    """Runs one seeding per counter at a time; concurrent first uses wait for it instead of asking the
    database again (a burst of requests at midnight would otherwise run one SUM query each)."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[None]] = {}

    async def run(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        flight = self._pending.get(key)
        if flight is None:
            flight = asyncio.ensure_future(work())
            self._pending[key] = flight

            def _done(_: asyncio.Future[None], key: str = key, flight: asyncio.Future[None] = flight) -> None:
                if self._pending.get(key) is flight:
                    del self._pending[key]

            flight.add_done_callback(_done)
        # Shielded: one waiter being cancelled (its client went away) must not cancel the others' seed.
        await asyncio.shield(flight)

    async def close(self) -> None:
        flights = list(self._pending.values())
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)


# -- one process -----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Counter:
    spent: int
    reserved: int
    #: When the counter can be dropped (period end + 1 day, like the Redis keys); None for ``total``.
    expires: datetime | None


class _Ledger:
    """What both ledgers share: the decimal entry points over the nano-USD ones, and the budgets and
    period tags a reservation is about."""

    _clock: Callable[[], datetime]

    async def reserve_nano(self, budgets: Sequence[BudgetLimit], amount_nano: int) -> Reservation:
        raise NotImplementedError

    def settle_nowait_nano(self, reservation: Reservation, actual_nano: int) -> None:
        raise NotImplementedError

    async def reserve(self, budgets: Sequence[BudgetLimit], amount: Decimal) -> Reservation:
        return await self.reserve_nano(budgets, to_nano(amount))

    def settle_nowait(self, reservation: Reservation, actual: Decimal) -> None:
        self.settle_nowait_nano(reservation, to_nano(actual, ROUND_HALF_EVEN))

    def _targets(self, budgets: Sequence[BudgetLimit], amount_nano: int
                 ) -> tuple[tuple[BudgetLimit, ...], tuple[str, ...], datetime]:
        if amount_nano < 0:
            raise ValueError(f"a budget amount must be non-negative, not {amount_nano} nano-USD")
        unique = _unique(budgets)
        now = self._clock()
        return unique, tuple(period_tag(b.period, now) for b in unique), now


class MemoryLedger(_Ledger):
    """The ledger in this process's memory: exact for a single gateway instance."""

    def __init__(self, seed: Seed, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._seed = seed
        self._clock = clock
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._flights = _OneFlight()

    async def reserve_nano(self, budgets: Sequence[BudgetLimit], amount_nano: int) -> Reservation:
        unique, tags, now = self._targets(budgets, amount_nano)
        if not unique:
            return UNCHECKED
        while True:
            await self._ensure(unique, tags, now)
            counters = [self._counters.get((b.id, tag)) for b, tag in zip(unique, tags, strict=True)]
            if all(c is not None for c in counters):
                break  # else forget() dropped one while we awaited: seed it again
        # From here to the return nothing awaits, so the check and the take are atomic for this process.
        taken = [c for c in counters if c is not None]
        for budget, counter in zip(unique, taken, strict=True):
            if counter.spent + counter.reserved + amount_nano > _max_nano(budget):
                raise budget_exceeded(
                    budget, from_nano(counter.spent), from_nano(counter.reserved), now,
                    requested=from_nano(amount_nano),
                )
        for counter in taken:
            counter.reserved += amount_nano
        return Reservation(unique, amount_nano, tags)

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        self.settle_nowait(reservation, actual)

    def settle_nowait_nano(self, reservation: Reservation, actual_nano: int) -> None:
        for budget, tag in zip(reservation.budgets, reservation.tags, strict=True):
            counter = self._counters.get((budget.id, tag))
            if counter is None:
                # Forgotten or expired since the reservation: the next seed reads the cost from the
                # usage records, and the hold went with the counter.
                continue
            # Clamped: after a forget() + re-seed the hold this reservation made is no longer there.
            counter.reserved = max(0, counter.reserved - reservation.amount_nano)
            counter.spent += actual_nano

    async def status(self, budget: BudgetLimit) -> tuple[Decimal, Decimal]:
        now = self._clock()
        tag = period_tag(budget.period, now)
        while (counter := self._counters.get((budget.id, tag))) is None:
            await self._ensure((budget,), (tag,), now)
        return from_nano(counter.spent), from_nano(counter.reserved)

    async def forget(self, budget_id: str) -> None:
        for key in [k for k in self._counters if k[0] == budget_id]:
            del self._counters[key]

    async def close(self) -> None:
        await self._flights.close()

    async def _ensure(self, budgets: Sequence[BudgetLimit], tags: Sequence[str], now: datetime) -> None:
        missing = [(b, t) for b, t in zip(budgets, tags, strict=True) if (b.id, t) not in self._counters]
        if missing:
            await asyncio.gather(*(
                self._flights.run(f"{b.id}:{t}", functools.partial(self._init, b, t, now))
                for b, t in missing
            ))

    async def _init(self, budget: BudgetLimit, tag: str, now: datetime) -> None:
        start, end = period_bounds(budget.period, now)
        spent = to_nano(await self._seed(budget, start), ROUND_HALF_EVEN)
        expires = None if end is None else end + timedelta(days=1)
        self._counters.setdefault((budget.id, tag), _Counter(spent, 0, expires))
        # Past periods' counters would pile up in a long-running process; seeding is rare, so sweep here.
        for key in [k for k, c in self._counters.items() if c.expires is not None and c.expires <= now]:
            del self._counters[key]


# -- several processes -----------------------------------------------------------------------------
#: KEYS[1]: a budget's hash. ARGV[1]: spent (nano) from the database, ARGV[2]: expiry (unix s, 0: none).
#: Writes only if absent: of two processes seeding at once, the first wins and the second's seed (the
#: same sum, or one that misses a request the first already counted) is dropped, never added.
_INIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
if tonumber(ARGV[2]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

#: KEYS: the reservation's hashes. ARGV[1]: -amount (nano), ARGV[2]: actual cost (nano).
#: A missing key is left missing (creating it here would stop its seeding and lose the period's spend);
#: reserved is clamped at 0 in case the counter was re-seeded since the reservation.
_SETTLE = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if redis.call('HINCRBY', key, 'reserved', ARGV[1]) < 0 then redis.call('HSET', key, 'reserved', 0) end
    redis.call('HINCRBY', key, 'spent', ARGV[2])
  end
end
return 1
"""

_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HMGET', KEYS[1], 'spent', 'reserved')
"""

_FORGET = "return redis.call('DEL', unpack(KEYS))"

#: KEYS: the budgets' hashes. ARGV[1]: amount (nano), ARGV[1+i]: max of KEYS[i] (nano), ARGV[1+n+i]: extra
#: (nano) wanted in KEYS[i] for a lease (0: none): once the request fits everywhere, each budget also reserves
#: up to that much more of its room. Returns {0, i...} (these keys are missing: nothing taken), {-1, i, spent,
#: reserved} (KEYS[i] lacks room: nothing taken) or {1, extra taken in each}. Lua numbers are doubles: exact
#: to 2^53 nano-USD ($9M).
_RESERVE = """
local missing = {0}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then missing[#missing + 1] = i end
end
if #missing > 1 then return missing end
local amount = tonumber(ARGV[1])
local n = #KEYS
local room = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'spent', 'reserved')
  local spent, reserved = v[1] or '0', v[2] or '0'
  room[i] = tonumber(ARGV[i + 1]) - tonumber(spent) - tonumber(reserved) - amount
  if room[i] < 0 then
    return {-1, i, spent, reserved}
  end
end
local out = {1}
for i, key in ipairs(KEYS) do
  local extra = math.min(tonumber(ARGV[1 + n + i]), room[i])
  if extra > 0 then
    redis.call('HINCRBY', key, 'reserved', string.format('%d', amount + extra))
  else
    extra = 0
    redis.call('HINCRBY', key, 'reserved', ARGV[1])
  end
  out[i + 1] = string.format('%d', extra)
end
return out
"""

@dataclass(slots=True)
class _Lease:
    """Money of one budget counter reserved in Redis for this instance's next requests (nano-USD)."""

    held: int
    block: int
    last_used: float


class RedisLedger(_Ledger):
    """The ledger in Redis, shared by every gateway instance using the same server and key prefix."""

    def __init__(self, guard: RedisGuard, seed: Seed, *, clock: Callable[[], datetime] = utcnow,
                 lease_share: int = LEASE_SHARE) -> None:
        self._guard = guard
        self._seed = seed
        self._clock = clock
        self._flights = _OneFlight()
        self._reserve = guard.script(_RESERVE)
        self._init_script = guard.script(_INIT)
        self._settle = guard.script(_SETTLE)
        self._status = guard.script(_STATUS)
        self._forget = guard.script(_FORGET)
        self._lease_share = lease_share
        self._leases = Leases[_Lease](lambda key, lease: self._release(key, lease.held))
        #: Settlements through leases not sent yet, by counter: [paid from the lease, spent] (nano-USD),
        #: sent together every ``LINGER_S`` (one call per counter, however many requests settled).
        self._owed: dict[str, list[int]] = {}
        self._flush: asyncio.TimerHandle | None = None
        #: Reservations taken from leases, and decided in Redis.
        self.leased = 0
        self.asked = 0

    def key(self, budget_id: str, tag: str) -> str:
        return f"{self._guard.prefix}bud:{budget_id}:{tag}"

    async def reserve_nano(self, budgets: Sequence[BudgetLimit], amount_nano: int) -> Reservation:
        unique, tags, now = self._targets(budgets, amount_nano)
        if not unique:
            return UNCHECKED
        keys = [self.key(b.id, tag) for b, tag in zip(unique, tags, strict=True)]
        leases = self._leases.by_key
        local = [lease for key in keys if (lease := leases.get(key)) is not None and lease.held >= amount_nano]
        if len(local) == len(keys) and self._guard.available:  # Redis down: the failure policy answers
            stamp = time.monotonic()
            for lease in local:
                lease.held -= amount_nano
                lease.last_used = stamp
            self.leased += 1
            return Reservation(unique, amount_nano, tags)
        # Every budget in Redis (one round trip however many of them a lease could have served).
        share = self._lease_share
        wanted = [self._wanted(key, _max_nano(b) // share, amount_nano) if share else 0
                  for key, b in zip(keys, unique, strict=True)]
        args = [str(amount_nano), *(str(_max_nano(b)) for b in unique), *(str(extra) for extra in wanted)]
        refilling = self._leases.refilling
        mine = [key for key, extra in zip(keys, wanted, strict=True) if extra]
        refilling.update(mine)
        self.asked += 1
        try:
            for _ in range(_SEED_ATTEMPTS):
                result = await self._guard.run(self._reserve, keys, args)
                outcome = int(result[0])
                if outcome == 1:
                    self._lease(keys, [int(x) for x in result[1:]], unique)
                    return Reservation(unique, amount_nano, tags)
                if outcome == -1:
                    budget = unique[int(result[1]) - 1]
                    raise budget_exceeded(
                        budget, from_nano(int(result[2])), from_nano(int(result[3])), now,
                        requested=from_nano(amount_nano),
                    )
                await asyncio.gather(*(
                    self._flights.run(keys[i - 1], functools.partial(self._init, unique[i - 1], keys[i - 1], now))
                    for i in (int(x) for x in result[1:])
                ))
            raise RedisUnavailable("budget counters keep disappearing (evicted?)")
        except RedisUnavailable:
            self._guard.refuse_or_pass("budgets")
            return UNCHECKED
        finally:
            refilling.difference_update(mine)

    def _wanted(self, key: str, block: int, amount_nano: int) -> int:
        """Extra to reserve in ``key`` with this request: its lease topped up to ``block``, when a block
        holds at least one such request (else the budget is decided in Redis every time)."""
        if block < max(1, amount_nano) or key in self._leases.refilling:
            return 0
        lease = self._leases.by_key.get(key)
        return block if lease is None else max(0, block - lease.held)

    def _lease(self, keys: list[str], extras: list[int], budgets: Sequence[BudgetLimit]) -> None:
        stamp = time.monotonic()
        leases = self._leases.by_key
        for key, extra, budget in zip(keys, extras, budgets, strict=True):
            if extra <= 0:
                continue
            block = _max_nano(budget) // self._lease_share
            lease = leases.get(key)
            if lease is None:
                leases[key] = _Lease(extra, block, stamp)
            else:
                lease.held += extra
                lease.block, lease.last_used = block, stamp
        self._leases.watch()

    def _release(self, key: str, nano: int) -> None:
        if nano > 0:
            self._guard.submit(self._settle, [key], [-nano, 0], additive=2)

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        if not reservation.budgets:
            return
        if self._leases.by_key:  # a leased counter settles through its lease
            self.settle_nowait_nano(reservation, to_nano(actual, ROUND_HALF_EVEN))
            return
        # Redis unavailable: dropped on purpose. The call already happened and its usage record carries the
        # cost; the counter keeps holding this reservation until its key expires or is forgotten, and the
        # next seed (from the usage records) repairs the spend. A retry could apply it twice.
        with contextlib.suppress(RedisUnavailable):
            await self._guard.run(self._settle, *self._settle_call(reservation, to_nano(actual, ROUND_HALF_EVEN)))

    def settle_nowait_nano(self, reservation: Reservation, actual_nano: int) -> None:
        """``settle`` sent with the next pipeline, not waited for (dropped while Redis is down, as above).

        In a counter this instance leases, the request's hold goes back into the lease and the cost is paid
        from it (Redis moves that much from reserved to spent; a cost beyond the lease is added to spent
        alone); a lease grown past twice its block gives the surplus back."""
        if not reservation.budgets:
            return
        amount = reservation.amount_nano
        leases = self._leases.by_key
        if not leases:  # settlements of one loop turn on the same counters add up into one call
            keys = [self.key(b.id, tag) for b, tag in zip(reservation.budgets, reservation.tags, strict=True)]
            self._guard.submit(self._settle, keys, [-amount, actual_nano], additive=2)
            return
        plain: list[str] = []
        for budget, tag in zip(reservation.budgets, reservation.tags, strict=True):
            key = self.key(budget.id, tag)
            lease = leases.get(key)
            if lease is None:
                plain.append(key)
                continue
            held = lease.held + amount
            paid = min(actual_nano, held)
            held -= paid
            if held > 2 * lease.block:
                self._release(key, held - lease.block)
                held = lease.block
            lease.held = held
            owed = self._owed.get(key)
            if owed is None:
                self._owed[key] = [paid, actual_nano]
            else:
                owed[0] += paid
                owed[1] += actual_nano
        if self._owed and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(LINGER_S, self._send_owed)
        if plain:
            self._guard.submit(self._settle, plain, [-amount, actual_nano], additive=2)

    def _send_owed(self) -> None:
        """The settlements made through leases since the last call, one call per counter."""
        self._flush = None
        owed, self._owed = self._owed, {}
        for key, (paid, spent) in owed.items():
            self._guard.submit(self._settle, [key], [-paid, spent], additive=2)

    def _settle_call(self, reservation: Reservation, actual_nano: int) -> tuple[list[str], list[str]]:
        keys = [self.key(b.id, tag) for b, tag in zip(reservation.budgets, reservation.tags, strict=True)]
        return keys, [str(-reservation.amount_nano), str(actual_nano)]

    async def status(self, budget: BudgetLimit) -> tuple[Decimal, Decimal]:
        if self._owed:  # this instance's own settlements first: a status reads them
            if self._flush is not None:
                self._flush.cancel()
            self._send_owed()
        now = self._clock()
        key = self.key(budget.id, period_tag(budget.period, now))
        try:
            for _ in range(_SEED_ATTEMPTS):
                values = await self._guard.run(self._status, [key], [])
                if values is not None:  # reserved: what requests hold, not what this instance leases ahead
                    lease = self._leases.by_key.get(key)
                    ahead = lease.held if lease is not None else 0
                    return from_nano(int(values[0] or 0)), from_nano(max(0, int(values[1] or 0) - ahead))
                await self._flights.run(key, functools.partial(self._init, budget, key, now))
        except RedisUnavailable:
            pass
        # No live counter to read: the database's figure is the best answer (nothing known to be held).
        start, _ = period_bounds(budget.period, now)
        return await self._seed(budget, start), Decimal(0)

    async def forget(self, budget_id: str) -> None:
        now = self._clock()
        # The counters of the current periods of every kind (the admin may have changed the period); older
        # periods' keys are no longer read and expire on their own.
        keys = [self.key(budget_id, period_tag(period, now)) for period in PERIODS]
        mine = self.key(budget_id, "")
        for key in [k for k in self._leases.by_key if k.startswith(mine)]:
            del self._leases.by_key[key]  # its counter goes below, and with it what the lease held
        # Redis unavailable: harmless to skip, a counter holds only what was spent (the maximum comes with
        # each call, a new period gets new keys).
        with contextlib.suppress(RedisUnavailable):
            await self._guard.run(self._forget, keys, [])

    async def close(self) -> None:
        """Stops pending seeds and gives the leases back (sent by the guard, which is shared with the rate
        limiter and closed by its owner after this)."""
        if self._flush is not None:
            self._flush.cancel()
        self._send_owed()
        self._leases.close()
        await self._flights.close()

    async def _init(self, budget: BudgetLimit, key: str, now: datetime) -> None:
        start, end = period_bounds(budget.period, now)
        spent = to_nano(await self._seed(budget, start), ROUND_HALF_EVEN)
        expire_at = 0 if end is None else int((end + timedelta(days=1)).timestamp())
        await self._guard.run(self._init_script, [key], [str(spent), str(expire_at)])
