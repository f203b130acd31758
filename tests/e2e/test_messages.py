"""Anthropic's Messages API through the gateway, with the official ``anthropic`` SDK, in front of an
OpenAI-compatible provider replaying recorded chat traffic (translated both ways)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.support.anthropic_client import anthropic_client, async_anthropic_client
from tests.support.fixtures import Fixture, fixture_names, load_fixture
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream, Scenario

from .helpers import content_of_payloads, record_numbers, tool_calls_of_payloads, usage_numbers

MODES = ["sync", "async"]
USER = [{"role": "user", "content": "Say hello."}]
STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
CHAT_FOLDERS = ("openai/chat-completions", "groq/chat-completions", "openrouter/chat-completions",
                "xai/chat-completions")
STREAMS = [name for folder in CHAT_FOLDERS for name in fixture_names(folder, "stream-")]
ERROR_STREAMS = [n for n in STREAMS if "error" in n.rsplit("/", 1)[1]]
OK_STREAMS = [n for n in STREAMS if n not in ERROR_STREAMS]
WHOLE = [name for folder in CHAT_FOLDERS for name in fixture_names(folder, "nonstream-")]
SDK_ERRORS: dict[int, type[anthropic.APIStatusError]] = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    404: anthropic.NotFoundError,
    429: anthropic.RateLimitError,
    500: anthropic.InternalServerError,
}
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                   429: "rate_limit_error", 500: "api_error"}


def alternating(names: list[str]) -> list[Any]:
    return [pytest.param(name, MODES[i % 2], id=f"{name}-{MODES[i % 2]}") for i, name in enumerate(names)]


async def stream_final(gateway: Gateway, mode: str, **kwargs: Any) -> Any:
    """``client.messages.stream(...)`` read to its end; the SDK's accumulated final message."""
    if mode == "sync":
        client = anthropic_client(gateway)

        def run() -> Any:
            with client.messages.stream(**kwargs) as stream:
                return stream.get_final_message()

        return await asyncio.to_thread(run)
    aclient = async_anthropic_client(gateway)
    async with aclient.messages.stream(**kwargs) as astream:
        return await astream.get_final_message()


async def create(gateway: Gateway, mode: str, **kwargs: Any) -> Any:
    if mode == "sync":
        client = anthropic_client(gateway)
        return await asyncio.to_thread(lambda: client.messages.create(**kwargs))
    return await async_anthropic_client(gateway).messages.create(**kwargs)


def reasoning_of(payloads: list[dict[str, Any]]) -> str:
    return "".join(
        (c.get("delta") or {}).get("reasoning_content") or (c.get("delta") or {}).get("reasoning") or ""
        for p in payloads for c in p.get("choices") or []
    )


def finish_of(payloads: list[dict[str, Any]]) -> str:
    finishes = [c["finish_reason"] for p in payloads for c in p.get("choices") or [] if c.get("finish_reason")]
    return str(finishes[-1])


