"""What the audit sinks that speak HTTP share: one aiohttp session per sink, opened on first use, and a
batch sent as the requests the backend's limits allow (each sink says how it splits and sends)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp


class HttpBatchSink:
    """Base of the HTTP sinks: ``_requests`` splits a batch into request bodies (with their entry
    counts), ``_send`` posts one and raises unless every entry in it was stored."""

    timeout_s: float
    _session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        await self.start()
        for count, body in self._requests(entries):
            await self._send(count, body)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _requests(self, entries: Sequence[dict[str, Any]]) -> Iterator[tuple[int, bytes]]:
        raise NotImplementedError

    async def _send(self, count: int, body: bytes) -> None:
        raise NotImplementedError
