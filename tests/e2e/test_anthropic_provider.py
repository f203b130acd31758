"""The Anthropic provider end to end: the openai SDK -> the gateway -> a mock Anthropic replaying recordings.

Every recorded Anthropic answer (streamed, whole, error) goes through the gateway's OpenAI chat API and is
checked with the openai SDK's own parsers against the recording; every request the mock receives is checked
the way Anthropic checks it (see ``tests.support.mock_anthropic``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.providers.anthropic import AnthropicProvider
from tests.support.anthropic_client import async_anthropic_client
from tests.support.fixtures import fixture_names, load_fixture
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway
from tests.support.mock_anthropic import MockAnthropic, Recording, anthropic_sse_body, read_recording
from tests.support.mock_upstream import Scenario

from .helpers import MESSAGES, payloads_of, record_numbers, sdk_call, tool_calls_of_chunks

FOLDER = "anthropic/messages"
NONSTREAM = fixture_names(FOLDER, "nonstream-")
STREAMS = [n for n in fixture_names(FOLDER, "stream-") if "midstream-error" not in n]
ERRORS = fixture_names(FOLDER, "error-")
OVERLOADED = f"{FOLDER}/stream-midstream-error-event-overloaded"
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
MODES = ["sync", "async"]


def anthropic_provider(base_url: str, **overrides: Any) -> dict[str, Any]:
    return {"type": "anthropic", "base_url": base_url, "api_key": UPSTREAM_KEY, "timeout_s": 5,
            "connect_timeout_s": 2, **overrides}


@pytest.fixture
async def mock_anthropic() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic().start()
    yield mock
    await mock.close()


@pytest.fixture
async def claude(make_gateway: Any, mock_anthropic: MockAnthropic) -> Gateway:
    gateway: Gateway = await make_gateway(providers={"claude": anthropic_provider(mock_anthropic.base_url)})
    return gateway


def assert_valid_upstream_request(mock: MockAnthropic, model: str, *, stream: bool) -> dict[str, Any]:
    rec = mock.last(model)
    assert rec.problems == []
    assert rec.path == "/v1/messages"
    assert rec.headers["x-api-key"] == UPSTREAM_KEY
    assert rec.headers["anthropic-version"] == "2023-06-01"
    assert CLIENT_KEY not in str(dict(rec.headers)) and CLIENT_KEY.encode() not in rec.body
    assert (rec.json.get("stream") is True) == stream
    body: dict[str, Any] = rec.json
    return body


def recording_usage(rec: Recording) -> tuple[int, int, int, int]:
    return (rec.prompt_tokens, rec.usage["output_tokens"], rec.usage.get("cache_read_input_tokens") or 0, 0)


def message_recording(fx_json: dict[str, Any]) -> Recording:
    """A whole Anthropic message read like a stream's recording."""
    rec = Recording(id=fx_json["id"], model=fx_json["model"], stop_reason=fx_json["stop_reason"],
                    usage=dict(fx_json["usage"]), ended=True)
    for block in fx_json["content"]:
        if block["type"] == "text":
            rec.text += block["text"]
        elif block["type"] == "tool_use":
            rec.tool_calls.append((block["id"], block["name"], json.dumps(block["input"])))
        elif block["type"] == "thinking":
            rec.reasoning += block["thinking"]
            rec.thinking_blocks.append({k: block[k] for k in ("type", "thinking", "signature")})
        elif block["type"] == "redacted_thinking":
            rec.thinking_blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return rec


# -- whole answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fixture", NONSTREAM)
async def test_nonstream_answers_match_the_recording(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str, mode: str
) -> None:
    fx = load_fixture(fixture)
    expected = message_recording(fx.json)
    mock_anthropic.replay("m", fx)
    result = await sdk_call(claude, mode, "chat.completions.create", model="claude/m", messages=MESSAGES,
                            request_id="claude-nonstream")
    body = assert_valid_upstream_request(mock_anthropic, "m", stream=False)
    assert body["max_tokens"] == 4096 and body["model"] == "m"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
    assert (result.id, result.model, result.object) == (expected.id, expected.model, "chat.completion")
    choice = result.choices[0]
    assert choice.finish_reason == FINISH[expected.stop_reason or ""]
    assert choice.message.content == (expected.text if expected.text or not expected.tool_calls else None)
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (i, n, json.loads(a)) for i, n, a in expected.tool_calls]
    extra = choice.message.model_extra or {}
    assert extra.get("reasoning_content", "") == expected.reasoning
    assert extra.get("thinking_blocks", []) == expected.thinking_blocks
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (
        expected.prompt_tokens, expected.usage["output_tokens"],
        expected.prompt_tokens + expected.usage["output_tokens"])
    record = await claude.record("claude-nonstream")
    assert record.outcome == "ok" and record.status == 200 and record.provider == "claude"
    assert record_numbers(record) == recording_usage(expected)


