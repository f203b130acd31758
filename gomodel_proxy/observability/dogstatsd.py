"""Metrics to a Datadog Agent over DogStatsD (UDP), besides ``/metrics``; off by default.

Per finished request (``observability.dogstatsd.enabled``), in the DogStatsD datagram format
``<prefix>.<name>:<value>|<type>|#<tag>:<value>,...``, with bounded tags (``provider``, ``model``,
``endpoint``, ``status``, ``stream``; ``model`` is empty for a model the gateway does not know, as in
``/metrics``) plus the configured ``tags``:

- ``requests`` (count); ``request.duration``, ``time_to_first_byte``, ``overhead`` (timers, ms);
- ``tokens`` (count, tag ``kind``: input, output, cached, reasoning); ``cost_usd`` (count, when priced);
- ``cache.hits`` (count: answered from the response cache);
- ``upstream.attempts`` (count per provider send; tags ``provider``, ``status`` or ``error``);
- ``failovers`` (count; tags ``from_provider``, ``to_provider``, ``reason``);
- ``rate_limit.refusals``, ``budget.refusals`` (counts of requests refused by the gateway's limits).

The state gauges (keys, breakers, in-flight requests, usage queue) are read at scrape time: point the
Agent's OpenMetrics check at ``/metrics`` for those.

Sending never blocks nor raises: lines are gathered during one turn of the event loop and sent at its end,
packed into datagrams of at most ``max_packet`` bytes, by a non-blocking ``sendto``; a datagram the socket
cannot take (or an Agent that is not there) is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any

from gomodel_proxy.config.schema import DogStatsDConfig
from gomodel_proxy.core.types import CallRecord

#: Datadog's advice for UDP: datagrams that fit one Ethernet frame's payload.
MAX_PACKET = 1432
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:./]")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")
#: At most this many distinct tag sets are kept rendered (they are bounded; this bounds the memory anyway).
_TAG_CACHE_MAX = 10_000


def tag(name: str, value: object) -> str:
    """``name:value`` with characters the DogStatsD format reserves (``|``, ``,``, ``#``, spaces, line
    breaks) replaced by ``_``."""
    return _TAG_UNSAFE.sub("_", f"{name}:{value}")


class DogStatsD:
    """A DogStatsD client for the gateway's per-request metrics."""

    def __init__(self, config: DogStatsDConfig, *, max_packet: int = MAX_PACKET) -> None:
        prefix = _NAME_UNSAFE.sub("_", config.prefix.strip(".")) if config.prefix else ""
        self.prefix = prefix + "." if prefix else ""
        self.constant_tags = ",".join(_TAG_UNSAFE.sub("_", t) for t in config.tags if t)
        family, _, _, _, address = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_DGRAM)[0]
        self.address: Any = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.max_packet = max_packet
        self._lines: list[str] = []
        self._scheduled = False
        self._tags: dict[tuple[str, str, str, int, bool], str] = {}
        #: Datagrams sent, and lines dropped (socket full, Agent absent, a failure of the client itself).
        self.sent = 0
        self.dropped = 0

    # -- per request -------------------------------------------------------------------------------
    def record(self, call: CallRecord) -> None:
        """Queue the request's metrics; sent at the end of this turn of the loop (at once outside one)."""
        try:
            self._lines.extend(self._lines_of(call))
        except Exception:
            self.dropped += 1
            return
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def _tags_of(self, call: CallRecord) -> str:
        key = (call.provider, call.model, call.endpoint, call.status, call.stream)
        tags = self._tags.get(key)
        if tags is None:
            if len(self._tags) >= _TAG_CACHE_MAX:
                self._tags.clear()
            parts = [tag("provider", call.provider), tag("model", call.model), tag("endpoint", call.endpoint),
                     tag("status", call.status), tag("stream", "true" if call.stream else "false")]
            if self.constant_tags:
                parts.append(self.constant_tags)
            tags = self._tags[key] = "|#" + ",".join(parts)
        return tags

    def _lines_of(self, call: CallRecord) -> list[str]:
        p = self.prefix
        tags = self._tags_of(call)
        lines = [
            f"{p}requests:1|c{tags}",
            f"{p}request.duration:{call.latency_s * 1000:.3f}|ms{tags}",
            f"{p}overhead:{call.overhead_s * 1000:.3f}|ms{tags}",
        ]
        ttfb = call.ttfb_s
        if ttfb is not None:
            lines.append(f"{p}time_to_first_byte:{ttfb * 1000:.3f}|ms{tags}")
        usage = call.usage
        if usage is not None:
            for kind, value in (("input", usage.input_tokens), ("output", usage.output_tokens),
                                ("cached", usage.cached_tokens), ("reasoning", usage.reasoning_tokens)):
                if value:
                    lines.append(f"{p}tokens:{value}|c{tags},kind:{kind}")
        if call.cost:
            lines.append(f"{p}cost_usd:{float(call.cost):.9g}|c{tags}")
        if call.cached:
            lines.append(f"{p}cache.hits:1|c{tags}")
        extra = f",{self.constant_tags}" if self.constant_tags else ""
        for attempt in call.attempts or ():
            outcome = tag("error", attempt.error) if attempt.error else tag("status", attempt.status)
            lines.append(f"{p}upstream.attempts:1|c|#{tag('provider', attempt.provider)},{outcome}{extra}")
        for step in call.failovers:
            src, dst = step.from_model.partition("/")[0], step.to_model.partition("/")[0]
            lines.append(f"{p}failovers:1|c|#{tag('from_provider', src)},{tag('to_provider', dst)},"
                         f"{tag('reason', step.reason)}{extra}")
        if call.error_code == "rate_limit_exceeded":
            lines.append(f"{p}rate_limit.refusals:1|c{tags}")
        elif call.error_code == "budget_exceeded":
            lines.append(f"{p}budget.refusals:1|c{tags}")
        return lines

    # -- sending -----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Send the queued lines, packed into datagrams; never raises."""
        self._scheduled = False
        lines, self._lines = self._lines, []
        packet: list[str] = []
        size = 0
        for line in lines:
            if packet and size + 1 + len(line) > self.max_packet:
                self._send(packet)
                packet, size = [], 0
            packet.append(line)
            size += len(line) + (1 if size else 0)
        if packet:
            self._send(packet)

    def _send(self, lines: list[str]) -> None:
        try:
            self.sock.sendto("\n".join(lines).encode("utf-8", "replace"), self.address)
        except OSError:  # full (BlockingIOError), refused (no Agent: ICMP), unreachable, closed
            self.dropped += len(lines)
        else:
            self.sent += 1

    def close(self) -> None:
        self.flush()
        self.sock.close()
