"""DogStatsD and the refusal metrics through the gateway: a UDP socket stands in for the Datadog Agent."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


async def received_lines(agent: socket.socket, wanted: str) -> list[str]:
    """Datagrams' lines until one starts with ``wanted``."""
    lines: list[str] = []
    while not any(line.startswith(wanted) for line in lines):
        datagram = await asyncio.to_thread(agent.recv, 65535)
        lines += datagram.decode().split("\n")
    return lines


async def test_requests_and_refusals_reach_dogstatsd_and_metrics(
    make_gateway: Any, make_mock_upstream: Any, agent: socket.socket
) -> None:
    mock: MockUpstream = await make_mock_upstream(model_ids=["text"])
    mock.replay("text", "openai/chat-completions/nonstream-text-gpt4o-mini")
    dogstatsd = {"enabled": True, "host": "127.0.0.1", "port": agent.getsockname()[1], "tags": ["env:e2e"]}
    gateway: Gateway = await make_gateway(upstream=mock, extra={
        "observability": {"dogstatsd": dogstatsd}, "rate_limits": {"global": {"rpm": 1}},
    })
    assert gateway.state.recorder.dogstatsd is not None
    body = {"model": "up/text", "messages": MESSAGES}
    async with gateway.http.post("v1/chat/completions", json=body) as resp:
        assert resp.status == 200
    lines = await received_lines(agent, "gomodel.requests:")
    tags = "provider:up,model:text,endpoint:chat.completions,status:200,stream:false,env:e2e"
    assert f"gomodel.requests:1|c|#{tags}" in lines
    assert any(line.startswith("gomodel.tokens:") and line.endswith(f"#{tags},kind:input") for line in lines)
    assert any(line.startswith("gomodel.upstream.attempts:1|c|#provider:up,status:200") for line in lines)

    async with gateway.http.post("v1/chat/completions", json=body) as resp:
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    lines = await received_lines(agent, "gomodel.rate_limit.refusals:")
    refused = "provider:up,model:text,endpoint:chat.completions,status:429,stream:false,env:e2e"
    assert f"gomodel.rate_limit.refusals:1|c|#{refused}" in lines

    text = await gateway.metrics_text()
    assert 'gomodel_rate_limit_refusals_total{dimension="rpm",scope="global"} 1.0' in text
    assert "gomodel_in_flight_streams 0.0" in text
    assert "gomodel_budget_refusals_total 0.0" in text
