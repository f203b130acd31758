"""The chain's Cache step: the same request answered again without calling the provider.

Exact match on the normalised request (``cache.request_key``) in the caller's namespace (its team, else its
key: one tenant never reads another's answers). A hit is answered from the store, in the form the client
asked for (a stored stream serves a non-streamed request and the other way round, through
``cache.replay``), with ``X-GoModel-Cache: HIT``; it costs nothing (its usage record says ``cached`` and
its budget reservation is given back whole). A miss goes on to the provider with ``X-GoModel-Cache: MISS``
and its answer is stored when it is whole: a 200, a stream that reached its end, never an error or a cut.

The client may say ``Cache-Control: no-store`` (neither read nor write), ``no-cache`` (do not read; the
fresh answer is stored) or ``max-age=N`` (only an answer at most N seconds old). A store that cannot be
reached (Redis down) means serving without the cache: counted (``gomodel_cache_lookups{result="error"}``)
and logged, never an error to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gomodel_proxy.cache.answer_store import AnswerStore, CacheUnavailableError
from gomodel_proxy.cache.memory_store import CachedAnswer
from gomodel_proxy.cache.replay import adapt_chat_stream, body_to_stream, stream_to_body
from gomodel_proxy.cache.request_key import Api, cache_key, namespace_of
from gomodel_proxy.config.schema import ResponseCacheConfig
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import CallRecord, Principal, Usage
from gomodel_proxy.observability.metrics import Metrics

if TYPE_CHECKING:
    from gomodel_proxy.cache.semantic_lookup import SemanticLookup
    from gomodel_proxy.middleware.key_cache import KeyCache

#: The endpoints cached, and the API each one speaks.
CACHED: dict[str, Api] = {"chat.completions": "chat", "responses": "responses", "messages": "messages"}
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


class _Capture:
    """Records a streamed answer as the client receives it (``core.interfaces.StreamFilter``); gives up,
    and stores nothing, once it is larger than an entry may be."""

    __slots__ = ("limit", "overflow", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = limit
        self.overflow = False

    async def feed(self, data: bytes) -> bytes:
        if not self.overflow:
            self.size += len(data)
            if self.size > self.limit:
                self.overflow, self.parts = True, []
            else:
                self.parts.append(data)
        return data

    async def finish(self) -> bytes:
        return b""


@dataclass(slots=True)
class _Miss:
    """What a miss needs to store its answer: the key, and for the semantic index the body and embedding."""

    api: Api
    key: str
    body: dict[str, Any]
    vector: list[float] | None


class CacheControl:
    """What the client's ``Cache-Control`` header allows."""

    __slots__ = ("max_age", "read", "write")

    def __init__(self, header: str | None) -> None:
        self.read = self.write = True
        self.max_age: float | None = None
        if not header:
            return
        for part in header.lower().split(","):
            name, _, value = part.strip().partition("=")
            if name == "no-store":
                self.read = self.write = False
            elif name == "no-cache":
                self.read = False
            elif name == "max-age":
                with contextlib.suppress(ValueError):
                    self.max_age = max(0.0, float(value.strip().strip('"')))


