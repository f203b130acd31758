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
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from gomodel_proxy.limits.redis_guard import RedisGuard, RedisUnavailable
from gomodel_proxy.limits.token_bucket import Decision, Limit, decide, unlimited

#: KEYS: the request buckets, then the token buckets. ARGV: tokens, number of request buckets, then
#: each bucket's capacity. Returns {1 if admitted else 0, level of each bucket after the decision}.
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
local ts = string.format('%.17g', now)
for i = 1, n do
  local cap = tonumber(ARGV[2 + i])
  if ok == 1 then
    if i <= nreq then levels[i] = levels[i] - 1 else levels[i] = levels[i] - tokens end
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i]), 'ts', ts)
    redis.call('PEXPIRE', KEYS[i], math.ceil((cap - levels[i]) * 60000 / cap) + 1000)
  end
  out[i + 1] = string.format('%.17g', levels[i])
end
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


class RedisRateLimiter:
    """Token buckets in Redis, exact across any number of gateway instances.

    The scripts are registered once (redis-py then calls them by SHA, loading them again only if
    the server lost them). When Redis is unreachable the guard's policy answers: fail open lets the
    request through (``degraded``), fail closed raises 503; a ``charge`` that cannot reach Redis is
    dropped, as the buckets it would have touched are not being enforced meanwhile anyway.
    """

    def __init__(self, guard: RedisGuard) -> None:
        self._guard = guard
        self._prefix = f"{guard.prefix}rl:"
        self._acquire = guard.script(_ACQUIRE)
        self._charge = guard.script(_CHARGE)

    async def acquire(self, limits: Sequence[Limit], tokens: int) -> Decision:
        """Take 1 request and ``tokens`` from every bucket of ``limits``, all or nothing (one round trip)."""
        tokens = max(0, tokens)
        req_limits = [limit for limit in limits if limit.rpm > 0]
        tok_limits = [limit for limit in limits if limit.tpm > 0]
        if not req_limits and not tok_limits:
            return unlimited()
        prefix = self._prefix
        keys = [f"{prefix}{limit.name}:rpm" for limit in req_limits]
        keys += [f"{prefix}{limit.name}:tpm" for limit in tok_limits]
        args: list[int] = [tokens, len(req_limits)]
        args += [limit.rpm for limit in req_limits]
        args += [limit.tpm for limit in tok_limits]
        try:
            reply = await self._guard.run(self._acquire, keys, args)
        except RedisUnavailable:
            self._guard.refuse_or_pass("rate limits")
            return unlimited(degraded=True)
        nreq = len(req_limits)
        levels = [float(x) for x in reply[1:]]
        return decide(
            reply[0] == 1, tokens, req_limits=req_limits, req_levels=levels[:nreq],
            tok_limits=tok_limits, tok_levels=levels[nreq:],
        )

    async def charge(self, limits: Sequence[Limit], tokens: int) -> None:
        """Add ``tokens`` to the token buckets (negative gives back); dropped while Redis is down."""
        call = self._charge_call(limits, tokens)
        if call is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._guard.run(self._charge, *call)

    def charge_nowait(self, limits: Sequence[Limit], tokens: int) -> None:
        """``charge`` sent with the next pipeline, not waited for."""
        call = self._charge_call(limits, tokens)
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
        """Nothing of its own to release: the guard (and its client) belongs to whoever made it."""
