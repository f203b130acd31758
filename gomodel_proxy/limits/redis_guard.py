"""One Redis connection for the limiters: commands pipelined per loop turn, and a failure policy.

Rate limits and budgets keep their counters in Redis when several instances must share them.

*Pipelining.* Every script call made during one turn of the event loop (under load: the admissions
and settlements of many requests at once) goes to Redis as one pipeline, one write and one read,
instead of a round trip and a pooled connection each. Calls are EVALSHA; a Redis that lost its script
cache (restart, SCRIPT FLUSH) gets the scripts again and the calls are retried once.

*Failures.* A Redis that cannot be connected to, or leaves a pipeline's answer unread on the socket for
``redis.timeout_ms``, counts as down for ``redis.retry_s``: meanwhile no request waits on it, and each
limiter applies ``redis.on_failure`` (``open``: let the request through, ``closed``: refuse it with
503). The outage is logged once when it starts and once when it ends. Only the wait for Redis's answer
counts, not a wait for one of the pool's connections (few are needed, as each carries a whole loop
turn's calls), so a loaded gateway does not mistake its own queue for a Redis outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import ServiceUnavailableError

#: Connections per gateway process: one pipeline holds one for a single round trip.
_POOL_SIZE = 16
#: The most calls sent in one pipeline (a larger batch is split).
_BATCH = 512


class RedisUnavailable(Exception):
    """Redis did not answer (or is resting after a failure); the caller applies the failure policy."""


_Call = tuple[AsyncScript, list[str], list[Any], "asyncio.Future[Any] | None"]


class RedisGuard:
    """A pipelining Redis client whose outages are detected, logged once, and rested for ``retry_s``."""

    def __init__(self, config: RedisConfig, logger: Any, *, client: aioredis.Redis | None = None) -> None:
        timeout = config.timeout_ms / 1000
        if client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                config.url, max_connections=_POOL_SIZE, timeout=None,
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
        self._queue: list[_Call] = []
        #: Additive calls of this loop turn, by script and keys (see ``submit``).
        self._merged: dict[tuple[str, ...], tuple[AsyncScript, list[str], list[Any], int]] = {}
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        #: Requests answered by the failure policy (not by Redis) since start.
        self.degraded = 0
        #: Pipelines sent, and the calls they carried (their ratio is the batching achieved).
        self.pipelines = 0
        self.calls = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def script(self, source: str) -> AsyncScript:
        return self.client.register_script(source)

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` atomically (in the next pipeline); ``RedisUnavailable`` when Redis is down."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("redis is resting after a failure")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue((script, keys, args, future))
        return await future

    def submit(self, script: AsyncScript, keys: list[str], args: list[Any], *, additive: int = 0) -> None:
        """Run ``script`` in the next pipeline without waiting for it (settlements); dropped while down.

        ``additive``: the first that many ``args`` are integer amounts that add up, so calls of the same
        script on the same keys within one loop turn are sent as one call with their sums (fifty
        requests settling against one budget cost one command, not fifty).
        """
        if time.monotonic() < self._down_until:
            return
        if not additive:
            self._enqueue((script, keys, args, None))
            return
        merge_key = (script.sha, *keys)
        pending = self._merged.get(merge_key)
        if pending is None:
            self._merged[merge_key] = (script, keys, list(args), additive)
            self._schedule()
        else:
            summed = pending[2]
            for i in range(additive):
                summed[i] = int(summed[i]) + int(args[i])

    def refuse_or_pass(self, what: str) -> None:
        """Apply the failure policy: return (fail open) or raise 503 (fail closed)."""
        self.degraded += 1
        if not self.fail_open:
            raise ServiceUnavailableError(
                f"The gateway cannot check {what} right now (its shared state is unreachable); retry shortly.",
                code="limiter_unavailable", headers={"Retry-After": str(max(1, round(self.retry_s)))},
            )

    # -- pipelining ---------------------------------------------------------------------------------
    def _enqueue(self, call: _Call) -> None:
        self._queue.append(call)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        if self._merged:  # settlements first: what they give back is there for this turn's admissions
            queue[:0] = [(script, keys, args, None) for script, keys, args, _ in self._merged.values()]
            self._merged = {}
        for start in range(0, len(queue), _BATCH):
            task = asyncio.get_running_loop().create_task(self._send(queue[start:start + _BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        self.pipelines += 1
        self.calls += len(batch)
        try:
            results = await self._execute(batch)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            for *_, future in batch:
                if future is not None and not future.done():
                    future.set_exception(RedisUnavailable(f"{type(exc).__name__}: {exc}"))
            return
        self._answered()
        for (*_, future), result in zip(batch, results, strict=True):
            if future is None or future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(RedisUnavailable(f"{type(result).__name__}: {result}"))
            else:
                future.set_result(result)

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """One pipeline of EVALSHA calls; the scripts loaded again (once) if Redis lost them."""
        results = await self._pipeline(batch)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            for script in {batch[i][0].sha: batch[i][0] for i in missing}.values():
                await self.client.script_load(script.script)
            again = await self._pipeline([batch[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    # -- outages ------------------------------------------------------------------------------------
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

    def _answered(self) -> None:
        if self._down_since:
            self.logger.warning("redis reachable again", down_s=round(time.monotonic() - self._down_since, 3))
            self._down_since = 0.0
            self._down_until = 0.0

    async def close(self) -> None:
        if self._queue or self._merged:
            self._flush()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=max(1.0, self.timeout_s * 2))
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()


__all__ = ["RedisGuard", "RedisUnavailable", "ResponseError"]
