"""The semantic side of the response cache: a prompt worded differently but meaning the same finds the
answer stored for the first wording.

On an exact miss the conversation's text is embedded by the configured provider and the nearest stored
prompt of the same scope (same tenant, model and parameters: ``semantic.semantic_scope``) is taken when
its cosine similarity reaches ``threshold``. The index lives in this process (one instance); the answers
themselves stay in the configured store. An embeddings call that fails is a miss, logged, never an error.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson

from gomodel_proxy.cache.memory_store import CachedAnswer
from gomodel_proxy.cache.request_key import Api, namespace_of
from gomodel_proxy.cache.semantic import SemanticIndex, semantic_scope, semantic_text
from gomodel_proxy.cache.store import AnswerStore, CacheUnavailableError
from gomodel_proxy.config.schema import ResponseCacheConfig
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import Principal


class SemanticLookup:
    def __init__(self, store: AnswerStore, provider: Provider, settings: ResponseCacheConfig, *, logger: Any) -> None:
        self.store = store
        self.provider = provider
        self.settings = settings
        self.model = settings.semantic.model
        self.threshold = settings.semantic.threshold
        self.index = SemanticIndex(settings.semantic.max_entries)
        self.logger = logger
        self._failed_logged = -math.inf

    def _scope(self, api: Api, body: dict[str, Any], principal: Principal) -> str | None:
        return semantic_scope(api, body, namespace_of(principal, self.settings.namespace))

    async def find(self, api: Api, body: dict[str, Any], principal: Principal, now: float,
                   max_age: float | None) -> tuple[CachedAnswer | None, list[float] | None]:
        """The answer of the nearest stored prompt (or ``None``), and this prompt's embedding for storing."""
        scope = self._scope(api, body, principal)
        if scope is None:
            return None, None
        vector = await self._embed(semantic_text(api, body))
        if vector is None:
            return None, None
        # Pure-Python cosine over the scope's entries (~30 us each at 1536 dimensions): in a thread, so
        # a large index slows the miss, never the event loop.
        nearest = await asyncio.to_thread(self.index.nearest, scope, vector, self.threshold)
        if nearest is None:
            return None, vector
        try:
            answer = await self.store.get(nearest[0])
        except CacheUnavailableError:
            return None, vector
        if answer is None or (max_age is not None and now - answer.stored_at > max_age):
            return None, vector
        return answer, vector

    async def add(self, api: Api, body: dict[str, Any], principal: Principal, key: str,
                  vector: list[float] | None) -> None:
        scope = self._scope(api, body, principal)
        if scope is not None and vector is not None:
            self.index.add(scope, vector, key)

    async def _embed(self, text: str) -> list[float] | None:
        try:
            upstream = await self.provider.embeddings({"model": self.model, "input": text})
            try:
                raw = await upstream.read()
            finally:
                upstream.release()
            if upstream.status != 200:
                raise ValueError(f"HTTP {upstream.status}")
            vector = orjson.loads(raw)["data"][0]["embedding"]
            if not isinstance(vector, list) or not vector:
                raise ValueError("no embedding in the answer")
            return [float(v) for v in vector]
        except Exception as exc:
            now = time.monotonic()
            if now - self._failed_logged >= 10:
                self._failed_logged = now
                self.logger.warning("semantic cache: embeddings failed; exact matches only",
                                    provider=self.provider.name, error=f"{type(exc).__name__}: {exc}"[:200])
            return None
