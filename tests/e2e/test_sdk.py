"""The official ``openai`` SDK, sync and async, streaming and not, against the gateway and recorded traffic."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from tests.support.fixtures import load_fixture
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import (
    MESSAGES,
    content_of_payloads,
    record_numbers,
    sdk_call,
    tool_calls_of_chunks,
    tool_calls_of_payloads,
    usage_numbers,
)

MODES = ["sync", "async"]


def alternating(fixtures: list[Any], *, usage: bool = False) -> list[Any]:
    """Each fixture once, the client alternating between sync and async (and, for streams, with and without
    ``include_usage``), so every combination runs without the full cross product."""
    combos = [(m, u) for u in (True, False) for m in MODES] if usage else [(m, None) for m in MODES]
    out = []
    for i, fixture in enumerate(fixtures):
        mode, include = combos[i % len(combos)]
        values = fixture if isinstance(fixture, tuple) else (fixture,)
        extra = (include,) if usage else ()
        out.append(pytest.param(*values, mode, *extra, id=f"{values[0]}-{mode}"
                                + ("" if not usage else ("-include_usage" if include else "-no_usage_option"))))
    return out


NONSTREAM_TEXT = [
    "openai/chat-completions/nonstream-text-gpt4o-mini",
    "openai/chat-completions/nonstream-text-gpt4o",
    "openai/chat-completions/nonstream-text-gpt4.1-nano",
    "groq/chat-completions/nonstream-text-llama3.3-70b",
    "openrouter/chat-completions/nonstream-text-provider-field-gemini",
    "xai/chat-completions/nonstream-reasoning-content-grok3-mini",
]
NONSTREAM_TOOLS = [
    "openai/chat-completions/nonstream-tool-call-gpt4o-mini",
    "openai/chat-completions/nonstream-tool-call-noargs-gpt4o",
    "openai/chat-completions/nonstream-tool-call-withargs-gpt4o",
    "groq/chat-completions/nonstream-tool-call-llama3.3-70b",
    "groq/chat-completions/nonstream-tool-call-reasoning-gpt-oss-120b",
    "openrouter/chat-completions/nonstream-tool-call-mistral-small",
    "xai/chat-completions/nonstream-tool-call-grok3-mini",
]


@pytest.mark.parametrize(("fixture", "mode"), alternating(NONSTREAM_TEXT))
async def test_nonstream_text(gateway: Gateway, mock_upstream: MockUpstream, mode: str, fixture: str) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    result = await sdk_call(gateway, mode, "chat.completions.create", model="up/m", messages=MESSAGES,
                            request_id="sdk-text")
    expected = fx.json
    assert result.id == expected["id"]
    assert result.model == expected["model"]
    assert result.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert result.choices[0].finish_reason == expected["choices"][0]["finish_reason"]
    # Provider extras (x_groq, provider, ...) survive the trip.
    extras = {k: v for k, v in expected.items() if k not in type(result).model_fields}
    for key, value in extras.items():
        assert getattr(result, key) == value, key
    if "reasoning_content" in expected["choices"][0]["message"]:
        assert result.choices[0].message.reasoning_content == expected["choices"][0]["message"]["reasoning_content"]
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        expected["usage"]["prompt_tokens"], expected["usage"]["completion_tokens"], expected["usage"]["total_tokens"]
    )
    record = await gateway.record("sdk-text")
    assert record.outcome == "ok" and record.status == 200 and record.provider == "up" and record.model == "m"
    assert record_numbers(record) == usage_numbers(expected["usage"])


@pytest.mark.parametrize(("fixture", "mode"), alternating(NONSTREAM_TOOLS))
async def test_nonstream_tool_calls(gateway: Gateway, mock_upstream: MockUpstream, mode: str, fixture: str) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    result = await sdk_call(gateway, mode, "chat.completions.create", model="up/m", messages=MESSAGES)
    expected_calls = fx.json["choices"][0]["message"]["tool_calls"]
    assert expected_calls, "fixture without tool calls"
    got = result.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in got] == [
        (c["id"], c["function"]["name"], c["function"]["arguments"]) for c in expected_calls
    ]
    for call in got:
        json.loads(call.function.arguments)  # complete JSON arguments
    assert result.choices[0].finish_reason == fx.json["choices"][0]["finish_reason"]
    assert result.usage is not None and result.usage.total_tokens == fx.json["usage"]["total_tokens"]


async def test_nonstream_body_is_forwarded_byte_exact(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/nonstream-text-gpt4o-mini")
    mock_upstream.replay("gpt-4o-mini", fx)
    client = gateway.async_openai()
    raw = await client.chat.completions.with_raw_response.create(model="up/gpt-4o-mini", messages=MESSAGES)
    assert raw.http_response.content == fx.body
    assert raw.headers["content-type"].startswith("application/json")
    assert raw.parse().choices[0].message.content == "Hello, World!"


STREAM_TEXT = [
    "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini",
    "openai/chat-completions/stream-text-no-usage-gpt4o-mini",
    "groq/chat-completions/stream-text-x-groq-usage-llama3.3-70b",
    "openrouter/chat-completions/stream-processing-comments-usage-cost-claude",
    "xai/chat-completions/stream-reasoning-content-grok3-mini",
]


@pytest.mark.parametrize(("fixture", "mode", "include_usage"), alternating(STREAM_TEXT * 2, usage=True))
async def test_stream_text(
    gateway: Gateway, mock_upstream: MockUpstream, mode: str, include_usage: bool, fixture: str
) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await sdk_call(gateway, mode, "chat.completions.create", model="up/m", messages=MESSAGES,
                            stream=True, request_id="sdk-stream", **kwargs)
    expected_text = content_of_payloads(fx.data_payloads)
    assert expected_text, "fixture without text"
    assert content_of_payloads([c.model_dump() for c in chunks]) == expected_text
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["stop"]
    if "reasoning_content" in fx.raw.decode():
        reasoning = "".join(getattr(ch.delta, "reasoning_content", None) or "" for c in chunks for ch in c.choices)
        expected_reasoning = "".join(
            (ch.get("delta") or {}).get("reasoning_content") or "" for p in fx.data_payloads for ch in p["choices"]
        )
        assert reasoning == expected_reasoning and reasoning
    usage_chunks = [c for c in chunks if c.usage is not None]
    fixture_usage = fx.usage
    record = await gateway.record("sdk-stream")
    assert record.stream and record.outcome == "ok" and record.status == 200
    if fixture_usage is not None:
        assert record_numbers(record) == usage_numbers(fixture_usage)
        assert not record.usage.estimated
    else:  # the provider sent none: estimated, and marked so
        assert record.usage is not None and record.usage.estimated and record.usage.output_tokens > 0
    if include_usage and fixture_usage is not None:
        assert usage_chunks, "the client asked for usage and did not get it"
        assert usage_chunks[-1].usage.prompt_tokens == fixture_usage["prompt_tokens"]
        assert usage_chunks[-1].usage.completion_tokens == fixture_usage["completion_tokens"]
    if not include_usage and not fixture.startswith("groq/"):
        # The gateway asked for usage on its own account; the client, which did not, must not see it.
        # (Groq sends usage in its last content chunk unasked; that is the provider's answer, kept.)
        assert usage_chunks == []
        assert all(c.choices for c in chunks)
        assert mock_upstream.last("m").json["stream_options"] == {"include_usage": True}


STREAM_TOOLS = [
    ("openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o", 1),
    ("openai/chat-completions/stream-tool-call-include-usage-gpt4o-mini", 1),
    ("openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o", 2),
    ("groq/chat-completions/stream-tool-call-x-groq-usage-gpt-oss-120b", 1),
    ("groq/chat-completions/stream-tool-call-x-groq", 1),
    ("xai/chat-completions/stream-reasoning-then-tool-call-include-usage-grok3-mini", 1),
]


@pytest.mark.parametrize(("fixture", "n_calls", "mode", "include_usage"), alternating(STREAM_TOOLS * 2, usage=True))
async def test_stream_tool_calls(
    gateway: Gateway, mock_upstream: MockUpstream, mode: str, include_usage: bool, fixture: str, n_calls: int
) -> None:
    fx = load_fixture(fixture)
    # Cut the stream through the middle of events: the gateway must not depend on aligned reads.
    mock_upstream.replay("m", fx, split="bytes")
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await sdk_call(gateway, mode, "chat.completions.create", model="up/m", messages=MESSAGES,
                            stream=True, request_id="sdk-tools", **kwargs)
    got = tool_calls_of_chunks(chunks)
    expected = tool_calls_of_payloads(fx.data_payloads)
    assert len(expected) == n_calls
    assert got == expected
    for call in got.values():
        assert call["id"] and call["name"]
        assert isinstance(json.loads(call["arguments"]), dict)  # the arguments are complete JSON
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert finishes == ["tool_calls"]
    record = await gateway.record("sdk-tools")
    assert fx.usage is not None
    assert record_numbers(record) == usage_numbers(fx.usage)


async def test_stream_tool_call_arguments_reassembled_from_many_deltas(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    fx = load_fixture("openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o")
    argument_deltas = [
        d["function"]["arguments"]
        for p in fx.data_payloads for ch in p["choices"] for d in (ch["delta"].get("tool_calls") or [])
        if d.get("function", {}).get("arguments")
    ]
    assert len(argument_deltas) >= 4  # the point of this fixture: arguments split in many pieces
    mock_upstream.replay("gpt-4o", fx, split="bytes")
    chunks = await sdk_call(gateway, "async", "chat.completions.create", model="up/gpt-4o", messages=MESSAGES,
                            stream=True)
    (call,) = tool_calls_of_chunks(chunks).values()
    assert json.loads(call["arguments"]) == json.loads("".join(argument_deltas))
    assert json.loads(call["arguments"]) == {"city": "Mexico City"}


def _floats_of_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.mark.parametrize("mode", MODES)
async def test_embeddings_float(gateway: Gateway, mock_upstream: MockUpstream, mode: str) -> None:
    fx = load_fixture("openai/embeddings/float-1536d-text-embedding-3-small")
    mock_upstream.replay("text-embedding-3-small", fx)
    result = await sdk_call(gateway, mode, "embeddings.create", model="up/text-embedding-3-small",
                            input="Hello, world!", encoding_format="float", request_id="sdk-embed")
    expected = fx.json["data"][0]["embedding"]
    assert len(expected) == 1536
    assert result.data[0].embedding == expected
    assert result.usage.prompt_tokens == fx.json["usage"]["prompt_tokens"]
    received = mock_upstream.last("text-embedding-3-small").json
    assert received == {"model": "text-embedding-3-small", "input": "Hello, world!", "encoding_format": "float"}
    record = await gateway.record("sdk-embed")
    assert record.endpoint == "embeddings" and record.status == 200
    assert record.usage is not None and record.usage.input_tokens == fx.json["usage"]["prompt_tokens"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fixture",
    ["openai/embeddings/base64-dims128-text-embedding-3-small",
     "openai/embeddings/base64-dims512-raw-text-embedding-3-small"],
)
async def test_embeddings_base64(gateway: Gateway, mock_upstream: MockUpstream, mode: str, fixture: str) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("text-embedding-3-small", fx)
    expected_b64 = fx.json["data"][0]["embedding"]
    dims = len(_floats_of_base64(expected_b64))
    # The SDK asks for base64 by default and decodes it to floats.
    decoded = await sdk_call(gateway, mode, "embeddings.create", model="up/text-embedding-3-small",
                             input=["Hello, world!"], dimensions=dims)
    assert mock_upstream.last().json["encoding_format"] == "base64"
    assert mock_upstream.last().json["dimensions"] == dims
    assert decoded.data[0].embedding == pytest.approx(_floats_of_base64(expected_b64), abs=0, rel=0)
    # Asked explicitly, base64 reaches the client as the provider's string.
    raw = await sdk_call(gateway, mode, "embeddings.create", model="up/text-embedding-3-small",
                         input=["Hello, world!"], dimensions=dims, encoding_format="base64")
    assert raw.data[0].embedding == expected_b64


@pytest.mark.parametrize("mode", MODES)
async def test_models_list_and_get(make_gateway: Any, make_mock_upstream: Any, mode: str) -> None:
    mock = await make_mock_upstream(model_ids=["gpt-4o-mini", "text-embedding-3-small"])
    gateway = await make_gateway(upstream=mock)
    page = await sdk_call(gateway, mode, "models.list")
    ids = [m.id for m in page.data]
    assert ids == ["up/gpt-4o-mini", "up/text-embedding-3-small"]
    assert all(m.owned_by == "mock-org" and m.object == "model" for m in page.data)
    # The gateway listed the models with the provider's key.
    assert mock.requests_to("/v1/models")[0].headers["Authorization"].endswith("sk-upstream-provider-key-0123456789")
    model = await sdk_call(gateway, mode, "models.retrieve", "up/gpt-4o-mini")
    assert model.id == "up/gpt-4o-mini" and model.owned_by == "mock-org" and model.created == 1700000000
    bare = await sdk_call(gateway, mode, "models.retrieve", "text-embedding-3-small")
    assert bare.id == "up/text-embedding-3-small"
