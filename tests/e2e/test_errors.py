"""Failures, the provider's and the gateway's own: every one reaches the client as OpenAI error JSON."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest

from gomodel_proxy.core.errors import error_type_for_status
from tests.support.fixtures import fixture_names, load_fixture, require_fixtures
from tests.support.gateway import Gateway, provider_config
from tests.support.mock_upstream import MockUpstream, Scenario, unused_port_url

from .helpers import MESSAGES, events_of, payloads_of

ERROR_FIXTURES = [
    *fixture_names("openai/chat-completions", "error-"),
    *fixture_names("groq/chat-completions", "error-"),
    *fixture_names("openrouter/chat-completions", "error-"),
]
SDK_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
}


def assert_openai_error(status: int, headers: Any, raw: bytes, expected_status: int) -> dict[str, Any]:
    """The common shape of every error answer; returns its ``error`` object."""
    assert status == expected_status, raw
    assert headers["Content-Type"].startswith("application/json"), headers
    assert b"Traceback" not in raw and b'File "' not in raw
    body = json.loads(raw)
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["type"], str) and error["type"]
    return dict(error)


def assert_gateway_error(status: int, headers: Any, raw: bytes, expected_status: int) -> dict[str, Any]:
    """An error the gateway wrote itself: OpenAI's full shape, message, type, param and code."""
    error = assert_openai_error(status, headers, raw, expected_status)
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def post(gateway: Gateway, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    async with gateway.http.post(path, **kwargs) as resp:
        return resp.status, resp.headers, await resp.read()


# -- the providers' recorded errors -----------------------------------------------------------------------

def test_error_fixtures_are_collected() -> None:
    require_fixtures()
    assert len(ERROR_FIXTURES) >= 12
    assert {load_fixture(f).status for f in ERROR_FIXTURES} >= set(SDK_ERRORS)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fixture", ERROR_FIXTURES)
async def test_provider_error_keeps_status_and_message(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str, stream: bool
) -> None:
    fx = load_fixture(fixture)
    mock_upstream.replay("m", fx)
    provider_error = fx.json["error"]
    status, headers, raw = await post(
        gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES, "stream": stream}
    )
    error = assert_openai_error(status, headers, raw, fx.status)
    assert error["message"] == provider_error["message"]
    if isinstance(provider_error.get("type"), str):
        assert raw == fx.raw  # already OpenAI-shaped: passed on byte for byte, as the provider wrote it
    else:
        # OpenRouter's wrapper has no "type": the gateway adds OpenAI's, and keeps all the provider said.
        assert error["type"] == error_type_for_status(fx.status)
        assert {k: error[k] for k in provider_error} == provider_error
        assert json.loads(raw)["user_id"] == fx.json["user_id"]
    record = await gateway.record(headers["X-Request-ID"])
    assert record.status == fx.status and record.outcome == "upstream_error"

    client = gateway.async_openai()
    with pytest.raises(SDK_ERRORS[fx.status]) as caught:
        if stream:
            await client.chat.completions.create(model="up/m", messages=MESSAGES, stream=True)
        else:
            await client.chat.completions.create(model="up/m", messages=MESSAGES)
    assert caught.value.status_code == fx.status
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == provider_error["message"]


async def test_embeddings_provider_error(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/embeddings/error-404-model-not-found")
    mock_upstream.replay("nonexistent", fx)
    client = gateway.openai()
    with pytest.raises(openai.NotFoundError) as caught:
        await asyncio.to_thread(client.embeddings.create, model="up/nonexistent", input="x")
    assert caught.value.body["message"] == fx.json["error"]["message"]
    assert caught.value.body["code"] == "model_not_found"


async def test_rate_limit_headers_are_passed_on(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay(
        "m", "openai/chat-completions/error-429-rate-limit-exceeded-tokens",
        headers={"retry-after": "27", "x-ratelimit-remaining-tokens": "0", "openai-organization": "org-secret"},
    )
    status, headers, raw = await post(gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES})
    assert_openai_error(status, headers, raw, 429)
    assert headers["Retry-After"] == "27" and headers["x-ratelimit-remaining-tokens"] == "0"
    assert "openai-organization" not in headers


# -- provider errors that are not OpenAI-shaped -----------------------------------------------------------

@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected_in_message"),
    [
        (502, "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html",
         "502 Bad Gateway"),
        (503, "", "text/plain", "answered HTTP 503 with an empty body"),
        (500, '{"error": "model crashed"}', "application/json", "model crashed"),
        (422, '{"message": "input too long", "detail": []}', "application/json", "input too long"),
        (400, '["not", "an", "object"]', "application/json", '["not", "an", "object"]'),
    ],
    ids=["html-502", "empty-503", "error-string", "message-only", "json-array"],
)
async def test_non_openai_error_is_wrapped(
    gateway: Gateway, mock_upstream: MockUpstream, status: int, body: str, content_type: str,
    expected_in_message: str,
) -> None:
    mock_upstream.fail("m", status, body, content_type=content_type)
    got_status, headers, raw = await post(
        gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES}
    )
    error = assert_gateway_error(got_status, headers, raw, status)
    assert expected_in_message in error["message"]


