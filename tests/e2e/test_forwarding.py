"""What reaches the provider: the request as the client wrote it, but for the model id and the credentials."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.support.fixtures import fixture_names, load_fixture
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway, provider_config
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

REQUEST_FIXTURES = [
    name for folder in ("openai/chat-completions", "groq/chat-completions", "openrouter/chat-completions")
    for name in fixture_names(folder)
]


def _with_request(names: list[str]) -> list[str]:
    return [n for n in names if load_fixture(n).request is not None] if names else []


async def test_every_field_reaches_the_upstream_unchanged(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("gpt-4o-mini", "openai/chat-completions/nonstream-text-gpt4o-mini")
    sent: dict[str, Any] = {
        "model": "up/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "héllo ✓ \u2028 \"quoted\" \\ 😀"}]},
        ],
        "temperature": 0.2, "top_p": 1, "n": 1, "seed": 7, "max_completion_tokens": 64,
        "stop": ["\n\n"], "logit_bias": {"50256": -100}, "user": "u-1", "metadata": {"a": "b"},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": "auto", "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "frequency_penalty": -0.5, "presence_penalty": 1.5e-3, "store": False,
        "x_unknown_vendor_field": {"nested": [1, 2.5, None, True, {"deep": "value"}], "empty": {}},
        "provider": {"order": ["Google"], "allow_fallbacks": False},  # OpenRouter's routing field
        "reasoning_effort": "low",
        "stream": False,
    }
    async with gateway.http.post("v1/chat/completions", json=sent, headers={"Authorization": f"Bearer {CLIENT_KEY}"}
                                 ) as resp:
        assert resp.status == 200
    received = mock_upstream.last("gpt-4o-mini")
    expected = {**sent, "model": "gpt-4o-mini"}
    assert received.json == expected
    assert list(received.json) == list(expected)  # the order of the members is kept too
    assert received.path == "/v1/chat/completions" and received.method == "POST"


@pytest.mark.parametrize("fixture", _with_request(REQUEST_FIXTURES))
async def test_recorded_requests_reach_the_upstream_unchanged(
    gateway: Gateway, mock_upstream: MockUpstream, fixture: str
) -> None:
    fx = load_fixture(fixture)
    original = fx.request
    assert original is not None
    body = copy.deepcopy(original)
    upstream_model = original["model"]
    body["model"] = f"up/{upstream_model}"
    mock_upstream.replay(upstream_model, fx)
    async with gateway.http.post("v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}) as resp:
        await resp.read()
        assert resp.status == fx.status
    expected = copy.deepcopy(original)
    if original.get("stream") is True and not (original.get("stream_options") or {}).get("include_usage"):
        # The only addition the gateway makes: it asks for usage to account the stream.
        expected["stream_options"] = {**(original.get("stream_options") or {}), "include_usage": True}
    assert mock_upstream.last(upstream_model).json == expected


async def test_embeddings_request_forwarded(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/embeddings/base64-dims128-text-embedding-3-small")
    assert fx.request is not None
    mock_upstream.replay("text-embedding-3-small", fx)
    sent = {**fx.request, "model": "up/text-embedding-3-small", "x_extra": [1, {"two": 2}]}
    async with gateway.http.post("v1/embeddings", json=sent) as resp:
        assert resp.status == 200
        assert await resp.read() == fx.body
    received = mock_upstream.last("text-embedding-3-small")
    assert received.path == "/v1/embeddings"
    assert received.json == {**sent, "model": "text-embedding-3-small"}


@pytest.mark.parametrize("path", ["v1/chat/completions", "v1/embeddings"])
async def test_client_credentials_never_reach_the_upstream(
    gateway: Gateway, mock_upstream: MockUpstream, path: str
) -> None:
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    client_headers = {
        "Authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_KEY, "api-key": CLIENT_KEY,
        "OpenAI-Organization": "org-client", "OpenAI-Project": "proj-client", "Cookie": f"session={CLIENT_KEY}",
    }
    async with gateway.http.post(path, json={"model": "up/m", "messages": MESSAGES, "input": "x"},
                                 headers=client_headers) as resp:
        assert resp.status == 200
    received = mock_upstream.last("m")
    assert received.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    flat = "\n".join(f"{k}: {v}" for k, v in received.headers.items())
    assert CLIENT_KEY not in flat
    for name in ("x-api-key", "api-key", "OpenAI-Organization", "OpenAI-Project", "Cookie"):
        assert name not in received.headers
    assert received.headers["Content-Type"] == "application/json"


async def test_sdk_key_is_replaced_by_the_providers(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    await gateway.async_openai(api_key=CLIENT_KEY).chat.completions.create(
        model="up/m", messages=MESSAGES, extra_body={"custom_flag": {"keep": True}}
    )
    received = mock_upstream.last("m")
    assert received.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received.json["custom_flag"] == {"keep": True} and received.json["model"] == "m"


async def test_provider_without_key_sends_no_authorization(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    gateway = await make_gateway(providers={"local": provider_config(mock_upstream.base_url, api_key="")})
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    async with gateway.http.post("v1/chat/completions", json={"model": "local/m", "messages": MESSAGES},
                                 headers={"Authorization": f"Bearer {CLIENT_KEY}"}) as resp:
        assert resp.status == 200
    assert "Authorization" not in mock_upstream.last("m").headers


async def test_provider_headers_and_key_rotation(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    provider = provider_config(mock_upstream.base_url, api_key="", api_keys=["key-a", "key-b"],
                               headers={"HTTP-Referer": "https://example.test", "X-Title": "gomodel"})
    gateway = await make_gateway(providers={"up": provider})
    mock_upstream.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    for _ in range(4):
        async with gateway.http.post("v1/chat/completions", json={"model": "up/m", "messages": MESSAGES}) as resp:
            assert resp.status == 200
    chats = mock_upstream.requests_for("m")
    # Round robin over the keys, across every request to the provider (its model list included).
    every = [r.headers["Authorization"] for r in mock_upstream.requests]
    assert every == ["Bearer key-a", "Bearer key-b", "Bearer key-a", "Bearer key-b", "Bearer key-a"]
    assert mock_upstream.requests[0].path == "/v1/models" and len(chats) == 4
    assert all(r.headers["HTTP-Referer"] == "https://example.test" and r.headers["X-Title"] == "gomodel"
               for r in chats)


async def test_stream_request_keeps_client_include_usage(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    sent = {"model": "up/m", "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": True, "x": 1}}
    async with gateway.http.post("v1/chat/completions", json=sent) as resp:
        await resp.read()
    assert mock_upstream.last("m").json == {**sent, "model": "m"}
