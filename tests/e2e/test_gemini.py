"""Gemini behind the gateway, seen through the official ``openai`` SDK: every recorded Gemini answer replayed by
an in-process mock of Google's API (which checks each request as Gemini would), streaming and not.

Content, tool calls with complete arguments, reasoning, finish reasons and usage must match the recording;
thought signatures must make the round trip; Gemini's errors keep their meaning; a stream that breaks off
reaches the SDK as an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.support.fixtures import Fixture, fixture_names, load_fixture, split_sse_events
from tests.support.gateway import UPSTREAM_KEY, Gateway
from tests.support.mock_gemini import MISSING_SIGNATURE, MockGemini, gemini_stream_body, gemini_stream_payloads
from tests.support.mock_upstream import Scenario

from .helpers import record_numbers, sdk_call

MODES = ["sync", "async"]
STREAMS = fixture_names("gemini/stream-generate-content")
NONSTREAM = fixture_names("gemini/generate-content", "nonstream-")
GENERATE_ERRORS = fixture_names("gemini/generate-content", "error-")
EMBEDDINGS = fixture_names("gemini/embeddings", "batch-")
ASK = [{"role": "user", "content": "Hello"}]
SDK_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError, 404: openai.NotFoundError,
    429: openai.RateLimitError, 503: openai.InternalServerError,
}


@pytest.fixture
async def gemini() -> AsyncIterator[MockGemini]:
    mock = await MockGemini().start()
    yield mock
    await mock.close()


def gemini_entry(mock: MockGemini, **overrides: Any) -> dict[str, Any]:
    return {"type": "gemini", "base_url": mock.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 5,
            "connect_timeout_s": 2, **overrides}


@pytest.fixture
async def gateway(make_gateway: Any, gemini: MockGemini) -> Gateway:
    gateway: Gateway = await make_gateway(providers={"gem": gemini_entry(gemini)})
    return gateway


def model_of(fx: Fixture) -> str:
    """The model the recording was made with (from its URL), or a stand-in where the recorder hid it."""
    found = re.search(r"/models/([^/:{}]+):", str(fx.meta.get("uri", "")))
    return found.group(1) if found else "gemini-2.5-flash"


def expected_of(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Text, reasoning, calls (name, args, signature), finish and usage numbers of a recorded answer."""
    text = reasoning = ""
    calls: list[tuple[str, dict[str, Any], str | None]] = []
    finish = usage = None
    for payload in payloads:
        usage = payload.get("usageMetadata", usage)
        for candidate in payload.get("candidates", []):
            for part in candidate["content"]["parts"]:
                if "functionCall" in part:
                    calls.append((part["functionCall"]["name"], part["functionCall"].get("args", {}),
                                  part.get("thoughtSignature")))
                elif part.get("thought"):
                    reasoning += part["text"]
                else:
                    text += part.get("text", "")
            finish = candidate.get("finishReason", finish)
    assert finish == "STOP" and usage is not None
    thoughts = usage.get("thoughtsTokenCount", 0)
    return {"text": text, "reasoning": reasoning, "calls": calls, "finish": "tool_calls" if calls else "stop",
            "usage": (usage["promptTokenCount"], usage.get("candidatesTokenCount", 0) + thoughts,
                      usage.get("cachedContentTokenCount", 0), thoughts)}


def extra_signature(obj: Any) -> str | None:
    extra = (obj.model_extra or {}).get("extra_content")
    return extra["google"]["thought_signature"] if extra else None


def assert_clean_request(mock: MockGemini, model: str, operation: str) -> None:
    """The gateway's request reached Gemini's URL for ``model``, with the key in its header only."""
    rec = mock.last(model)
    assert rec.path == f"/v1beta/models/{model}:{operation}"
    assert rec.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert "Authorization" not in rec.headers and "key" not in rec.query
    assert UPSTREAM_KEY not in rec.path and rec.problems == []


def alternating(names: list[str]) -> list[Any]:
    combos = [(m, u) for u in (True, False) for m in MODES]
    return [pytest.param(n, *combos[i % 4], id=f"{n.rsplit('/', 1)[1]}-{combos[i % 4][0]}-"
                         f"{'include_usage' if combos[i % 4][1] else 'no_usage_option'}") for i, n in enumerate(names)]