async def test_html_error_through_the_sdk(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.fail("m", 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")
    client = gateway.async_openai()
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="up/m", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert "502 Bad Gateway" in caught.value.body["message"]


# -- transport failures -------------------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_connection_refused_is_502(make_gateway: Any, stream: bool) -> None:
    gateway = await make_gateway(providers={"down": provider_config(unused_port_url())})
    assert gateway.state.registry.status["down"] == "failed"
    status, headers, raw = await post(
        gateway, "v1/chat/completions", json={"model": "down/m", "messages": MESSAGES, "stream": stream}
    )
    error = assert_gateway_error(status, headers, raw, 502)
    assert error["code"] == "upstream_unreachable" and "down" in error["message"]
    assert (await gateway.record(headers["X-Request-ID"])).status == 502


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_upstream_hang_past_timeout_is_504(make_gateway: Any, mock_upstream: MockUpstream, stream: bool) -> None:
    gateway = await make_gateway(upstream=mock_upstream, timeout_s=0.3)
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini", delay_before_headers=5)
    started = asyncio.get_running_loop().time()
    status, headers, raw = await post(
        gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES, "stream": stream}
    )
    elapsed = asyncio.get_running_loop().time() - started
    error = assert_gateway_error(status, headers, raw, 504)
    assert error["code"] == "upstream_timeout"
    assert 0.25 <= elapsed < 2.0
    # The gateway gave up on the provider's request: the provider sees it go away.
    await asyncio.wait_for(mock_upstream.last("m").client_gone.wait(), 1.0)


async def test_stream_stalling_past_timeout_ends_with_error_event(
    make_gateway: Any, mock_upstream: MockUpstream
) -> None:
    gateway = await make_gateway(upstream=mock_upstream, timeout_s=0.3)
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, stall_after=2, stall_s=5)
    status, headers, raw = await post(
        gateway, "v1/chat/completions",
        json={"model": "up/m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    events = events_of(raw)
    assert events[:-1] == fx.events[:2]
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_timeout"
    assert b"[DONE]" not in raw
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "upstream_error"


@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "no_usage_option"])
async def test_connection_dropped_mid_stream(
    gateway: Gateway, mock_upstream: MockUpstream, include_usage: bool
) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, drop_after=3, split="events", max_pieces=len(fx.events))
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    status, headers, raw = await post(
        gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES, "stream": True, **extra}
    )
    assert status == 200
    events = events_of(raw)
    assert len(events) == 4
    delivered = payloads_of(b"".join(events[:3]))
    assert [p["id"] for p in delivered] == [p["id"] for p in fx.data_payloads[:3]]
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["type"] == "upstream_error" and error["message"]
    assert b"[DONE]" not in raw  # never a fake end
    record = await gateway.record(headers["X-Request-ID"])
    assert record.outcome == "upstream_error"
    assert record.usage is not None and record.usage.estimated

    client = gateway.async_openai()
    seen = []
    with pytest.raises(openai.APIError):
        async for chunk in await client.chat.completions.create(
            model="up/m", messages=MESSAGES, stream=True, **extra
        ):
            seen.append(chunk)
    assert len(seen) == 3


