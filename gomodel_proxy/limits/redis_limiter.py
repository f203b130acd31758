"""Rate limits shared by every gateway instance: the token buckets of ``token_bucket`` kept in Redis.

Each ``acquire`` and each ``charge`` is one Lua script, so one round trip, and atomic however many
instances call at once: the script reads every bucket, decides, and writes all of them or none. It
reads the clock with ``TIME`` on the Redis server (Redis 7 replicates a script's effects, so this is
allowed), so instances whose own clocks disagree still refill the buckets alike.

A bucket is a hash ``{tokens, ts}`` under ``<prefix>rl:<limit name>:rpm`` (or ``:tpm``): its level
and the server time (microseconds) it was computed at. Levels are written with ``%.17g``, which
round-trips a double exactly, so fractional refills are never lost to formatting (Lua's default
``tostring`` keeps 14 digits). Every write sets an expiry a little past the time to refill fully:
an idle bucket vanishes when it would be full anyway, which is what an absent bucket means.

*Leases.* A round trip per request would cost more CPU than the rest of the request, so an instance takes
a little ahead from a big bucket: with the request's own unit(s), up to ``capacity // lease_share`` more
(``LEASE_SHARE``: a thousandth), which it then hands out to its next requests without asking Redis. The
units are taken from the shared bucket when leased, so the instances together never admit more than the
limit; what a lease costs is that units held by one instance cannot admit a request on another, at most a
thousandth of the capacity per instance, and only until the lease is used or, idle for ``leases.LEASE_IDLE_S``,
given back. Buckets under ``lease_share`` units (rpm or tpm below 1,000 by default) have no lease: every
admission is decided in Redis, exactly. Token corrections after the answer go to the lease first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gomodel_proxy.limits.leases import LEASE_SHARE, Leases
from gomodel_proxy.limits.redis_guard import RedisGuard, RedisUnavailable
from gomodel_proxy.limits.token_bucket import Decision, Limit, decide, unlimited

#: KEYS: the request buckets, then the token buckets. ARGV: tokens, number of request buckets, each bucket's
#: capacity, then each bucket's extra units wanted for a lease (0: none): an admitted request also takes up
#: to that many more of what is left. Returns {1 if admitted else 0, level of each bucket after the
#: decision, extra units taken from each}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tokens = tonumber(ARGV[1])
local nreq = tonumber(ARGV[2])
local n = #KEYS
local levels = {}
local ok = 1
for i = 1, n do
  local cap = tonumber(ARGV[2 + i])
  local st = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local level = cap
  if st[1] then
    local elapsed = now - tonumber(st[2])
    if elapsed < 0 then elapsed = 0 end
    level = tonumber(st[1]) + elapsed * cap / 60000000
    if level > cap then level = cap end
  end
  levels[i] = level
  local need = 1
  if i > nreq then need = math.min(tokens, cap) end
  if level < need then ok = 0 end
end
local out = {ok}
local extras = {}
local ts = string.format('%.17g', now)
for i = 1, n do
  local cap = tonumber(ARGV[2 + i])
  local extra = 0
  if ok == 1 then
    if i <= nreq then levels[i] = levels[i] - 1 else levels[i] = levels[i] - tokens end
    extra = math.min(tonumber(ARGV[2 + n + i]), math.floor(levels[i]))
    if extra < 0 then extra = 0 end
    levels[i] = levels[i] - extra
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i]), 'ts', ts)
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - levels[i]) * 60000 / cap) + 1000)
  end
  out[i + 1] = string.format('%.17g', levels[i])
  extras[i] = extra
end
for i = 1, n do out[n + 1 + i] = extras[i] end
return out
"""

#: KEYS: the token buckets. ARGV: tokens (negative gives back), then each bucket's capacity.
_CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tokens = tonumber(ARGV[1])
local ts = string.format('%.17g', now)
for i = 1, #KEYS do
  local cap = tonumber(ARGV[1 + i])
  local st = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local level = cap
  if st[1] then
    local elapsed = now - tonumber(st[2])
    if elapsed < 0 then elapsed = 0 end
    level = tonumber(st[1]) + elapsed * cap / 60000000
  end
  level = level - tokens
  if level > cap then level = cap end
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', level), 'ts', ts)
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * 60000 / cap) + 1000)
end
return 0
"""


@dataclass(slots=True)
class _Lease:
    """Units of one bucket taken from Redis for this instance's next requests."""

    held: float
    #: The bucket's level in Redis after the lease was taken (what other instances can still use).
    level: float
    #: The most this instance holds ahead (``capacity // lease_share``).
    block: int
    capacity: int
    #: A request bucket (one unit a request), else a token bucket.
    unit: bool
    last_used: float


