"""Pass-through: ``/{provider}/*`` forwarded to the provider's native API with its own key, streamed both ways.

The official SDKs are pointed at ``<gateway>/anthropic`` and ``<gateway>/openai/v1`` as they would be at the
providers; Gemini's native routes are called as Google's REST API documents them. Path tricks are sent on a
raw socket (an HTTP client library would normalise them before they left).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_gemini import MockGemini
from tests.support.mock_upstream import MockUpstream, Scenario, download_bytes, unused_port_url

from .helpers import payloads_of

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MB = 1024 * 1024
#: Credentials a client might send; none may reach a provider.
CLIENT_CREDENTIALS = {
    "x-api-key": CLIENT_KEY, "x-goog-api-key": CLIENT_KEY, "api-key": CLIENT_KEY, "Cookie": "session=client",
}


# -- the gateway in front of three mocks -------------------------------------------------------------------
@pytest.fixture
async def mocks() -> AsyncIterator[dict[str, MockUpstream]]:
    started = {
        "openai": await MockUpstream(echo=True).start(),
        "anthropic": await MockAnthropic().start(),
        "gemini": await MockGemini().start(),
    }
    yield started
    for mock in started.values():
        await mock.close()


def entries(mocks: dict[str, MockUpstream]) -> dict[str, dict[str, Any]]:
    common = {"api_key": UPSTREAM_KEY, "timeout_s": 5, "connect_timeout_s": 2}
    return {
        "openai": {"type": "openai_compatible", "base_url": mocks["openai"].base_url, "models": ["gpt-x"], **common},
        "anthropic": {"type": "anthropic", "base_url": mocks["anthropic"].base_url, "models": ["claude-x"], **common},
        "gemini": {"type": "gemini", "base_url": mocks["gemini"].base_url, "models": ["gemini-x"], **common},
        "mocky": {"type": "mock"},
    }


@pytest.fixture
async def gw(make_gateway: Any, mocks: dict[str, MockUpstream]) -> Gateway:
    gateway: Gateway = await make_gateway(providers=entries(mocks), server={"master_key": CLIENT_KEY})
    return gateway


async def raw_request(gateway: Gateway, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request on a raw socket, the target byte for byte as given; the answer (status, headers, body)."""
    host, port = gateway.server.host, gateway.server.port
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in {**AUTH, **(headers or {})}.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if answer_headers.get("transfer-encoding") == "chunked":
        rest = _dechunk(rest)
    return int(status_line.split()[1]), answer_headers, rest


def _dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


def echoed(body: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(body)
    payload["header_map"] = {k.lower(): v for k, v in payload["headers"]}
    return payload


# -- the anthropic SDK, base_url <gateway>/anthropic ----------------------------------------------------------
ANTHROPIC_MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "text", "text": "Hello there."}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 3},
}


def anthropic_stream() -> Scenario:
    start = {**ANTHROPIC_MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 9, "output_tokens": 1}}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " there."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return Scenario.sse([f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events])


def anthropic_sdk(gw: Gateway) -> anthropic.AsyncAnthropic:
    client = anthropic.AsyncAnthropic(
        base_url=gw.url + "/anthropic", api_key=CLIENT_KEY, max_retries=0, timeout=15.0,
        http_client=anthropic.DefaultAsyncHttpxClient(verify=False),
    )
    gw._closers.append(client.close)
    return client


async def test_anthropic_sdk_messages(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["anthropic"]
    mock.on("claude-x", Scenario(body=json.dumps(ANTHROPIC_MESSAGE).encode()))
    client = anthropic_sdk(gw)
    message = await client.messages.create(
        model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"anthropic-beta": "files-api-2025-04-14"},
    )
    assert message.content[0].text == "Hello there."  # type: ignore[union-attr]
    rec = mock.last("claude-x")
    assert rec.problems == []  # the provider's key in x-api-key, no Authorization, anthropic-version sent
    assert rec.path == "/v1/messages"
    assert rec.headers["x-api-key"] == UPSTREAM_KEY
    assert rec.headers["anthropic-beta"] == "files-api-2025-04-14"
    assert rec.json["model"] == "claude-x"  # the body as the client sent it: no model rewriting
    assert CLIENT_KEY not in str(list(rec.headers.items()))


