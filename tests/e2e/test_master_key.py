"""With ``server.master_key`` set, the API needs it; probes and metrics stay open; it never reaches a provider."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.support.gateway import UPSTREAM_KEY, Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

MASTER = "gw-master-key-7f3a9c1e5b"
V1_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "v1/chat/completions", {"model": "up/m", "messages": MESSAGES}),
    ("POST", "v1/chat/completions", {"model": "up/m", "messages": MESSAGES, "stream": True}),
    ("POST", "v1/embeddings", {"model": "up/e", "input": "x"}),
    ("GET", "v1/models", None),
    ("GET", "v1/models/up/m", None),
]


@pytest.fixture
async def locked(make_gateway: Any, make_mock_upstream: Any) -> tuple[Gateway, MockUpstream]:
    mock: MockUpstream = await make_mock_upstream(model_ids=["m", "e"])
    mock.replay("m", "openai/chat-completions/nonstream-text-gpt4o-mini")
    mock.replay("e", "openai/embeddings/float-1536d-text-embedding-3-small")
    gateway: Gateway = await make_gateway(upstream=mock, server={"master_key": MASTER})
    return gateway, mock


def _ids(r: tuple[str, str, Any]) -> str:
    return f"{r[0]} {r[1]}{' stream' if r[2] and r[2].get('stream') else ''}"


REFUSED_HEADERS: list[dict[str, str]] = [
    {}, {"Authorization": "Bearer wrong-key"}, {"x-api-key": "wrong-key"}, {"Authorization": f"Basic {MASTER}"},
    {"Authorization": "Bearer "}, {"Authorization": f"Bearer {MASTER}x"}, {"Authorization": f"Bearer {MASTER[:-1]}"},
]
ACCEPTED_HEADERS: list[dict[str, str]] = [
    {"Authorization": f"Bearer {MASTER}"}, {"x-api-key": MASTER}, {"authorization": f"bearer {MASTER}"},
]


@pytest.mark.parametrize("req", V1_REQUESTS, ids=[_ids(r) for r in V1_REQUESTS])
async def test_v1_refuses_without_the_key(locked: tuple[Gateway, MockUpstream], req: tuple[str, str, Any]) -> None:
    gateway, mock = locked
    before = len(mock.requests)
    method, path, body = req
    for headers in REFUSED_HEADERS:
        async with gateway.http.request(method, path, json=body, headers=headers) as resp:
            raw = await resp.read()
            assert resp.status == 401, headers
            assert resp.headers["Content-Type"].startswith("application/json")
            assert resp.headers["X-Request-ID"]
        error = json.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        assert "Bearer" in error["message"] or "Invalid" in error["message"]
        assert MASTER.encode() not in raw
    assert len(mock.requests) == before  # nothing reached the provider


@pytest.mark.parametrize("req", V1_REQUESTS, ids=[_ids(r) for r in V1_REQUESTS])
async def test_v1_accepts_the_key(locked: tuple[Gateway, MockUpstream], req: tuple[str, str, Any]) -> None:
    gateway, mock = locked
    method, path, body = req
    for headers in ACCEPTED_HEADERS:
        async with gateway.http.request(method, path, json=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, headers
        if method == "POST":
            received = mock.last()
            assert received.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
            assert "x-api-key" not in received.headers
            assert MASTER not in str(dict(received.headers))


async def test_probes_and_metrics_stay_open(locked: tuple[Gateway, MockUpstream]) -> None:
    gateway, _ = locked
    for path in ["health", "healthz", "live", "ready", "metrics"]:
        async with gateway.http.get(path) as resp:
            assert resp.status == 200, path


async def test_sdk_with_and_without_the_key(locked: tuple[Gateway, MockUpstream]) -> None:
    gateway, mock = locked
    with pytest.raises(openai.AuthenticationError) as caught:
        await gateway.async_openai(api_key="not-the-key").chat.completions.create(model="up/m", messages=MESSAGES)
    assert caught.value.status_code == 401 and caught.value.body["type"] == "authentication_error"
    sync = gateway.openai(api_key="not-the-key")
    with pytest.raises(openai.AuthenticationError):
        await asyncio.to_thread(sync.models.list)

    result = await gateway.async_openai(api_key=MASTER).chat.completions.create(model="up/m", messages=MESSAGES)
    assert result.choices[0].message.content == "Hello, World!"
    assert mock.last("m").headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    page = await asyncio.to_thread(gateway.openai(api_key=MASTER).models.list)
    assert [m.id for m in page.data] == ["up/m", "up/e"]