class RedisRateLimiter:
    """Token buckets in Redis, shared by any number of gateway instances (exact to a lease, see above).

    The scripts are called by SHA (loaded again only if the server lost them). When Redis is unreachable
    the guard's policy answers: fail open lets the request through (``degraded``), fail closed raises 503;
    a ``charge`` that cannot reach Redis is dropped, as the buckets it would have touched are not being
    enforced meanwhile anyway.
    """

    def __init__(self, guard: RedisGuard, *, lease_share: int = LEASE_SHARE) -> None:
        self._guard = guard
        self._prefix = f"{guard.prefix}rl:"
        self._acquire = guard.script(_ACQUIRE)
        self._charge = guard.script(_CHARGE)
        self._lease_share = lease_share
        self._leases = Leases[_Lease](self._return)
        #: Each limit name's two bucket keys (rpm, tpm), made once: names are few (keys, users, teams).
        self._keys: dict[str, tuple[str, str]] = {}
        #: Admissions decided from a lease, and in Redis.
        self.leased = 0
        self.asked = 0

    def _keys_of(self, name: str) -> tuple[str, str]:
        keys = self._keys.get(name)
        if keys is None:
            if len(self._keys) > 65_536:  # bounded: a key's name is its id, and ids come and go
                self._keys.clear()
            keys = self._keys[name] = (f"{self._prefix}{name}:rpm", f"{self._prefix}{name}:tpm")
        return keys

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take 1 request and ``tokens`` from every bucket of ``limits``, all or nothing: from this
        instance's leases where they hold enough, the rest in one round trip."""
        tokens = max(0, tokens)
        if self._guard.available:  # while Redis is down no lease serves: the failure policy answers
            decision = self._from_leases(limits, tokens)
            if decision is not None:
                return decision
        req_limits = [limit for limit in limits if limit.rpm > 0]
        tok_limits = [limit for limit in limits if limit.tpm > 0]
        if not req_limits and not tok_limits:
            return unlimited()
        prefix = self._prefix
        nreq = len(req_limits)
        keys = [f"{prefix}{limit.name}:rpm" for limit in req_limits]
        keys += [f"{prefix}{limit.name}:tpm" for limit in tok_limits]
        caps = [limit.rpm for limit in req_limits] + [limit.tpm for limit in tok_limits]
        leases = self._leases.by_key
        # The buckets this instance's leases can serve, and the rest (asked of Redis). While Redis is down
        # no lease serves: the failure policy answers, as for every request.
        usable = leases if self._guard.available else {}
        local: list[_Lease] = []
        remote: list[int] = []
        for i, key in enumerate(keys):
            lease = usable.get(key)
            if lease is not None and lease.held >= (1 if i < nreq else tokens):
                local.append(lease)
            else:
                remote.append(i)
        levels: dict[int, float] = {}
        allowed = True
        if remote:
            got = await self._ask(keys, caps, remote, nreq, tokens)
            if got is None:
                return unlimited(degraded=True)
            allowed, levels = got
        else:
            self.leased += 1
        if allowed and local:
            now = time.monotonic()
            for lease in local:
                lease.held -= 1 if lease.unit else tokens
                lease.last_used = now
        # What is left for this instance: the level in Redis plus its lease (a refusing bucket: Redis's level).
        shown = [levels.get(i, 0.0) for i in range(len(keys))]
        for i, key in enumerate(keys):
            lease = leases.get(key)
            if lease is not None and (allowed or i not in levels):
                shown[i] = levels.get(i, lease.level) + lease.held
        return decide(
            allowed, tokens, req_limits=req_limits, req_levels=shown[:nreq],
            tok_limits=tok_limits, tok_levels=shown[nreq:],
        )

    def _from_leases(self, limits: Sequence[Limit], tokens: int) -> Decision | None:
        """The usual admission, when this instance's leases hold enough for every bucket: taken from them
        with no round trip and no intermediate lists of keys; ``None`` when some bucket must ask Redis.

        The same outcome as the general path of ``acquire`` with every bucket local (it is that path's
        fast case, kept apart so that a request served by leases builds only what its ``Decision`` needs).
        """
        leases = self._leases.by_key
        keys_of = self._keys_of
        req_limits: list[Limit] = []
        req_leases: list[_Lease] = []
        tok_limits: list[Limit] = []
        tok_leases: list[_Lease] = []
        for limit in limits:
            rpm_key, tpm_key = keys_of(limit.name)
            if limit.rpm > 0:
                lease = leases.get(rpm_key)
                if lease is None or lease.held < 1:
                    return None
                req_limits.append(limit)
                req_leases.append(lease)
            if limit.tpm > 0:
                lease = leases.get(tpm_key)
                if lease is None or lease.held < tokens:
                    return None
                tok_limits.append(limit)
                tok_leases.append(lease)
        if not req_leases and not tok_leases:
            return unlimited()
        now = time.monotonic()
        for lease in req_leases:
            lease.held -= 1
            lease.last_used = now
        for lease in tok_leases:
            lease.held -= tokens
            lease.last_used = now
        self.leased += 1
        # What is left for this instance: the level in Redis plus its lease.
        return decide(
            True, tokens, req_limits=req_limits, req_levels=[lease.level + lease.held for lease in req_leases],
            tok_limits=tok_limits, tok_levels=[lease.level + lease.held for lease in tok_leases],
        )

    async def _ask(self, keys: list[str], caps: list[int], remote: list[int], nreq: int,
                   tokens: int) -> tuple[bool, dict[int, float]] | None:
        """The buckets ``remote`` (indexes into ``keys``) decided in Redis, topping up their leases;
        (admitted, their levels in Redis), or None when Redis is down and the policy lets the request pass."""
        share = self._lease_share
        ask_keys = [keys[i] for i in remote]
        ask_caps = [caps[i] for i in remote]
        wanted = [self._wanted(keys[i], caps[i] // share) if share else 0 for i in remote]
        refilling = self._leases.refilling
        mine = [key for key, extra in zip(ask_keys, wanted, strict=True) if extra]
        refilling.update(mine)
        args: list[int] = [tokens, sum(1 for i in remote if i < nreq), *ask_caps, *wanted]
        self.asked += 1
        try:
            reply = await self._guard.run(self._acquire, ask_keys, args)
        except RedisUnavailable:
            self._guard.refuse_or_pass("rate limits")
            return None
        finally:
            refilling.difference_update(mine)
        n = len(remote)
        levels = {i: float(x) for i, x in zip(remote, reply[1:n + 1], strict=True)}
        admitted = reply[0] == 1
        if admitted:
            now = time.monotonic()
            for j, i in enumerate(remote):
                extra = int(reply[n + 1 + j])
                if extra:
                    self._add_lease(keys[i], extra, levels[i], caps[i], unit=i < nreq, now=now)
        return admitted, levels

    def _wanted(self, key: str, block: int) -> int:
        """Extra units to lease for ``key`` with this admission: its lease topped up to ``block``."""
        if block < 1 or key in self._leases.refilling:
            return 0
        lease = self._leases.by_key.get(key)
        return block if lease is None else max(0, block - int(lease.held))

    def _add_lease(self, key: str, units: int, level: float, capacity: int, *, unit: bool, now: float) -> None:
        block = capacity // self._lease_share
        lease = self._leases.by_key.get(key)
        if lease is None:
            self._leases.by_key[key] = _Lease(float(units), level, block, capacity, unit, now)
            self._leases.watch()
        else:
            lease.held += units
            lease.level, lease.block, lease.capacity, lease.last_used = level, block, capacity, now

    def _return(self, key: str, lease: _Lease) -> None:
        units = int(lease.held)
        if units > 0:
            self._guard.submit(self._charge, [key], [-units, lease.capacity], additive=1)

    async def charge(self, limits: Sequence[Limit], tokens: int) -> None:
        """Add ``tokens`` to the token buckets (negative gives back); dropped while Redis is down."""
        call = self._charge_call(limits, tokens)
        if call is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._guard.run(self._charge, *call)

    def charge_nowait(self, limits: Sequence[Limit], tokens: int) -> None:
        """``charge`` sent with the next pipeline, not waited for; a bucket leased here is charged in its
        lease (a debt beyond it, or a surplus beyond twice its block, goes to Redis)."""
        if tokens == 0:
            return
        leases = self._leases.by_key
        rest: list[Limit] = []
        for limit in limits:
            if limit.tpm <= 0:
                continue
            key = self._keys_of(limit.name)[1]
            lease = leases.get(key)
            if lease is None:
                rest.append(limit)
                continue
            lease.held -= tokens
            if lease.held < 0:
                debt, lease.held = -lease.held, 0.0
                self._guard.submit(self._charge, [key], [int(debt), limit.tpm], additive=1)
            elif lease.held > 2 * lease.block:
                surplus = int(lease.held) - lease.block
                lease.held -= surplus
                self._guard.submit(self._charge, [key], [-surplus, limit.tpm], additive=1)
        call = self._charge_call(rest, tokens) if rest else None
        if call is not None:  # charges of one loop turn on the same buckets add up into one call
            self._guard.submit(self._charge, *call, additive=1)

    def _charge_call(self, limits: Sequence[Limit], tokens: int) -> tuple[list[str], list[int]] | None:
        if tokens == 0:
            return None
        tok_limits = [limit for limit in limits if limit.tpm > 0]
        if not tok_limits:
            return None
        keys = [f"{self._prefix}{limit.name}:tpm" for limit in tok_limits]
        return keys, [tokens, *(limit.tpm for limit in tok_limits)]

    async def close(self) -> None:
        """Give the leases back (sent by the guard, which its owner closes after this)."""
        self._leases.close()
