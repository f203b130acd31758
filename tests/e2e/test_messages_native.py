"""``/v1/messages`` in front of an Anthropic provider: forwarded natively, byte for byte, both ways.

The mock Anthropic (``tests.support.mock_anthropic``) replays every recorded Anthropic answer and checks each
request as Anthropic would; the recorded requests themselves (cache_control, thinking, tools, tool results)
are what the client sends, and must reach the provider unchanged but for ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from tests.support.anthropic_client import anthropic_client, async_anthropic_client
from tests.support.fixtures import Fixture, fixture_names, load_fixture
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway
from tests.support.mock_anthropic import MockAnthropic, anthropic_sse_body, read_recording
from tests.support.mock_upstream import Scenario

from .helpers import record_numbers

FOLDER = "anthropic/messages"
STREAMS = fixture_names(FOLDER, "stream-")
WHOLE = fixture_names(FOLDER, "nonstream-")
ERRORS = fixture_names(FOLDER, "error-")
MODES = ["sync", "async"]
BETA = "interleaved-thinking-2025-05-14,prompt-caching-2024-07-31"
#: A system prompt with a cache breakpoint, added to requests that have none: it must reach Anthropic intact.
CACHED_SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]


@pytest.fixture
async def mock_anthropic() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic().start()
    yield mock
    await mock.close()


@pytest.fixture
async def claude(make_gateway: Any, mock_anthropic: MockAnthropic) -> Gateway:
    gateway: Gateway = await make_gateway(providers={"claude": {
        "type": "anthropic", "base_url": mock_anthropic.base_url, "api_key": UPSTREAM_KEY,
        "timeout_s": 5, "connect_timeout_s": 2,
    }})
    return gateway


def client_request(fx: Fixture, *, stream: bool) -> dict[str, Any]:
    """The recorded request when there is one (a real client's), else a small valid one; always with a
    cache breakpoint somewhere."""
    body: dict[str, Any] = dict(fx.request) if fx.request and isinstance(fx.request.get("messages"), list) \
        and all(isinstance(m, dict) for m in fx.request["messages"]) else {
            "max_tokens": 1024, "messages": [{"role": "user", "content": "Say hello."}]}
    body.setdefault("system", CACHED_SYSTEM)
    body["model"] = "claude/m"
    body["stream"] = stream
    return body


#: Request members this SDK takes as keywords; the others (temperature, top_k, ...) go through ``extra_body``.
SDK_KEYWORDS = frozenset({"model", "max_tokens", "messages", "system", "tools", "tool_choice", "thinking",
                          "stop_sequences", "metadata"})


def sdk_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in body.items() if k in SDK_KEYWORDS}
    extra = {k: v for k, v in body.items() if k not in SDK_KEYWORDS and k != "stream"}
    return {**kwargs, "extra_body": extra} if extra else kwargs


def headers(request_id: str) -> dict[str, str]:
    return {"anthropic-version": "2023-06-01", "anthropic-beta": BETA, "x-api-key": CLIENT_KEY,
            "X-Request-ID": request_id}


def assert_forwarded_request(mock: MockAnthropic, body: dict[str, Any], path: str = "/v1/messages") -> None:
    rec = mock.requests_to(path)[-1]
    assert rec.problems == []
    assert rec.json == {**body, "model": "m"}  # cache_control, thinking, tools: all as the client sent them
    assert rec.headers["anthropic-version"] == "2023-06-01" and rec.headers["anthropic-beta"] == BETA
    assert rec.headers["x-api-key"] == UPSTREAM_KEY
    assert CLIENT_KEY not in str(dict(rec.headers)) and CLIENT_KEY.encode() not in rec.body


@pytest.mark.parametrize("fixture", STREAMS)
async def test_native_stream_is_forwarded_byte_for_byte(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str
) -> None:
    fx = load_fixture(fixture)
    mock_anthropic.replay("m", fx, split="bytes")
    body = client_request(fx, stream=True)
    async with claude.http.post("v1/messages", json=body, headers=headers("native-stream")) as resp:
        assert resp.status == 200
        raw = await resp.read()
        got_headers = resp.headers
    assert raw == anthropic_sse_body(fx)
    assert got_headers["Content-Type"].startswith("text/event-stream")
    recorded = {k.lower(): v for k, v in fx.recorded_headers.items()}
    for name, value in recorded.items():
        if name.startswith("anthropic-ratelimit-"):
            assert got_headers[name] == value
    assert_forwarded_request(mock_anthropic, body)
    expected = read_recording(anthropic_sse_body(fx))
    record = await claude.record("native-stream")
    assert record.endpoint == "messages" and record.provider == "claude" and record.model == "m"
    if expected.error is not None:
        assert record.outcome == "upstream_error"
    else:
        assert record.outcome == "ok" and record.usage is not None and not record.usage.estimated
        assert record_numbers(record) == (expected.prompt_tokens, expected.usage["output_tokens"],
                                          expected.usage.get("cache_read_input_tokens") or 0, 0)


@pytest.mark.parametrize(("fixture", "mode"), [pytest.param(f, MODES[i % 2], id=f"{f}-{MODES[i % 2]}")
                                               for i, f in enumerate(n for n in STREAMS if "error" not in n)])
async def test_native_stream_through_the_sdk(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str, mode: str
) -> None:
    fx = load_fixture(fixture)
    mock_anthropic.replay("m", fx, split="bytes")
    body = client_request(fx, stream=True)
    kwargs = sdk_kwargs(body)
    if mode == "sync":
        client = anthropic_client(claude)

        def run() -> Any:
            with client.messages.stream(**kwargs) as stream:
                return stream.get_final_message()

        message = await asyncio.to_thread(run)
    else:
        async with async_anthropic_client(claude).messages.stream(**kwargs) as astream:
            message = await astream.get_final_message()
    expected = read_recording(anthropic_sse_body(fx))
    assert message.id == expected.id and message.stop_reason == expected.stop_reason
    assert "".join(b.text for b in message.content if b.type == "text") == expected.text
    assert "".join(b.thinking for b in message.content if b.type == "thinking") == expected.reasoning
    # Thinking signatures come back untouched, so that the client can send them back.
    assert [b.signature for b in message.content if b.type == "thinking"] == [
        b["signature"] for b in expected.thinking_blocks if b["type"] == "thinking"]
    assert [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"] == [
        (i, n, json.loads(a)) for i, n, a in expected.tool_calls]
    assert mock_anthropic.last("m").json == {**body, "model": "m"}


@pytest.mark.parametrize(("fixture", "mode"), [pytest.param(f, MODES[i % 2], id=f"{f}-{MODES[i % 2]}")
                                               for i, f in enumerate(WHOLE)])
async def test_native_whole_answer_is_forwarded_byte_for_byte(
    claude: Gateway, mock_anthropic: MockAnthropic, fixture: str, mode: str
) -> None:
    fx = load_fixture(fixture)
    mock_anthropic.replay("m", fx)
    body = client_request(fx, stream=False)
    async with claude.http.post("v1/messages", json=body, headers=headers("native-whole")) as resp:
        assert resp.status == 200
        assert await resp.read() == fx.body
    assert_forwarded_request(mock_anthropic, body)
    usage = fx.json["usage"]
    record = await claude.record("native-whole")
    cached = usage.get("cache_read_input_tokens") or 0
    assert record_numbers(record) == (
        usage["input_tokens"] + cached + (usage.get("cache_creation_input_tokens") or 0),
        usage["output_tokens"], cached, 0)
    kwargs = sdk_kwargs(body)
    if mode == "sync":
        client = anthropic_client(claude)
        message = await asyncio.to_thread(lambda: client.messages.create(**kwargs))
    else:
        message = await async_anthropic_client(claude).messages.create(**kwargs)
    assert message.model_dump(exclude_none=True) == anthropic.types.Message.model_validate(fx.json).model_dump(
        exclude_none=True)


@pytest.mark.parametrize("fixture", ERRORS)
async def test_native_errors_keep_status_and_body(claude: Gateway, mock_anthropic: MockAnthropic, fixture: str) -> None:
    fx = load_fixture(fixture)
    mock_anthropic.replay("m", fx)
    body = client_request(fx, stream=False)
    async with claude.http.post("v1/messages", json=body, headers=headers("native-error")) as resp:
        assert resp.status == fx.status
        assert await resp.read() == fx.body  # already Anthropic's shape: byte for byte
        assert resp.headers["Content-Type"].startswith("application/json")
    client = async_anthropic_client(claude)
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(**sdk_kwargs(body))
    assert info.value.status_code == fx.status and info.value.body == fx.json
    record = await claude.record("native-error")
    assert record.status == fx.status and record.outcome == "upstream_error"


async def test_native_error_in_another_shape_is_rebuilt(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    mock_anthropic.on("m", Scenario.error(502, "<html>Bad gateway</html>", content_type="text/html"))
    client = async_anthropic_client(claude)
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(model="claude/m", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.body == {"type": "error", "error": {"type": "api_error", "message": "<html>Bad gateway</html>"}}


async def test_native_midstream_error_reaches_the_sdk(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    text = load_fixture(f"{FOLDER}/stream-text-haiku45")
    overloaded = load_fixture(f"{FOLDER}/stream-midstream-error-event-overloaded")
    events = text.events
    head = b"".join(e for e in events if b"message_delta" not in e and b"message_stop" not in e)
    mock_anthropic.on("m", Scenario(body=head + overloaded.body, content_type="text/event-stream", stream=True))
    client = async_anthropic_client(claude)
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info:
        async with client.messages.stream(model="claude/m", max_tokens=8,
                                          messages=[{"role": "user", "content": "x"}],
                                          extra_headers={"X-Request-ID": "native-overloaded"}) as stream:
            async for chunk in stream.text_stream:
                texts.append(chunk)
    assert texts and "".join(texts) == read_recording(text.body).text
    assert info.value.body["error"]["type"] == "overloaded_error"
    record = await claude.record("native-overloaded")
    assert record.outcome == "upstream_error"


async def test_native_truncated_stream_ends_with_an_anthropic_error_event(
    claude: Gateway, mock_anthropic: MockAnthropic
) -> None:
    fx = load_fixture(f"{FOLDER}/stream-thinking-text-haiku45")
    head = b"".join(e for e in fx.events if b"message_stop" not in e)
    mock_anthropic.on("m", Scenario(body=head, content_type="text/event-stream", stream=True))
    body = {"model": "claude/m", "max_tokens": 2048, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with claude.http.post("v1/messages", json=body, headers=headers("native-cut")) as resp:
        raw = await resp.read()
    assert raw.startswith(head)
    tail = raw[len(head):]
    assert tail.startswith(b"event: error\ndata: ")
    error = json.loads(tail.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "before it was complete" in error["error"]["message"]
    record = await claude.record("native-cut")
    assert record.outcome == "upstream_error"
    assert record.usage is not None and record.usage.output_tokens == 133  # message_delta's figure, kept


async def test_native_connection_drop_and_client_disconnect(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    fx = load_fixture(f"{FOLDER}/stream-thinking-signature-sonnet4")
    mock_anthropic.replay("m", fx, split="events", max_pieces=30, drop_after=5)
    body = {"model": "claude/m", "max_tokens": 2048, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with claude.http.post("v1/messages", json=body, headers=headers("native-drop")) as resp:
        raw = await resp.read()
    last = raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ") and b"message_stop" not in raw
    assert json.loads(last.split(b"data: ", 1)[1])["error"]["type"] == "api_error"
    # A client that hangs up mid-stream stops the provider's request.
    mock_anthropic.replay("slow", fx, split="events", max_pieces=30, stall_after=3, stall_s=30)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(claude.url + "/v1/messages", json={**body, "model": "claude/slow"},
                                  headers=headers("native-gone"))
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                while received.count(b"content_block_delta") < 1:
                    received += await resp.content.readany()
        resp.close()
    assert b"content_block_delta" in received
    await asyncio.wait_for(mock_anthropic.last("slow").client_gone.wait(), 1.0)
    record = await claude.record("native-gone")
    assert record.outcome == "client_disconnected" and record.usage is not None


async def test_native_count_tokens(claude: Gateway, mock_anthropic: MockAnthropic) -> None:
    body = {"model": "claude/m", "system": CACHED_SYSTEM, "messages": [{"role": "user", "content": "hello there"}]}
    async with claude.http.post("v1/messages/count_tokens", json=body, headers=headers("native-count")) as resp:
        assert resp.status == 200
        counted = await resp.json()
        assert "X-GoModel-Token-Estimate" not in resp.headers  # Anthropic's own count
    assert counted == {"input_tokens": len(json.dumps(body["messages"])) // 4}
    assert_forwarded_request(mock_anthropic, body, "/v1/messages/count_tokens")
    assert mock_anthropic.requests_to("/v1/messages") == []
