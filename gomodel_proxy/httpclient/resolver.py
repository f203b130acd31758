"""Host names to addresses through aiodns, cached for a short TTL: DNS stays off the per-request path.

Only new connections resolve, and a keep-alive pool makes those rare; the cache still spares a burst of
new connections (a traffic spike) one query each, and concurrent lookups of one name share one query.
IP literals never reach DNS, and ``localhost`` means the loopback addresses without asking anyone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import aiohttp

#: (address, family) pairs in the order to try them.
Addresses = list[tuple[str, socket.AddressFamily]]

_LOCALHOST: Addresses = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]


class Resolver:
    """One per client; bound to the running loop on its first lookup."""

    def __init__(self, *, ttl_s: float = 60.0) -> None:
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Addresses]] = {}
        self._pending: dict[str, asyncio.Task[Addresses]] = {}
        self._backend: aiohttp.abc.AbstractResolver | None = None

    async def resolve(self, host: str) -> Addresses:
        literal = _literal(host)
        if literal is not None:
            return literal
        now = time.monotonic()
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        task = self._pending.get(host)
        if task is None:
            task = asyncio.ensure_future(self._lookup(host))
            self._pending[host] = task
            task.add_done_callback(lambda _: self._pending.pop(host, None))
        # Shielded: one caller giving up (its request cancelled) must not fail the others' lookup.
        return await asyncio.shield(task)

    async def _lookup(self, host: str) -> Addresses:
        if self._backend is None:
            try:
                self._backend = aiohttp.AsyncResolver()
            except RuntimeError:  # pragma: no cover - aiodns missing
                self._backend = aiohttp.ThreadedResolver()
        results = await self._backend.resolve(host, 0, socket.AF_UNSPEC)
        addresses: Addresses = []
        for result in results:
            entry = (result["host"], socket.AddressFamily(result["family"]))
            if entry not in addresses:
                addresses.append(entry)
        # IPv4 first: it is what most providers' edges answer fastest on, and a failure falls through.
        addresses.sort(key=lambda a: a[1] != socket.AF_INET)
        if not addresses:
            raise OSError(f"no address for {host}")
        self._cache[host] = (time.monotonic() + self._ttl_s, addresses)
        return addresses

    async def close(self) -> None:
        for task in list(self._pending.values()):
            task.cancel()
        if self._backend is not None:
            await self._backend.close()
            self._backend = None


def _literal(host: str) -> Addresses | None:
    if host.lower().rstrip(".") == "localhost":
        return _LOCALHOST
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return [(host, socket.AF_INET6 if ip.version == 6 else socket.AF_INET)]
