"""The contract of a cache store, apart from the stores themselves: the request chain imports this, and
Redis's client is imported only when the Redis store is configured."""

from __future__ import annotations

from typing import Protocol

from gomodel_proxy.cache.memory_store import CachedAnswer


class AnswerStore(Protocol):
    """What the request chain needs of a cache store."""

    async def get(self, key: str) -> CachedAnswer | None:
        """The live answer stored under ``key``, or ``None``."""
        ...

    async def put(self, key: str, answer: CachedAnswer) -> None:
        """Store ``answer`` under ``key`` (replacing any), for ``answer.ttl_s`` from ``answer.stored_at``."""
        ...

    async def close(self) -> None:
        """Release the store's resources (and persist what should survive a restart)."""
        ...


class CacheUnavailableError(Exception):
    """The shared cache could not be reached in time; the request proceeds as if there were no cache."""
