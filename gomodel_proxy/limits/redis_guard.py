"""One Redis connection for the limiters: their script calls pipelined, and a failure policy.

Rate limits and budgets keep their counters in Redis when several instances must share them.

*Pipelining.* Script calls queue up and go to Redis together: while one batch is on the wire, the
calls made meanwhile (under load: the admissions and settlements of many requests) wait and form the
next batch, one write and one read each. Settlements (``submit``: nobody waits for them) linger up to
``LINGER_S`` for company unless a waited-for call goes first, and those on the same counters add up into
one call (``submit(..., additive=n)``): at low load too, many requests' settlements share a round trip.
Calls are EVALSHA; a Redis that lost its script cache (restart, SCRIPT FLUSH) gets the scripts again and
those calls are retried once.

*Failures.* A Redis that cannot be connected to, or leaves a batch unanswered for ``redis.timeout_ms``,
counts as down for ``redis.retry_s``: meanwhile no request waits on it, and each limiter applies
``redis.on_failure`` (``open``: let the request through, ``closed``: refuse it with 503). The outage is
logged once when it starts and once when it ends. Only the wait for Redis's answer is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.limits.resp import RespConnection, RespError

#: The most calls sent in one batch (more wait for the next).
_BATCH = 512
#: Seconds a settlement waits for others before it is sent alone (the counters lag that much, on the side
#: of caution: a budget's hold stays reserved meanwhile).
LINGER_S = 0.02


class RedisUnavailable(Exception):
    """Redis did not answer (or is resting after a failure); the caller applies the failure policy."""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, called by its SHA-1 and loaded again when Redis no longer has it."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest())


_Call = tuple[Script, list[str], list[Any], "asyncio.Future[Any] | None"]


class RedisGuard:
    """A pipelining Redis connection whose outages are detected, logged once, and rested for ``retry_s``."""

    def __init__(self, config: RedisConfig, logger: Any) -> None:
        self.timeout_s = config.timeout_ms / 1000
        self._conn = RespConnection(config.url, self.timeout_s)
        self.prefix = config.key_prefix
        self.fail_open = config.on_failure == "open"
        self.retry_s = config.retry_s
        self.logger = logger
        self._down_until = 0.0
        self._down_since = 0.0
        self._queue: list[_Call] = []
        #: Additive calls waiting, by script and keys (see ``submit``).
        self._merged: dict[tuple[str, ...], tuple[Script, list[str], list[Any]]] = {}
        self._sender: asyncio.Task[None] | None = None
        self._scheduled = False
        self._linger: asyncio.TimerHandle | None = None
        #: Requests answered by the failure policy (not by Redis) since start.
        self.degraded = 0
        #: Batches sent, and the calls they carried (their ratio is the batching achieved).
        self.pipelines = 0
        self.calls = 0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def script(self, source: str) -> Script:
        return Script(source)

    async def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` atomically (in the next batch); ``RedisUnavailable`` when Redis is down."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("redis is resting after a failure")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        self._schedule()
        return await future

    def submit(self, script: Script, keys: list[str], args: list[Any], *, additive: int = 0) -> None:
        """Run ``script`` in the next batch without waiting for it (settlements); dropped while down.

        ``additive``: the first that many ``args`` are integer amounts that add up, so calls of the same
        script on the same keys waiting together are sent as one call with their sums (fifty requests
        settling against one budget cost one command, not fifty).
        """
        if time.monotonic() < self._down_until:
            return
        if not additive:
            self._queue.append((script, keys, args, None))
        else:
            merge_key = (script.sha, *keys)
            pending = self._merged.get(merge_key)
            if pending is None:
                self._merged[merge_key] = (script, keys, list(args))
            else:
                summed = pending[2]
                for i in range(additive):
                    summed[i] = int(summed[i]) + int(args[i])
        if not self._scheduled and self._sender is None and self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._lingered)

    def refuse_or_pass(self, what: str) -> None:
        """Apply the failure policy: return (fail open) or raise 503 (fail closed)."""
        self.degraded += 1
        if not self.fail_open:
            raise ServiceUnavailableError(
                f"The gateway cannot check {what} right now (its shared state is unreachable); retry shortly.",
                code="limiter_unavailable", headers={"Retry-After": str(max(1, round(self.retry_s)))},
            )

    # -- sending ------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        # At the end of this loop turn (so that the turn's calls go together), unless a batch is on the
        # wire: its sender takes what waits when it is done.
        if not self._scheduled and self._sender is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_sender)

    def _lingered(self) -> None:
        self._linger = None
        self._start_sender()

    def _start_sender(self) -> None:
        self._scheduled = False
        if self._sender is None and (self._queue or self._merged):
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    def _take(self) -> list[_Call]:
        batch: list[_Call] = [(s, k, a, None) for s, k, a in self._merged.values()]  # settlements first
        self._merged = {}
        room = _BATCH - len(batch)
        batch += self._queue[:room]
        del self._queue[:room]
        return batch

    async def _send_all(self) -> None:
        try:
            while self._queue or self._merged:
                batch = self._take()
                try:
                    results = await self._execute(batch)
                except Exception as exc:  # refused, reset, timed out, or not speaking RESP: all an outage
                    self._failed(exc)
                    self._fail(batch, exc)
                    self._fail(self._take_all(), exc)  # what waited behind it would meet the same Redis
                    return
                self._answered()
                for (*_, future), result in zip(batch, results, strict=True):
                    if future is None or future.done():
                        continue
                    if isinstance(result, RespError):
                        future.set_exception(RedisUnavailable(f"redis: {result}"))
                    else:
                        future.set_result(result)
        finally:
            self._sender = None

    def _take_all(self) -> list[_Call]:
        rest: list[_Call] = [(s, k, a, None) for s, k, a in self._merged.values()] + self._queue
        self._merged, self._queue = {}, []
        return rest

    @staticmethod
    def _fail(batch: list[_Call], exc: BaseException) -> None:
        for *_, future in batch:
            if future is not None and not future.done():
                future.set_exception(RedisUnavailable(f"{type(exc).__name__}: {exc}"))

    async def _execute(self, batch: list[_Call]) -> list[Any]:
        """One round trip of EVALSHA calls; the scripts Redis lost are loaded and those calls retried."""
        conn = self._conn
        if not conn.connected:
            await conn.connect()
        self.pipelines += 1
        self.calls += len(batch)
        results = await conn.roundtrip([("EVALSHA", s.sha, len(k), *k, *a) for s, k, a, _ in batch])
        missing = [i for i, r in enumerate(results) if isinstance(r, RespError) and str(r).startswith("NOSCRIPT")]
        if missing:
            sources = {batch[i][0].sha: batch[i][0].source for i in missing}
            await conn.roundtrip([("SCRIPT", "LOAD", source) for source in sources.values()])
            again = await conn.roundtrip([("EVALSHA", s.sha, len(k), *k, *a) for s, k, a, _ in
                                          (batch[i] for i in missing)])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
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
        """Send what waits (settlements), then close the connection."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._sender is None and (self._queue or self._merged):
            self._start_sender()
        if self._sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sender), max(1.0, self.timeout_s * 2))
        self._conn.close()