# -- answers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), [pytest.param(n, MODES[i % 2], id=f"{n.rsplit('/', 1)[1]}-{MODES[i % 2]}")
                                            for i, n in enumerate(NONSTREAM)])
async def test_nonstream_answer_matches_the_recording(gateway: Gateway, gemini: MockGemini, name: str,
                                                      mode: str) -> None:
    fx = load_fixture(name)
    model = model_of(fx)
    gemini.replay(model, fx)
    expected = expected_of([fx.json])
    result = await sdk_call(gateway, mode, "chat.completions.create", model=f"gem/{model}", messages=ASK,
                            request_id="gem-json")
    message = result.choices[0].message
    assert (message.content or "") == expected["text"]
    assert (message.model_extra or {}).get("reasoning_content", "") == expected["reasoning"]
    got_calls = [(c.function.name, json.loads(c.function.arguments), extra_signature(c))
                 for c in message.tool_calls or []]
    assert got_calls == expected["calls"]
    assert result.choices[0].finish_reason == expected["finish"]
    assert result.model == fx.json["modelVersion"] and result.id == f"chatcmpl-{fx.json['responseId']}"
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens,
            usage.completion_tokens_details.reasoning_tokens) == expected["usage"]
    assert usage.total_tokens == fx.json["usageMetadata"]["totalTokenCount"]
    record = await gateway.record("gem-json")
    assert record.status == 200 and record.outcome == "ok" and record.provider == "gem" and record.model == model
    assert record_numbers(record) == expected["usage"] and record.usage is not None and not record.usage.estimated
    assert_clean_request(gemini, model, "generateContent")
    assert gemini.last(model).json["contents"] == [{"role": "user", "parts": [{"text": "Hello"}]}]


@pytest.mark.parametrize(("name", "mode", "include_usage"), alternating(STREAMS))
async def test_stream_matches_the_recording(gateway: Gateway, gemini: MockGemini, name: str, mode: str,
                                            include_usage: bool) -> None:
    fx = load_fixture(name)
    model = model_of(fx)
    # Half the streams cut through the middle of events and CRLFs: the gateway must not rely on aligned reads.
    gemini.replay(model, fx, split="bytes" if include_usage else "events")
    expected = expected_of(gemini_stream_payloads(fx))
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await sdk_call(gateway, mode, "chat.completions.create", model=f"gem/{model}", messages=ASK,
                            stream=True, request_id="gem-stream", **kwargs)
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    reasoning = "".join((ch.delta.model_extra or {}).get("reasoning_content") or "" for c in chunks for ch in c.choices)
    calls = [(d.function.name, json.loads(d.function.arguments), extra_signature(d))
             for c in chunks for ch in c.choices for d in ch.delta.tool_calls or []]
    finishes = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert (text, reasoning, calls, finishes) == (expected["text"], expected["reasoning"], expected["calls"],
                                                  [expected["finish"]])
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        (last,) = usage_chunks
        assert last is chunks[-1] and last.choices == []
        assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.prompt_tokens_details.cached_tokens,
                last.usage.completion_tokens_details.reasoning_tokens) == expected["usage"]
    else:
        assert usage_chunks == []  # the gateway asked for usage on its own account; the client did not
    record = await gateway.record("gem-stream")
    assert record.stream and record.status == 200 and record.outcome == "ok"
    assert record_numbers(record) == expected["usage"] and record.usage is not None and not record.usage.estimated
    assert_clean_request(gemini, model, "streamGenerateContent")
    assert gemini.last(model).query == {"alt": "sse"}


async def test_stream_raw_bytes_are_openai_sse(gateway: Gateway, gemini: MockGemini) -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    gemini.replay("gemini-2.0-flash-exp", fx, split="bytes")
    async with gateway.http.post("v1/chat/completions", json={
        "model": "gem/gemini-2.0-flash-exp", "messages": ASK, "stream": True,
    }) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        body = await resp.read()
    events = split_sse_events(body)
    assert events[-1] == b"data: [DONE]\n\n"
    assert all(e.startswith(b"data: {") and e.endswith(b"}\n\n") for e in events[:-1])
    assert b"usage" not in body  # not asked for


# -- tool use over several turns -----------------------------------------------------------------------------