def assert_anthropic_usage(usage: Any, openai_usage: dict[str, Any]) -> None:
    cached = (openai_usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    written = (openai_usage.get("prompt_tokens_details") or {}).get("cache_write_tokens", 0)
    assert usage.input_tokens == openai_usage["prompt_tokens"] - cached - written
    assert usage.cache_read_input_tokens == cached
    assert usage.output_tokens == openai_usage["completion_tokens"]


def assert_matches_stream(message: Any, fx: Fixture) -> None:
    """The SDK's final message holds what the recorded chat stream held, block for block."""
    payloads = fx.data_payloads
    texts = [b.text for b in message.content if b.type == "text"]
    assert "".join(texts) == content_of_payloads(payloads)
    thinking = [b.thinking for b in message.content if b.type == "thinking"]
    assert "".join(thinking) == reasoning_of(payloads)
    tools = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert tools == [(c["id"], c["name"], json.loads(c["arguments"]))
                     for _, c in sorted(tool_calls_of_payloads(payloads).items())]
    assert message.stop_reason == STOP[finish_of(payloads)]
    assert message.id.startswith("msg_") and message.role == "assistant"
    if fx.usage is not None:
        assert_anthropic_usage(message.usage, fx.usage)


# -- streams -------------------------------------------------------------------------------------------


def test_fixtures_are_collected() -> None:
    if not STREAMS:
        pytest.skip("recorded provider fixtures not found")
    assert len(OK_STREAMS) >= 10 and len(ERROR_STREAMS) == 2 and len(WHOLE) >= 10


@pytest.mark.parametrize(("fixture", "mode"), alternating(OK_STREAMS))
async def test_stream_through_the_sdk(gateway: Gateway, mock_upstream: MockUpstream, fixture: str, mode: str) -> None:
    fx = load_fixture(fixture)
    # Cut through the middle of events: the translation must not depend on aligned reads.
    mock_upstream.replay("m", fx, split="bytes")
    message = await stream_final(gateway, mode, model="up/m", max_tokens=256, messages=USER,
                                 extra_headers={"X-Request-ID": "msg-stream"})
    assert_matches_stream(message, fx)
    assert any(b.type in ("text", "tool_use") for b in message.content)
    upstream = mock_upstream.last("m").json
    assert upstream == {"model": "m", "messages": USER, "max_tokens": 256, "stream": True,
                        "stream_options": {"include_usage": True}}
    record = await gateway.record("msg-stream")
    assert record.endpoint == "messages" and record.stream and record.outcome == "ok" and record.status == 200
    assert record.provider == "up" and record.model == "m" and record.model_requested == "up/m"
    if fx.usage is not None:
        assert record_numbers(record) == usage_numbers(fx.usage) and not record.usage.estimated
    else:
        assert message.usage.output_tokens == 0
        assert record.usage is not None and record.usage.estimated


@pytest.mark.parametrize("mode", MODES)
async def test_raw_event_stream(gateway: Gateway, mock_upstream: MockUpstream, mode: str) -> None:
    """``messages.create(stream=True)``: the raw events, in Anthropic's order, parsed by the SDK."""
    fx = load_fixture("openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o")
    mock_upstream.replay("m", fx)
    kwargs: dict[str, Any] = {"model": "up/m", "max_tokens": 64, "messages": USER, "stream": True}
    if mode == "sync":
        client = anthropic_client(gateway)
        events = await asyncio.to_thread(lambda: list(client.messages.create(**kwargs)))
    else:
        events = [e async for e in await async_anthropic_client(gateway).messages.create(**kwargs)]
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [(b.id, b.name) for b in starts] == [("call_q2UyBRP7eXNTzAoR8lEhjc9Z", "get_country"),
                                                ("call_b51ijcpFkDiTQG1bQzsrmtW5", "get_product_name")]
    assert [e.index for e in events if e.type == "content_block_delta"] == [0, 1]
    assert events[-2].delta.stop_reason == "tool_use"
    assert events[-2].usage.output_tokens == fx.usage["completion_tokens"]


async def test_tool_arguments_arrive_as_they_stream(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-tool-call-args-deltas-include-usage-gpt4o")
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events))
    client = async_anthropic_client(gateway)
    partials = []
    async with client.messages.stream(model="up/m", max_tokens=64, messages=USER) as stream:
        async for event in stream:
            if event.type == "input_json":
                partials.append(event.partial_json)
        message = await stream.get_final_message()
    deltas = [d["function"]["arguments"] for p in fx.data_payloads for c in p["choices"]
              for d in (c["delta"].get("tool_calls") or []) if d.get("function", {}).get("arguments")]
    assert len(deltas) >= 4 and partials == deltas
    assert message.content[0].input == {"city": "Mexico City"}


@pytest.mark.parametrize("fixture", ERROR_STREAMS)
async def test_upstream_error_mid_stream_raises_in_the_sdk(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str
) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx, split="bytes")
    client = async_anthropic_client(gateway)
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="up/m", max_tokens=64, messages=USER,
                                          extra_headers={"X-Request-ID": "msg-err"}) as stream:
            async for event in stream:
                seen.append(event.type)
    assert "message_stop" not in seen and "message_start" in seen
    error = info.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    upstream_error = next(p["error"] for p in fx.data_payloads if "error" in p)
    assert error["error"]["message"] == upstream_error["message"]
    record = await gateway.record("msg-err")
    assert record.outcome == "upstream_error"
    if fx.usage is not None:  # OpenRouter puts the usage in its error chunk
        assert record_numbers(record) == usage_numbers(fx.usage)