# -- streams ---------------------------------------------------------------------------------------------------


def stream_cases() -> list[Any]:
    """Each stream with each client (sync/async) and include_usage on/off, cut at events or through them."""
    cases = []
    for i, name in enumerate(STREAMS):
        for k, (mode, include) in enumerate([("sync", True), ("async", False), ("async", True), ("sync", False)]):
            split = "bytes" if (i + k) % 2 else "events"
            label = f"{name.rsplit('/', 1)[1]}-{mode}-{'usage' if include else 'no_usage'}-{split}"
            cases.append(pytest.param(name, mode, include, split, id=label))
    return cases


@pytest.mark.parametrize(("fixture", "mode", "include_usage", "split"), stream_cases())
async def test_streams_match_the_recording(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str, mode: str, include_usage: bool, split: str
) -> None:
    fx = load_fixture(fixture)
    expected = read_recording(anthropic_sse_body(fx))
    mock_anthropic.replay("m", fx, split=split)
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await sdk_call(claude, mode, "chat.completions.create", model="claude/m", messages=MESSAGES,
                            stream=True, request_id="claude-stream", **kwargs)
    body = assert_valid_upstream_request(mock_anthropic, "m", stream=True)
    assert "stream_options" not in body
    dumped = [c.model_dump() for c in chunks]
    choices = [c["choices"][0] for c in dumped if c["choices"]]
    assert "".join(ch["delta"].get("content") or "" for ch in choices) == expected.text
    assert "".join(ch["delta"].get("reasoning_content") or "" for ch in choices) == expected.reasoning
    calls = tool_calls_of_chunks(chunks)
    assert [(c["id"], c["name"], c["arguments"]) for _, c in sorted(calls.items())] == expected.tool_calls
    for call in calls.values():
        assert isinstance(json.loads(call["arguments"]), dict)  # complete arguments
    assert [ch["finish_reason"] for ch in choices if ch["finish_reason"]] == [FINISH[expected.stop_reason or ""]]
    blocks = [{k: v for k, v in b.items() if k != "index"}
              for ch in choices for b in ch["delta"].get("thinking_blocks") or []]
    assert blocks == expected.thinking_blocks
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
        usage = usage_chunks[0].usage
        assert (usage.prompt_tokens, usage.completion_tokens) == (expected.prompt_tokens,
                                                                  expected.usage["output_tokens"])
    else:
        assert usage_chunks == []
    assert all(c.id == expected.id and c.model == expected.model for c in chunks)
    record = await claude.record("claude-stream")
    assert record.outcome == "ok" and record.status == 200
    assert record.usage is not None and not record.usage.estimated
    assert record_numbers(record) == recording_usage(expected)