async def test_anthropic_sdk_stream(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["anthropic"]
    mock.on("claude-x", anthropic_stream())
    client = anthropic_sdk(gw)
    async with client.messages.stream(
        model="claude-x", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Hello there."
    assert final.usage.output_tokens == 3
    assert mock.last("claude-x").problems == []


async def test_anthropic_version_added_when_the_client_sends_none(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["anthropic"]
    mock.on("claude-x", Scenario(body=json.dumps(ANTHROPIC_MESSAGE).encode()))
    body = json.dumps({"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]})
    status, _, _ = await raw_request(gw, "POST", "/anthropic/v1/messages", {"Content-Type": "application/json"},
                                     body.encode())
    assert status == 200
    assert mock.last("claude-x").headers["anthropic-version"] == "2023-06-01"


async def test_anthropic_errors_pass_as_sent(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["anthropic"]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    mock.on("claude-x", Scenario.error(529, error, headers={"retry-after": "3", "request-id": "req_1"}))
    client = anthropic_sdk(gw)
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(model="claude-x", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 529
    assert info.value.body == error
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.response.headers["request-id"] == "req_1"


# -- the openai SDK, base_url <gateway>/openai/v1 --------------------------------------------------------------
CHAT = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def chat_stream() -> Scenario:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-x"}
    return Scenario.sse([
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        "[DONE]",
    ])


def openai_sdk(gw: Gateway) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=gw.url + "/openai/v1", api_key=CLIENT_KEY, max_retries=0, timeout=15.0,
                                http_client=openai.DefaultAsyncHttpxClient(verify=False))
    gw._closers.append(client.close)
    return client


async def test_openai_sdk_chat(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["openai"]
    mock.on("gpt-x", Scenario(body=json.dumps(CHAT).encode()))
    client = openai_sdk(gw)
    answer = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "Hi"}], extra_headers={"OpenAI-Beta": "assistants=v2"},
    )
    assert answer.choices[0].message.content == "Hi!"
    rec = mock.last("gpt-x")
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert rec.headers["OpenAI-Beta"] == "assistants=v2"
    assert rec.json == {"model": "gpt-x", "messages": [{"role": "user", "content": "Hi"}]}  # untouched


async def test_openai_sdk_chat_stream(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mocks["openai"].on("gpt-x", chat_stream())
    client = openai_sdk(gw)
    stream = await client.chat.completions.create(
        model="gpt-x", messages=[{"role": "user", "content": "Hi"}], stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello"
    # No usage was asked for, and none is injected: the pass-through is the provider's API as it is.
    assert "stream_options" not in mocks["openai"].last("gpt-x").json


async def test_openai_sdk_models(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mocks["openai"].model_ids = ["gpt-x", "gpt-y"]
    client = openai_sdk(gw)
    models = [m.id async for m in client.models.list()]
    assert models == ["gpt-x", "gpt-y"]  # the provider's own ids, not the gateway's provider/model ones


async def test_openai_sdk_file_upload_and_content(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["openai"]
    data = b'{"custom_id": "1", "method": "POST", "url": "/v1/chat/completions"}\n' * 5000
    client = openai_sdk(gw)
    created = await client.files.create(file=("batch.jsonl", data), purpose="batch")
    upload = mock.uploads[-1]
    assert upload.sha256 == hashlib.sha256(data).hexdigest() == created.model_extra["sha256"]  # type: ignore[index]
    assert upload.filename == "batch.jsonl"
    assert upload.purpose == "batch"
    assert upload.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert created.bytes == len(data)
    mock.download_size = 300_000
    content = await client.files.content(created.id)
    assert content.content == b"".join(download_bytes(300_000))


async def test_openai_errors_pass_as_sent(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}'
    mocks["openai"].on("gpt-x", Scenario(status=429, body=body, headers={"retry-after": "7",
                                                                         "x-ratelimit-remaining-requests": "0"}))
    status, headers, answer = await raw_request(
        gw, "POST", "/openai/v1/chat/completions", {"Content-Type": "application/json"},
        json.dumps({"model": "gpt-x", "messages": []}).encode(),
    )
    assert (status, answer) == (429, body)
    assert headers["retry-after"] == "7"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-request-id"]


# -- Gemini's native API -------------------------------------------------------------------------------------
GEMINI_ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi from Gemini"}]}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5},
}
GEMINI_REQUEST = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


async def test_gemini_generate_content(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["gemini"]
    mock.on("gemini-x", Scenario(body=json.dumps(GEMINI_ANSWER).encode()))
    async with gw.http.post(
        "gemini/v1beta/models/gemini-x:generateContent?key=" + CLIENT_KEY,
        json=GEMINI_REQUEST, headers={**AUTH, "x-goog-api-key": CLIENT_KEY},
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == GEMINI_ANSWER
    rec = mock.last("gemini-x")
    assert rec.problems == []  # the provider's key in x-goog-api-key, none in the URL
    assert rec.headers["x-goog-api-key"] == UPSTREAM_KEY
    assert rec.query == {}
    assert "authorization" not in rec.headers


async def test_gemini_stream_generate_content_sse(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["gemini"]
    pieces = [{"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}}]} for t in ("Hi ", "from ", "G")]
    mock.on("gemini-s", Scenario.sse([*pieces, {**GEMINI_ANSWER, "candidates": [
        {"content": {"role": "model", "parts": [{"text": "emini"}]}, "finishReason": "STOP"}]}]))
    async with gw.http.post("gemini/v1beta/models/gemini-s:streamGenerateContent?alt=sse",
                            json=GEMINI_REQUEST, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        arrived = [chunk async for chunk in resp.content.iter_any()]
    payloads = payloads_of(b"".join(arrived))
    assert "".join(p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads) == "Hi from Gemini"
    rec = mock.last("gemini-s")
    assert rec.problems == []
    assert rec.query == {"alt": "sse"}
    call = [c for c in gw.records if c.endpoint == "passthrough"][-1]
    assert call.stream and call.provider == "gemini" and call.status == 200


# -- credentials and headers -----------------------------------------------------------------------------------
async def test_client_credentials_never_reach_the_provider(gw: Gateway) -> None:
    for auth in ({"Authorization": f"Bearer {CLIENT_KEY}"}, {"Authorization": "", "x-api-key": CLIENT_KEY}):
        status, _, body = await raw_request(gw, "GET", f"/openai/v1/anything?key={CLIENT_KEY}&keep=1",
                                            {**CLIENT_CREDENTIALS, **auth})
        assert status == 200, body
        seen = echoed(body)
        assert seen["target"] == "/v1/anything?keep=1"
        assert seen["header_map"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in body.decode()
        for name in ("x-api-key", "x-goog-api-key", "api-key", "cookie"):
            assert name not in seen["header_map"]


async def test_master_key_required(gw: Gateway) -> None:
    status, _, body = await raw_request(gw, "GET", "/openai/v1/models", {"Authorization": "Bearer wrong"})
    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    async with aiohttp.ClientSession() as session, session.get(gw.url + "/anthropic/v1/models") as resp:
        assert resp.status == 401
        # An Anthropic SDK at /anthropic gets the gateway's own errors in Anthropic's shape.
        error = await resp.json()
        assert error["type"] == "error" and error["error"]["type"] == "authentication_error"


async def test_hop_by_hop_headers_dropped_both_ways(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    status, _, body = await raw_request(gw, "POST", "/openai/v1/echo", {
        "Connection": "X-Hop-A, close", "X-Hop-A": "1", "Keep-Alive": "timeout=5", "TE": "trailers",
        "Trailer": "X-T", "Proxy-Authorization": "Basic eA==", "Proxy-Connection": "keep-alive",
        "Upgrade": "websocket", "OpenAI-Beta": "assistants=v2", "anthropic-beta": "b1", "X-Custom": "kept",
        "Content-Type": "application/x-custom",
    }, b"abc")
    assert status == 200
    seen = echoed(body)["header_map"]
    for name in ("x-hop-a", "keep-alive", "te", "trailer", "proxy-authorization", "proxy-connection", "upgrade"):
        assert name not in seen, name
    assert seen["openai-beta"] == "assistants=v2"
    assert seen["anthropic-beta"] == "b1"
    assert seen["x-custom"] == "kept"
    assert seen["content-type"] == "application/x-custom"
    assert seen["content-length"] == "3"
    assert seen["host"] == f"127.0.0.1:{mocks['openai'].port}"  # the provider's host, not the gateway's

    mocks["openai"].on("gpt-x", Scenario(body=b"{}", headers={
        "Connection": "X-Resp-Hop", "X-Resp-Hop": "1", "Keep-Alive": "timeout=5", "Proxy-Authenticate": "Basic",
        "Trailer": "X-T", "X-Kept": "yes", "openai-processing-ms": "12",
    }))
    async with gw.http.post("openai/v1/chat/completions", json={"model": "gpt-x"}, headers=AUTH) as resp:
        assert resp.status == 200
        for name in ("X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer"):
            assert name not in resp.headers, name
        assert resp.headers["X-Kept"] == "yes"
        assert resp.headers["openai-processing-ms"] == "12"


# -- paths ----------------------------------------------------------------------------------------------------
KEPT = [
    ("/openai/v1/files", "/v1/files"),
    ("/openai/v1/files/", "/v1/files/"),
    ("/openai/v1", "/v1"),
    ("/openai/v1/a@evil.com", "/v1/a@evil.com"),
    ("/openai/v1/@evil.com/x", "/v1/@evil.com/x"),
    ("/openai/v1/models/m:generate?alt=sse&key=secret", "/v1/models/m:generate?alt=sse"),
    ("/openai/v1/caf%C3%A9?q=%2F..%2F", "/v1/caf%C3%A9?q=%2F..%2F"),
    ("/openai/v1/..x/x..", "/v1/..x/x.."),
    ("http://evil.com/openai/v1/files", "/v1/files"),  # absolute-form target: its host is ignored
    ("http://evil.com:80/openai/v1/x?y=1", "/v1/x?y=1"),
]
REFUSED = [
    "/openai/files", "/openai/v2/files", "/openai/", "/openai/v1/../admin", "/openai/v1/..", "/openai/../v1/x",
    "/openai/v1/%2e%2e/x", "/openai/v1/%2E%2e", "/openai/%2e%2e/%2e%2e/x", "/openai/v1/./files",
    "/openai//evil.com/v1/x", "/openai/v1//evil.com/x", "/openai/v1%2F..%2Fadmin", "/openai/v1/a%2Fb",
    "/openai/v1/a%5Cb", "/openai/v1/a\\b", "/openai/v1\\..\\x", "/openai/v1/%252e%252e/x",
    "/openai/http://evil.com/v1/x", "/openai/https:%2F%2Fevil.com/v1", "/openai/v1/a%00b",
    "/openai/v1/a%0d%0aHost:%20evil.com", "/openai/@evil.com/v1/x", "/openai/v1beta/x", "/openai/V1/x",
]


@pytest.mark.parametrize(("target", "upstream"), KEPT)
async def test_paths_kept_on_the_configured_host(gw: Gateway, mocks: dict[str, MockUpstream], target: str,
                                                 upstream: str) -> None:
    status, _, body = await raw_request(gw, "GET", target)
    assert status == 200, body
    seen = echoed(body)
    assert seen["target"] == upstream
    assert seen["host"] == f"127.0.0.1:{mocks['openai'].port}"


async def test_path_tricks_refused(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    before = len(mocks["openai"].requests)
    for target in REFUSED:
        status, _, body = await raw_request(gw, "GET", target)
        # 400 from the gateway, or a 400 from the HTTP parser in front of it for what no HTTP client may send.
        assert status == 400, (target, status, body)
        if body.startswith(b"{"):
            assert json.loads(body)["error"]["code"] == "invalid_passthrough_path", target
    assert len(mocks["openai"].requests) == before  # nothing reached the provider


@pytest.mark.parametrize("target", ["/v1/foo", "/v1/", "/v2/x", "/admin/x", "/health/x", "/healthz/x", "/ready/x",
                                    "/live/x", "/metrics/x"])
async def test_reserved_names_are_never_providers(gw: Gateway, target: str) -> None:
    status, _, body = await raw_request(gw, "GET", target)
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


async def test_gateway_routes_keep_their_answers(gw: Gateway) -> None:
    status, headers, _ = await raw_request(gw, "GET", "/v1/chat/completions")
    assert status == 405
    assert headers["allow"] == "POST"
    status, _, body = await raw_request(gw, "GET", "/v1/models")
    assert status == 200
    assert {m["id"] for m in json.loads(body)["data"]} >= {"openai/gpt-x", "anthropic/claude-x"}


async def test_unknown_provider_404(gw: Gateway) -> None:
    status, _, body = await raw_request(gw, "POST", "/nope/v1/chat/completions", {"Content-Type": "application/json"},
                                        b"{}")
    assert status == 404
    error = json.loads(body)["error"]
    assert error["code"] == "provider_not_found"
    assert error["type"] == "invalid_request_error"
    assert "anthropic, gemini, mocky, openai" in error["message"]


async def test_mock_provider_has_no_passthrough(gw: Gateway) -> None:
    status, _, body = await raw_request(gw, "GET", "/mocky/v1/models")
    assert status == 400
    assert json.loads(body)["error"]["code"] == "passthrough_not_supported"


async def test_every_method_and_metrics(gw: Gateway) -> None:
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        status, _, body = await raw_request(gw, method, "/openai/v1/things/1", body=b"x" if method == "PUT" else b"")
        assert status == 200, (method, body)
        seen = echoed(body)
        assert seen["method"] == method
        assert seen["body_size"] == (1 if method == "PUT" else 0)
        if method in ("POST", "PATCH"):
            assert seen["header_map"]["content-length"] == "0"
    status, _, body = await raw_request(gw, "HEAD", "/openai/v1/files/f/content")
    assert status == 200
    assert body == b""
    text = await gw.metrics_text()
    assert 'endpoint="passthrough"' in text
    assert 'gomodel_requests_total{endpoint="passthrough",model="",provider="openai",status="200",stream="false"}' \
        in text


# -- streaming: uploads, downloads, failures --------------------------------------------------------------------
async def _source(size: int, digest: Any, piece: int = 256 * 1024) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (piece // 256)
    sent = 0
    while sent < size:
        chunk = block[: min(piece, size - sent)]
        if sent == 0:
            chunk = b"first" + chunk[5:]  # not every block alike: order and content both checked by the hash
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


def _vm_hwm_reset() -> bool:
    """Reset this process's peak RSS (VmHWM), where Linux allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _vm_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
async def test_large_upload_streams_with_flat_memory(gw: Gateway, mocks: dict[str, MockUpstream],
                                                     with_length: bool) -> None:
    """64 MiB through the gateway (client, gateway and mock share this process: all of them stream)."""
    size = 64 * MB if with_length else 24 * MB
    digest = hashlib.sha256()
    headers = {**AUTH, "Content-Type": "application/octet-stream"}
    if with_length:
        headers["Content-Length"] = str(size)
    rss_before = _vm_rss()
    hwm = _vm_hwm_reset()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        async with gw.http.post("openai/v1/files", data=_source(size, digest), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    upload = mocks["openai"].uploads[-1]
    assert answer["bytes"] == upload.size == size
    assert answer["sha256"] == upload.sha256 == digest.hexdigest()
    assert upload.reads > 50  # it arrived in many pieces: it was never a single buffer
    assert upload.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    if with_length:
        assert upload.headers["Content-Length"] == str(size)
    else:
        assert upload.headers["Transfer-Encoding"] == "chunked"
    growth = peak - base
    assert growth < 20 * MB, f"Python memory grew by {growth / MB:.1f} MiB during a {size // MB} MiB upload"
    if hwm:
        rss_growth = _vm_hwm() - rss_before
        assert rss_growth < 40 * MB, f"peak RSS grew by {rss_growth / MB:.1f} MiB during a {size // MB} MiB upload"
    call = [c for c in gw.records if c.endpoint == "passthrough"][-1]
    assert call.status == 200 and call.provider == "openai"


async def test_small_bodies_sent_whole_and_body_limit_does_not_apply(make_gateway: Any,
                                                                     mocks: dict[str, MockUpstream]) -> None:
    gateway: Gateway = await make_gateway(providers=entries(mocks), server={"master_key": CLIENT_KEY,
                                                                            "body_limit_mb": 0.01})
    data = b"z" * (2 * MB)
    async with gateway.http.post("openai/v1/files", data=data, headers=AUTH) as resp:
        assert resp.status == 200
        assert (await resp.json())["sha256"] == hashlib.sha256(data).hexdigest()
    # The JSON routes keep their limit.
    async with gateway.http.post("v1/chat/completions", data=b"{" + b" " * 20000 + b"}", headers=AUTH) as resp:
        assert resp.status == 413


async def test_large_download_streams(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    size = 48 * MB
    mocks["openai"].download_size = size
    expected = hashlib.sha256()
    for chunk in download_bytes(size):
        expected.update(chunk)
    got = hashlib.sha256()
    received = pieces = 0
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        async with gw.http.get("openai/v1/files/file-1/content", headers=AUTH) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(size)
            async for chunk in resp.content.iter_any():
                got.update(chunk)
                received += len(chunk)
                pieces += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == size
    assert got.hexdigest() == expected.hexdigest()
    assert pieces > 50
    assert peak - base < 20 * MB


async def test_client_disconnect_mid_download_cancels_the_upstream(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["openai"]
    mock.download_size = 64 * MB
    mock.download_stall_after = 1 * MB
    async with aiohttp.ClientSession() as session:
        resp = await session.get(gw.url + "/openai/v1/files/file-1/content", headers=AUTH)
        assert resp.status == 200
        await resp.content.readexactly(512 * 1024)
        resp.close()  # the client goes away with most of the body unread
    download = mock.downloads[-1]
    await asyncio.wait_for(download.client_gone.wait(), 5)
    assert download.written < 64 * MB
    call = []
    for _ in range(100):
        call = [c for c in gw.records if c.endpoint == "passthrough"]
        if call:
            break
        await asyncio.sleep(0.02)
    assert call[-1].status == 499


async def test_upstream_failure_mid_body_is_not_a_clean_end(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    mock = mocks["openai"]
    # A JSON body cut by the provider: the client's connection is aborted, it sees the body incomplete.
    mock.on("gpt-cut", Scenario(body=b'{"data": "' + b"x" * 100_000 + b'"}', stream=True, split="bytes",
                                drop_after=3))
    with pytest.raises(aiohttp.ClientPayloadError):
        async with gw.http.post("openai/v1/chat/completions", json={"model": "gpt-cut"}, headers=AUTH) as resp:
            assert resp.status == 200
            await resp.read()
    # An SSE stream cut by the provider ends with an error event, never a fake end.
    mock.on("gpt-sse-cut", Scenario.sse([{"n": i} for i in range(10)], drop_after=2))
    async with gw.http.post("openai/v1/chat/completions", json={"model": "gpt-sse-cut"}, headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.read()
    payloads = payloads_of(body)
    assert payloads[:2] == [{"n": 0}, {"n": 1}]
    assert payloads[-1]["error"]["type"] == "upstream_error"
    calls = [c for c in gw.records if c.endpoint == "passthrough"]
    assert calls[-1].outcome == "upstream_error"


async def test_unreachable_provider(make_gateway: Any, mocks: dict[str, MockUpstream]) -> None:
    providers = entries(mocks)
    providers["openai"]["base_url"] = unused_port_url()
    gateway: Gateway = await make_gateway(providers=providers, server={"master_key": CLIENT_KEY})
    status, _, body = await raw_request(gateway, "GET", "/openai/v1/models")
    assert status == 502
    assert json.loads(body)["error"]["code"] == "upstream_unreachable"


async def test_upload_refused_early_by_the_provider(gw: Gateway, mocks: dict[str, MockUpstream]) -> None:
    """The provider answers before the body is all sent (here: a path it does not serve for POST)."""
    with contextlib.suppress(aiohttp.ClientError):
        async with gw.http.post("anthropic/v1/nothing-here", data=b"y" * (4 * MB), headers=AUTH) as resp:
            assert resp.status in (404, 405)
    # The gateway is fine afterwards.
    mocks["openai"].on("gpt-x", Scenario(body=json.dumps(CHAT).encode()))
    async with gw.http.post("openai/v1/chat/completions", json={"model": "gpt-x"}, headers=AUTH) as resp:
        assert resp.status == 200


async def test_azure_key_header_and_paths(make_gateway: Any) -> None:
    """Azure's base URL has no path once ``/openai`` is taken off: its SDK's paths pass as they are."""
    mock = await MockUpstream(echo=True).start()
    try:
        gateway: Gateway = await make_gateway(providers={"az": {
            "type": "azure", "base_url": mock.url + "/openai", "api_key": UPSTREAM_KEY, "models": ["dep"],
            "timeout_s": 5, "connect_timeout_s": 2,
        }}, server={"master_key": CLIENT_KEY})
        target = "/az/openai/deployments/dep/chat/completions?api-version=2024-10-21"
        status, _, body = await raw_request(gateway, "POST", target, {"api-key": CLIENT_KEY}, b"{}")
        assert status == 200, body
        seen = echoed(body)
        assert seen["target"] == "/openai/deployments/dep/chat/completions?api-version=2024-10-21"
        assert seen["header_map"]["api-key"] == UPSTREAM_KEY
        assert "authorization" not in seen["header_map"]
        status, _, _ = await raw_request(gateway, "GET", "/az/../openai/x")
        assert status == 400
    finally:
        await mock.close()