async def test_truncated_stream_raises_in_the_sdk(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    cut = [e for e in fx.events if b"finish_reason\":\"" not in e and b"[DONE]" not in e]
    cut = [e for e in cut if b'"choices":[]' not in e]
    assert len(cut) >= 3
    mock_upstream.on("m", Scenario(body=b"".join(cut), content_type="text/event-stream", stream=True))
    client = async_anthropic_client(gateway)
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="up/m", max_tokens=64, messages=USER,
                                          extra_headers={"X-Request-ID": "msg-cut"}) as stream:
            async for _ in stream.text_stream:
                pass
    assert info.value.body["error"]["type"] == "api_error"
    assert "incomplete" in info.value.body["error"]["message"]
    record = await gateway.record("msg-cut")
    assert record.outcome == "upstream_error" and record.usage is not None and record.usage.estimated


async def test_connection_dropped_mid_stream_is_an_anthropic_error_event(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    fx = load_fixture("xai/chat-completions/stream-reasoning-content-grok3-mini")
    mock_upstream.replay("m", fx, split="events", max_pieces=20, drop_after=5)
    async with gateway.http.post("v1/messages", json={"model": "up/m", "max_tokens": 64, "messages": USER,
                                                       "stream": True}) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert b"event: message_start" in body and b"event: message_stop" not in body
    last = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "provider 'up'" in error["error"]["message"]
    client = async_anthropic_client(gateway)
    with pytest.raises(anthropic.APIStatusError):
        async with client.messages.stream(model="up/m", max_tokens=64, messages=USER) as stream:
            await stream.get_final_message()


async def test_client_gone_mid_stream_cancels_upstream_and_is_accounted(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events), stall_after=4, stall_s=30)
    client = async_anthropic_client(gateway)
    async with client.messages.stream(model="up/m", max_tokens=64, messages=USER,
                                      extra_headers={"X-Request-ID": "msg-gone"}) as stream:
        async for event in stream:
            if event.type == "text":
                break  # the client hangs up after the first text
    upstream = mock_upstream.last("m")
    await asyncio.wait_for(upstream.client_gone.wait(), 1.0)
    record = await gateway.record("msg-gone")
    assert record.outcome == "client_disconnected" and record.status == 499
    assert record.usage is not None and record.usage.estimated and record.usage.output_tokens >= 1


async def test_shutdown_ends_a_stream_with_an_anthropic_error_event(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events), stall_after=3, stall_s=30)
    async with gateway.http.post("v1/messages", json={"model": "up/m", "max_tokens": 64, "messages": USER,
                                                       "stream": True}) as resp:
        received = b""
        while received.count(b"content_block_delta") < 1:
            received += await resp.content.readany()
        # What the shutdown handler does once the grace period is over.
        gateway.state.shutting_down = True
        for task in list(gateway.state.streams):
            task.cancel("gateway shutdown")
        with contextlib.suppress(aiohttp.ClientPayloadError):  # the connection is closed after the event
            while chunk := await resp.content.readany():
                received += chunk
    gateway.state.shutting_down = False
    last = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["error"]["type"] == "api_error" and "shutting down" in error["error"]["message"]
    assert b"message_stop" not in received


async def test_provider_without_stream_usage_is_not_asked_for_it(
    make_gateway: Any, mock_upstream: MockUpstream
) -> None:
    gateway = await make_gateway(upstream=mock_upstream, stream_usage=False)
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx)
    message = await stream_final(gateway, "async", model="up/m", max_tokens=64, messages=USER)
    assert "stream_options" not in mock_upstream.last("m").json
    assert message.content[0].text == content_of_payloads(fx.data_payloads)
    assert message.stop_reason == "end_turn"


# -- whole answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "mode"), alternating(WHOLE))
async def test_whole_answer_through_the_sdk(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str, mode: str
) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    message = await create(gateway, mode, model="up/m", max_tokens=256, messages=USER,
                           extra_headers={"X-Request-ID": "msg-whole"})
    expected = fx.json["choices"][0]["message"]
    assert [b.text for b in message.content if b.type == "text"] == ([expected["content"]]
                                                                      if expected.get("content") else [])
    assert [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in expected.get("tool_calls") or []
    ]
    reasoning = expected.get("reasoning_content") or expected.get("reasoning") or ""
    assert "".join(b.thinking for b in message.content if b.type == "thinking") == reasoning
    assert message.stop_reason == STOP[fx.json["choices"][0]["finish_reason"]]
    assert message.id == "msg_" + fx.json["id"] and message.model == fx.json["model"]
    assert_anthropic_usage(message.usage, fx.json["usage"])
    record = await gateway.record("msg-whole")
    assert record.outcome == "ok" and not record.stream and record_numbers(record) == usage_numbers(fx.json["usage"])


