"""Leases: part of a shared Redis counter taken ahead by one instance, given back when it sits idle.

The rate limiter (requests, tokens) and the budget ledger (nano-USD) both take a little ahead of their
requests so that most requests need no round trip; this is what they share: the leases by counter key,
the counters being refilled (a request meanwhile asks Redis for its own share only, so that concurrent
requests do not each lease a block), and the sweep that gives back what a lease held unused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

#: An instance leases at most a counter's maximum divided by this ahead of its requests (0: no leases).
LEASE_SHARE = 1000
#: Seconds a lease may sit unused before what it holds goes back to the shared counter.
LEASE_IDLE_S = 1.0


class Lease(Protocol):
    #: ``time.monotonic()`` of the lease's last use (or top-up).
    last_used: float


L = TypeVar("L", bound=Lease)


class Leases(Generic[L]):
    """This instance's leases by counter key; ``give_back(key, lease)`` returns an idle one's share."""

    def __init__(self, give_back: Callable[[str, L], None]) -> None:
        self.by_key: dict[str, L] = {}
        self.refilling: set[str] = set()
        self._give_back = give_back
        self._sweep: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Sweep idle leases every ``LEASE_IDLE_S`` while there are any (call after adding one)."""
        if self._sweep is None and self.by_key:
            self._sweep = asyncio.get_running_loop().call_later(LEASE_IDLE_S, self._give_back_idle)

    def _give_back_idle(self) -> None:
        self._sweep = None
        cutoff = time.monotonic() - LEASE_IDLE_S
        for key, lease in list(self.by_key.items()):
            if lease.last_used <= cutoff and key not in self.refilling:
                del self.by_key[key]
                self._give_back(key, lease)
        self.watch()

    def close(self) -> None:
        """Give every lease back (at exit)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        leases, self.by_key = self.by_key, {}
        for key, lease in leases.items():
            self._give_back(key, lease)
