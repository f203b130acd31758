"""The chain's Cache step (``middleware.cache.ResponseCache``) driven directly, below the HTTP layer.

The end-to-end tests (``tests/e2e/test_response_cache.py``) cover the ordinary hit and miss through the SDKs;
these cover what they cannot reach: the ``Cache-Control`` parser, the namespaces, the stream recorder giving
up, answers refused for storing (too large, unknown usage, errors), the TTL choice, a store that fails to
write, the Redis-down warning's rate, and an entry that cannot serve the asked form. The stores are real
(``LocalAnswerStore``; ``RedisAnswerStore`` against the test Redis, or against a closed port for "down"), as
are the metrics, read back from their Prometheus text.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.cache.memory_store import CachedAnswer
from gomodel_proxy.cache.request_key import cache_key, namespace_of
from gomodel_proxy.cache.semantic_lookup import SemanticLookup
from gomodel_proxy.cache.store import CacheUnavailableError, LocalAnswerStore, RedisAnswerStore
from gomodel_proxy.config.schema import (
    CircuitBreakerConfig,
    ProviderConfig,
    ResponseCacheConfig,
    RetryConfig,
    SemanticCacheConfig,
)
from gomodel_proxy.core.interfaces import RequestContext
from gomodel_proxy.core.types import ANONYMOUS, CallRecord, Principal, Usage
from gomodel_proxy.middleware import cache as cache_module
from gomodel_proxy.middleware.cache import CacheControl, ResponseCache, _Capture
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.providers.registry import build_provider
from tests.support.gateway import UPSTREAM_KEY
from tests.support.mock_upstream import MockUpstream, Scenario

MODEL = "up/m"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
USAGE = Usage(input_tokens=12, output_tokens=8, cached_tokens=2, reasoning_tokens=1)
KEY = Principal(kind="key", key_id="k1", user_id="alice")


# -- helpers ------------------------------------------------------------------------------------------------
class Logger:
    """Collects what the step logs (the gateway's logger is structlog-style: a message and fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def _log(self, level: str, message: str, **fields: Any) -> None:
        self.records.append((level, message, fields))

    def warning(self, message: str, **fields: Any) -> None:
        self._log("warning", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log("info", message, **fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log("error", message, **fields)

    def messages(self, level: str = "warning") -> list[str]:
        return [m for lv, m, _ in self.records if lv == level]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    """One sample of ``metrics``' Prometheus text (0 when absent); ``labels`` in their declared order."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", re.MULTILINE)
    found = pattern.search(metrics.render().decode())
    return float(found.group(1)) if found else 0.0


def lookups(metrics: Metrics, result: str, api: str = "chat") -> float:
    return counter(metrics, "gomodel_cache_lookups_total", api=api, result=result)


def stores(metrics: Metrics, result: str) -> float:
    return counter(metrics, "gomodel_cache_stores_total", result=result)


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, **extra}


def chat_json(content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }).encode()


def chat_sse(deltas: Iterable[str], *, done: bool = True) -> list[bytes]:
    """A chat completions stream as the events a relay would pass on; ``done=False``: cut before its end."""
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                         "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": None}]} for d in deltas]
    out = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
    if done:
        out.append(b"data: " + json.dumps({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                   .encode() + b"\n\n")
        out.append(b"data: " + json.dumps({**base, "choices": [], "usage": {
            "prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}).encode() + b"\n\n")
        out.append(b"data: [DONE]\n\n")
    return out


def context(body: dict[str, Any] | None, *, principal: Principal = ANONYMOUS, endpoint: str = "chat.completions",
            headers: dict[str, str] | None = None, request_id: str = "req-1") -> RequestContext:
    call = CallRecord(request_id=request_id, endpoint=endpoint, principal=principal, model_requested=MODEL)
    return RequestContext(call, body, len(json.dumps(body)) if body is not None else 0, None, headers or {})


class Provider:
    """The rest of the chain: answers like the relay does (the call's provider, model, usage and outcome set;
    a stream fed through the call's stream filters, then the already-sent ``StreamResponse`` returned)."""

    def __init__(self, body: bytes = b"", *, status: int = 200, content_type: str = "application/json",
                 usage: Usage | None = USAGE, outcome: str = "ok", chunks: list[bytes] | None = None,
                 result: web.StreamResponse | None = None) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.usage = usage
        self.outcome = outcome
        self.chunks = chunks
        self.result = result
        self.calls = 0
        #: What the client received of a stream, after every filter.
        self.sent: list[bytes] = []

    async def __call__(self, ctx: RequestContext) -> web.StreamResponse:
        self.calls += 1
        call = ctx.call
        call.provider, call.model = "up", "m"
        call.usage = self.usage
        call.outcome = self.outcome
        if self.chunks is not None:
            filters = list(reversed(call.stream_filters or []))  # the last added is nearest the provider
            for chunk in self.chunks:
                data = chunk
                for f in filters:
                    data = await f.feed(data)
                self.sent.append(data)
            for f in filters:
                self.sent.append(await f.finish())
            return self.result or web.StreamResponse(status=self.status)
        if self.result is not None:
            return self.result
        return web.Response(status=self.status, body=self.body, content_type=self.content_type)


class Clock:
    """A wall clock the test moves (starting at the real time: a store dates its entries on the real one)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class FailingPutStore(LocalAnswerStore):
    """A real local store whose writes fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(1 << 20)
        self.error = error

    async def put(self, key: str, answer: CachedAnswer) -> None:
        raise self.error


class SlowPutStore(LocalAnswerStore):
    """A real local store whose writes wait for ``release`` (to see ``close`` wait for them)."""

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.release = asyncio.Event()
        self.written: list[str] = []
        self.closed = False

    async def put(self, key: str, answer: CachedAnswer) -> None:
        await self.release.wait()
        await super().put(key, answer)
        self.written.append(key)

    async def close(self) -> None:
        self.closed = True
        await super().close()


def make_cache(store: Any = None, *, wall: Callable[[], float] | None = None, keys: Any = None,
               logger: Logger | None = None, **config: Any) -> ResponseCache:
    return ResponseCache(store if store is not None else LocalAnswerStore(1 << 22),
                         ResponseCacheConfig(enabled=True, **config), metrics=Metrics(),
                         logger=logger or Logger(), keys=keys, wall=wall or Clock())


async def settle(cache: ResponseCache) -> None:
    """Wait for the answers the step is still writing (its writes are off the request path)."""
    if cache._writes:
        await asyncio.gather(*list(cache._writes))


def key_of(body: dict[str, Any], principal: Principal = ANONYMOUS, *, api: Any = "chat",
           namespace: str = "tenant") -> str:
    key = cache_key(api, body, namespace=namespace_of(principal, namespace))
    assert key is not None
    return key


async def run(cache: ResponseCache, ctx: RequestContext, provider: Callable[[RequestContext], Awaitable[Any]]
              ) -> Any:
    result = await cache.process(ctx, provider)
    await settle(cache)
    return result


# -- Cache-Control ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "read", "write", "max_age"),
    [
        (None, True, True, None),
        ("", True, True, None),
        ("no-store", False, False, None),
        ("NO-STORE", False, False, None),
        ("no-cache", False, True, None),
        ("No-Cache", False, True, None),
        ("max-age=60", True, True, 60.0),
        ('max-age="30"', True, True, 30.0),
        ("MAX-AGE=1.5", True, True, 1.5),
        ("max-age=abc", True, True, None),
        ("max-age=", True, True, None),
        ("max-age", True, True, None),
        ("max-age=-5", True, True, 0.0),
        ("max-age=nan", True, True, 0.0),  # never NaN: every age comparison with NaN is false
        ("private, max-age=10 ,  no-cache", False, True, 10.0),
        ("no-cache, no-store", False, False, None),
        ("max-age=10, max-age=oops", True, True, 10.0),  # a garbage repeat leaves the valid one
        ("max-age=10, max-age=20", True, True, 20.0),
        ("public, must-revalidate", True, True, None),
        (" , ,", True, True, None),
    ],
)
def test_cache_control_parsing(header: str | None, read: bool, write: bool, max_age: float | None) -> None:
    control = CacheControl(header)
    assert (control.read, control.write) == (read, write)
    assert control.max_age == max_age
    assert control.max_age is None or not math.isnan(control.max_age)


# -- namespaces ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("principal", "mode", "expected"),
    [
        (Principal(kind="key", key_id="k1", user_id="u1", team_id="t1"), "tenant", "team:t1"),
        (Principal(kind="key", key_id="k1", user_id="u1"), "tenant", "key:k1"),
        (Principal(kind="jwt", user_id="u1"), "tenant", "user:u1"),
        (Principal(kind="jwt", user_id="u1", team_id="t9"), "tenant", "team:t9"),
        (ANONYMOUS, "tenant", "global"),
        (Principal(kind="master", is_admin=True), "tenant", "global"),
        (Principal(kind="key", key_id="k1", user_id="u1", team_id="t1"), "global", "global"),
        (Principal(kind="jwt", user_id="u1"), "global", "global"),
    ],
)
def test_namespace_of(principal: Principal, mode: str, expected: str) -> None:
    assert namespace_of(principal, mode) == expected


async def test_tenants_never_read_each_others_answers_but_a_team_shares() -> None:
    cache = make_cache()
    provider = Provider(chat_json("Paris."))
    team_a1 = Principal(kind="key", key_id="a1", team_id="team-a")
    team_a2 = Principal(kind="key", key_id="a2", team_id="team-a")
    team_b = Principal(kind="key", key_id="b1", team_id="team-b")
    lone = Principal(kind="key", key_id="lone")
    await run(cache, context(chat_body(), principal=team_a1), provider)
    hit = await run(cache, context(chat_body(), principal=team_a2), provider)
    assert hit.headers["X-GoModel-Cache"] == "HIT" and provider.calls == 1
    for other in (team_b, lone, ANONYMOUS):
        ctx = context(chat_body(), principal=other)
        await run(cache, ctx, provider)
        assert ctx.call.headers == {"X-GoModel-Cache": "MISS"} and not ctx.call.cached
    assert provider.calls == 4


async def test_global_namespace_shares_across_tenants() -> None:
    cache = make_cache(namespace="global")
    provider = Provider(chat_json("Paris."))
    await run(cache, context(chat_body(), principal=Principal(kind="key", key_id="a", team_id="x")), provider)
    hit = await run(cache, context(chat_body(), principal=Principal(kind="key", key_id="b", team_id="y")), provider)
    assert hit.headers["X-GoModel-Cache"] == "HIT" and provider.calls == 1


# -- what is not cached at all ------------------------------------------------------------------------------
@pytest.mark.parametrize(("endpoint", "body"), [("embeddings", {"model": MODEL, "input": "hi"}),
                                                ("chat.completions", None), ("passthrough", None)])
async def test_other_endpoints_and_unparsed_bodies_pass_straight_through(
    endpoint: str, body: dict[str, Any] | None
) -> None:
    cache = make_cache()
    provider = Provider(chat_json("Paris."))
    ctx = context(body, endpoint=endpoint)
    result = await run(cache, ctx, provider)
    assert provider.calls == 1 and result.status == 200
    assert ctx.call.headers is None  # no X-GoModel-Cache either way
    assert ctx.call.stream_filters is None
    assert "gomodel_cache_lookups_total{" not in cache.metrics.render().decode()
    # and nothing was stored: the same request goes to the provider again
    await run(cache, context(body, endpoint=endpoint), provider)
    assert provider.calls == 2


@pytest.mark.parametrize(("headers", "body"), [({"Cache-Control": "no-store"}, chat_body()),
                                               ({}, {"model": None, "messages": MESSAGES})])
async def test_no_store_and_uncacheable_requests_bypass(headers: dict[str, str], body: dict[str, Any]) -> None:
    cache = make_cache()
    provider = Provider(chunks=chat_sse(["Paris."]))
    ctx = context({**body, "stream": True}, headers=headers)
    await run(cache, ctx, provider)
    assert ctx.call.headers == {"X-GoModel-Cache": "MISS"}
    assert ctx.call.stream_filters is None  # nothing recorded the stream
    assert lookups(cache.metrics, "bypass") == 1 and lookups(cache.metrics, "miss") == 0
    assert stores(cache.metrics, "stored") == 0
    second = context(body)
    await run(cache, second, provider)
    assert provider.calls == 2


# -- hits ---------------------------------------------------------------------------------------------------
async def test_a_hit_carries_the_chains_headers_and_the_stored_facts() -> None:
    clock = Clock()
    cache = make_cache(wall=clock)
    provider = Provider(chat_json("Paris."))
    await run(cache, context(chat_body(), request_id="first"), provider)
    assert stores(cache.metrics, "stored") == 1
    clock.now += 42.7
    ctx = context(chat_body(), request_id="second")
    # Headers an earlier step set (its rate limits), and a stale cache state it must not keep.
    ctx.call.headers = {"x-ratelimit-remaining-requests": "9", "X-GoModel-Cache": "MISS"}
    hit = await cache.process(ctx, provider)
    assert provider.calls == 1
    assert hit.status == 200 and hit.body == chat_json("Paris.") and hit.content_type == "application/json"
    assert hit.headers["X-GoModel-Cache"] == "HIT"
    assert hit.headers["x-ratelimit-remaining-requests"] == "9"
    assert hit.headers["Age"] == "42"
    assert hit.headers["X-GoModel-Provider"] == "up" and hit.headers["X-GoModel-Model"] == "m"
    assert "Cache-Control" not in hit.headers
    call = ctx.call
    assert call.cached and call.outcome == "cached" and call.cost == 0 and not call.stream
    assert call.usage == Usage(input_tokens=12, output_tokens=8, cached_tokens=2, reasoning_tokens=1)
    assert call.first_byte_at > 0
    assert lookups(cache.metrics, "hit") == 1 and lookups(cache.metrics, "miss") == 1


async def test_a_hit_without_stored_meta_keeps_the_calls_own_provider_and_has_no_usage() -> None:
    store = LocalAnswerStore(1 << 20)
    clock = Clock()
    cache = make_cache(store, wall=clock)
    body = chat_body()
    await store.put(key_of(body), CachedAnswer(200, "application/json", b'{"x":1}', clock.now, 60, False,
                                               meta={"usage": "not a mapping"}))
    ctx = context(body)
    ctx.call.provider, ctx.call.model = "routed", "model-x"
    hit = await cache.process(ctx, Provider())
    assert hit.body == b'{"x":1}'
    assert (ctx.call.provider, ctx.call.model, ctx.call.usage) == ("routed", "model-x", None)
    assert hit.headers["X-GoModel-Provider"] == "routed"


async def test_max_age_is_measured_on_the_wall_clock() -> None:
    clock = Clock()
    cache = make_cache(wall=clock)
    provider = Provider(chat_json("Paris."))
    await run(cache, context(chat_body()), provider)
    clock.now += 100
    too_old = context(chat_body(), headers={"Cache-Control": "max-age=60"})
    await run(cache, too_old, provider)
    assert provider.calls == 2 and not too_old.call.cached
    # the fresh answer was stored again (at +100): 30 s later it is young enough
    clock.now += 30
    young = context(chat_body(), headers={"Cache-Control": 'max-age="60"'})
    hit = await run(cache, young, provider)
    assert provider.calls == 2 and young.call.cached and hit.headers["Age"] == "30"
    assert lookups(cache.metrics, "miss") == 2 and lookups(cache.metrics, "hit") == 1


async def test_no_cache_skips_the_read_but_stores_the_fresh_answer() -> None:
    cache = make_cache()
    await run(cache, context(chat_body()), Provider(chat_json("old")))
    fresh = Provider(chat_json("new"))
    ctx = context(chat_body(), headers={"Cache-Control": "no-cache"})
    result = await run(cache, ctx, fresh)
    assert fresh.calls == 1 and result.body == chat_json("new") and not ctx.call.cached
    assert ctx.call.headers == {"X-GoModel-Cache": "MISS"}
    hit = await run(cache, context(chat_body()), Provider(chat_json("never")))
    assert hit.body == chat_json("new")
    assert stores(cache.metrics, "stored") == 2


async def test_an_entry_that_cannot_serve_the_asked_form_goes_to_the_provider() -> None:
    """A stored stream that never reached its end cannot be assembled into a whole answer: the request is a
    miss (not a hit that fails), the provider answers, and its answer replaces the entry."""
    store = LocalAnswerStore(1 << 20)
    clock = Clock()
    cache = make_cache(store, wall=clock)
    body = chat_body()
    cut = b"".join(chat_sse(["The capital ", "is"], done=False))
    await store.put(key_of(body), CachedAnswer(200, "text/event-stream", cut, clock.now, 3600, True,
                                               meta={"provider": "up", "model": "m"}))
    provider = Provider(chat_json("Paris."))
    ctx = context(body)
    result = await run(cache, ctx, provider)
    assert provider.calls == 1 and result.body == chat_json("Paris.")
    assert not ctx.call.cached and ctx.call.outcome == "ok"
    assert ctx.call.headers == {"X-GoModel-Cache": "MISS"}
    assert lookups(cache.metrics, "hit") == 0 and lookups(cache.metrics, "miss") == 1
    replaced = await store.get(key_of(body))
    assert replaced is not None and not replaced.stream and replaced.body == chat_json("Paris.")


async def test_a_stored_messages_stream_is_replayed_to_a_stream_byte_for_byte() -> None:
    store = LocalAnswerStore(1 << 20)
    clock = Clock()
    cache = make_cache(store, wall=clock)
    body = {"model": MODEL, "max_tokens": 20, "messages": MESSAGES}
    sse = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
           b'"role":"assistant","content":[],"model":"m","usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
           b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    await store.put(key_of(body, api="messages"), CachedAnswer(
        200, "text/event-stream", sse, clock.now, 3600, True,
        meta={"usage": {"input_tokens": 3, "output_tokens": 1}, "provider": "anth", "model": "claude"}))
    ctx = context({**body, "stream": True}, endpoint="messages")
    hit = await cache.process(ctx, Provider())
    assert hit.body == sse and hit.content_type == "text/event-stream"
    assert hit.headers["Cache-Control"] == "no-cache" and hit.headers["X-GoModel-Cache"] == "HIT"
    assert ctx.call.stream and ctx.call.usage == Usage(input_tokens=3, output_tokens=1)
    assert lookups(cache.metrics, "hit", api="messages") == 1


async def test_a_whole_answer_serves_a_streamed_request_as_a_stream() -> None:
    cache = make_cache()
    await run(cache, context(chat_body()), Provider(chat_json("Paris.")))
    ctx = context(chat_body(stream=True, stream_options={"include_usage": True}))
    hit = await cache.process(ctx, Provider())
    assert hit.content_type == "text/event-stream" and hit.headers["Cache-Control"] == "no-cache"
    assert ctx.call.stream and ctx.call.cached
    events = [json.loads(line[6:]) for line in hit.body.decode().splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"]) == "Paris."
    assert [c["usage"]["prompt_tokens"] for c in events if c.get("usage")] == [12]
    assert hit.body.rstrip().endswith(b"data: [DONE]")


async def test_a_stored_chat_stream_follows_the_new_callers_include_usage() -> None:
    cache = make_cache()
    chunks = chat_sse(["Par", "is."])
    await run(cache, context(chat_body(stream=True, stream_options={"include_usage": True})),
              Provider(chunks=chunks))
    ctx = context(chat_body(stream=True))  # this caller did not ask for the usage chunk
    hit = await cache.process(ctx, Provider())
    assert ctx.call.cached and hit.content_type == "text/event-stream"
    assert b'"usage"' not in hit.body and b"data: [DONE]" in hit.body
    assert hit.body == b"".join(c for c in chunks if b'"usage"' not in c)
    assert ctx.call.usage == Usage(input_tokens=12, output_tokens=8, cached_tokens=2, reasoning_tokens=1)


# -- streams: the recorder ----------------------------------------------------------------------------------
async def test_capture_gives_up_past_its_limit_and_still_passes_every_byte() -> None:
    capture = _Capture(10)
    assert await capture.feed(b"12345") == b"12345"
    assert await capture.feed(b"678901") == b"678901"  # 11 > 10: gives up, drops what it held
    assert capture.overflow and capture.parts == []
    assert await capture.feed(b"more") == b"more"  # after giving up it only passes bytes on
    assert capture.parts == [] and capture.size == 11
    assert await capture.finish() == b""
    exact = _Capture(4)
    await exact.feed(b"ab")
    await exact.feed(b"cd")  # exactly the limit still fits
    assert not exact.overflow and exact.parts == [b"ab", b"cd"]


async def test_a_stream_larger_than_an_entry_is_not_stored_and_counted_too_large() -> None:
    cache = make_cache(max_entry_kb=1)
    chunks = chat_sse(["x" * 300] * 6)  # well over 1 KiB in several events
    assert sum(map(len, chunks)) > 1024
    provider = Provider(chunks=chunks)
    ctx = context(chat_body(stream=True))
    await run(cache, ctx, provider)
    assert b"".join(provider.sent) == b"".join(chunks)  # the client got it all
    assert stores(cache.metrics, "too_large") == 1 and stores(cache.metrics, "stored") == 0
    await run(cache, context(chat_body(stream=True)), Provider(chunks=chat_sse(["y"])))
    assert lookups(cache.metrics, "miss") == 2 and lookups(cache.metrics, "hit") == 0


async def test_a_whole_stream_is_recorded_behind_the_filters_already_there_and_replayed() -> None:
    cache = make_cache()
    chunks = chat_sse(["The capital ", "is ", "Paris."])
    provider = Provider(chunks=chunks)
    ctx = context(chat_body(stream=True, stream_options={"include_usage": True}))

    class Earlier:  # a filter a step nearer the client registered first
        async def feed(self, data: bytes) -> bytes:
            return data

        async def finish(self) -> bytes:
            return b""

    earlier = Earlier()
    ctx.call.stream_filters = [earlier]
    await run(cache, ctx, provider)
    assert ctx.call.stream_filters is not None and ctx.call.stream_filters[0] is earlier
    assert isinstance(ctx.call.stream_filters[1], _Capture)
    stored = await cache.store.get(key_of(chat_body()))
    assert stored is not None and stored.stream and stored.body == b"".join(chunks)
    assert stored.content_type == "text/event-stream"
    whole = context(chat_body())
    hit = await cache.process(whole, Provider())
    assert whole.call.cached and json.loads(hit.body)["choices"][0]["message"]["content"] == "The capital is Paris."


# -- what a miss does not store -----------------------------------------------------------------------------
async def test_a_whole_answer_larger_than_an_entry_is_not_stored() -> None:
    cache = make_cache(max_entry_kb=1)
    big = chat_json("x" * 1100)
    assert len(big) > 1024
    await run(cache, context(chat_body()), Provider(big))
    assert stores(cache.metrics, "too_large") == 1 and stores(cache.metrics, "stored") == 0
    assert await cache.store.get(key_of(chat_body())) is None


@pytest.mark.parametrize(
    ("why", "provider"),
    [
        ("estimated usage", Provider(chat_json("Paris."), usage=Usage(input_tokens=5, output_tokens=5,
                                                                       estimated=True))),
        ("no usage", Provider(chat_json("Paris."), usage=None)),
        ("empty body", Provider(b"")),
        ("HTTP 500", Provider(b'{"error":{"message":"boom"}}', status=500)),
        ("HTTP 201", Provider(chat_json("Paris."), status=201)),
        ("outcome error", Provider(chat_json("Paris."), outcome="error")),
        ("outcome cut", Provider(chat_json("Paris."), outcome="client_disconnected")),
        ("a StreamResponse to a whole request", Provider(result=web.StreamResponse(status=200))),
        ("a body that is not bytes", Provider(result=web.Response(body=io.BytesIO(chat_json("Paris."))))),
    ],
)
async def test_answers_not_stored(why: str, provider: Provider) -> None:
    cache = make_cache()
    await run(cache, context(chat_body()), provider)
    assert provider.calls == 1
    assert await cache.store.get(key_of(chat_body())) is None, why
    assert stores(cache.metrics, "stored") == 0 and stores(cache.metrics, "too_large") == 0
    assert not cache._writes


async def test_a_result_that_is_not_a_response_is_passed_back_not_stored() -> None:
    cache = make_cache()

    async def handler(ctx: RequestContext) -> Any:
        ctx.call.usage = USAGE
        return {"not": "a response"}

    assert await run(cache, context(chat_body()), handler) == {"not": "a response"}
    assert await cache.store.get(key_of(chat_body())) is None
    assert stores(cache.metrics, "stored") == 0


async def test_a_cut_stream_records_nothing() -> None:
    cache = make_cache()
    ctx = context(chat_body(stream=True))
    await run(cache, ctx, Provider(chunks=chat_sse(["one "], done=False), outcome="client_disconnected"))
    assert await cache.store.get(key_of(chat_body())) is None
    assert stores(cache.metrics, "stored") == 0


async def test_a_failing_provider_propagates_and_nothing_is_stored() -> None:
    cache = make_cache()

    async def failing(ctx: RequestContext) -> Any:
        raise RuntimeError("provider exploded")

    ctx = context(chat_body())
    with pytest.raises(RuntimeError, match="exploded"):
        await cache.process(ctx, failing)
    assert ctx.call.headers == {"X-GoModel-Cache": "MISS"}
    assert not cache._writes and await cache.store.get(key_of(chat_body())) is None


# -- TTL ----------------------------------------------------------------------------------------------------
class KeyRow:
    def __init__(self, name: str) -> None:
        self.name = name


class Keys:
    """Stands for the ``KeyCache``: only its ``keys_by_id`` is read."""

    def __init__(self, rows: dict[str, str]) -> None:
        self.keys_by_id = {k: KeyRow(v) for k, v in rows.items()}


@pytest.mark.parametrize(
    ("principal", "keys", "requested", "config", "expected"),
    [
        (KEY, None, MODEL, {"ttl_by_key": {"k1": 11.0}}, 11.0),
        (KEY, Keys({"k1": "batch-jobs"}), MODEL, {"ttl_by_key": {"batch-jobs": 22.0}}, 22.0),
        (KEY, Keys({"k1": "batch-jobs"}), MODEL, {"ttl_by_key": {"k1": 5.0, "batch-jobs": 22.0}}, 5.0),  # id first
        (KEY, Keys({"other": "batch-jobs"}), MODEL, {"ttl_by_key": {"batch-jobs": 22.0}}, 3600.0),
        (KEY, None, MODEL, {"ttl_by_key": {"batch-jobs": 22.0}}, 3600.0),
        (ANONYMOUS, None, MODEL, {"ttl_by_key": {"": 1.0, "None": 2.0}}, 3600.0),
        (KEY, None, "fast", {"ttl_by_key": {"k2": 1.0}, "ttl_by_model": {"fast": 33.0, "up/m": 1.0}}, 33.0),
        (KEY, None, "fast", {"ttl_by_model": {"up/m": 44.0, "m": 1.0}}, 44.0),  # provider/model
        (KEY, None, "fast", {"ttl_by_model": {"m": 55.0}, "ttl_s": 7.0}, 55.0),  # the provider's own name
        (KEY, None, "fast", {"ttl_by_model": {"other": 1.0}, "ttl_s": 7.0}, 7.0),
        (KEY, Keys({"k1": "batch-jobs"}), MODEL, {"ttl_by_key": {"batch-jobs": 22.0}, "ttl_by_model": {"m": 1.0}},
         22.0),
    ],
)
async def test_ttl_by_key_then_by_model_then_default(principal: Principal, keys: Any, requested: str,
                                                     config: dict[str, Any], expected: float) -> None:
    cache = make_cache(keys=keys, **config)
    ctx = context(chat_body(), principal=principal)
    ctx.call.model_requested = requested
    await run(cache, ctx, Provider(chat_json("Paris.")))
    stored = await cache.store.get(key_of(chat_body(), principal))
    assert stored is not None and stored.ttl_s == expected
    assert stored.meta == {"usage": {"input_tokens": 12, "output_tokens": 8, "cached_tokens": 2,
                                     "reasoning_tokens": 1}, "provider": "up", "model": "m"}


async def test_an_entry_expires_after_its_ttl() -> None:
    clock = Clock()
    store = LocalAnswerStore(1 << 20, clock=clock)
    cache = make_cache(store, wall=clock, ttl_by_model={MODEL: 10.0})
    provider = Provider(chat_json("Paris."))
    await run(cache, context(chat_body()), provider)
    clock.now += 9
    assert (await run(cache, context(chat_body()), provider)).headers["X-GoModel-Cache"] == "HIT"
    clock.now += 1
    await run(cache, context(chat_body()), provider)
    assert provider.calls == 2


# -- store failures -----------------------------------------------------------------------------------------
async def test_a_store_write_that_fails_is_counted_and_logged_never_raised() -> None:
    logger = Logger()
    cache = make_cache(FailingPutStore(RuntimeError("disk on fire " + "!" * 300)), logger=logger)
    ctx = context(chat_body())
    result = await run(cache, ctx, Provider(chat_json("Paris.")))
    assert result.status == 200 and result.body == chat_json("Paris.")
    assert stores(cache.metrics, "error") == 1 and stores(cache.metrics, "stored") == 0
    [(level, message, fields)] = logger.records
    assert (level, message) == ("warning", "response cache write failed")
    assert fields["error"].startswith("RuntimeError: disk on fire") and len(fields["error"]) == 200


async def test_a_store_write_unavailable_is_counted_and_warned_as_down() -> None:
    logger = Logger()
    cache = make_cache(FailingPutStore(CacheUnavailableError("Redis cache at redis://x unavailable")), logger=logger)
    await run(cache, context(chat_body()), Provider(chat_json("Paris.")))
    assert stores(cache.metrics, "error") == 1
    assert logger.messages() == ["response cache unavailable; serving without it"]


class FakeTime:
    """The ``time`` module as the cache step sees it, with a monotonic clock the test moves."""

    def __init__(self, monotonic: float) -> None:
        self.now = monotonic
        self.perf_counter = time.perf_counter
        self.time = time.time

    def monotonic(self) -> float:
        return self.now


async def test_redis_down_serves_without_the_cache_and_warns_at_most_every_ten_seconds(
    monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    clock = FakeTime(monotonic=50_000.0)
    monkeypatch.setattr(cache_module, "time", clock)
    logger = Logger()
    store = RedisAnswerStore(f"redis://127.0.0.1:{unused_tcp_port}/0", timeout_s=0.5)
    cache = make_cache(store, logger=logger)
    await cache.start()  # a Redis store has nothing to load
    provider = Provider(chat_json("Paris."))
    for _ in range(3):
        ctx = context(chat_body())
        result = await run(cache, ctx, provider)
        assert result.body == chat_json("Paris.") and ctx.call.headers == {"X-GoModel-Cache": "MISS"}
        clock.now += 3
    assert provider.calls == 3
    assert lookups(cache.metrics, "error") == 3 and lookups(cache.metrics, "miss") == 0
    assert stores(cache.metrics, "error") == 3  # every write failed too ...
    warnings = [f for lv, m, f in logger.records if m == "response cache unavailable; serving without it"]
    assert len(warnings) == 1  # ... but 6 failures within 10 s are one warning
    assert f"127.0.0.1:{unused_tcp_port}" in warnings[0]["error"]
    clock.now += 10
    await run(cache, context(chat_body()), provider)
    assert len(logger.messages()) == 2
    await cache.close()


async def test_the_first_outage_is_logged_even_just_after_boot(
    monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    monkeypatch.setattr(cache_module, "time", FakeTime(monotonic=4.0))
    logger = Logger()
    cache = make_cache(RedisAnswerStore(f"redis://127.0.0.1:{unused_tcp_port}/0", timeout_s=0.5), logger=logger)
    await run(cache, context(chat_body()), Provider(chat_json("Paris.")))
    await cache.close()
    assert logger.messages() == ["response cache unavailable; serving without it"]


async def test_through_a_real_redis(redis_url: str, redis_key_prefix: str) -> None:
    clock = Clock()
    store = RedisAnswerStore(redis_url, prefix=redis_key_prefix, timeout_s=2.0)
    cache = make_cache(store, wall=clock, ttl_by_key={"k1": 120.0})
    await cache.start()
    try:
        provider = Provider(chunks=chat_sse(["Par", "is."]))
        await run(cache, context(chat_body(stream=True), principal=KEY), provider)
        stored = await store.get(key_of(chat_body(), KEY))
        assert stored is not None and stored.stream and stored.ttl_s == 120.0
        assert stored.meta["usage"] == {"input_tokens": 12, "output_tokens": 8, "cached_tokens": 2,
                                        "reasoning_tokens": 1}
        other = RedisAnswerStore(redis_url, prefix=redis_key_prefix, timeout_s=2.0)  # another instance
        try:
            second = make_cache(other, wall=clock)
            ctx = context(chat_body(), principal=KEY)
            hit = await second.process(ctx, Provider())
            assert ctx.call.cached and json.loads(hit.body)["choices"][0]["message"]["content"] == "Paris."
            assert ctx.call.usage == Usage(input_tokens=12, output_tokens=8, cached_tokens=2, reasoning_tokens=1)
        finally:
            await other.close()
        assert provider.calls == 1
    finally:
        await cache.close()


# -- semantic ----------------------------------------------------------------------------------------------
def embedding(vector: list[float]) -> Scenario:
    return Scenario(body=json.dumps({"object": "list", "model": "e", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                                     "data": [{"object": "embedding", "index": 0, "embedding": vector}]}).encode())


async def test_a_reworded_prompt_is_a_semantic_hit_and_a_miss_is_indexed_when_stored() -> None:
    async with MockUpstream() as upstream:
        provider = build_provider("emb", ProviderConfig(
            type="openai_compatible", base_url=upstream.base_url, api_key=UPSTREAM_KEY, timeout_s=5,
            retry=RetryConfig(max_attempts=1), circuit_breaker=CircuitBreakerConfig(enabled=False)))
        try:
            store = LocalAnswerStore(1 << 20)
            config = ResponseCacheConfig(enabled=True, semantic=SemanticCacheConfig(
                enabled=True, provider="emb", model="e", threshold=0.9))
            semantic = SemanticLookup(store, provider, config, logger=Logger())
            cache = ResponseCache(store, config, metrics=Metrics(), logger=Logger(), semantic=semantic)
            upstream.on("e", embedding([1.0, 0.0, 0.0]))
            first = Provider(chat_json("Paris."))
            await run(cache, context(chat_body(), principal=KEY), first)
            assert len(semantic.index) == 1  # stored with its embedding
            upstream.on("e", embedding([0.98, 0.1, 0.0]))
            reworded = {"model": MODEL, "messages": [{"role": "user", "content": "capital of france?"}]}
            ctx = context(reworded, principal=KEY)
            hit = await run(cache, ctx, first)
            assert first.calls == 1 and ctx.call.cached and hit.body == chat_json("Paris.")
            assert lookups(cache.metrics, "semantic_hit") == 1 and lookups(cache.metrics, "hit") == 0
            # another tenant's same prompt misses, and its answer joins the index in its own scope
            other = Principal(kind="key", key_id="k2")
            upstream.on("e", embedding([1.0, 0.0, 0.0]))
            other_ctx = context(chat_body(), principal=other)
            await run(cache, other_ctx, Provider(chat_json("Paris, France.")))
            assert not other_ctx.call.cached and len(semantic.index) == 2
            assert lookups(cache.metrics, "miss") == 2
            assert len(upstream.requests_for("e")) == 3
        finally:
            await provider.close()


# -- lifecycle ----------------------------------------------------------------------------------------------
async def test_close_waits_for_the_writes_still_running_then_closes_the_store() -> None:
    store = SlowPutStore()
    cache = make_cache(store)
    ctx = context(chat_body())
    await cache.process(ctx, Provider(chat_json("Paris.")))  # returns before the write
    assert store.written == [] and len(cache._writes) == 1
    closing = asyncio.create_task(cache.close())
    await asyncio.sleep(0)
    assert not closing.done() and not store.closed  # waiting for the write
    store.release.set()
    await closing
    assert store.written == [key_of(chat_body())] and store.closed
    assert stores(cache.metrics, "stored") == 1


async def test_start_loads_a_local_snapshot(tmp_path: Any) -> None:
    snapshot = tmp_path / "cache.snap"
    first = LocalAnswerStore(1 << 20, snapshot=snapshot)
    cache = make_cache(first, wall=time.time)
    await cache.start()
    await run(cache, context(chat_body()), Provider(chat_json("Paris.")))
    await cache.close()
    warm = make_cache(LocalAnswerStore(1 << 20, snapshot=snapshot), wall=time.time)
    await warm.start()
    hit = await warm.process(context(chat_body()), Provider())
    assert hit.headers["X-GoModel-Cache"] == "HIT" and hit.body == chat_json("Paris.")
    await warm.close()


def test_helpers_are_self_consistent() -> None:
    """``counter`` reads what it should (so a metric assertion above can fail)."""
    metrics = Metrics()
    assert stores(metrics, "stored") == 0
    metrics.cache_store("stored")
    metrics.cache_store("stored")
    metrics.cache_lookup("chat", "hit")
    assert stores(metrics, "stored") == 2 and lookups(metrics, "hit") == 1 and lookups(metrics, "miss") == 0