async def test_stream_ending_without_done_gets_an_error_event(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    # The recording cut before its finish_reason chunk and [DONE], ended cleanly by the provider.
    cut = [e for e in fx.events if b"finish_reason\":null" in e][:4]
    assert len(cut) == 4
    mock_upstream.on("m", Scenario(body=b"".join(cut), content_type="text/event-stream", stream=True))
    status, headers, raw = await post(
        gateway, "v1/chat/completions",
        json={"model": "up/m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert status == 200
    events = events_of(raw)
    assert events[:4] == cut and len(events) == 5
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "stream_truncated"
    assert b"[DONE]" not in raw
    assert (await gateway.record(headers["X-Request-ID"])).outcome == "upstream_error"

    client = gateway.openai()

    def consume() -> int:
        n = 0
        for _ in client.chat.completions.create(model="up/m", messages=MESSAGES, stream=True):
            n += 1
        return n

    with pytest.raises(openai.APIError):
        await asyncio.to_thread(consume)


# -- the gateway's own refusals -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["v1/chat/completions", "v1/embeddings"])
@pytest.mark.parametrize(
    ("data", "status", "code_or_param", "message_part"),
    [
        (b'{"model": "up/m", "messages": [', 400, None, "not valid JSON"),
        (b"", 400, None, "empty"),
        (b"[1, 2, 3]", 400, None, "JSON object"),
        (b'"just a string"', 400, None, "JSON object"),
        (b'{"messages": []}', 400, "model", "model"),
        (b'{"model": 42, "messages": []}', 400, "model", "model"),
        (b'{"model": "no-such-model", "messages": []}', 404, "model_not_found", "GET /v1/models"),
        (b'{"model": "nope/gpt-4o", "messages": []}', 404, "model_not_found", "GET /v1/models"),
    ],
    ids=["invalid-json", "empty", "array", "string", "missing-model", "model-not-string", "unknown-model",
         "unknown-provider"],
)
async def test_bad_requests(
    gateway: Gateway, mock_upstream: MockUpstream, path: str, data: bytes, status: int,
    code_or_param: str | None, message_part: str,
) -> None:
    got, headers, raw = await post(gateway, path, data=data, headers={"Content-Type": "application/json"})
    error = assert_gateway_error(got, headers, raw, status)
    assert message_part in error["message"]
    if code_or_param:
        assert code_or_param in (error["code"], error["param"])
    assert error["type"] == "invalid_request_error"
    assert [r for r in mock_upstream.requests if r.path != "/v1/models"] == []  # nothing reached the provider


async def test_unknown_model_through_the_sdk(gateway: Gateway) -> None:
    client = gateway.async_openai()
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"
    assert "/v1/models" in caught.value.body["message"]


async def test_body_over_the_limit_is_413(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await make_gateway(upstream=mock_upstream, server={"body_limit_mb": 0.01})
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    small = {"model": "up/m", "messages": [{"role": "user", "content": "x" * 1000}]}
    status, _, _ = await post(gateway, "v1/chat/completions", json=small)
    assert status == 200
    big = {"model": "up/m", "messages": [{"role": "user", "content": "x" * 20_000}]}
    status, headers, raw = await post(gateway, "v1/chat/completions", json=big)
    error = assert_gateway_error(status, headers, raw, 413)
    assert error["code"] == "request_too_large"
    assert len(mock_upstream.requests_for("m")) == 1


async def test_unknown_route_is_404(gateway: Gateway) -> None:
    for method, path in [("GET", "v1/nope"), ("POST", "v1/completions/x"), ("GET", "favicon.ico")]:
        async with gateway.http.request(method, path) as resp:
            error = assert_gateway_error(resp.status, resp.headers, await resp.read(), 404)
        assert error["code"] == "not_found" and "/v1" in error["message"]


async def test_wrong_method_is_405(gateway: Gateway) -> None:
    for method, path, allowed in [("GET", "v1/chat/completions", "POST"), ("PUT", "v1/embeddings", "POST"),
                                  ("POST", "v1/models", "GET")]:
        async with gateway.http.request(method, path) as resp:
            error = assert_gateway_error(resp.status, resp.headers, await resp.read(), 405)
            assert allowed in resp.headers["Allow"]
        assert error["code"] == "method_not_allowed"


async def test_gateway_errors_raise_the_right_sdk_exceptions(gateway: Gateway) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError):
        await asyncio.to_thread(client.chat.completions.create, model="", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(client.embeddings.create, model="nope", input="x")


async def test_unexpected_exception_is_a_500_without_traceback(gateway: Gateway, monkeypatch: Any) -> None:
    def boom(model: str) -> Any:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(gateway.state.registry, "resolve", boom)
    status, headers, raw = await post(gateway, "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES})
    error = assert_gateway_error(status, headers, raw, 500)
    assert b"secret internal detail" not in raw and b"RuntimeError" not in raw
    assert error["type"] == "server_error"


async def test_sdk_timeout_does_not_break_the_gateway(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    """A client that gives up is not an error of the gateway: the next request is answered normally."""
    mock_upstream.replay("slow", "openai/chat-completions/nonstream-text-gpt4o-mini", delay_before_headers=3)
    mock_upstream.replay("fast", "openai/chat-completions/nonstream-text-gpt4o-mini")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(gateway.v1 + "/chat/completions", json={"model": "up/slow", "messages": MESSAGES})
    result = await gateway.async_openai().chat.completions.create(model="up/fast", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello, World!"
