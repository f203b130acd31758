"""When and after how long a request is sent again: exponential backoff with full jitter, ``retry-after``.

Every retry decision is taken on a status line or a connection error, before the gateway has relayed
anything: a client never sees a retried attempt, and nothing is retried once a byte reached it. The body
is sent again from the same bytes.

- ``max_attempts`` (default 2: one retry) counts every send of a request; moving to the next key after a
  401/403/429 of one key does not count (that is bounded by the number of keys).
- The n-th retry waits ``uniform(0, min(backoff_max_ms, backoff_base_ms * 2**(n-1)))`` (``jitter: false``:
  the upper bound itself), at least the provider's ``retry-after``/``retry-after-ms``. A ``retry-after``
  longer than ``backoff_max_ms`` is not waited for: the provider's answer goes to the client as it is.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping

from gomodel_proxy.config.schema import RetryConfig


class RetryPolicy:
    __slots__ = ("base_s", "jitter", "max_attempts", "max_s", "on_connection_error", "on_status", "on_timeout",
                 "rand")

    def __init__(self, config: RetryConfig, *, rand: Callable[[], float]) -> None:
        self.max_attempts = config.max_attempts
        self.base_s = config.backoff_base_ms / 1000.0
        self.max_s = config.backoff_max_ms / 1000.0
        self.jitter = config.jitter
        self.on_status = frozenset(config.on_status)
        self.on_connection_error = config.on_connection_error
        self.on_timeout = config.on_timeout
        self.rand = rand

    def backoff(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(retry - 1, 30))
        return self.rand() * ceiling if self.jitter else ceiling

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """The wait before retry ``retry`` honouring ``retry_after``; ``None``: too long, do not retry."""
        wait = self.backoff(retry)
        if retry_after is not None:
            if retry_after > self.max_s:
                return None
            wait = max(wait, retry_after)
        return wait


def retry_after_s(headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time) -> float | None:
    """The provider's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) in seconds; ``None``."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000.0
        except ValueError:
            value = -1.0
        if value >= 0 and not math.isnan(value):
            return min(value, 86400.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        value = when.timestamp() - wall_clock()
        return min(max(0.0, value), 86400.0)
    if math.isnan(value) or value < 0:
        return None
    return min(value, 86400.0)
