"""Failover on ``/v1/messages`` and ``/v1/responses``: the same executor as chat, each target asked natively
when its provider speaks the route's API, else through the route's translator to chat.

``claude`` is Anthropic's API (``MockAnthropic``), ``native`` OpenAI's Responses API (``ResponsesMock``),
``b``/``c`` OpenAI-compatible chat providers replaying recorded chat completions. The official SDKs read the
answers; the headers, the mocks' received requests and the usage records say who answered.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anthropic
import openai
import pytest

from gomodel_proxy.core.types import FailoverStep
from tests.support.anthropic_client import async_anthropic_client
from tests.support.fixtures import load_fixture
from tests.support.gateway import UPSTREAM_KEY, Gateway, provider_config
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_responses import ResponsesMock
from tests.support.mock_upstream import MockUpstream, Scenario

from .helpers import content_of_payloads
from .test_resilience import metric

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeMock = Callable[..., Awaitable[MockUpstream]]
NO_RETRY = {"max_attempts": 1}
WHOLE = "openai/chat-completions/nonstream-text-gpt4o-mini"
STREAM = "openai/chat-completions/stream-text-no-usage-gpt4o-mini"
TRIGGERS = "triggers:\n  status_codes: [429, 500, 502, 503, 504, 529]\n"
USER = [{"role": "user", "content": "Say hello."}]


def whole_text() -> str:
    text = load_fixture(WHOLE).json["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text
    return text


def stream_text() -> str:
    text = content_of_payloads([p for p in load_fixture(STREAM).data_payloads if isinstance(p, dict)])
    assert text
    return text


def fail(status: int) -> Scenario:
    return Scenario.error(status, {"type": "error", "error": {"type": "overloaded_error", "message": f"says {status}"}})


def anthropic_provider(mock: MockAnthropic) -> dict[str, Any]:
    return {"type": "anthropic", "base_url": mock.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 5,
            "retry": NO_RETRY}


@pytest.fixture
async def claude() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic(model_ids=["claude-x", "claude-y"]).start()
    yield mock
    await mock.close()


@pytest.fixture
async def native() -> AsyncIterator[ResponsesMock]:
    mock = ResponsesMock(model_ids=["gpt-x"])
    await mock.start()
    yield mock
    await mock.close()


def text_of(message: anthropic.types.Message) -> str:
    return "".join(c.text for c in message.content if c.type == "text")


def chat_requests(mock: MockUpstream, model: str) -> list[Any]:
    return [r for r in mock.requests_for(model) if r.path == "/v1/chat/completions"]


# -- /v1/messages ----------------------------------------------------------------------------------------------

async def messages_gateway(make_gateway: MakeGateway, claude: MockAnthropic, b: MockUpstream, **extra: Any) -> Gateway:
    providers = {"claude": anthropic_provider(claude), "b": provider_config(b.base_url, retry=NO_RETRY)}
    failover = "failover:\n  claude/claude-x: [b/gpt-b]\n" + TRIGGERS
    return await make_gateway(providers=providers, failover=failover, **extra)


@pytest.mark.parametrize("status", [529, 500])
async def test_messages_fail_over_from_anthropic_to_a_chat_provider(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, claude: MockAnthropic, status: int
) -> None:
    b = await make_mock_upstream(model_ids=["gpt-b"])
    b.replay("gpt-b", WHOLE)
    claude.on("claude-x", fail(status))
    gateway = await messages_gateway(make_gateway, claude, b)
    client = async_anthropic_client(gateway)
    raw = await client.messages.with_raw_response.create(model="claude/claude-x", max_tokens=64, messages=USER)
    message = await raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [c.text for c in message.content if c.type == "text"] == [whole_text()]
    assert message.model == load_fixture(WHOLE).json["model"]  # the answering model's own name
    assert raw.headers["X-GoModel-Provider"] == "b" and raw.headers["X-GoModel-Model"] == "gpt-b"
    assert len(claude.requests_for("claude-x")) == 1  # the native attempt was made first
    sent = chat_requests(b, "gpt-b")
    assert len(sent) == 1 and sent[0].json["model"] == "gpt-b" and sent[0].json["messages"][-1]["role"] == "user"
    record = await gateway.record(raw.headers["X-Request-ID"])
    assert record.failovers == (FailoverStep("claude/claude-x", "b/gpt-b", f"status_{status}"),)
    assert record.provider == "b" and record.model_requested == "claude/claude-x"
    assert record.usage is not None and record.usage.output_tokens > 0
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_failovers_total", from_provider="claude", to_provider="b",
                  reason=f"status_{status}") == 1


async def test_messages_stream_fails_over_before_the_first_byte(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, claude: MockAnthropic
) -> None:
    b = await make_mock_upstream(model_ids=["gpt-b"])
    b.replay("gpt-b", STREAM)
    claude.on("claude-x", fail(529))
    gateway = await messages_gateway(make_gateway, claude, b)
    client = async_anthropic_client(gateway)
    raw = await client.messages.with_raw_response.create(
        model="claude/claude-x", max_tokens=64, messages=USER, stream=True
    )
    assert raw.headers["X-GoModel-Provider"] == "b" and raw.headers["X-GoModel-Model"] == "gpt-b"
    assert raw.headers["Content-Type"].startswith("text/event-stream")
    events = [e async for e in await raw.parse()]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == stream_text()
    assert len(claude.requests_for("claude-x")) == 1 and len(chat_requests(b, "gpt-b")) == 1
    record = await gateway.record(raw.headers["X-Request-ID"])
    assert [s.reason for s in record.failovers] == ["status_529"] and record.outcome == "ok"


async def test_messages_no_failover_on_a_non_trigger_400(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, claude: MockAnthropic
) -> None:
    b = await make_mock_upstream(model_ids=["gpt-b"])
    b.replay("gpt-b", WHOLE)
    claude.on("claude-x", Scenario.error(400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: too large"}}))
    gateway = await messages_gateway(make_gateway, claude, b)
    client = async_anthropic_client(gateway)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model="claude/claude-x", max_tokens=64, messages=USER)
    assert "max_tokens: too large" in str(caught.value)
    assert caught.value.response.headers["X-GoModel-Provider"] == "claude"
    assert chat_requests(b, "gpt-b") == []  # b never asked


async def test_messages_virtual_model_round_robin_over_native_and_converted(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, claude: MockAnthropic
) -> None:
    b = await make_mock_upstream(model_ids=["gpt-b"])
    b.replay("gpt-b", WHOLE)
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x-2025",
              "content": [{"type": "text", "text": "native hello"}], "stop_reason": "end_turn",
              "stop_sequence": None, "usage": {"input_tokens": 4, "output_tokens": 2}}
    claude.on("claude-x", Scenario(status=200, body=json.dumps(answer).encode()))
    extra = {"models": {"smart": {"strategy": "round_robin",
                                  "targets": [{"model": "claude/claude-x"}, {"model": "b/gpt-b"}]}}}
    gateway = await make_gateway(
        providers={"claude": anthropic_provider(claude), "b": provider_config(b.base_url, retry=NO_RETRY)},
        extra=extra,
    )
    client = async_anthropic_client(gateway)
    got = []
    for _ in range(4):
        raw = await client.messages.with_raw_response.create(model="smart", max_tokens=64, messages=USER)
        message = await raw.parse()
        got.append((raw.headers["X-GoModel-Provider"], text_of(message)))
    assert got == [("claude", "native hello"), ("b", whole_text())] * 2
    assert [r.json["model"] for r in claude.requests_for("claude-x")] == ["claude-x"] * 2
    assert [r.json["model"] for r in chat_requests(b, "gpt-b")] == ["gpt-b"] * 2
    # A failing target falls back to the other one (natively first, then through chat) for every request.
    claude.on("claude-x", fail(503))  # (529 is no default trigger: no failover.yaml here)
    for _ in range(2):
        raw = await client.messages.with_raw_response.create(model="smart", max_tokens=64, messages=USER)
        assert raw.headers["X-GoModel-Provider"] == "b" and text_of(await raw.parse()) == whole_text()
    assert len(claude.requests_for("claude-x")) == 3  # round robin still picked it first every other request
    assert [t.in_flight for t in gateway.state.router.virtual["smart"].targets] == [0, 0]


# -- /v1/responses ---------------------------------------------------------------------------------------------

async def responses_gateway(make_gateway: MakeGateway, native: ResponsesMock, c: MockUpstream) -> Gateway:
    providers = {"native": provider_config(native.base_url, type="openai", retry=NO_RETRY),
                 "c": provider_config(c.base_url, retry=NO_RETRY)}
    return await make_gateway(providers=providers, failover="failover:\n  native/gpt-x: [c/gpt-c]\n")


def native_failure() -> Scenario:
    return Scenario.error(503, {"error": {"message": "overloaded", "type": "server_error", "param": None,
                                          "code": None}})


async def test_responses_fail_over_from_native_to_converted(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, native: ResponsesMock
) -> None:
    c = await make_mock_upstream(model_ids=["gpt-c"])
    c.replay("gpt-c", WHOLE)
    native.on("gpt-x", native_failure())
    gateway = await responses_gateway(make_gateway, native, c)
    client = gateway.async_openai()
    raw = await client.responses.with_raw_response.create(model="native/gpt-x", input="Say hello.")
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text == whole_text()
    assert response.id.startswith("resp_") and response.model == load_fixture(WHOLE).json["model"]
    assert raw.headers["X-GoModel-Provider"] == "c" and raw.headers["X-GoModel-Model"] == "gpt-c"
    assert [r.path for r in native.requests_for("gpt-x")] == ["/v1/responses"]
    sent = chat_requests(c, "gpt-c")
    assert len(sent) == 1 and sent[0].json["model"] == "gpt-c"
    record = await gateway.record(raw.headers["X-Request-ID"])
    assert record.failovers == (FailoverStep("native/gpt-x", "c/gpt-c", "status_503"),)
    assert record.provider == "c" and record.usage is not None and record.usage.output_tokens > 0
    # The converted answer is the gateway's to keep: GET finds it, as c's.
    fetched = await client.responses.retrieve(response.id)
    assert fetched.output_text == whole_text()


async def test_responses_stream_fails_over_before_the_first_byte(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, native: ResponsesMock
) -> None:
    c = await make_mock_upstream(model_ids=["gpt-c"])
    c.replay("gpt-c", STREAM)
    native.on("gpt-x", native_failure())
    gateway = await responses_gateway(make_gateway, native, c)
    client = gateway.async_openai()
    raw = await client.responses.with_raw_response.create(model="native/gpt-x", input="Say hello.", stream=True)
    assert raw.headers["X-GoModel-Provider"] == "c" and raw.headers["Content-Type"].startswith("text/event-stream")
    events = [e async for e in raw.parse()]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == stream_text()
    final = events[-1].response  # type: ignore[union-attr]
    recorded_model = next(p["model"] for p in load_fixture(STREAM).data_payloads if isinstance(p, dict))
    assert final.output_text == stream_text() and final.model == recorded_model
    record = await gateway.record(raw.headers["X-Request-ID"])
    assert [s.reason for s in record.failovers] == ["status_503"] and record.provider == "c"


async def test_responses_no_failover_on_a_non_trigger_400(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock, native: ResponsesMock
) -> None:
    c = await make_mock_upstream(model_ids=["gpt-c"])
    c.replay("gpt-c", WHOLE)
    native.on("gpt-x", Scenario.error(400, {"error": {"message": "bad input", "type": "invalid_request_error",
                                                      "param": "input", "code": None}}))
    gateway = await responses_gateway(make_gateway, native, c)
    with pytest.raises(openai.BadRequestError) as caught:
        await gateway.async_openai().responses.create(model="native/gpt-x", input="Say hello.")
    assert "bad input" in str(caught.value)
    assert caught.value.response.headers["X-GoModel-Provider"] == "native"
    assert chat_requests(c, "gpt-c") == []
