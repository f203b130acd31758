"""Sending one request down its plan: the primary, then each fallback, until one answers acceptably.

Why here and not in the relay: failover is only possible before the client saw anything, and the
status line is sent to the client only once a provider answered. Everything this module does happens
before that point, so a request may move to the next target freely; once it returns, the answer is
relayed as today (a stream that fails later ends with an error event, never on another target).

A target fails over on a trigger (``failover.yaml``'s ``triggers``):
- its status line has one of ``status_codes`` (the answer is released unread);
- the gateway's own error with such a status: 502 (connection refused or reset), 503 (open breaker,
  ``circuit_open``), 504 (the provider's ``timeout_s``), 429 (every key resting);
- no status line within ``timeout_ms`` (time to first byte for a stream, time to the answer's head
  otherwise): the attempt is cancelled.
The last target gets neither the deadline nor a trigger: its answer, whatever it is, is the client's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gomodel_proxy.core.errors import GatewayError, UpstreamTimeoutError
from gomodel_proxy.core.interfaces import UpstreamResponse
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.routing.router import Candidate, Router

Send = Callable[[Candidate], Awaitable[UpstreamResponse]]


async def send_with_failover(
    router: Router, call: CallRecord, plan: list[Candidate], send: Send
) -> tuple[Candidate, UpstreamResponse]:
    """The answering candidate and its (unread) answer; raises the last target's error.

    The answering candidate's ``stats.in_flight`` stays counted: the caller calls ``finished`` when the
    answer has been relayed.
    """
    last = len(plan) - 1
    triggers = router.trigger_statuses
    for i, candidate in enumerate(plan):
        call.provider = candidate.provider.name
        call.model = candidate.model
        stats = candidate.stats
        if stats is not None:
            stats.in_flight += 1
        started = time.perf_counter()
        try:
            if i < last:
                async with asyncio.timeout(router.timeout_s):
                    upstream = await send(candidate)
            else:
                upstream = await send(candidate)
        except TimeoutError:  # asyncio.timeout's deadline (never on the last target)
            finished(candidate)
            router.failed_over(call, candidate, plan[i + 1], "timeout")
            continue
        except GatewayError as exc:
            finished(candidate)
            if i == last or exc.status not in triggers:
                raise
            reason = "timeout" if isinstance(exc, UpstreamTimeoutError) else exc.code or f"status_{exc.status}"
            router.failed_over(call, candidate, plan[i + 1], reason)
            continue
        except BaseException:
            finished(candidate)
            raise
        status = upstream.status
        if i < last and status in triggers:
            upstream.release()
            finished(candidate)
            router.failed_over(call, candidate, plan[i + 1], f"status_{status}")
            continue
        if stats is not None and status < 400:
            stats.observe_ttfb(time.perf_counter() - started)
        return candidate, upstream
    raise AssertionError("unreachable: the last target always answers or raises")  # pragma: no cover


def finished(candidate: Candidate | None) -> None:
    """The request is no longer with ``candidate`` (balancer's in-flight count)."""
    if candidate is not None and candidate.stats is not None:
        candidate.stats.in_flight -= 1
