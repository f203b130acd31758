"""Requests as they finish, to whoever listens (``GET /admin/requests/live``, the dashboard's live view).

A :class:`LiveFeed` hangs on the recorder's ``live`` hook only while it has subscribers: with nobody
listening the gateway pays one attribute check per request, nothing else. With listeners, each finished
request is turned into one small JSON event once (what it was, how it went, its tokens and cost; never a
prompt, an answer or a key) and appended to every subscriber's bounded queue. A subscriber that reads
slower than requests finish loses the oldest events, and is told how many (``event: dropped``): the
gateway never waits for a listener. The feed's ``close`` (gateway shutdown) ends every subscription at
once, so that a listener never delays the shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import orjson

from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.types import CallRecord

#: Listeners at once. Each holds a connection and a queue; the dashboard opens one per browser tab, and a
#: few dozen operators' tabs is plenty (beyond that something is reconnecting in a loop).
MAX_SUBSCRIBERS = 32
#: Events a subscriber may have waiting: a few seconds of a busy gateway's traffic (about 300 bytes
#: each, so at most ~300 KB per listener); past it the oldest go first.
QUEUE_SIZE = 1000
#: Records a new listener may ask for first (``backlog``), and how many it gets when it does not say.
MAX_BACKLOG = 500
DEFAULT_BACKLOG = 50
#: A comment line this often keeps proxies and load balancers from closing an idle stream (most close
#: after 60 s of silence: nginx's ``proxy_read_timeout``, AWS ALB's idle timeout).
KEEPALIVE_S = 15.0
KEEPALIVE = b": keep-alive\n\n"


class TooManyListeners(GatewayError):
    status = 503
    error_type = "server_error"
    code = "too_many_listeners"


def _money(value: Decimal | None) -> str | None:
    """A decimal string without exponent or trailing zeros (``"0.0042"``), ``None`` when not priced."""
    if value is None:
        return None
    text = f"{value.normalize():f}"
    return "0" if text in ("-0", "0") else text


def rfc3339(epoch: float) -> str:
    """``2026-11-28T10:00:00.123Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def event_of(call: CallRecord, *, wall: float, perf: float) -> dict[str, Any]:
    """What a listener sees of ``call``; ``wall``/``perf``: ``time.time()`` and ``time.perf_counter()`` read
    together, to date the call's end (a perf-counter reading) on the wall clock."""
    usage = call.usage
    ttfb = call.ttfb_s
    principal = call.principal
    finished = call.finished or perf
    return {
        "request_id": call.request_id,
        "time": rfc3339(wall - (perf - finished)),
        "endpoint": call.endpoint,
        "model": call.model_requested or call.model or None,
        "upstream_model": call.model or None,
        "provider": call.provider or None,
        "status": call.status,
        "outcome": call.outcome,
        "error_code": call.error_code or None,
        "stream": call.stream,
        "cached": call.cached,
        "billable": call.billable,
        "latency_ms": round((finished - call.started) * 1000, 3),
        "ttfb_ms": round(ttfb * 1000, 3) if ttfb is not None else None,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cost_usd": _money(call.cost),
        "key_id": principal.key_id,
        "user_id": principal.user_id,
        "team_id": principal.team_id,
    }


def encode(event: dict[str, Any], name: str = "request") -> bytes:
    """One server-sent event."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def is_operator_call(call: CallRecord) -> bool:
    """A call of the admin API or the dashboard (``endpoint`` ``admin ...`` or ``dashboard``), not of a client."""
    return call.endpoint.startswith(("admin", "dashboard"))


class Subscriber:
    """One listener: its queue of encoded events (bounded by the feed), how many it lost, what wakes it."""

    __slots__ = ("admin", "closed", "dropped", "queue", "wake")

    def __init__(self, *, admin: bool = False) -> None:
        #: Whether the listener also follows the operators' own calls (the admin API, the dashboard).
        self.admin = admin
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        #: Events lost since the listener last heard of losses (it gets ``event: dropped`` with the count).
        self.dropped = 0
        self.closed = False

    def take(self) -> list[bytes]:
        """Everything waiting, a ``dropped`` notice first when events were lost; clears the wake-up."""
        self.wake.clear()
        out: list[bytes] = []
        if self.dropped:
            out.append(encode({"count": self.dropped}, "dropped"))
            self.dropped = 0
        out.extend(self.queue)
        self.queue.clear()
        return out


class LiveFeed:
    """Finished requests to at most ``max_subscribers`` listeners, each with a queue of ``queue_size``.

    ``attach(hook)`` is called with the publishing function when the first listener arrives and with
    ``None`` when the last one leaves (it sets ``RequestRecorder.live``).
    """

    def __init__(self, attach: Callable[[Callable[[CallRecord], None] | None], None], *,
                 max_subscribers: int = MAX_SUBSCRIBERS, queue_size: int = QUEUE_SIZE) -> None:
        self.attach = attach
        self.max_subscribers = max_subscribers
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.closed = False
        #: Events lost to slow listeners, over all of them (for tests and a look from a debugger).
        self.dropped_total = 0

    def subscribe(self, *, admin: bool = False) -> Subscriber:
        """A new listener (``admin``: the operators' own calls too); 503 ``too_many_listeners`` past the
        limit (and once the feed is closed)."""
        if self.closed:
            raise GatewayError("the gateway is shutting down", status=503, code="shutting_down")
        if len(self.subscribers) >= self.max_subscribers:
            raise TooManyListeners(
                f"{self.max_subscribers} listeners already follow the live requests; close one (another "
                "dashboard tab) and try again")
        sub = Subscriber(admin=admin)
        self.subscribers.add(sub)
        if len(self.subscribers) == 1:
            self.attach(self.publish)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers:
            self.attach(None)

    def publish(self, call: CallRecord) -> None:
        """The recorder's hook: encode ``call`` once and queue it for every listener (never waits)."""
        data = encode(event_of(call, wall=time.time(), perf=time.perf_counter()))
        size = self.queue_size
        operator = is_operator_call(call)
        for sub in self.subscribers:
            if operator and not sub.admin:
                continue
            queue = sub.queue
            if len(queue) >= size:
                queue.popleft()
                sub.dropped += 1
                self.dropped_total += 1
            queue.append(data)
            sub.wake.set()

    def backlog(self, recent: Iterable[CallRecord], count: int, *, admin: bool = False) -> list[bytes]:
        """The last ``count`` of ``recent`` (oldest first; without the operators' own calls unless ``admin``),
        encoded as the live events are."""
        if count <= 0:
            return []
        calls = [c for c in recent if admin or not is_operator_call(c)][-count:]
        wall, perf = time.time(), time.perf_counter()
        return [encode(event_of(c, wall=wall, perf=perf)) for c in calls]

    def close(self) -> None:
        """End every subscription (gateway shutdown); later ones are refused."""
        self.closed = True
        for sub in self.subscribers:
            sub.closed = True
            sub.wake.set()
