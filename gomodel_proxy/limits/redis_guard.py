"""One Redis connection for the limiters, with the configured answer to Redis being unreachable.

Rate limits and budgets keep their counters in Redis when several instances must share them. A Redis
that does not answer within ``redis.timeout_ms`` counts as down for ``redis.retry_s``: meanwhile no
request waits on it, and each limiter applies ``redis.on_failure`` (``open``: let the request through,
``closed``: refuse it with 503). The outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import ServiceUnavailableError

#: Connections per gateway process; a limiter call holds one for a single round trip.
_POOL_SIZE = 64


class RedisUnavailable(Exception):
    """Redis did not answer (or is resting after a failure); the caller applies the failure policy."""


class RedisGuard:
    """A Redis client whose failures are counted, logged once, and rested for ``retry_s``."""

    def __init__(self, config: RedisConfig, logger: Any, *, client: aioredis.Redis | None = None) -> None:
        timeout = config.timeout_ms / 1000
        if client is None:
            # A queueing pool: more requests in flight than connections wait their turn (within the
            # timeout below) instead of failing, which would read as an outage.
            pool = aioredis.BlockingConnectionPool.from_url(
                config.url, max_connections=_POOL_SIZE, timeout=timeout,
                socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False,
            )
            client = aioredis.Redis(connection_pool=pool)
        self.client: aioredis.Redis = client
        self.prefix = config.key_prefix
        self.fail_open = config.on_failure == "open"
        self.timeout_s = timeout
        self.retry_s = config.retry_s
        self.logger = logger
        self._down_until = 0.0
        self._down_since = 0.0
        #: Requests answered by the failure policy (not by Redis) since start.
        self.degraded = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def script(self, source: str) -> AsyncScript:
        return self.client.register_script(source)

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` atomically; ``RedisUnavailable`` when Redis is down or too slow."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("redis is resting after a failure")
        try:
            result = await asyncio.wait_for(script(keys=keys, args=args), self.timeout_s)
        except NoScriptError:  # pragma: no cover - redis-py reloads scripts itself
            raise
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            raise RedisUnavailable(str(exc)) from None
        if self._down_since:
            self.logger.warning("redis reachable again", down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = 0.0
        return result

    def refuse_or_pass(self, what: str) -> None:
        """Apply the failure policy: return (fail open) or raise 503 (fail closed)."""
        self.degraded += 1
        if not self.fail_open:
            raise ServiceUnavailableError(
                f"The gateway cannot check {what} right now (its shared state is unreachable); retry shortly.",
                code="limiter_unavailable", headers={"Retry-After": str(max(1, round(self.retry_s)))},
            )

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self.retry_s
        if not self._down_since:
            self._down_since = now
            self.logger.warning(
                "redis unreachable", error=f"{type(exc).__name__}: {exc}"[:200],
                policy="fail open: requests pass unlimited" if self.fail_open else "fail closed: requests get 503",
                retry_s=self.retry_s,
            )

    async def close(self) -> None:
        await self.client.aclose()
