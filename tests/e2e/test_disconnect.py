"""A client that goes away stops the provider's request at once, and the call is still accounted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.support.fixtures import load_fixture
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

STREAM_FIXTURE = "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini"


@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "no_usage_option"])
async def test_client_gone_mid_stream_cancels_upstream_and_is_accounted(
    gateway: Gateway, mock_upstream: MockUpstream, include_usage: bool
) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    # Three content events, then the provider is slow: the usage chunk never comes.
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events), stall_after=4, stall_s=30)
    body: dict[str, Any] = {"model": "up/m", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(gateway.v1 + "/chat/completions", json=body, headers={"X-Request-ID": "gone-1"})
        assert resp.status == 200
        received = b""
        async with asyncio.timeout(2):
            while received.count(b"\n\n") < 4:
                received += await resp.content.readany()
        resp.close()  # the client hangs up
        hung_up = time.perf_counter()
    finally:
        await session.close()
    upstream = mock_upstream.last("m")
    await asyncio.wait_for(upstream.client_gone.wait(), 1.0)
    assert upstream.client_gone_at is not None and upstream.client_gone_at - hung_up < 1.0
    assert upstream.pieces_written == 4

    record = await gateway.record("gone-1")
    assert record.outcome == "client_disconnected"
    assert record.status == 499
    assert record.stream and record.provider == "up" and record.model == "m"
    assert record.usage is not None and record.usage.estimated
    assert record.usage.input_tokens > 0
    assert record.usage.output_tokens >= 3  # one per content event that reached the client


async def test_sdk_closing_a_stream_cancels_upstream(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    fx = load_fixture(STREAM_FIXTURE)
    mock_upstream.replay("m", fx, split="events", max_pieces=len(fx.events), stall_after=3, stall_s=30)
    client = gateway.async_openai()
    stream = await client.chat.completions.create(
        model="up/m", messages=MESSAGES, stream=True, extra_headers={"X-Request-ID": "sdk-gone"}
    )
    first = await stream.__anext__()
    assert first.choices[0].delta.role == "assistant"
    await stream.close()
    await asyncio.wait_for(mock_upstream.last("m").client_gone.wait(), 1.0)
    record = await gateway.record("sdk-gone")
    assert record.outcome == "client_disconnected"
    assert record.usage is not None and record.usage.estimated


async def test_client_gone_while_waiting_for_headers(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("slow", "openai/chat-completions/nonstream-text-gpt4o-mini", delay_before_headers=30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.3)) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(gateway.v1 + "/chat/completions", json={"model": "up/slow", "messages": MESSAGES},
                               headers={"X-Request-ID": "gone-early"})
    await asyncio.wait_for(mock_upstream.last("slow").client_gone.wait(), 1.0)
    record = await gateway.record("gone-early")
    assert record.outcome == "client_disconnected" and record.status == 499
    assert 'gomodel_in_flight_requests{endpoint="chat.completions"} 0.0' in await gateway.metrics_text()


async def test_completed_stream_is_not_a_disconnect(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    """The contrast: a stream read to its end leaves the provider's request finished, not cancelled."""
    mock_upstream.replay("m", STREAM_FIXTURE)
    async with gateway.http.post(
        "v1/chat/completions", json={"model": "up/m", "messages": MESSAGES, "stream": True},
        headers={"X-Request-ID": "whole"},
    ) as resp:
        await resp.read()
    upstream = mock_upstream.last("m")
    await asyncio.wait_for(upstream.done.wait(), 1.0)
    assert not upstream.client_gone.is_set()
    record = await gateway.record("whole")
    assert record.outcome == "ok" and record.usage is not None and not record.usage.estimated
