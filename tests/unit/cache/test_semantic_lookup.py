"""``cache.semantic_lookup.SemanticLookup``: embeddings from a real provider (``openai_compatible`` against a
loopback mock answering OpenAI's embeddings shape), the nearest stored prompt of the same scope, and every way
an embeddings call can fail (a miss, warned about at most every 10 s, never an error)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gomodel_proxy.cache import semantic_lookup as lookup_module
from gomodel_proxy.cache.memory_store import CachedAnswer
from gomodel_proxy.cache.request_key import cache_key, namespace_of
from gomodel_proxy.cache.semantic_lookup import SemanticLookup
from gomodel_proxy.cache.store import LocalAnswerStore, RedisAnswerStore
from gomodel_proxy.config.schema import (
    CircuitBreakerConfig,
    ProviderConfig,
    ResponseCacheConfig,
    RetryConfig,
    SemanticCacheConfig,
)
from gomodel_proxy.core.types import ANONYMOUS, Principal
from gomodel_proxy.providers.registry import build_provider
from tests.support.gateway import UPSTREAM_KEY
from tests.support.mock_upstream import MockUpstream, Scenario

EMBED_MODEL = "text-embedding-test"
TEAM_A = Principal(kind="key", key_id="a1", team_id="team-a")
TEAM_B = Principal(kind="key", key_id="b1", team_id="team-b")
WARNING = "semantic cache: embeddings failed; exact matches only"


class Logger:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, message: str, **fields: Any) -> None:
        self.warnings.append((message, fields))


class FakeTime:
    """The ``time`` module as ``semantic_lookup`` sees it, with a monotonic clock the test moves."""

    def __init__(self, monotonic: float) -> None:
        self.now = monotonic

    def monotonic(self) -> float:
        return self.now


def embedding(vector: list[Any]) -> Scenario:
    return Scenario(body=json.dumps({
        "object": "list", "model": EMBED_MODEL, "usage": {"prompt_tokens": 5, "total_tokens": 5},
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
    }).encode())


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "up/m", "messages": [{"role": "user", "content": text}], **extra}


def answer(body: bytes, stored_at: float) -> CachedAnswer:
    return CachedAnswer(200, "application/json", body, stored_at, 3600, False, meta={"provider": "up"})


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    mock = await MockUpstream().start()
    yield mock
    await mock.close()


def make_provider(base_url: str) -> Any:
    return build_provider("emb", ProviderConfig(type="openai_compatible", base_url=base_url, api_key=UPSTREAM_KEY,
                                                timeout_s=5, connect_timeout_s=2,
                                                retry=RetryConfig(max_attempts=1),
                                                # failures are the subject here: no breaker opening on them
                                                circuit_breaker=CircuitBreakerConfig(enabled=False)))


@pytest.fixture
async def provider(upstream: MockUpstream) -> AsyncIterator[Any]:
    p = make_provider(upstream.base_url)
    yield p
    await p.close()


def settings(**config: Any) -> ResponseCacheConfig:
    return ResponseCacheConfig(enabled=True, semantic=SemanticCacheConfig(
        enabled=True, provider="emb", model=EMBED_MODEL, threshold=0.9, max_entries=100), **config)


def make_lookup(provider: Any, store: Any = None, **config: Any) -> tuple[SemanticLookup, Logger]:
    logger = Logger()
    return SemanticLookup(store if store is not None else LocalAnswerStore(1 << 20), provider, settings(**config),
                          logger=logger), logger


async def remember(lookup: SemanticLookup, body: dict[str, Any], principal: Principal, vector: list[float],
                   stored_at: float, content: bytes = b'{"answer":"Paris."}') -> str:
    """Store an answer for ``body`` under its exact key and index it under ``vector``, as the Cache step does."""
    key = cache_key("chat", body, namespace=namespace_of(principal, lookup.settings.namespace))
    assert key is not None
    await lookup.store.put(key, answer(content, stored_at))
    await lookup.add("chat", body, principal, key, vector)
    return key


# -- finding ------------------------------------------------------------------------------------------------
async def test_a_near_prompt_finds_the_stored_answer(upstream: MockUpstream, provider: Any) -> None:
    lookup, logger = make_lookup(provider)
    now = time.time()
    await remember(lookup, ask("What is the capital of France?"), TEAM_A, [1.0, 0.0, 0.0], now)
    upstream.on(EMBED_MODEL, embedding([0.99, 0.05, 0.0]))
    found, vector = await lookup.find("chat", ask("capital of france?"), TEAM_A, now + 5, None)
    assert found is not None and found.body == b'{"answer":"Paris."}'
    assert vector == [0.99, 0.05, 0.0]
    sent = upstream.last(EMBED_MODEL)
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": EMBED_MODEL, "input": "user: capital of france?"}
    assert logger.warnings == []


async def test_far_prompts_other_tenants_and_other_parameters_miss_with_the_vector(
    upstream: MockUpstream, provider: Any
) -> None:
    lookup, _ = make_lookup(provider)
    now = time.time()
    await remember(lookup, ask("What is the capital of France?"), TEAM_A, [1.0, 0.0, 0.0], now)
    upstream.on(EMBED_MODEL, embedding([0.0, 1.0, 0.0]))
    assert await lookup.find("chat", ask("Will it rain?"), TEAM_A, now, None) == (None, [0.0, 1.0, 0.0])
    upstream.on(EMBED_MODEL, embedding([1.0, 0.0, 0.0]))  # the very same meaning ...
    assert await lookup.find("chat", ask("capital?"), TEAM_B, now, None) == (None, [1.0, 0.0, 0.0])  # other team
    assert await lookup.find("chat", ask("capital?", temperature=0.5), TEAM_A, now, None) == (None, [1.0, 0.0, 0.0])
    found, _ = await lookup.find("chat", ask("capital?"), TEAM_A, now, None)
    assert found is not None  # ... found in its own scope


async def test_the_global_namespace_shares_the_index(upstream: MockUpstream, provider: Any) -> None:
    lookup, _ = make_lookup(provider, namespace="global")
    now = time.time()
    await remember(lookup, ask("What is the capital of France?"), TEAM_A, [1.0, 0.0], now)
    upstream.on(EMBED_MODEL, embedding([1.0, 0.0]))
    found, _ = await lookup.find("chat", ask("capital?"), TEAM_B, now, None)
    assert found is not None


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": "no model"}]},
    ask("hi", model=None),
    {"model": "up/m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
])
async def test_a_request_without_a_scope_is_never_embedded(upstream: MockUpstream, provider: Any,
                                                            body: dict[str, Any]) -> None:
    lookup, _ = make_lookup(provider)
    upstream.on(EMBED_MODEL, embedding([1.0]))
    assert await lookup.find("chat", body, ANONYMOUS, time.time(), None) == (None, None)
    assert upstream.requests_for(EMBED_MODEL) == []
    await lookup.add("chat", body, ANONYMOUS, "chat:k", [1.0])
    assert len(lookup.index) == 0


async def test_add_without_a_vector_indexes_nothing(provider: Any) -> None:
    lookup, _ = make_lookup(provider)
    await lookup.add("chat", ask("hi"), ANONYMOUS, "chat:k", None)
    assert len(lookup.index) == 0
    await lookup.add("chat", ask("hi"), ANONYMOUS, "chat:k", [1.0, 0.0])
    assert len(lookup.index) == 1


async def test_an_answer_gone_from_the_store_or_too_old_is_a_miss(upstream: MockUpstream, provider: Any) -> None:
    lookup, _ = make_lookup(provider)
    now = time.time()
    key = await remember(lookup, ask("What is the capital of France?"), TEAM_A, [1.0, 0.0], now - 100)
    upstream.on(EMBED_MODEL, embedding([1.0, 0.0]))
    assert await lookup.find("chat", ask("capital?"), TEAM_A, now, 60) == (None, [1.0, 0.0])  # 100 s > 60 s
    found, _ = await lookup.find("chat", ask("capital?"), TEAM_A, now, 120)
    assert found is not None
    assert await lookup.store.get(key) is not None
    # an entry the index holds but the store does not (expired, evicted, written elsewhere)
    await lookup.add("chat", ask("Where is Berlin?"), TEAM_B, "chat:never-stored", [0.0, 1.0])
    upstream.on(EMBED_MODEL, embedding([0.0, 1.0]))
    assert await lookup.find("chat", ask("Berlin?"), TEAM_B, now, None) == (None, [0.0, 1.0])


async def test_a_store_that_cannot_be_reached_is_a_miss(upstream: MockUpstream, provider: Any,
                                                        unused_tcp_port: int) -> None:
    store = RedisAnswerStore(f"redis://127.0.0.1:{unused_tcp_port}/0", timeout_s=0.5)
    lookup, logger = make_lookup(provider, store)
    await lookup.add("chat", ask("What is the capital of France?"), TEAM_A, "chat:k", [1.0, 0.0])
    upstream.on(EMBED_MODEL, embedding([1.0, 0.0]))
    try:
        assert await lookup.find("chat", ask("capital?"), TEAM_A, time.time(), None) == (None, [1.0, 0.0])
    finally:
        await store.close()
    assert logger.warnings == []  # the Cache step reports a store outage, not the lookup


async def test_through_a_real_redis(upstream: MockUpstream, provider: Any, redis_url: str,
                                    redis_key_prefix: str) -> None:
    store = RedisAnswerStore(redis_url, prefix=redis_key_prefix, timeout_s=2.0)
    try:
        lookup, _ = make_lookup(provider, store)
        now = time.time()
        await remember(lookup, ask("What is the capital of France?"), TEAM_A, [0.6, 0.8], now)
        upstream.on(EMBED_MODEL, embedding([0.6, 0.8]))
        found, _ = await lookup.find("chat", ask("capital?"), TEAM_A, now, None)
        assert found is not None and found.body == b'{"answer":"Paris."}' and found.meta == {"provider": "up"}
    finally:
        await store.close()


# -- embeddings that fail -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        (Scenario.error(500, {"error": {"message": "boom"}}), "ValueError: HTTP 500"),
        (Scenario.error(429, {"error": {"message": "slow down"}}), "ValueError: HTTP 429"),
        (Scenario(body=b"<html>not json</html>"), "JSONDecodeError"),
        (Scenario(body=b'{"data": []}'), "IndexError"),
        (Scenario(body=b'{"object": "list"}'), "KeyError"),
        (embedding([]), "ValueError: no embedding in the answer"),
        (Scenario(body=b'{"data": [{"embedding": "AAAA"}]}'), "ValueError: no embedding in the answer"),
        (embedding(["x", "y"]), "ValueError"),
        (embedding([[1.0], [2.0]]), "TypeError"),
    ],
)
async def test_a_failed_embedding_is_a_miss_and_a_warning(upstream: MockUpstream, provider: Any,
                                                          scenario: Scenario, error: str) -> None:
    lookup, logger = make_lookup(provider)
    await lookup.add("chat", ask("What is the capital of France?"), ANONYMOUS, "chat:k", [1.0, 0.0])
    upstream.on(EMBED_MODEL, scenario)
    assert await lookup.find("chat", ask("capital?"), ANONYMOUS, time.time(), None) == (None, None)
    [(message, fields)] = logger.warnings
    assert message == WARNING and fields["provider"] == "emb"
    assert fields["error"].startswith(error), fields["error"]
    assert UPSTREAM_KEY not in fields["error"] and "capital" not in fields["error"]


async def test_an_unreachable_provider_is_a_miss(unused_tcp_port: int) -> None:
    provider = make_provider(f"http://127.0.0.1:{unused_tcp_port}/v1")
    try:
        lookup, logger = make_lookup(provider)
        assert await lookup.find("chat", ask("capital?"), ANONYMOUS, time.time(), None) == (None, None)
    finally:
        await provider.close()
    assert [m for m, _ in logger.warnings] == [WARNING]


async def test_failures_are_warned_about_at_most_every_ten_seconds(
    upstream: MockUpstream, provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeTime(monotonic=10_000.0)
    monkeypatch.setattr(lookup_module, "time", clock)
    lookup, logger = make_lookup(provider)
    upstream.fail(EMBED_MODEL, 503, {"error": {"message": "overloaded"}})
    for _ in range(4):
        assert await lookup.find("chat", ask("capital?"), ANONYMOUS, 0.0, None) == (None, None)
        clock.now += 2
    assert len(upstream.requests_for(EMBED_MODEL)) == 4  # every miss still asked
    assert len(logger.warnings) == 1
    clock.now += 10
    await lookup.find("chat", ask("capital?"), ANONYMOUS, 0.0, None)
    assert len(logger.warnings) == 2
    # recovery: embeddings answer again, nothing more is warned
    upstream.on(EMBED_MODEL, embedding([1.0, 0.0]))
    assert await lookup.find("chat", ask("capital?"), ANONYMOUS, 0.0, None) == (None, [1.0, 0.0])
    assert len(logger.warnings) == 2


async def test_the_first_failure_is_warned_even_just_after_boot(
    upstream: MockUpstream, provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lookup_module, "time", FakeTime(monotonic=3.0))
    lookup, logger = make_lookup(provider)
    upstream.fail(EMBED_MODEL, 500, {"error": {"message": "boom"}})
    await lookup.find("chat", ask("capital?"), ANONYMOUS, 0.0, None)
    assert [m for m, _ in logger.warnings] == [WARNING]
