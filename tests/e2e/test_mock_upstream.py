"""The mock upstream itself: the other tests are only as good as its replay and its fault injection."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.support.fixtures import load_fixture
from tests.support.mock_upstream import MockUpstream, Scenario, unused_port_url


async def test_replays_sse_byte_exact_in_several_pieces(mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock_upstream.replay("gpt-4o-mini", fx)
    reads = []
    async with aiohttp.ClientSession() as session, session.post(
        mock_upstream.base_url + "/chat/completions", json={"model": "gpt-4o-mini", "stream": True},
        headers={"Authorization": "Bearer k"},
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        async for data in resp.content.iter_any():
            reads.append(data)
    assert b"".join(reads) == fx.body
    rec = mock_upstream.last("gpt-4o-mini")
    assert rec.pieces_written > 5
    assert rec.headers["Authorization"] == "Bearer k"
    assert rec.json == {"model": "gpt-4o-mini", "stream": True}
    assert rec.done.is_set() and not rec.client_gone.is_set()


async def test_reframes_chunk_lines_as_sse(mock_upstream: MockUpstream) -> None:
    fx = load_fixture("groq/chat-completions/stream-tool-call-x-groq")
    assert fx.kind == "chunks"
    lines = [line for line in fx.raw.splitlines() if line.strip()]
    mock_upstream.replay("m", fx, split="bytes")
    async with aiohttp.ClientSession() as session, session.post(
        mock_upstream.base_url + "/chat/completions", json={"model": "m"}
    ) as resp:
        body = await resp.read()
    assert body == b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


async def test_json_replay_keeps_status_and_bytes(mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/error-401-invalid-api-key-2024")
    mock_upstream.replay("m", fx)
    async with aiohttp.ClientSession() as session, session.post(
        mock_upstream.base_url + "/chat/completions", data=b'{"model":"m"}'
    ) as resp:
        assert resp.status == 401
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert resp.headers["x-request-id"] == "55f4f12fef392b7fbc0c647e97a8e6b2"
        assert await resp.read() == fx.raw
    assert mock_upstream.last().body == b'{"model":"m"}'


async def test_drop_cuts_the_connection_mid_body(mock_upstream: MockUpstream) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-no-usage-gpt4o-mini")
    mock_upstream.replay("m", fx, drop_after=2)
    received = b""
    async with aiohttp.ClientSession() as session, session.post(
        mock_upstream.base_url + "/chat/completions", json={"model": "m"}
    ) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            async for data in resp.content.iter_any():
                received += data
    pieces = Scenario.from_fixture(fx).split_body()
    assert received == b"".join(pieces[:2])
    rec = mock_upstream.last()
    await asyncio.wait_for(rec.done.wait(), 2)
    assert rec.dropped_by_mock and not rec.client_gone.is_set()


async def test_sees_the_client_go_away(mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("m", "openai/chat-completions/stream-text-no-usage-gpt4o-mini", stall_after=1)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(mock_upstream.base_url + "/chat/completions", json={"model": "m"})
        await resp.content.readany()
        resp.close()
    rec = mock_upstream.last()
    await asyncio.wait_for(rec.client_gone.wait(), 1)
    assert rec.pieces_written == 1


async def test_delay_before_headers(mock_upstream: MockUpstream) -> None:
    mock_upstream.fail("m", 503, "busy", delay_before_headers=0.3)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(mock_upstream.base_url + "/chat/completions", json={"model": "m"},
                                    timeout=aiohttp.ClientTimeout(total=0.1)):
                pass
        async with session.post(mock_upstream.base_url + "/chat/completions", json={"model": "m"}) as resp:
            assert resp.status == 503 and await resp.text() == "busy"


async def test_unknown_model_and_model_list(mock_upstream: MockUpstream) -> None:
    mock_upstream.replay("known", "openai/chat-completions/nonstream-text-gpt4o-mini")
    async with aiohttp.ClientSession() as session:
        async with session.post(mock_upstream.base_url + "/chat/completions", json={"model": "other"}) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "mock_no_scenario"
        async with session.get(mock_upstream.base_url + "/models") as resp:
            assert [m["id"] for m in (await resp.json())["data"]] == ["known"]


async def test_unused_port_refuses() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(unused_port_url() + "/models")