async def test_stream_tool_round_trip_carries_the_thought_signature_back(gateway: Gateway, gemini: MockGemini) -> None:
    first = load_fixture("gemini/stream-generate-content/sse-function-call-thought-signature-gemini3-pro")
    second = load_fixture("gemini/stream-generate-content/sse-text-empty-final-part-gemini3-pro")
    model = "gemini-3-pro-preview"
    tools = [{"type": "function", "function": {"name": "get_country", "description": "",
                                               "parameters": {"type": "object", "properties": {},
                                                              "additionalProperties": False}}}]
    question = {"role": "user", "content": "What is the capital of the user country? Call the tool"}
    gemini.replay(model, first, split="bytes")
    client = gateway.async_openai()
    stream = await client.chat.completions.create(model=f"gem/{model}", messages=[question], tools=tools,
                                                  stream=True)
    deltas = [d async for c in stream for ch in c.choices for d in ch.delta.tool_calls or []]
    (delta,) = deltas
    recorded_signature = gemini_stream_payloads(first)[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert extra_signature(delta) == recorded_signature
    assert gemini.last(model).json["tools"][0]["functionDeclarations"][0] == {
        "name": "get_country", "parameters": {"type": "object", "properties": {}}}

    # Turn 2: the client sends the call back as it got it (extra_content and all) with the tool's result.
    call: dict[str, Any] = {
        "id": delta.id, "type": "function",
        "function": {"name": delta.function.name, "arguments": delta.function.arguments},
        "extra_content": delta.model_extra["extra_content"]}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": delta.id, "content": json.dumps({"return_value": "Mexico"})}
    gemini.replay(model, second, split="bytes")
    stream = await client.chat.completions.create(model=f"gem/{model}", messages=[question, assistant, result],
                                                  tools=tools, stream=True)
    text = "".join([ch.delta.content or "" async for c in stream for ch in c.choices])
    assert text == "The capital of Mexico is Mexico City."
    sent = gemini.last(model)
    assert sent.problems == []  # Gemini 3 would have refused a call without its signature
    call_part = sent.json["contents"][1]["parts"][0]
    assert call_part["thoughtSignature"] == recorded_signature
    assert call_part["functionCall"] == {"name": "get_country", "args": {}, "id": delta.id}
    assert sent.json["contents"][2] == {"role": "user", "parts": [{"functionResponse": {
        "name": "get_country", "response": {"return_value": "Mexico"}, "id": delta.id}}]}

    # Without the signature, Gemini 3 refuses the turn: the SDK sees Gemini's 400 and its words.
    del call["extra_content"]
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=f"gem/{model}", messages=[question, assistant, result],
                                             tools=tools)
    assert MISSING_SIGNATURE in info.value.message


@pytest.mark.parametrize("mode", MODES)
async def test_nonstream_tool_round_trip_with_the_sdk_message_object(gateway: Gateway, gemini: MockGemini,
                                                                     mode: str) -> None:
    first = load_fixture("gemini/generate-content/nonstream-function-call-thought-signature-raw-gemini2.5-pro")
    second = load_fixture("gemini/generate-content/nonstream-text-after-function-response-raw-gemini2.5-pro")
    model = "gemini-2.5-pro"
    gemini.replay(model, first)
    question = {"role": "user", "content": "Can you search for information about recurring revenue?"}
    answer = await sdk_call(gateway, mode, "chat.completions.create", model=f"gem/{model}", messages=[question])
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    (tool_call,) = message.tool_calls
    assert json.loads(tool_call.function.arguments) == {"query": "recurring revenue"}
    gemini.replay(model, second)
    # The SDK's own message object goes back as it is, as many applications do.
    follow_up = await sdk_call(gateway, mode, "chat.completions.create", model=f"gem/{model}", messages=[
        question, message,
        {"role": "tool", "tool_call_id": tool_call.id,
         "content": json.dumps({"results": ["Found reference for: recurring revenue"]})}])
    assert follow_up.choices[0].message.content == second.json["candidates"][0]["content"]["parts"][0]["text"]
    contents = gemini.last(model).json["contents"]
    recorded = second.request["contents"]  # type: ignore[index]
    assert contents[1]["parts"][0]["thoughtSignature"] == first.json["candidates"][0]["content"]["parts"][0][
        "thoughtSignature"]
    assert contents[1]["parts"][0]["functionCall"]["args"] == recorded[1]["parts"][0]["functionCall"]["args"]
    assert contents[2]["parts"][0]["functionResponse"]["response"] == recorded[2]["parts"][0]["functionResponse"][
        "response"]


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", GENERATE_ERRORS)
async def test_provider_error_keeps_its_meaning_and_message(gateway: Gateway, gemini: MockGemini, name: str,
                                                            stream: bool) -> None:
    fx = load_fixture(name)
    gemini.replay("gemini-2.5-flash", fx)
    expected_status = 401 if "api-key-invalid" in name else fx.status
    client = gateway.async_openai()
    with pytest.raises(SDK_ERRORS[expected_status]) as info:
        await client.chat.completions.create(model="gem/gemini-2.5-flash", messages=ASK, stream=stream)
    error = info.value
    assert error.status_code == expected_status
    assert error.body["message"] == fx.json["error"]["message"]  # type: ignore[index]
    assert error.body["type"] and error.body["code"]  # type: ignore[index]
    if name.endswith("retry-info"):
        assert error.response.headers["retry-after"] == "35"
        assert error.response.headers["retry-after-ms"] == "34400"


