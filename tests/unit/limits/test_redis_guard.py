"""The Redis guard: calls of one loop turn share a pipeline; lost scripts are reloaded; outages rest."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from gomodel_proxy.config.schema import RedisConfig
from gomodel_proxy.core.errors import ServiceUnavailableError
from gomodel_proxy.limits.redis_guard import RedisGuard, RedisUnavailable
from tests.support.tcp_proxy import TcpProxy

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


async def test_concurrent_calls_share_pipelines_and_all_get_their_answers(redis_url: str,
                                                                          redis_key_prefix: str) -> None:
    guard = RedisGuard(RedisConfig(url=redis_url, key_prefix=redis_key_prefix), Log())
    script = guard.script(INCR)
    key = f"{redis_key_prefix}n"
    try:
        results = await asyncio.gather(*(guard.run(script, [key], [1]) for _ in range(200)))
        assert sorted(results) == list(range(1, 201))  # each call its own atomic step, none lost
        assert guard.calls == 200 and guard.pipelines <= 4  # one pipeline per loop turn, not per call
        guard.submit(script, [key], [5])  # fire and forget: applied with the next pipeline
        assert await guard.run(script, [key], [0]) == 205
    finally:
        await guard.close()


async def test_scripts_lost_by_redis_are_loaded_again(redis_url: str, redis_key_prefix: str) -> None:
    guard = RedisGuard(RedisConfig(url=redis_url, key_prefix=redis_key_prefix), Log())
    script = guard.script(INCR)
    key = f"{redis_key_prefix}n"
    try:
        assert await guard.run(script, [key], [2]) == 2
        admin = aioredis.Redis.from_url(redis_url)
        await admin.script_flush()
        await admin.aclose()
        assert await asyncio.gather(guard.run(script, [key], [1]), guard.run(script, [key], [1])) in ([3, 4], [4, 3])
    finally:
        await guard.close()


async def test_a_script_error_fails_only_its_call(redis_url: str, redis_key_prefix: str) -> None:
    guard = RedisGuard(RedisConfig(url=redis_url, key_prefix=redis_key_prefix), Log())
    bad = guard.script("return redis.call('INCRBY', KEYS[1], 'not a number')")
    good = guard.script(INCR)
    try:
        outcomes = await asyncio.gather(guard.run(bad, [f"{redis_key_prefix}x"], []),
                                        guard.run(good, [f"{redis_key_prefix}y"], [7]), return_exceptions=True)
        assert isinstance(outcomes[0], RedisUnavailable) and outcomes[1] == 7
        assert guard.available  # a script's own error is not an outage
    finally:
        await guard.close()


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_an_outage_is_logged_once_rested_and_ends_when_redis_answers(redis_key_prefix: str,
                                                                           policy: str) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()
    log = Log()
    guard = RedisGuard(RedisConfig(url=f"redis://127.0.0.1:{proxy.port}/0", key_prefix=redis_key_prefix,
                                   timeout_ms=200, retry_s=0.2, on_failure=policy), log)  # type: ignore[arg-type]
    script = guard.script(INCR)
    key = f"{redis_key_prefix}n"
    try:
        assert await guard.run(script, [key], [1]) == 1
        await proxy.stop()
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await guard.run(script, [key], [1])
        assert not guard.available and [e for e, _ in log.lines] == ["redis unreachable"]
        if policy == "open":
            guard.refuse_or_pass("rate limits")
        else:
            with pytest.raises(ServiceUnavailableError):
                guard.refuse_or_pass("rate limits")
        assert guard.degraded == 1
        await proxy.start()
        await asyncio.sleep(0.25)
        assert await guard.run(script, [key], [1]) == 2  # the calls made while down were not applied
        assert guard.available and [e for e, _ in log.lines] == ["redis unreachable", "redis reachable again"]
    finally:
        await guard.close()
        await proxy.stop()


async def test_additive_submissions_of_one_loop_turn_are_sent_as_one_call(redis_url: str,
                                                                         redis_key_prefix: str) -> None:
    guard = RedisGuard(RedisConfig(url=redis_url, key_prefix=redis_key_prefix), Log())
    script = guard.script(INCR)
    key, other = f"{redis_key_prefix}n", f"{redis_key_prefix}m"
    try:
        for amount in (3, 4, -2):
            guard.submit(script, [key], [amount], additive=1)
        guard.submit(script, [other], [10], additive=1)  # other keys: a call of their own
        assert await guard.run(script, [key], [0]) == 5
        assert await guard.run(script, [other], [0]) == 10
        assert guard.calls == 4  # the three on one key went as one call
    finally:
        await guard.close()


async def test_settlements_linger_for_company_then_go_on_their_own(redis_url: str, redis_key_prefix: str) -> None:
    from gomodel_proxy.limits.redis_guard import LINGER_S  # noqa: PLC0415

    guard = RedisGuard(RedisConfig(url=redis_url, key_prefix=redis_key_prefix), Log())
    script = guard.script(INCR)
    key = f"{redis_key_prefix}lingering"
    client = aioredis.Redis.from_url(redis_url)
    try:
        guard.submit(script, [key], [1], additive=1)
        await asyncio.sleep(LINGER_S / 4)
        guard.submit(script, [key], [2], additive=1)  # a later request's: joins the first
        assert guard.pipelines == 0  # nothing sent yet
        await asyncio.sleep(LINGER_S * 3)
        assert guard.pipelines == 1 and guard.calls == 1
        assert int(await client.get(key)) == 3
    finally:
        await client.aclose()
        await guard.close()
