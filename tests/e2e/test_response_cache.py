"""The response cache end to end: hits and misses through the official SDKs, streamed replay, the client's
Cache-Control, errors and cut streams never cached, Redis shared by two gateways and Redis down."""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.support.anthropic_client import async_anthropic_client
from tests.support.gateway import Gateway, provider_config
from tests.support.mock_upstream import MockUpstream

from .test_guardrails import chat_json, chat_stream


def cache_extra(backend: str = "local", **responses: Any) -> dict[str, Any]:
    return {"responses": {"enabled": True, **responses}, "backend": backend}


async def cached_gateway(make_gateway: Any, upstream: MockUpstream, *, backend: str = "local",
                         extra: dict[str, Any] | None = None, **responses: Any) -> Gateway:
    gateway: Gateway = await make_gateway(upstream=upstream, cache=cache_extra(backend, **responses), extra=extra)
    return gateway


MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


async def test_second_identical_request_is_a_hit_and_costs_nothing(
    make_gateway: Any, mock_upstream: MockUpstream
) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()
    first = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES,
                                                                    extra_headers={"X-Request-ID": "c-1"})
    second = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES,
                                                                     extra_headers={"X-Request-ID": "c-2"})
    assert first.headers["X-GoModel-Cache"] == "MISS"
    assert second.headers["X-GoModel-Cache"] == "HIT"
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content == "Paris."
    assert second.parse().usage is not None and second.parse().usage.total_tokens == 20
    assert len(mock_upstream.requests_for("m")) == 1
    record = await gateway.record("c-2")
    assert record.cached and record.outcome == "cached" and record.cost == 0
    assert record.usage is not None and record.usage.input_tokens == 12
    metrics = await gateway.metrics_text()
    assert 'gomodel_cache_lookups_total{api="chat",result="hit"} 1.0' in metrics
    assert 'gomodel_cache_lookups_total{api="chat",result="miss"} 1.0' in metrics
    # A different parameter is a different answer.
    third = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES, temperature=0.2)
    assert third.headers["X-GoModel-Cache"] == "MISS"


async def test_a_stream_is_replayed_as_a_stream_and_serves_the_non_streamed_form(
    make_gateway: Any, mock_upstream: MockUpstream
) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_stream(["The capital ", "is ", "Paris."], split="bytes"))
    client = gateway.async_openai()

    async def streamed() -> tuple[str, Any, str]:
        raw = await client.chat.completions.with_raw_response.create(
            model="up/m", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        chunks = [c async for c in raw.parse()]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = [c.usage for c in chunks if c.usage is not None]
        return text, usage, raw.headers["X-GoModel-Cache"]

    text, _, state = await streamed()
    assert (text, state) == ("The capital is Paris.", "MISS")
    text2, usage2, state2 = await streamed()
    assert (text2, state2) == ("The capital is Paris.", "HIT")
    assert usage2 and usage2[0].prompt_tokens == 12 and usage2[0].completion_tokens == 8
    assert len(mock_upstream.requests_for("m")) == 1
    # Without include_usage the replay carries no usage chunk, as the provider's stream would not.
    raw = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES, stream=True)
    chunks = [c async for c in raw.parse()]
    assert raw.headers["X-GoModel-Cache"] == "HIT" and all(c.usage is None for c in chunks)
    # The non-streamed form of the same request is served from the stored stream.
    whole = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
    assert whole.headers["X-GoModel-Cache"] == "HIT"
    assert whole.parse().choices[0].message.content == "The capital is Paris."
    assert len(mock_upstream.requests_for("m")) == 1


async def test_a_whole_answer_serves_a_streamed_request(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()
    await client.chat.completions.create(model="up/m", messages=MESSAGES)
    raw = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES, stream=True)
    chunks = [c async for c in raw.parse()]
    assert raw.headers["X-GoModel-Cache"] == "HIT"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    assert len(mock_upstream.requests_for("m")) == 1


