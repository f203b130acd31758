"""The built-in mock provider: deterministic answers, exact usage, OpenAI stream framing, embeddings."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson
import pytest

from gomodel_proxy.config.schema import MockConfig, ProviderConfig
from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.types import ModelInfo, Usage
from gomodel_proxy.providers.mock import MockProvider
from gomodel_proxy.providers.mock.provider import GeneratedResponse
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap

from ._support import data_of, reference_events

VOCABULARY = set(
    "the gateway streams every token as it arrives and keeps the usage exact while the provider "
    "answers quickly so teams can measure latency throughput and cost with confidence".split()
)


def provider(models: list[str] | None = None, **mock: Any) -> MockProvider:
    return MockProvider("demo", ProviderConfig(type="mock", models=models or [], mock=MockConfig(**mock)))


def chat(text: str = "Say hello to the gateway", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-chat", "messages": [{"role": "user", "content": text}], **extra}


async def answer(p: MockProvider, body: dict[str, Any]) -> dict[str, Any]:
    response = await p.chat_completions(body, stream=False)
    assert response.status == 200
    assert response.headers == {"Content-Type": "application/json"}
    parsed: dict[str, Any] = orjson.loads(await response.read())
    return parsed


async def stream_bytes(p: MockProvider, body: dict[str, Any]) -> bytes:
    response = await p.chat_completions(body, stream=True)
    assert response.headers == {"Content-Type": "text/event-stream"}
    return b"".join([chunk async for chunk in response.chunks()])


def payloads(data: bytes) -> list[Any]:
    events, rest = reference_events(data)
    assert rest == b""
    assert all(e.endswith(b"\n\n") and e.startswith(b"data: ") for e in events)
    return [d if d == b"[DONE]" else orjson.loads(d or b"") for e in events if (d := data_of(e)) is not None]


# -- models -----------------------------------------------------------------------------------------------


async def test_models_default_and_configured() -> None:
    assert await provider().list_models() == [
        ModelInfo("mock-chat", "demo", "gomodel-proxy"), ModelInfo("mock-embed", "demo", "gomodel-proxy")]
    assert [m.id for m in await provider(["a", "b", "c"]).list_models()] == ["a", "b", "c"]
    p = provider()
    assert (p.name, p.kind, p.injects_stream_usage) == ("demo", "mock", True)
    assert await p.close() is None


def test_without_mock_settings_the_defaults_apply() -> None:
    p = MockProvider("m", ProviderConfig(type="mock"))
    assert p._mock == MockConfig()


# -- chat -------------------------------------------------------------------------------------------------


async def test_deterministic_text_with_exact_usage() -> None:
    p = provider(completion_tokens=16)
    first = await answer(p, chat())
    second = await answer(p, chat())
    content = first["choices"][0]["message"]["content"]
    assert content == second["choices"][0]["message"]["content"]
    words = content.split(" ")
    assert len(words) == 16
    assert set(words) <= VOCABULARY
    assert first["object"] == "chat.completion"
    assert first["model"] == "mock-chat"
    assert first["id"].startswith("chatcmpl-mock-") and first["id"] != second["id"]
    assert abs(first["created"] - time.time()) < 60
    assert first["choices"][0]["finish_reason"] == "stop"
    assert first["choices"][0]["message"]["role"] == "assistant"
    # 5 prompt words + 3 per message; one token per word of the answer.
    assert first["usage"] == {"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24}


async def test_different_prompts_start_at_different_words() -> None:
    p = provider(completion_tokens=3)
    texts = {(await answer(p, chat(f"prompt number {i}")))["choices"][0]["message"]["content"] for i in range(8)}
    assert len(texts) > 1


async def test_prompt_tokens_count_every_message_and_text_parts() -> None:
    body = {"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two three"},
                                     {"type": "image_url", "image_url": {"url": "http://x"}}]},
        {"role": "assistant", "content": None},
        "not a message",
    ]}
    usage = (await answer(provider(completion_tokens=2), body))["usage"]
    assert usage == {"prompt_tokens": 5 + 3 * 4, "completion_tokens": 2, "total_tokens": 19}


@pytest.mark.parametrize(
    ("limits", "count", "finish"),
    [
        ({"max_tokens": 5}, 5, "length"),
        ({"max_completion_tokens": 3, "max_tokens": 10}, 3, "length"),
        ({"max_tokens": 100}, 16, "stop"),
        ({"max_tokens": 16}, 16, "stop"),
        ({"max_tokens": 0}, 0, "length"),
        ({"max_tokens": -1}, 16, "stop"),
        ({"max_tokens": True}, 16, "stop"),
        ({"max_tokens": "5"}, 16, "stop"),
        ({"max_completion_tokens": None, "max_tokens": 4}, 16, "stop"),
    ],
)
async def test_max_tokens_limits_the_answer(limits: dict[str, Any], count: int, finish: str) -> None:
    parsed = await answer(provider(completion_tokens=16), chat(**limits))
    content = parsed["choices"][0]["message"]["content"]
    assert len(content.split()) == count
    assert parsed["choices"][0]["finish_reason"] == finish
    assert parsed["usage"]["completion_tokens"] == count


@pytest.mark.parametrize("messages", [None, [], "hello", {"role": "user"}])
async def test_bad_messages_are_rejected(messages: Any) -> None:
    body = {"model": "mock-chat"} if messages is None else {"model": "mock-chat", "messages": messages}
    with pytest.raises(InvalidRequestError) as info:
        await provider().chat_completions(body, stream=False)
    assert info.value.param == "messages"
    assert info.value.status == 400


async def test_latency_is_applied_before_answering() -> None:
    p = provider(latency_ms=30)
    started = time.perf_counter()
    await answer(p, chat())
    assert time.perf_counter() - started >= 0.025


# -- streaming --------------------------------------------------------------------------------------------


async def test_stream_without_include_usage() -> None:
    p = provider(completion_tokens=7, tokens_per_chunk=3)
    data = await stream_bytes(p, chat())
    events = payloads(data)
    assert events[-1] == b"[DONE]"
    chunks = events[:-1]
    assert b"usage" not in data
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(texts) == math.ceil(7 / 3)
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    whole = (await answer(p, chat()))["choices"][0]["message"]["content"]
    assert "".join(texts) == whole
    assert [len(t.split()) for t in texts] == [3, 3, 1]


async def test_stream_with_include_usage() -> None:
    p = provider(completion_tokens=4)
    data = await stream_bytes(p, chat(stream_options={"include_usage": True}, max_tokens=2))
    events = payloads(data)
    assert events[-1] == b"[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all("usage" in c and c["usage"] is None for c in chunks)
    assert len(chunks) == 1 + 2 + 1  # role, one word per chunk, finish
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}


@pytest.mark.parametrize("options", [{"include_usage": False}, {"include_usage": "yes"}, "include_usage", None])
async def test_include_usage_must_be_exactly_true(options: Any) -> None:
    data = await stream_bytes(provider(), chat(stream_options=options))
    assert b"usage" not in data


async def test_the_tap_strips_what_include_usage_added_back_to_the_plain_stream() -> None:
    p = provider(completion_tokens=6, tokens_per_chunk=2)
    plain = await stream_bytes(p, chat())
    with_usage = await stream_bytes(p, chat(stream_options={"include_usage": True}))
    tap = ChatStreamTap(strip_usage=True)
    stripped = tap.feed(with_usage) + tap.finish()

    def normalized(data: bytes) -> list[Any]:
        return [{**e, "id": "x", "created": 0} if isinstance(e, dict) else e for e in payloads(data)]

    assert normalized(stripped) == normalized(plain)
    assert len(stripped) == len(plain)
    assert tap.usage == Usage(input_tokens=8, output_tokens=6)
    assert tap.content_events == 1 + 3 + 1
    assert tap.complete


async def test_stream_pacing() -> None:
    p = provider(completion_tokens=3, chunk_delay_ms=10, latency_ms=10)
    response = await p.chat_completions(chat(), stream=True)
    started = time.perf_counter()
    chunks = [c async for c in response.chunks()]
    assert time.perf_counter() - started >= 0.035  # latency + three chunk delays
    assert len(chunks) == 1 + 3 + 1 + 1


async def test_release_stops_an_unfinished_stream() -> None:
    response = await provider(completion_tokens=50).chat_completions(chat(), stream=True)
    chunks = response.chunks()
    first = await anext(chunks)
    assert first.startswith(b"data: ")
    response.release()
    await asyncio.sleep(0.01)
    assert [c async for c in chunks] == []


async def test_release_of_a_finished_or_unstarted_response() -> None:
    response = await provider().chat_completions(chat(), stream=True)
    response.release()  # never started: closing is harmless
    await asyncio.sleep(0)
    body = await provider().chat_completions(chat(), stream=False)
    body.release()
    assert (await body.read()).startswith(b"{")


async def test_empty_generated_response() -> None:
    empty = GeneratedResponse(content_type="text/plain")
    assert await empty.read() == b""
    assert empty.status == 200
    assert GeneratedResponse(content_type="x", body=b"b", status=503).status == 503


# -- embeddings -------------------------------------------------------------------------------------------


async def embed(p: MockProvider, body: dict[str, Any]) -> dict[str, Any]:
    response = await p.embeddings(body)
    assert response.headers == {"Content-Type": "application/json"}
    parsed: dict[str, Any] = orjson.loads(await response.read())
    return parsed


async def test_embeddings_default_dimensions_and_usage() -> None:
    parsed = await embed(provider(), {"model": "mock-embed", "input": "three little words"})
    assert parsed["object"] == "list"
    assert parsed["model"] == "mock-embed"
    (item,) = parsed["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 8
    assert all(-1.0 <= v < 1.0 for v in item["embedding"])
    assert parsed["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


async def test_embeddings_are_deterministic_per_text_and_sized_as_asked() -> None:
    p = provider(embedding_dimensions=20)
    parsed = await embed(p, {"input": ["alpha beta", "gamma", "alpha beta"], "dimensions": 300})
    vectors = [d["embedding"] for d in parsed["data"]]
    assert [d["index"] for d in parsed["data"]] == [0, 1, 2]
    assert [len(v) for v in vectors] == [300, 300, 300]
    assert vectors[0] == vectors[2] != vectors[1]
    assert parsed["usage"]["prompt_tokens"] == 2 + 1 + 2
    again = await embed(p, {"input": "alpha beta", "dimensions": 300})
    assert again["data"][0]["embedding"] == vectors[0]
    assert len((await embed(p, {"input": "x"}))["data"][0]["embedding"]) == 20


@pytest.mark.parametrize("dims", [0, -3, 9000, "64", True, None])
async def test_embedding_dimensions_out_of_range_fall_back_to_the_configured_size(dims: Any) -> None:
    parsed = await embed(provider(embedding_dimensions=12), {"input": "x", "dimensions": dims})
    assert len(parsed["data"][0]["embedding"]) == 12


@pytest.mark.parametrize("value", [None, [], [1, 2], ["ok", 3], 42, {"text": "x"}])
async def test_bad_embedding_input_is_rejected(value: Any) -> None:
    body = {"model": "mock-embed"} if value is None else {"model": "mock-embed", "input": value}
    with pytest.raises(InvalidRequestError) as info:
        await provider().embeddings(body)
    assert info.value.param == "input"
    assert info.value.error_type == "invalid_request_error"


class _Chunks:
    """An async iterator without ``aclose`` (not a generator): release has nothing to close."""

    def __init__(self) -> None:
        self.items = [b"a", b"b"]

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self.items:
            raise StopAsyncIteration
        return self.items.pop(0)


async def test_release_of_an_iterator_that_cannot_be_closed() -> None:
    source = _Chunks()
    response = GeneratedResponse(content_type="text/event-stream", gen=source)
    response.release()
    assert await response.read() == b"ab"