async def test_wrong_key_is_a_401_for_the_client(make_gateway: Any, gemini: MockGemini) -> None:
    gateway = await make_gateway(providers={"gem": gemini_entry(gemini, api_key="AIza-not-the-right-key")})
    gemini.replay("gemini-2.0-flash", "gemini/generate-content/nonstream-text-gemini2.0-flash")
    for stream in (False, True):
        with pytest.raises(openai.AuthenticationError) as info:
            await gateway.async_openai().chat.completions.create(model="gem/gemini-2.0-flash", messages=ASK,
                                                                 stream=stream)
        assert info.value.body["message"] == "API key not valid. Please pass a valid API key."  # type: ignore[index]
        assert info.value.code == "invalid_api_key"
        assert "AIza-not-the-right-key" not in str(info.value.body)
    assert gemini.last("gemini-2.0-flash").problems == ["wrong or missing x-goog-api-key"]


async def test_unknown_model_is_a_404(gateway: Gateway, gemini: MockGemini) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await gateway.async_openai().chat.completions.create(model="gem/gemini-9-ultra", messages=ASK)
    assert info.value.body["message"].startswith("models/gemini-9-ultra is not found")  # type: ignore[index]
    assert info.value.code == "model_not_found"


async def test_request_gemini_cannot_take_is_a_400_before_any_upstream_call(gateway: Gateway,
                                                                            gemini: MockGemini) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await gateway.async_openai().chat.completions.create(model="gem/gemini-2.5-flash", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/x"}}]}])
    assert "cannot be told from its extension" in info.value.message
    assert [r for r in gemini.requests if r.method == "POST"] == []


def cut_before_finish(fx: Fixture) -> list[bytes]:
    events = split_sse_events(gemini_stream_body(fx))
    keep = next(i for i, e in enumerate(events) if b'"finishReason"' in e)
    assert keep >= 1
    return events[:keep]


@pytest.mark.parametrize("mode", MODES)
async def test_truncated_stream_reaches_the_sdk_as_an_error(gateway: Gateway, gemini: MockGemini, mode: str) -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-empty-final-part-gemini3-pro")
    gemini.on("gemini-3-pro-preview", Scenario(body=b"", content_type="text/event-stream", stream=True,
                                               pieces=cut_before_finish(fx)))
    with pytest.raises(openai.APIError) as info:
        await sdk_call(gateway, mode, "chat.completions.create", model="gem/gemini-3-pro-preview", messages=ASK,
                       stream=True, request_id="gem-cut")
    assert "ended the stream before it was complete" in info.value.message
    assert info.value.code == "stream_truncated"
    record = await gateway.record("gem-cut")
    assert record.outcome == "upstream_error"
    # What Gemini had counted so far, not an estimate.
    assert record.usage is not None and record.usage.input_tokens == 55 and not record.usage.estimated


async def test_connection_dropped_mid_stream_reaches_the_sdk_as_an_error(gateway: Gateway,
                                                                         gemini: MockGemini) -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    gemini.replay("gemini-2.0-flash-exp", fx, split="events", drop_after=1)
    client = gateway.async_openai()
    stream = await client.chat.completions.create(model="gem/gemini-2.0-flash-exp", messages=ASK, stream=True)
    text = ""
    with pytest.raises(openai.APIError):
        async for chunk in stream:
            text += "".join(ch.delta.content or "" for ch in chunk.choices)
    assert text == "The"


async def test_error_event_inside_the_stream_reaches_the_sdk(gateway: Gateway, gemini: MockGemini) -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    events = split_sse_events(gemini_stream_body(fx))
    error = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    gemini.on("gemini-2.0-flash-exp", Scenario(body=b"", content_type="text/event-stream", stream=True,
                                               pieces=[events[0], error, events[1]]))
    stream = await gateway.async_openai().chat.completions.create(
        model="gem/gemini-2.0-flash-exp", messages=ASK, stream=True, extra_headers={"X-Request-ID": "gem-midstream"})
    seen = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            seen.append(chunk)
    assert info.value.message == "The model is overloaded."
    assert "".join(ch.delta.content or "" for c in seen for ch in c.choices) == "The"
    assert (await gateway.record("gem-midstream")).outcome == "upstream_error"


# -- embeddings and models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", EMBEDDINGS)
async def test_embeddings(gateway: Gateway, gemini: MockGemini, name: str, mode: str) -> None:
    fx = load_fixture(name)
    (recorded,) = fx.request["requests"]  # type: ignore[index]
    model = recorded["model"].removeprefix("models/")
    gemini.replay(model, fx)
    text = recorded["content"]["parts"][0]["text"]
    extra = {"extra_body": {"task_type": recorded["taskType"]}} if "taskType" in recorded else {}
    values = fx.json["embeddings"][0]["values"]
    # The SDK asks for base64 by default and decodes it: float32, as OpenAI sends.
    decoded = await sdk_call(gateway, mode, "embeddings.create", model=f"gem/{model}", input=text,
                             dimensions=recorded["outputDimensionality"], request_id="gem-embed", **extra)
    assert decoded.data[0].embedding == pytest.approx(values, rel=1e-6)
    assert gemini.last(model).json == fx.request
    assert_clean_request(gemini, model, "batchEmbedContents")
    floats = await sdk_call(gateway, mode, "embeddings.create", model=f"gem/{model}", input=[text],
                            dimensions=recorded["outputDimensionality"], encoding_format="float", **extra)
    assert floats.data[0].embedding == values
    assert floats.usage.prompt_tokens > 0 and (floats.usage.model_extra or {}).get("estimated") is True
    record = await gateway.record("gem-embed")
    assert record.usage is not None and record.usage.estimated and record.usage.input_tokens > 0


async def test_embeddings_error(gateway: Gateway, gemini: MockGemini) -> None:
    fx = load_fixture("gemini/embeddings/error-404-not-found-batch-embed")
    gemini.replay("nonexistent-model", fx)
    with pytest.raises(openai.NotFoundError) as info:
        await gateway.async_openai().embeddings.create(model="gem/nonexistent-model", input="Hello, world!")
    assert info.value.body["message"] == fx.json["error"]["message"]  # type: ignore[index]


async def test_models_are_listed_page_by_page_without_the_prefix(make_gateway: Any) -> None:
    ids = ["gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-embedding-001"]
    mock = await MockGemini(model_ids=ids, page_size=2).start()
    try:
        gateway = await make_gateway(providers={"gem": gemini_entry(mock)})
        page = await gateway.async_openai().models.list()
        assert [m.id for m in page.data] == [f"gem/{i}" for i in ids]
        listing = [r for r in mock.requests if r.path == "/v1beta/models"]
        assert [r.query.get("pageToken") for r in listing] == [None, "2", "4"]
        assert all(r.headers["x-goog-api-key"] == UPSTREAM_KEY and "key" not in r.query for r in listing)
        # A bare model name now resolves to Gemini.
        mock.replay("gemini-2.0-flash", "gemini/generate-content/nonstream-text-gemini2.0-flash")
        answer = await gateway.async_openai().chat.completions.create(model="gemini-2.0-flash", messages=ASK)
        assert answer.choices[0].message.content == "The capital of France is Paris.\n"
    finally:
        await mock.close()