class ResponseCache:
    def __init__(self, store: AnswerStore, config: ResponseCacheConfig, *, metrics: Metrics, logger: Any,
                 keys: KeyCache | None = None, semantic: SemanticLookup | None = None,
                 wall: Any = time.time) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.logger = logger
        self.keys = keys
        self.semantic = semantic
        self.max_entry = int(config.max_entry_kb * 1024)
        self._wall = wall
        self._writes: set[asyncio.Task[None]] = set()
        self._down_logged = -math.inf

    async def start(self) -> None:
        start = getattr(self.store, "start", None)  # a local store loads its snapshot
        if start is not None:
            await start()

    async def close(self) -> None:
        """Wait for the answers still being written to the store, then close it (a local store saves its
        snapshot then, when asked to)."""
        if self._writes:
            await asyncio.wait(list(self._writes), timeout=5)
        await self.store.close()

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any:
        call = ctx.call
        api = CACHED.get(call.endpoint)
        body = ctx.body
        if api is None or body is None:
            return await call_next(ctx)
        control = CacheControl(ctx.headers.get("Cache-Control"))
        key = cache_key(api, body, namespace=namespace_of(call.principal, self.config.namespace)) \
            if control.write or control.read else None
        if key is None:
            self.metrics.cache_lookup(api, "bypass")
            _say(call, "MISS")
            return await call_next(ctx)
        stream = body.get("stream") is True
        vector: list[float] | None = None
        if control.read:
            found, kind = await self._lookup(api, key, control)
            if found is None and self.semantic is not None:
                found, vector = await self.semantic.find(api, body, call.principal, self._wall(), control.max_age)
                kind = "semantic_hit" if found is not None else kind
            if found is not None:
                hit = self._replay(api, found, body, call, stream)
                if hit is not None:
                    self.metrics.cache_lookup(api, kind)
                    return hit
            self.metrics.cache_lookup(api, kind if kind == "error" else "miss")
        else:
            self.metrics.cache_lookup(api, "bypass")  # no-cache: not read, the fresh answer stored
        _say(call, "MISS")
        capture: _Capture | None = None
        if stream and control.write:
            capture = _Capture(self.max_entry)
            if call.stream_filters is None:
                call.stream_filters = []
            call.stream_filters.append(capture)
        result = await call_next(ctx)
        if control.write:
            self._offer(_Miss(api, key, body, vector), call, result, capture)
        return result

    async def _lookup(self, api: Api, key: str, control: CacheControl) -> tuple[CachedAnswer | None, str]:
        try:
            found = await self.store.get(key)
        except CacheUnavailableError as exc:
            self._down(exc)
            return None, "error"
        if found is None:
            return None, "miss"
        if control.max_age is not None and self._wall() - found.stored_at > control.max_age:
            return None, "miss"
        return found, "hit"

    def _down(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._down_logged >= 10:
            self._down_logged = now
            self.logger.warning("response cache unavailable; serving without it", error=str(exc)[:200])

    # -- a hit ---------------------------------------------------------------------------------
    def _replay(self, api: Api, found: CachedAnswer, body: dict[str, Any], call: CallRecord,
                stream: bool) -> web.Response | None:
        """The stored answer in the form this request asked for (``None``: the entry cannot serve it)."""
        meta = found.meta
        usage_meta = meta.get("usage") if isinstance(meta.get("usage"), Mapping) else None
        data: bytes | None = found.body
        if stream:
            include_usage = _include_usage(body)
            if not found.stream:
                data = body_to_stream(api, found.body, include_usage=include_usage)
            elif api == "chat":
                data = adapt_chat_stream(found.body, include_usage=include_usage, usage=usage_meta)
        elif found.stream:
            data = stream_to_body(api, found.body)
        if data is None:
            return None
        call.stream = stream
        call.cached = True
        call.outcome = "cached"
        call.provider = str(meta.get("provider") or call.provider)
        call.model = str(meta.get("model") or call.model)
        call.usage = _usage(usage_meta) if usage_meta else None
        call.cost = Decimal(0)
        call.first_byte_at = time.perf_counter()
        _note(call, "hit")
        headers = {"X-GoModel-Cache": "HIT", "X-GoModel-Provider": call.provider, "X-GoModel-Model": call.model,
                   "Age": str(max(0, int(self._wall() - found.stored_at)))}
        if call.headers:
            headers.update(call.headers)
            headers["X-GoModel-Cache"] = "HIT"
        if stream:
            headers["Cache-Control"] = "no-cache"
        return web.Response(status=200, body=data, headers=headers,
                            content_type="text/event-stream" if stream else "application/json")

    # -- a miss: keep the answer when it is whole ---------------------------------------------
    def _offer(self, miss: _Miss, call: CallRecord, result: Any, capture: _Capture | None) -> None:
        if call.outcome != "ok" or call.cached or not isinstance(result, web.StreamResponse) or result.status != 200:
            return
        if capture is not None:
            if capture.overflow:
                self.metrics.cache_store("too_large")
                return
            data, is_stream = b"".join(capture.parts), True
        elif isinstance(result, web.Response) and isinstance(result.body, bytes):
            data, is_stream = result.body, (result.content_type or "").startswith("text/event-stream")
            if len(data) > self.max_entry:
                self.metrics.cache_store("too_large")
                return
        else:
            return
        usage = call.usage
        if not data or usage is None or usage.estimated:
            return  # an answer whose usage is not known cannot be accounted when replayed
        meta = {"usage": {f: getattr(usage, f) for f in _USAGE_FIELDS}, "provider": call.provider, "model": call.model}
        answer = CachedAnswer(status=200, content_type="text/event-stream" if is_stream else "application/json",
                              body=data, stored_at=self._wall(), ttl_s=self._ttl(call), stream=is_stream, meta=meta)
        task = asyncio.get_running_loop().create_task(self._put(miss, call.principal, answer))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, miss: _Miss, principal: Principal, answer: CachedAnswer) -> None:
        try:
            await self.store.put(miss.key, answer)
            if self.semantic is not None:
                await self.semantic.add(miss.api, miss.body, principal, miss.key, miss.vector)
            self.metrics.cache_store("stored")
        except CacheUnavailableError as exc:
            self._down(exc)
            self.metrics.cache_store("error")
        except Exception as exc:  # a failed write must never surface: the answer was already sent
            self.metrics.cache_store("error")
            self.logger.warning("response cache write failed", error=f"{type(exc).__name__}: {exc}"[:200])

    def _ttl(self, call: CallRecord) -> float:
        config = self.config
        principal = call.principal
        if config.ttl_by_key and principal.key_id:
            for name in (principal.key_id, self._key_name(principal.key_id)):
                if name and name in config.ttl_by_key:
                    return config.ttl_by_key[name]
        if config.ttl_by_model:
            for name in (call.model_requested, f"{call.provider}/{call.model}", call.model):
                if name in config.ttl_by_model:
                    return config.ttl_by_model[name]
        return config.ttl_s

    def _key_name(self, key_id: str) -> str | None:
        row = self.keys.keys_by_id.get(key_id) if self.keys is not None else None
        return row.name if row is not None else None


def _usage(meta: Mapping[str, Any]) -> Usage:
    def number(name: str) -> int:
        value = meta.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return Usage(input_tokens=number("input_tokens"), output_tokens=number("output_tokens"),
                 cached_tokens=number("cached_tokens"), reasoning_tokens=number("reasoning_tokens"))


def _say(call: CallRecord, state: str) -> None:
    call.headers = {**call.headers, "X-GoModel-Cache": state} if call.headers else {"X-GoModel-Cache": state}
    _note(call, state.lower())


def _note(call: CallRecord, state: str) -> None:
    if call.notes is None:
        call.notes = {"cache": state}
    else:
        call.notes["cache"] = state


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True
