"""The Responses API for providers without it: converted through chat completions, checked with the openai SDK.

The upstream is the OpenAI-compatible chat mock (``openai_compatible``, no Responses API) replaying
recorded chat answers, or the built-in ``mock`` provider. The gateway converts requests and answers,
stores converted responses (``GET``, ``DELETE``, ``previous_response_id``) unless ``store: false``, and
ends a failed or cut chat stream with a failure the SDK surfaces, never with ``response.completed``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import MakeGateway
from tests.support.fixtures import load_fixture
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream
from tests.support.responses_check import (
    accumulate,
    chat_body_facts,
    chat_stream_facts,
    output_facts,
    responses_events,
    usage_matches,
    validate_response,
)

TOOLS: list[dict[str, Any]] = [{
    "type": "function", "name": "get_weather", "description": "Weather for a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
}]
TEXT_STREAMS = [
    "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini",
    "openai/chat-completions/stream-text-no-usage-gpt4o-mini",
    "groq/chat-completions/stream-text-x-groq-usage-llama3.3-70b",
    "openrouter/chat-completions/stream-processing-comments-usage-cost-claude",
    "openrouter/chat-completions/stream-reasoning-details-claude-sonnet45",
    "xai/chat-completions/stream-reasoning-content-grok3-mini",
]
TOOL_STREAMS = [
    "openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o",
    "openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o",
    "openai/chat-completions/stream-tool-call-include-usage-gpt4o-mini",
    "groq/chat-completions/stream-tool-call-x-groq-usage-gpt-oss-120b",
    "groq/chat-completions/stream-tool-call-x-groq",
    "xai/chat-completions/stream-reasoning-then-tool-call-include-usage-grok3-mini",
]
BODIES = [
    "openai/chat-completions/nonstream-text-gpt4o",
    "openai/chat-completions/nonstream-tool-call-gpt4o-mini",
    "openai/chat-completions/nonstream-tool-call-noargs-gpt4o",
    "groq/chat-completions/nonstream-tool-call-reasoning-gpt-oss-120b",
    "xai/chat-completions/nonstream-reasoning-content-grok3-mini",
]


async def test_text_answer_and_usage(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/nonstream-text-gpt4o")
    mock_upstream.replay("m", fx)
    client = gateway.async_openai()
    result = await client.responses.create(
        model="up/m", input="What is the capital of France?", instructions="Answer briefly.",
        max_output_tokens=100, temperature=0.2, extra_headers={"X-Request-ID": "conv-1"},
    )
    expected = fx.json
    assert result.id.startswith("resp_") and result.object == "response" and result.status == "completed"
    assert result.output_text == expected["choices"][0]["message"]["content"]
    assert result.model == expected["model"]
    assert result.instructions == "Answer briefly." and result.max_output_tokens == 100
    assert result.usage is not None
    usage_matches(result.usage.model_dump(exclude_none=True), expected["usage"])
    upstream = mock_upstream.last("m")
    assert upstream.path == "/v1/chat/completions"
    assert upstream.json == {
        "model": "m", "messages": [{"role": "system", "content": "Answer briefly."},
                                   {"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0.2, "max_tokens": 100,
    }
    record = await gateway.record("conv-1")
    assert record.endpoint == "responses" and record.provider == "up" and record.outcome == "ok"
    assert record.usage is not None and record.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert record.usage.output_tokens == expected["usage"]["completion_tokens"]


@pytest.mark.parametrize("rel", BODIES)
async def test_recorded_chat_bodies_through_the_sdk(gateway: Gateway, mock_upstream: MockUpstream, rel: str) -> None:
    fx = load_fixture(rel)
    mock_upstream.replay("m", fx)
    client = gateway.async_openai()
    result = await client.responses.create(model="up/m", input="Go.", tools=TOOLS)
    facts = chat_body_facts(fx.json)
    got = output_facts(result)
    assert (got.content, got.reasoning) == (facts.content, facts.reasoning)
    assert [(c["id"], c["name"], c["arguments"]) for c in got.calls] == [
        (c["id"], c["name"], c["arguments"]) for c in facts.calls]
    usage_matches(got.usage, facts.usage)
    sent = mock_upstream.last("m").json
    assert sent["tools"] == [{"type": "function", "function": {k: v for k, v in TOOLS[0].items() if k != "type"}}]


@pytest.mark.parametrize("rel", TEXT_STREAMS + TOOL_STREAMS)
@pytest.mark.parametrize("mode", ["sdk", "raw"])
async def test_recorded_chat_streams_as_responses_events(gateway: Gateway, mock_upstream: MockUpstream, rel: str,
                                                         mode: str) -> None:
    fx = load_fixture(rel)
    mock_upstream.replay("m", fx, split="bytes")
    facts = chat_stream_facts(fx.body)
    if mode == "raw":
        async with gateway.http.post("v1/responses", json={"model": "up/m", "input": "Go.", "tools": TOOLS,
                                                           "stream": True},
                                     headers={"X-Request-ID": "conv-stream"}) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
            body = await resp.read()
        payloads = responses_events(body)  # framing, types and sequence numbers checked
        final = accumulate(payloads, TOOLS)
        assert final is not None and payloads[-1]["type"] == "response.completed"
        validate_response(payloads[-1]["response"])
        record = await gateway.record("conv-stream")
        assert record.outcome == "ok" and record.stream
        if facts.usage is not None:
            assert record.usage is not None and not record.usage.estimated
            assert record.usage.output_tokens == facts.usage["completion_tokens"]
        sent = mock_upstream.last("m").json
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    else:
        client = gateway.async_openai()
        async with client.responses.stream(model="up/m", input="Go.", tools=TOOLS) as stream:
            types = [event.type async for event in stream]
            final = await stream.get_final_response()
        assert types[0] == "response.created" and types[-1] == "response.completed"
        if facts.calls:
            assert "response.function_call_arguments.delta" in types
    got = output_facts(final)
    assert got.content == facts.content and got.reasoning == facts.reasoning
    assert [(c["name"], c["arguments"]) for c in got.calls] == [(c["name"], c["arguments"]) for c in facts.calls]
    for call, expected in zip(got.calls, facts.calls, strict=True):
        assert call["id"] == expected["id"]
    for call in got.calls:  # complete arguments: each parses as the JSON the tool gets
        json.loads(call["arguments"] or "{}")
    usage_matches(got.usage, facts.usage)


async def test_multi_turn_tool_round_trip_with_previous_response_id(gateway: Gateway,
                                                                    mock_upstream: MockUpstream) -> None:
    client = gateway.async_openai()
    mock_upstream.replay("m", "openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o")
    async with client.responses.stream(model="up/m", input="Weather in Mexico City?", tools=TOOLS,
                                       instructions="Use the tools.") as stream:
        first = await stream.get_final_response()
    call = next(o for o in first.output if o.type == "function_call")
    assert json.loads(call.arguments) == {"city": "Mexico City"}

    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o")
    second = await client.responses.create(
        model="up/m", previous_response_id=first.id, tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 25C"}],
    )
    assert second.previous_response_id == first.id and second.output_text
    sent = mock_upstream.last("m").json
    # The stored conversation comes first; the first turn's instructions are not carried over.
    assert sent["messages"] == [
        {"role": "user", "content": "Weather in Mexico City?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 25C"},
    ]

    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    async with client.responses.stream(model="up/m", previous_response_id=second.id, input="Thanks!") as stream:
        third = await stream.get_final_response()
    sent = mock_upstream.last("m").json
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent["messages"][3] == {"role": "assistant", "content": second.output_text}
    assert third.previous_response_id == second.id


async def test_get_delete_and_store_false(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    client = gateway.async_openai()
    mock_upstream.replay("m", "openai/chat-completions/nonstream-tool-call-gpt4o-mini")
    created = await client.responses.create(model="up/m", input="Weather in Paris?", tools=TOOLS)
    fetched = await client.responses.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()
    assert mock_upstream.requests_to(f"/v1/responses/{created.id}") == []  # answered from the gateway's store

    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    async with client.responses.stream(model="up/m", input="Hi") as stream:
        streamed = await stream.get_final_response()
    assert (await client.responses.retrieve(streamed.id)).output_text == streamed.output_text

    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.retrieve(created.id)
    assert info.value.body["message"] == f"Response with id '{created.id}' not found."
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model="up/m", input="again", previous_response_id=created.id)
    assert bad.value.code == "previous_response_not_found" and bad.value.body["param"] == "previous_response_id"

    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o")
    unstored = await client.responses.create(model="up/m", input="Hi", store=False)
    assert unstored.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored.id)
    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    async with client.responses.stream(model="up/m", input="Hi", store=False) as stream:
        unstored_stream = await stream.get_final_response()
    await asyncio.sleep(0.05)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unstored_stream.id)
    assert "store" not in mock_upstream.last("m").json  # a Responses setting, not sent to chat


async def test_truncated_chat_stream_fails_and_the_sdk_says_so(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o")
    mock_upstream.replay("m", fx, max_pieces=len(fx.events), drop_after=4)
    async with gateway.http.post("v1/responses", json={"model": "up/m", "input": "Go.", "stream": True},
                                 headers={"X-Request-ID": "conv-cut"}) as resp:
        body = await resp.read()
    payloads = responses_events(body)
    assert [p["type"] for p in payloads][-2:] == ["error", "response.failed"]
    assert not any(p["type"] in ("response.completed", "response.incomplete") for p in payloads)
    failed = validate_response(payloads[-1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert failed.output[0].type == "function_call" and failed.output[0].status == "incomplete"
    record = await gateway.record("conv-cut")
    assert record.outcome == "upstream_error"
    assert record.usage is not None and record.usage.estimated

    client = gateway.async_openai()
    with pytest.raises(openai.APIError) as error:
        async with client.responses.stream(model="up/m", input="Go.") as stream:
            async for _ in stream:
                pass
    assert "provider" in error.value.message


async def test_midstream_provider_errors_fail_the_response(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    client = gateway.async_openai()
    for rel in ("groq/chat-completions/stream-reasoning-then-midstream-error-event-tool-use-failed",
                "openrouter/chat-completions/stream-processing-comments-midstream-error-chunk"):
        fx = load_fixture(rel)
        mock_upstream.replay("m", fx)
        message = chat_stream_facts(fx.body).error["message"]
        with pytest.raises(openai.APIError) as error:
            async with client.responses.stream(model="up/m", input="Go.") as stream:
                async for _ in stream:
                    pass
        assert error.value.message == message
        stream_events = await _raw_stream(gateway, {"model": "up/m", "input": "Go.", "stream": True})
        assert [p["type"] for p in stream_events][-2:] == ["error", "response.failed"]
        assert stream_events[-2]["message"] == message


async def _raw_stream(gateway: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with gateway.http.post("v1/responses", json=body) as resp:
        assert resp.status == 200
        return responses_events(await resp.read())


async def test_upstream_errors_and_unsupported_tools(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    client = gateway.async_openai()
    fx = load_fixture("openai/chat-completions/error-429-rate-limit-exceeded-tokens")
    mock_upstream.replay("m", fx, status=429)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(model="up/m", input="Hi")
    assert limited.value.body["message"] == fx.json["error"]["message"]
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model="up/m", input="Hi", stream=True)

    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model="up/m", input="Search the web", tools=[{"type": "web_search"}])
    assert bad.value.status_code == 400 and "web_search" in bad.value.message
    assert bad.value.body["param"] == "tools[0].type"
    with pytest.raises(openai.BadRequestError) as missing:
        await client.responses.create(model="up/m", input="Hi", previous_response_id="resp_nope")
    assert missing.value.code == "previous_response_not_found"


async def test_client_gone_mid_stream_cancels_the_chat_request(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events), stall_after=4, stall_s=30)
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(gateway.v1 + "/responses", json={"model": "up/m", "input": "Hi", "stream": True},
                                  headers={"X-Request-ID": "conv-gone"})
        received = b""
        async with asyncio.timeout(3):
            while b"response.output_text.delta" not in received:
                received += await resp.content.readany()
        resp.close()
    finally:
        await session.close()
    await asyncio.wait_for(mock_upstream.last("m").client_gone.wait(), 1.0)
    record = await gateway.record("conv-gone")
    assert record.outcome == "client_disconnected" and record.status == 499


async def test_stream_answered_whole_is_still_a_stream(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    """A provider that ignores ``stream`` and answers a body: the client still gets the event stream."""
    fx = load_fixture("openai/chat-completions/nonstream-tool-call-gpt4o-mini")
    mock_upstream.replay("m", fx)
    client = gateway.async_openai()
    async with client.responses.stream(model="up/m", input="Weather?", tools=TOOLS) as stream:
        final = await stream.get_final_response()
    call = fx.json["choices"][0]["message"]["tool_calls"][0]
    assert [(o.call_id, o.name, o.arguments) for o in final.output] == [
        (call["id"], call["function"]["name"], call["function"]["arguments"])]


# -- the built-in mock provider -------------------------------------------------------------------------------


async def test_builtin_mock_provider(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"mock": {"type": "mock", "mock": {"completion_tokens": 12}}})
    client = gateway.async_openai()
    first = await client.responses.create(model="mock/mock-chat", input="hello there",
                                          extra_headers={"X-Request-ID": "mock-1"})
    assert first.status == "completed" and len(first.output_text.split()) == 12
    assert first.usage is not None and first.usage.output_tokens == 12
    record = await gateway.record("mock-1")
    assert record.usage is not None and record.usage.output_tokens == 12

    async with client.responses.stream(model="mock/mock-chat", input="go on", previous_response_id=first.id,
                                       max_output_tokens=5) as stream:
        events = [e async for e in stream]
    # Cut by the token limit: OpenAI ends such a stream with response.incomplete (not .completed).
    assert events[-1].type == "response.incomplete"
    second = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert second.status == "incomplete" and second.incomplete_details.reason == "max_output_tokens"
    assert "".join(deltas) == second.output_text and len(second.output_text.split()) == 5
    assert second.usage is not None and second.usage.output_tokens == 5
    # The mock's usage counts the prompt's words: the first turn's input and answer were sent again.
    assert second.usage.input_tokens == len("hello there go on".split()) + 12 + 3 * 3

    raw = await _raw_stream(gateway, {"model": "mock/mock-chat", "input": "x", "stream": True})
    assert raw[-1]["type"] == "response.completed"
    assert (await client.responses.retrieve(second.id)).output_text == second.output_text