async def test_cache_control_from_the_client(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()

    async def ask(control: str | None) -> str:
        headers = {"Cache-Control": control} if control else {}
        raw = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES,
                                                                      extra_headers=headers)
        return raw.headers["X-GoModel-Cache"]

    assert await ask("no-store") == "MISS"   # not stored ...
    assert await ask(None) == "MISS"         # ... so this one misses, and is stored
    assert await ask(None) == "HIT"
    assert await ask("no-cache") == "MISS"   # not read, but stored afresh
    assert await ask("max-age=3600") == "HIT"
    assert await ask("max-age=0, private") in ("MISS", "HIT")  # 0 s old at most: a hit only within the second
    assert len(mock_upstream.requests_for("m")) >= 3


async def test_errors_and_cut_streams_are_never_cached(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    client = gateway.async_openai()
    mock_upstream.fail("m", 500, {"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="up/m", messages=MESSAGES)
    mock_upstream.on("m", chat_stream(["one ", "two ", "three"], drop_after=2))
    with pytest.raises(openai.APIError):
        async for _ in await client.chat.completions.create(model="up/m", messages=MESSAGES, stream=True):
            pass
    mock_upstream.on("m", chat_json("Paris."))
    raw = await client.chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
    assert raw.headers["X-GoModel-Cache"] == "MISS"
    assert raw.parse().choices[0].message.content == "Paris."


async def test_messages_hits_through_the_anthropic_sdk(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_json("Paris."))
    client = async_anthropic_client(gateway)
    first = await client.messages.with_raw_response.create(model="up/m", max_tokens=20, messages=MESSAGES)
    second = await client.messages.with_raw_response.create(model="up/m", max_tokens=20, messages=MESSAGES)
    assert (first.headers["X-GoModel-Cache"], second.headers["X-GoModel-Cache"]) == ("MISS", "HIT")
    message = await second.parse()
    assert message.content[0].type == "text" and message.content[0].text == "Paris."
    async with client.messages.stream(model="up/m", max_tokens=20, messages=MESSAGES) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "Paris."
    assert len(mock_upstream.requests_for("m")) == 1


async def test_responses_hits_through_the_openai_sdk(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()
    first = await client.responses.with_raw_response.create(model="up/m", input="capital of France?", store=False)
    second = await client.responses.with_raw_response.create(model="up/m", input="capital of France?", store=False)
    assert (first.headers["X-GoModel-Cache"], second.headers["X-GoModel-Cache"]) == ("MISS", "HIT")
    assert second.parse().output_text == "Paris."
    stream = await client.responses.create(model="up/m", input="capital of France?", store=False, stream=True)
    done = [e async for e in stream if e.type == "response.completed"]
    assert done and done[0].response.output_text == "Paris."
    assert len(mock_upstream.requests_for("m")) == 1


async def test_two_gateways_share_answers_through_redis(
    make_gateway: Any, mock_upstream: MockUpstream, redis_url: str, redis_key_prefix: str
) -> None:
    redis = {"redis": {"url": redis_url, "key_prefix": redis_key_prefix}}
    one = await cached_gateway(make_gateway, mock_upstream, backend="redis", extra=redis)
    two = await cached_gateway(make_gateway, mock_upstream, backend="redis", extra=redis)
    mock_upstream.on("m", chat_json("Paris."))
    first = await one.async_openai().chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
    assert first.headers["X-GoModel-Cache"] == "MISS"
    for _ in range(50):  # the write is off the request path
        second = await two.async_openai().chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
        if second.headers["X-GoModel-Cache"] == "HIT":
            break
    assert second.headers["X-GoModel-Cache"] == "HIT"
    assert second.parse().choices[0].message.content == "Paris."


async def test_redis_down_serves_without_the_cache_and_says_so(
    make_gateway: Any, mock_upstream: MockUpstream, unused_tcp_port: int
) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream, backend="redis",
                                   extra={"redis": {"url": f"redis://127.0.0.1:{unused_tcp_port}/0"}})
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()
    for _ in range(2):
        result = await client.chat.completions.create(model="up/m", messages=MESSAGES)
        assert result.choices[0].message.content == "Paris."
    assert len(mock_upstream.requests_for("m")) == 2
    metrics = await gateway.metrics_text()
    assert 'gomodel_cache_lookups_total{api="chat",result="error"} 2.0' in metrics


async def test_body_of_a_hit_is_the_providers_bytes(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await cached_gateway(make_gateway, mock_upstream)
    scenario = chat_json("Paris.")
    mock_upstream.on("m", scenario)
    body = {"model": "up/m", "messages": MESSAGES}
    async with gateway.http.post("v1/chat/completions", data=json.dumps(body)) as first:
        assert first.headers["X-GoModel-Cache"] == "MISS"
        first_bytes = await first.read()
    async with gateway.http.post("v1/chat/completions", data=json.dumps(body)) as second:
        assert second.headers["X-GoModel-Cache"] == "HIT"
        assert await second.read() == first_bytes == scenario.body


async def test_semantic_cache_answers_a_reworded_prompt(
    make_gateway: Any, mock_upstream: MockUpstream, aiohttp_server: Any
) -> None:
    """Embeddings from a provider (here: a bag-of-words embedder on a loopback port, speaking OpenAI's
    embeddings shape) find the answer of a prompt worded differently; another topic is a miss."""
    vocabulary = ["capital", "france", "city", "paris", "weather", "tomorrow", "rain", "what", "which", "is"]
    calls: list[str] = []

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        text = body["input"] if isinstance(body["input"], str) else body["input"][0]
        calls.append(text)
        words = re.findall(r"[a-z]+", text.lower())
        vector = [float(words.count(w)) for w in vocabulary]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return web.json_response({"object": "list", "model": body["model"], "usage": {"prompt_tokens": 5,
                                  "total_tokens": 5}, "data": [{"object": "embedding", "index": 0,
                                                                "embedding": [v / norm for v in vector]}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    embedder = await aiohttp_server(app)
    gateway: Gateway = await make_gateway(
        providers={"up": provider_config(mock_upstream.base_url),
                   "emb": provider_config(str(embedder.make_url("/v1")))},
        cache={"responses": {"enabled": True, "semantic": {"enabled": True, "provider": "emb", "model": "e",
                                                           "threshold": 0.9}}})
    mock_upstream.on("m", chat_json("Paris."))
    client = gateway.async_openai()

    async def ask(question: str) -> str:
        raw = await client.chat.completions.with_raw_response.create(
            model="up/m", messages=[{"role": "user", "content": question}])
        return raw.headers["X-GoModel-Cache"]

    assert await ask("What is the capital of France?") == "MISS"
    for _ in range(50):  # the answer and its embedding are stored off the request path
        if len(gateway.state.governance.cache.semantic.index) == 1:
            break
        await asyncio.sleep(0.01)
    assert await ask("what is the capital of FRANCE") == "HIT"
    assert await ask("Will it rain tomorrow?") == "MISS"
    assert len(mock_upstream.requests_for("m")) == 2
    assert calls  # the embedder was asked
    metrics = await gateway.metrics_text()
    assert 'gomodel_cache_lookups_total{api="chat",result="semantic_hit"} 1.0' in metrics


async def test_a_persisted_local_cache_is_warm_after_a_restart(
    make_gateway: Any, mock_upstream: MockUpstream, tmp_path: Any
) -> None:
    shared = str(tmp_path / "shared-cache")
    first = await make_gateway(upstream=mock_upstream, cache={"dir": shared, **cache_extra(persist=True)})
    mock_upstream.on("m", chat_json("Paris."))
    raw = await first.async_openai().chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
    assert raw.headers["X-GoModel-Cache"] == "MISS"
    await first.close_clients()
    await first.server.close()  # shutdown saves the snapshot
    second = await make_gateway(upstream=mock_upstream, cache={"dir": shared, **cache_extra(persist=True)})
    raw = await second.async_openai().chat.completions.with_raw_response.create(model="up/m", messages=MESSAGES)
    assert raw.headers["X-GoModel-Cache"] == "HIT"
    assert raw.parse().choices[0].message.content == "Paris."
    assert len(mock_upstream.requests_for("m")) == 1