async def test_json_answer_to_a_stream_request_still_streams(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    """A provider that ignores ``stream`` and answers one JSON body: the client still gets its events."""
    fx = load_fixture("xai/chat-completions/nonstream-tool-call-grok3-mini")
    mock_upstream.replay("m", fx)
    message = await stream_final(gateway, "async", model="up/m", max_tokens=64, messages=USER)
    expected = fx.json["choices"][0]["message"]
    assert [b.type for b in message.content] == ["thinking", "tool_use"]
    assert message.content[0].thinking == expected["reasoning_content"]
    assert message.content[1].input == json.loads(expected["tool_calls"][0]["function"]["arguments"])
    assert message.stop_reason == "tool_use"
    assert_anthropic_usage(message.usage, fx.json["usage"])


@pytest.mark.parametrize("mode", MODES)
async def test_tool_use_round_trip(gateway: Gateway, mock_upstream: MockUpstream, mode: str) -> None:
    """A tool turn and its results: what the client sends back reaches the provider as chat tool messages."""
    mock_upstream.replay("tools", "openai/chat-completions/stream-parallel-tool-calls-include-usage-gpt4o")
    answer = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("answer", answer)
    tools = [{"name": "get_country", "description": "The user's country", "input_schema": {"type": "object"}},
             {"name": "get_product_name", "input_schema": {"type": "object", "properties": {}}}]
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    first = await stream_final(gateway, mode, model="up/tools", max_tokens=64, messages=USER, tools=tools,
                               system=system, tool_choice={"type": "any"})
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_country", "get_product_name"]
    history = [
        *USER,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Mexico"},
            {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "Pelican"}],
             "is_error": False},
        ]},
    ]
    second = await stream_final(gateway, mode, model="up/answer", max_tokens=64, messages=history, tools=tools,
                                system=system)
    assert "".join(b.text for b in second.content if b.type == "text") == content_of_payloads(answer.data_payloads)
    assert second.stop_reason == "end_turn"
    sent = mock_upstream.last("answer").json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": uses[0].id, "type": "function", "function": {"name": "get_country", "arguments": "{}"}},
            {"id": uses[1].id, "type": "function", "function": {"name": "get_product_name", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": uses[0].id, "content": "Mexico"},
        {"role": "tool", "tool_call_id": uses[1].id, "content": "Pelican"},
    ]
    assert sent["tools"][0] == {"type": "function", "function": {
        "name": "get_country", "description": "The user's country", "parameters": {"type": "object"}}}
    assert mock_upstream.last("tools").json["tool_choice"] == "required"


async def test_thinking_request_and_answer(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("xai/chat-completions/stream-reasoning-content-grok3-mini")
    mock_upstream.replay("m", fx, split="bytes")
    message = await stream_final(gateway, "async", model="up/m", max_tokens=20_000, messages=USER,
                                 thinking={"type": "enabled", "budget_tokens": 16_000},
                                 extra_body={"top_k": 5, "temperature": 1.0})  # (this SDK no longer takes them)
    sent = mock_upstream.last("m").json
    assert sent["reasoning_effort"] == "medium" and "top_k" not in sent and sent["temperature"] == 1.0
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == reasoning_of(fx.data_payloads)
    assert message.content[0].thinking.startswith("First, the user said")


# -- errors --------------------------------------------------------------------------------------------


UPSTREAM_ERRORS = fixture_names("openai/chat-completions", "error-")


@pytest.mark.parametrize("fixture", UPSTREAM_ERRORS)
async def test_upstream_errors_in_anthropic_shape(gateway: Gateway, mock_upstream: MockUpstream, fixture: str) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    client = async_anthropic_client(gateway)
    for stream in (False, True):
        with pytest.raises(SDK_ERRORS[fx.status]) as info:
            if stream:
                async with client.messages.stream(model="up/m", max_tokens=8, messages=USER) as s:
                    await s.get_final_message()
            else:
                await client.messages.create(model="up/m", max_tokens=8, messages=USER)
        assert info.value.status_code == fx.status
        body = info.value.body
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        assert body["error"]["type"] == ANTHROPIC_TYPES[fx.status]
        assert body["error"]["message"] == fx.json["error"]["message"]


async def test_wrong_key_unknown_model_bad_json(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await make_gateway(upstream=mock_upstream, server={"master_key": "sk-gateway-master"})
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await async_anthropic_client(gateway, api_key="sk-wrong").messages.create(
            model="up/m", max_tokens=8, messages=USER)
    assert auth.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "Invalid API key for this gateway."}}
    client = async_anthropic_client(gateway, api_key="sk-gateway-master")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nope", max_tokens=8, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert "'nope'" in missing.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.count_tokens(model="nope", messages=USER)
    headers = {"x-api-key": "sk-gateway-master", "anthropic-version": "2023-06-01",
               "Content-Type": "application/json"}
    for path in ("v1/messages", "v1/messages/count_tokens"):
        async with gateway.http.post(path, data=b'{"model": "up/m", "messages": [', headers=headers) as resp:
            assert resp.status == 400
            body = await resp.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "not valid JSON" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as server_tool:
        await client.messages.create(model="up/m", max_tokens=8, messages=USER,
                                     tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert "server tool" in server_tool.value.body["error"]["message"]
    assert mock_upstream.requests_to("/v1/chat/completions") == []  # none of these reached the provider


# -- count_tokens and models ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_count_tokens_estimate(gateway: Gateway, mock_upstream: MockUpstream, mode: str) -> None:
    text = "word " * 200  # 1,000 characters
    kwargs: dict[str, Any] = {"model": "up/m", "messages": [{"role": "user", "content": text}]}
    if mode == "sync":
        client = anthropic_client(gateway)
        raw = await asyncio.to_thread(lambda: client.messages.with_raw_response.count_tokens(**kwargs))
    else:
        raw = await async_anthropic_client(gateway).messages.with_raw_response.count_tokens(**kwargs)
    parsed = raw.parse() if mode == "sync" else await raw.parse()
    assert parsed.input_tokens == 250
    assert raw.headers["X-GoModel-Token-Estimate"] == "chars/4"
    assert mock_upstream.requests_to("/v1/chat/completions") == []


@pytest.mark.parametrize("mode", MODES)
async def test_models_in_anthropic_shape(make_gateway: Any, make_mock_upstream: Any, mode: str) -> None:
    mock = await make_mock_upstream(model_ids=["gpt-4o-mini", "gpt-4o", "o3"])
    gateway = await make_gateway(upstream=mock)
    expected = ["up/gpt-4o-mini", "up/gpt-4o", "up/o3"]
    if mode == "sync":
        client = anthropic_client(gateway)
        models = await asyncio.to_thread(lambda: list(client.models.list(limit=2)))
        one = await asyncio.to_thread(lambda: client.models.retrieve("up/o3"))
    else:
        aclient = async_anthropic_client(gateway)
        models = [m async for m in aclient.models.list(limit=2)]  # the SDK pages through after_id
        one = await aclient.models.retrieve("up/o3")
    assert [m.id for m in models] == expected
    assert all(m.type == "model" and m.display_name == m.id for m in models)
    assert models[0].created_at.year == 2023  # the provider's "created": 1700000000
    assert one.id == "up/o3" and one.type == "model"
    async with gateway.http.get("v1/models", params={"limit": "2"}, headers={"anthropic-version": "2023-06-01"}) as r:
        page = await r.json()
    assert page["has_more"] is True and page["first_id"] == "up/gpt-4o-mini" and page["last_id"] == "up/gpt-4o"
    async with gateway.http.get("v1/models", params={"before_id": "up/o3"},
                                headers={"anthropic-version": "2023-06-01"}) as r:
        page = await r.json()
    assert [m["id"] for m in page["data"]] == expected[:2] and page["has_more"] is False
    async with gateway.http.get("v1/models", params={"limit": "0"}, headers={"anthropic-version": "2023-06-01"}) as r:
        assert r.status == 400
    # Without the header: OpenAI's shape, as before.
    async with gateway.http.get("v1/models") as r:
        openai_page = await r.json()
    assert openai_page["object"] == "list" and [m["id"] for m in openai_page["data"]] == expected


async def test_messages_are_counted_in_metrics(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    await create(gateway, "async", model="up/m", max_tokens=8, messages=USER)
    text = await gateway.metrics_text()
    assert 'endpoint="messages"' in text


async def test_http_status_and_content_type(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    async with aiohttp.ClientSession() as session, session.post(
        gateway.url + "/v1/messages?beta=true",  # Claude Code's query string
        json={"model": "up/m", "max_tokens": 8, "messages": USER, "stream": True},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Request-ID"]
        body = await resp.read()
    assert body.startswith(b"event: message_start\n") and body.endswith(b"event: message_stop\ndata: "
                                                                          b'{"type":"message_stop"}\n\n')
