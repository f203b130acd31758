"""DogStatsD: datagrams in the DogStatsD format, received by a real UDP socket on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from gomodel_proxy.config.schema import DogStatsDConfig
from gomodel_proxy.core.types import Attempt, CallRecord, FailoverStep, Usage
from gomodel_proxy.observability.dogstatsd import DogStatsD, tag


@pytest.fixture
def agent() -> Iterator[socket.socket]:
    """A stand-in for the Datadog Agent: a UDP socket on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def client_for(agent: socket.socket, **kwargs: object) -> DogStatsD:
    config = DogStatsDConfig(enabled=True, host="127.0.0.1", port=agent.getsockname()[1],
                             tags=["env:test", "team:ai gw"])
    for name, value in kwargs.items():
        setattr(config, name, value)
    return DogStatsD(config)


def receive(agent: socket.socket, datagrams: int = 1) -> list[bytes]:
    return [agent.recv(65535) for _ in range(datagrams)]


def lines_of(datagrams: list[bytes]) -> list[str]:
    return [line for d in datagrams for line in d.decode().split("\n")]


def a_call() -> CallRecord:
    t0 = time.perf_counter()
    call = CallRecord(request_id="req-secret-id", endpoint="chat.completions", started=t0, stream=True,
                      model_requested="up/gpt-4o", provider="up", model="gpt-4o", status=200,
                      usage=Usage(10, 20, cached_tokens=3), cost=Decimal("0.0015"), cached=False)
    call.attempts = [Attempt("up", "aaaa", t0, t0 + 0.001, error="timeout"), Attempt("up", "bbbb", t0, t0, 200)]
    call.failovers = (FailoverStep("first/m", "up/gpt-4o", "status_503"),)
    call.first_byte_at = t0 + 0.005
    call.finished = t0 + 0.010
    return call


def test_a_request_in_dogstatsd_format(agent: socket.socket) -> None:
    client = client_for(agent)
    try:
        client.record(a_call())  # outside an event loop: sent at once
        lines = lines_of(receive(agent))
    finally:
        client.close()
    tags = "#provider:up,model:gpt-4o,endpoint:chat.completions,status:200,stream:true,env:test,team:ai_gw"
    assert lines[0] == f"gomodel.requests:1|c|{tags}"
    by_name = {line.split(":", 1)[0]: line for line in lines}
    duration = by_name["gomodel.request.duration"]
    value, kind, line_tags = duration.split(":", 1)[1].split("|")
    assert kind == "ms" and line_tags == tags and float(value) == pytest.approx(10.0, abs=0.01)
    assert by_name["gomodel.time_to_first_byte"].split("|")[1] == "ms"
    assert by_name["gomodel.overhead"].split("|")[1] == "ms"
    assert f"gomodel.tokens:10|c|{tags},kind:input" in lines
    assert f"gomodel.tokens:20|c|{tags},kind:output" in lines
    assert f"gomodel.tokens:3|c|{tags},kind:cached" in lines
    assert f"gomodel.cost_usd:0.0015|c|{tags}" in lines
    assert "gomodel.upstream.attempts:1|c|#provider:up,error:timeout,env:test,team:ai_gw" in lines
    assert "gomodel.upstream.attempts:1|c|#provider:up,status:200,env:test,team:ai_gw" in lines
    assert "gomodel.failovers:1|c|#from_provider:first,to_provider:up,reason:status_503,env:test,team:ai_gw" in lines
    assert not any("cache.hits" in line or "refusals" in line for line in lines)
    assert all("req-secret-id" not in line and "up/gpt-4o" not in line for line in lines)  # bounded tags only
    assert client.sent == 1 and client.dropped == 0


def test_refusals_and_cache_hits(agent: socket.socket) -> None:
    client = client_for(agent, prefix="gw.", tags=[])
    try:
        for code in ("rate_limit_exceeded", "budget_exceeded"):
            client.record(CallRecord(request_id="r", endpoint="chat.completions", status=429, error_code=code))
        client.record(CallRecord(request_id="r", endpoint="chat.completions", status=200, cached=True))
        lines = lines_of(receive(agent, 3))
    finally:
        client.close()
    assert "gw.rate_limit.refusals:1|c|#provider:,model:,endpoint:chat.completions,status:429,stream:false" in lines
    assert "gw.budget.refusals:1|c|#provider:,model:,endpoint:chat.completions,status:429,stream:false" in lines
    assert "gw.cache.hits:1|c|#provider:,model:,endpoint:chat.completions,status:200,stream:false" in lines


async def test_batched_per_loop_turn(agent: socket.socket) -> None:
    client = client_for(agent, prefix="")
    try:
        for _ in range(3):
            client.record(CallRecord(request_id="r", endpoint="embeddings", status=200))
        assert client.sent == 0  # queued until the loop's turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        datagram = receive(agent)[0].decode()
    finally:
        client.close()
    assert datagram.count("requests:1|c|") == 3 and client.sent == 1
    assert datagram.startswith("requests:1|c|#provider:,model:,endpoint:embeddings")


def test_datagrams_stay_under_the_packet_size(agent: socket.socket) -> None:
    config = DogStatsDConfig(enabled=True, host="127.0.0.1", port=agent.getsockname()[1])
    client = DogStatsD(config, max_packet=300)
    try:
        for _ in range(5):
            client.record(a_call())
        assert client.sent > 5
        datagrams = receive(agent, client.sent)
    finally:
        client.close()
    assert all(len(d) <= 300 for d in datagrams)
    assert sum(line.startswith("gomodel.requests:") for line in lines_of(datagrams)) == 5


def test_never_raises(agent: socket.socket) -> None:
    client = client_for(agent)
    client.sock.close()  # every send fails now
    client.record(a_call())
    assert client.dropped > 0 and client.sent == 0
    broken = CallRecord(request_id="r", endpoint="x")
    broken.usage = "not usage"  # type: ignore[assignment]
    client.record(broken)  # a record it cannot read is dropped too
    client.close()


def test_tags_are_sanitised() -> None:
    assert tag("model", "a|b,c#d e\nf") == "model:a_b_c_d_e_f"
    assert tag("model", "org/model-1.5:latest") == "model:org/model-1.5:latest"