async def test_raw_stream_is_openai_framed_with_usage_only_when_asked(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    fx = load_fixture(f"{FOLDER}/stream-text-haiku45")
    mock_anthropic.replay("m", fx)
    for include in (False, True):
        body: dict[str, Any] = {"model": "claude/m", "messages": MESSAGES, "stream": True}
        if include:
            body["stream_options"] = {"include_usage": True}
        async with claude.http.post("v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            # Anthropic's rate-limit headers reach the client, as the relay passes them for native answers.
            assert resp.headers["anthropic-ratelimit-requests-limit"] == "20000"
            raw = await resp.read()
        assert raw.endswith(b"data: [DONE]\n\n")
        assert (b'"usage"' in raw) is include
        payloads = payloads_of(raw)
        assert [p for p in payloads if p["choices"] == []] == ([{
            "id": "msg_01T8kTq7cYyYJeQ5DxcVUc6D", "object": "chat.completion.chunk",
            "created": payloads[0]["created"], "model": "claude-haiku-4-5-20251001", "choices": [],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                      "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}}}] if include else [])


@pytest.mark.parametrize("fixture", ["stream-thinking-text-haiku45", "stream-thinking-signature-sonnet4",
                                     "stream-redacted-thinking-sonnet45"])
async def test_sdk_stream_helper_accumulates_thinking_blocks(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str
) -> None:
    fx = load_fixture(f"{FOLDER}/{fixture}")
    expected = read_recording(anthropic_sse_body(fx))
    mock_anthropic.replay("m", fx)
    client = claude.async_openai()
    async with client.chat.completions.stream(model="claude/m", messages=MESSAGES, reasoning_effort="low") as s:
        final = await s.get_final_completion()
    body = assert_valid_upstream_request(mock_anthropic, "m", stream=True)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 4096
    message = final.choices[0].message
    assert message.content == expected.text
    extra = message.model_extra or {}
    assert [{k: v for k, v in b.items() if k != "index"} for b in extra["thinking_blocks"]] == expected.thinking_blocks
    assert extra.get("reasoning_content", "") == expected.reasoning


# -- streams that do not end well ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_midstream_overloaded_error_reaches_the_sdk_as_an_error(
    claude: Gateway, mock_anthropic: MockAnthropic, mode: str
) -> None:
    mock_anthropic.replay("m", OVERLOADED)
    with pytest.raises(openai.APIError) as info:
        await sdk_call(claude, mode, "chat.completions.create", model="claude/m", messages=MESSAGES, stream=True,
                       request_id="claude-overloaded")
    assert info.value.message == "Overloaded"
    assert info.value.type == "overloaded_error" and info.value.code == "overloaded"
    record = await claude.record("claude-overloaded")
    assert record.outcome == "upstream_error"


@pytest.mark.parametrize("mode", MODES)
async def test_error_event_after_content_keeps_the_content_then_raises(
    claude: Gateway, mock_anthropic: MockAnthropic, mode: str
) -> None:
    text = anthropic_sse_body(load_fixture(f"{FOLDER}/stream-thinking-text-haiku45"))
    cut = text.index(b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1")
    head = text[: text.index(b"event: content_block_stop", cut)]
    body = head + anthropic_sse_body(load_fixture(OVERLOADED)) + text[len(head):]
    mock_anthropic.on("m", Scenario(body=body, content_type="text/event-stream", stream=True, split="bytes"))
    received: list[Any] = []

    async def consume() -> None:
        if mode == "sync":
            client = claude.openai()

            def run() -> None:
                for chunk in client.chat.completions.create(model="claude/m", messages=MESSAGES, stream=True):
                    received.append(chunk)

            await asyncio.to_thread(run)
        else:
            stream = await claude.async_openai().chat.completions.create(model="claude/m", messages=MESSAGES,
                                                                         stream=True)
            async for chunk in stream:
                received.append(chunk)

    with pytest.raises(openai.APIError, match="Overloaded"):
        await consume()
    expected = read_recording(head)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == expected.text
    assert expected.text and expected.reasoning
    assert not any(c.choices and c.choices[0].finish_reason for c in received)


@pytest.mark.parametrize("mode", MODES)
async def test_truncated_stream_reaches_the_sdk_as_an_error(
    claude: Gateway, mock_anthropic: MockAnthropic, mode: str
) -> None:
    data = anthropic_sse_body(load_fixture(f"{FOLDER}/stream-text-then-tool-use-input-json-delta-claude3-opus-2024"))
    cut = data.index(b"event: content_block_stop", data.index(b"input_json_delta"))
    mock_anthropic.on("m", Scenario(body=data[:cut], content_type="text/event-stream", stream=True, split="bytes"))
    with pytest.raises(openai.APIError) as info:
        await sdk_call(claude, mode, "chat.completions.create", model="claude/m", messages=MESSAGES, stream=True,
                       request_id="claude-truncated")
    assert info.value.code == "stream_truncated"
    record = await claude.record("claude-truncated")
    assert record.outcome == "upstream_error"


async def test_connection_dropped_mid_stream_reaches_the_sdk_as_an_error(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    mock_anthropic.replay("m", f"{FOLDER}/stream-thinking-signature-sonnet4", drop_after=3)
    with pytest.raises(openai.APIError):
        await sdk_call(claude, "async", "chat.completions.create", model="claude/m", messages=MESSAGES, stream=True,
                       request_id="claude-dropped")
    record = await claude.record("claude-dropped")
    assert record.outcome == "upstream_error"


# -- errors ---------------------------------------------------------------------------------------------------

SDK_ERRORS = {400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
              429: openai.RateLimitError, 500: openai.InternalServerError, 529: openai.InternalServerError}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fixture", ERRORS)
async def test_error_answers_keep_their_status_and_the_providers_message(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str, stream: bool
) -> None:
    fx = load_fixture(fixture)
    mock_anthropic.replay("m", fx, headers={"retry-after": "17", "anthropic-ratelimit-tokens-remaining": "0"})
    with pytest.raises(openai.APIStatusError) as info:
        await sdk_call(claude, "async" if stream else "sync", "chat.completions.create", model="claude/m",
                       messages=MESSAGES, stream=stream, request_id="claude-error")
    exc = info.value
    assert type(exc) is SDK_ERRORS[fx.status]
    assert exc.status_code == fx.status
    assert isinstance(exc.body, dict) and exc.body["message"] == fx.json["error"]["message"]
    assert exc.body["type"] != "error" and exc.type == exc.body["type"]
    assert exc.response.headers["retry-after"] == "17"
    assert exc.response.headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert exc.response.headers["content-type"].startswith("application/json")
    record = await claude.record("claude-error")
    assert record.status == fx.status and record.outcome == "upstream_error"


# -- conversations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_streamed_parallel_tool_calls_round_trip_into_the_recorded_follow_up_request(
    claude: Gateway, mock_anthropic: MockAnthropic, mode: str
) -> None:
    """Turn 1 streams two tool calls; turn 2 sends them back with their results. The request Anthropic
    then receives is exactly the one recorded for that second turn (from a native Anthropic client)."""
    first = load_fixture(f"{FOLDER}/stream-two-tool-use-blocks-haiku45")
    second = load_fixture(f"{FOLDER}/stream-text-after-tool-result-haiku45")
    recorded = second.request
    assert recorded is not None and first.request is not None
    model = recorded["model"]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in recorded["tools"]]
    user = {"role": "user", "content": [{"type": "text", "text": "Two names for a pet pelican"}]}
    mock_anthropic.replay(model, first)
    chunks = await sdk_call(claude, mode, "chat.completions.create", model=f"claude/{model}", messages=[user],
                            tools=tools, stream=True, max_tokens=8192, temperature=1.0)
    assert_valid_upstream_request(mock_anthropic, model, stream=True)
    assert mock_anthropic.last(model).json == first.request
    calls = [c for _, c in sorted(tool_calls_of_chunks(chunks).items())]
    assert [c["arguments"] for c in calls] == ["{}", "{}"]
    mock_anthropic.replay(model, second)
    chunks = await sdk_call(claude, mode, "chat.completions.create", model=f"claude/{model}", tools=tools,
                            stream=True, max_tokens=8192, temperature=1.0, messages=[
        user,
        {"role": "assistant", "content": " ", "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "Charles"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "Sammy"},
    ])
    assert_valid_upstream_request(mock_anthropic, model, stream=True)
    assert mock_anthropic.last(model).json == recorded
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == read_recording(anthropic_sse_body(second)).text


async def test_nonstream_tool_call_round_trip_into_the_recorded_follow_up_request(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    first = load_fixture(f"{FOLDER}/nonstream-tool-use-noargs-sonnet45")
    second = load_fixture(f"{FOLDER}/nonstream-tool-use-withargs-after-tool-result-sonnet45")
    recorded = second.request
    assert recorded is not None
    model = recorded["model"]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in recorded["tools"]]
    user = {"role": "user", "content": [{"type": "text", "text": "What is the largest city in the user country?"}]}
    client = claude.async_openai()
    mock_anthropic.replay(model, first)
    answer = await client.chat.completions.create(model=f"claude/{model}", messages=[user], tools=tools,
                                                  tool_choice="required")
    assert mock_anthropic.last(model).json == {k: v for k, v in (first.request or {}).items() if k != "stream"}
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls" and message.tool_calls
    mock_anthropic.replay(model, second)
    final = await client.chat.completions.create(model=f"claude/{model}", tools=tools, tool_choice="required",
                                                 messages=[user, message.model_dump(exclude_none=True), {
                                                     "role": "tool", "tool_call_id": message.tool_calls[0].id,
                                                     "content": "Mexico"}])
    expected = {k: v for k, v in recorded.items() if k != "stream"}
    expected["messages"][2]["content"][0].pop("is_error")  # OpenAI's tool messages carry no such flag
    assert_valid_upstream_request(mock_anthropic, model, stream=False)
    assert mock_anthropic.last(model).json == expected
    assert final.choices[0].message.tool_calls is not None
    assert json.loads(final.choices[0].message.tool_calls[0].function.arguments) == {
        "city": "Mexico City", "country": "Mexico"}


@pytest.mark.parametrize("stream", [True, False])
async def test_thinking_round_trips_with_its_signature(
    claude: Gateway, mock_anthropic: MockAnthropic, stream: bool
) -> None:
    fixture = f"{FOLDER}/stream-thinking-text-haiku45" if stream else f"{FOLDER}/nonstream-thinking-sonnet45"
    fx = load_fixture(fixture)
    expected = read_recording(anthropic_sse_body(fx)) if stream else message_recording(fx.json)
    assert expected.thinking_blocks and expected.thinking_blocks[0]["signature"]
    mock_anthropic.replay("m", fx)
    client = claude.openai()

    def turn_one() -> Any:
        if stream:
            with client.chat.completions.stream(model="claude/m", messages=MESSAGES, reasoning_effort="medium") as s:
                return s.get_final_completion().choices[0].message
        return client.chat.completions.create(model="claude/m", messages=MESSAGES,
                                              reasoning_effort="medium").choices[0].message

    message = await asyncio.to_thread(turn_one)
    first = assert_valid_upstream_request(mock_anthropic, "m", stream=stream)
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert first["max_tokens"] == 8192 + 4096  # raised above the budget, keeping the default room to answer
    mock_anthropic.replay("m", f"{FOLDER}/nonstream-text-claude3-opus")
    history = [*MESSAGES, message.model_dump(exclude_none=True), {"role": "user", "content": "Thanks!"}]
    await asyncio.to_thread(client.chat.completions.create, model="claude/m", messages=history,
                            reasoning_effort="medium")
    body = assert_valid_upstream_request(mock_anthropic, "m", stream=False)
    assert body["messages"][1] == {"role": "assistant", "content": [
        *expected.thinking_blocks, {"type": "text", "text": expected.text}]}
    assert body["messages"][2] == {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]}


async def test_invalid_tool_arguments_in_history_are_refused_before_reaching_anthropic(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    client = claude.async_openai()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="claude/m", messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "x"},
        ])
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    assert mock_anthropic.requests_to("/v1/messages") == []


async def test_images_reach_anthropic_as_image_blocks(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    mock_anthropic.replay("m", f"{FOLDER}/nonstream-text-claude3-opus")
    client = claude.async_openai()
    await client.chat.completions.create(model="claude/m", max_completion_tokens=50, messages=[
        {"role": "system", "content": "Describe briefly."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    body = assert_valid_upstream_request(mock_anthropic, "m", stream=False)
    assert body["system"] == "Describe briefly." and body["max_tokens"] == 50
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]


# -- the rest of the provider ----------------------------------------------------------------------------------


async def test_embeddings_are_a_clear_400(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await claude.async_openai().embeddings.create(model="claude/m", input="hello")
    assert info.value.code == "embeddings_not_supported"
    assert "no embeddings API" in info.value.message
    assert mock_anthropic.requests == [r for r in mock_anthropic.requests if r.path == "/v1/models"]


async def test_models_are_listed_from_anthropic_across_pages(make_gateway: Any) -> None:
    mock = await MockAnthropic(model_ids=["claude-a", "claude-b", "claude-c"], page_size=2).start()
    try:
        gateway: Gateway = await make_gateway(providers={"claude": anthropic_provider(mock.base_url)})
        models = await gateway.async_openai().models.list()
        assert [(m.id, m.created, m.owned_by) for m in models.data] == [
            (f"claude/claude-{x}", 1739923200, "anthropic") for x in "abc"]
        pages = mock.requests_to("/v1/models")
        assert [r.query.get("after_id") for r in pages] == [None, "claude-b"]
        assert all(r.problems == [] for r in pages)
    finally:
        await mock.close()


async def test_configured_key_rotation_version_and_default_max_tokens(make_gateway: Any) -> None:
    mock = await MockAnthropic(api_keys=("k-one", "k-two")).start()
    try:
        mock.replay("m", f"{FOLDER}/nonstream-text-claude3-opus")
        gateway: Gateway = await make_gateway(providers={"claude": anthropic_provider(
            mock.base_url, api_key="", api_keys=["k-one", "k-two"], api_version="2024-01-01", default_max_tokens=99,
            models=["m"])})
        client = gateway.async_openai()
        for _ in range(2):
            await client.chat.completions.create(model="claude/m", messages=MESSAGES)
        keys = [r.headers["x-api-key"] for r in mock.requests_to("/v1/messages")]
        assert keys == ["k-one", "k-two"]
        assert {r.headers["anthropic-version"] for r in mock.requests_to("/v1/messages")} == {"2024-01-01"}
        assert mock.last("m").json["max_tokens"] == 99
        assert mock.requests_to("/v1/models") == []  # configured models: no listing call
        assert [m.id for m in (await client.models.list()).data] == ["claude/m"]
    finally:
        await mock.close()


# -- the native Messages API, forwarded -----------------------------------------------------------------------


async def test_native_messages_stream_is_forwarded_byte_for_byte(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    fx = load_fixture(f"{FOLDER}/stream-thinking-text-haiku45")
    mock_anthropic.replay("m", fx, split="bytes")
    body = {"model": "claude/m", "max_tokens": 2048, "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "Two names for a pet pelican, be brief"}]}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "interleaved-thinking-2025-05-14",
               "x-api-key": CLIENT_KEY}
    async with claude.http.post("v1/messages", json=body, headers=headers) as resp:
        assert resp.status == 200
        raw = await resp.read()
    assert raw == fx.body
    rec = mock_anthropic.last("m")
    assert rec.problems == []
    assert rec.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert rec.headers["x-api-key"] == UPSTREAM_KEY
    assert rec.json == {**body, "model": "m"}
    # And through the anthropic SDK's own stream parser.
    client = async_anthropic_client(claude)
    async with client.messages.stream(model="claude/m", max_tokens=2048, messages=body["messages"],
                                      thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        message = await s.get_final_message()
    expected = read_recording(fx.body)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature == expected.thinking_blocks[0]["signature"]  # type: ignore[union-attr]
    # The client's own API version is the one Anthropic gets.
    assert mock_anthropic.last("m").headers["anthropic-version"] == client.default_headers["anthropic-version"]


async def test_native_count_tokens_and_errors_are_forwarded(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    client = async_anthropic_client(claude)
    counted = await client.messages.count_tokens(model="claude/m", messages=[{"role": "user", "content": "hello"}])
    rec = mock_anthropic.requests_to("/v1/messages/count_tokens")[-1]
    assert rec.problems == [] and rec.json["model"] == "m"
    assert counted.input_tokens == len(json.dumps(rec.json["messages"])) // 4
    fx = load_fixture(f"{FOLDER}/error-529-overloaded-error")
    mock_anthropic.replay("m", fx)
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(model="claude/m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 529
    assert info.value.body == fx.json


async def test_provider_passes_only_the_version_and_beta_headers(mock_anthropic: MockAnthropic) -> None:
    mock_anthropic.replay("m", f"{FOLDER}/nonstream-text-claude3-opus")
    provider = AnthropicProvider("claude", ProviderConfig(type="anthropic", base_url=mock_anthropic.base_url,
                                                          api_key=UPSTREAM_KEY))
    try:
        body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        response = await provider.messages(body, stream=False, headers={
            "Anthropic-Beta": "a,b", "Authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY})
        raw = await response.read()
        response.release()
        assert response.status == 200 and raw == load_fixture(f"{FOLDER}/nonstream-text-claude3-opus").body
        rec = mock_anthropic.last("m")
        assert rec.headers["anthropic-beta"] == "a,b"
        assert rec.headers["anthropic-version"] == "2023-06-01"
        assert rec.headers["x-api-key"] == UPSTREAM_KEY and "authorization" not in rec.headers
        with pytest.raises(InvalidRequestError, match="line break"):
            await provider.messages(body, stream=False, headers={"anthropic-beta": "a\r\nx-evil: 1"})
    finally:
        await provider.close()
