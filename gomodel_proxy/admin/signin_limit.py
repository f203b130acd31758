"""Sign-in attempts per client address: after too many failures, the dashboard's sign-ins answer 429.

A sliding log per address: the times of its last ``max_failures`` failures (a bounded deque). The address is
refused while its oldest kept failure is younger than ``window_s``; ``Retry-After`` says when it will not
be. A successful sign-in is not a failure (and ``forgive`` takes back the attempt a started SSO sign-in
recorded). Memory is bounded: at most ``max_clients`` addresses are tracked, least recently failed dropped
first, so an attacker rotating addresses costs a fixed amount of memory (and, at worst, lets an address it
pushed out start afresh).

The address is the TCP peer, never ``X-Forwarded-For`` (the gateway has no notion of a trusted proxy, and
anyone can write that header). IPv6 peers are counted by their /64: one host usually holds a whole /64.
Per instance, in memory: several instances each allow as many.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

#: Failed sign-ins an address may make per window: far more than a person mistyping a key makes, far too
#: few to guess one (a virtual key holds ~190 bits). Django-axes and Keycloak's brute-force detection
#: default to a few failures per several minutes as well.
MAX_FAILURES = 10
WINDOW_S = 300.0
#: Addresses tracked at once: 10,000 deques of at most 10 floats, a few megabytes at most.
MAX_CLIENTS = 10_000


def client_key(peer: str | None) -> str:
    """What failures are counted against: the peer address, an IPv6 address's /64."""
    if not peer:
        return "-"
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer[:64]  # a Unix socket's path, or something equally local
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class SignInLimiter:
    """Counts failed sign-ins per client address (see the module's docstring)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        #: Address -> times of its last failures (oldest first); least recently failed address first.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str) -> int:
        """0 when ``client`` may try; otherwise the seconds until it may (at least 1)."""
        times = self._failures.get(client)
        if times is None or len(times) < self.max_failures:
            return 0
        wait = times[0] + self.window_s - self._clock()
        if wait <= 0:
            return 0
        return max(1, math.ceil(wait))

    def failed(self, client: str) -> None:
        """Record a failure of ``client``."""
        times = self._failures.get(client)
        if times is None:
            while len(self._failures) >= self.max_clients:
                self._failures.popitem(last=False)
            times = self._failures[client] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(client)
        times.append(self._clock())

    def forgive(self, client: str) -> None:
        """Take back ``client``'s latest failure (an SSO sign-in it started has succeeded)."""
        times = self._failures.get(client)
        if times:
            times.pop()
            if not times:
                del self._failures[client]
