"""Failover chains, aliases and virtual models end to end: the gateway in front of two or three mock upstreams.

Each mock is a provider of its own (``a``, ``b``: OpenAI-compatible; ``claude``: Anthropic's API). Faults are
injected per model on the primary and the tests check who answered: the upstreams' received requests, the
``X-GoModel-Provider`` / ``X-GoModel-Model`` headers, the body's ``model`` and the usage record.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gomodel_proxy.core.types import FailoverStep
from gomodel_proxy.llmclient import LLMClient
from tests.support.gateway import UPSTREAM_KEY, Gateway, provider_config
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_upstream import MockUpstream, Scenario, unused_port_url

from .helpers import MESSAGES, payloads_of
from .test_resilience import metric

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeMock = Callable[..., Awaitable[MockUpstream]]
NO_RETRY = {"max_attempts": 1}


def ok(model: str, text: str = "hi", **overrides: Any) -> Scenario:
    body = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
    return Scenario(status=200, body=json.dumps(body).encode(), **overrides)


def stream_ok(model: str, words: list[str], **overrides: Any) -> Scenario:
    events: list[Any] = [
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
         "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words
    ]
    events.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}})
    events.append("[DONE]")
    return Scenario.sse(events, **overrides)


def fail(status: int, **headers: str) -> Scenario:
    body = {"error": {"message": f"upstream says {status}", "type": "server_error", "param": None, "code": None}}
    return Scenario.error(status, body, headers=dict(headers))


def up(mock: MockUpstream | str, **overrides: Any) -> dict[str, Any]:
    base = mock if isinstance(mock, str) else mock.base_url
    return provider_config(base, retry=NO_RETRY, **overrides)


async def chat(gateway: Gateway, model: str, **extra: Any) -> tuple[int, Any, bytes]:
    async with gateway.http.post("v1/chat/completions", json={"model": model, "messages": MESSAGES, **extra}) as r:
        return r.status, r.headers, await r.read()


def llm(gateway: Gateway, name: str) -> LLMClient:
    client = getattr(gateway.state.providers[name], "llm_client")  # noqa: B009
    assert isinstance(client, LLMClient)
    return client


async def two(make_mock_upstream: MakeMock) -> tuple[MockUpstream, MockUpstream]:
    return await make_mock_upstream(model_ids=["m"]), await make_mock_upstream(model_ids=["m2"])


# -- failover chains ---------------------------------------------------------------------------------------

CHAIN = "failover:\n  a/m: [b/m2]\ntriggers:\n  status_codes: [429, 500, 502, 503, 504]\n  timeout_ms: 300\n"


async def test_primary_errors_fail_over_and_the_answer_names_who_answered(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    b.on("m2", ok("m2", "from b"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    for status in (500, 503, 429):
        a.on("m", fail(status, **({"retry-after": "1"} if status == 429 else {})))
        got, headers, raw = await chat(gateway, "a/m")
        assert got == 200, raw
        body = json.loads(raw)
        assert body["model"] == "m2" and body["choices"][0]["message"]["content"] == "from b"
        assert headers["X-GoModel-Provider"] == "b" and headers["X-GoModel-Model"] == "m2"
        record = await gateway.record(headers["X-Request-ID"])
        assert record.failovers == (FailoverStep("a/m", "b/m2", f"status_{status}"),)
        assert record.provider == "b" and record.model == "m2" and record.model_requested == "a/m"
        assert record.usage is not None and record.usage.input_tokens == 5
    # (a single key's 429 is sent once more to the same key by the keyring, before failover: 4 in all)
    assert len(a.requests_for("m")) == 4 and len(b.requests_for("m2")) == 3
    text = await gateway.metrics_text()
    for status in (500, 503, 429):
        assert metric(text, "gomodel_failovers_total", from_provider="a", to_provider="b",
                      reason=f"status_{status}") == 1


async def test_a_status_that_is_no_trigger_is_answered_as_is(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", fail(400))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    status, headers, raw = await chat(gateway, "a/m")
    assert status == 400, raw
    assert headers["X-GoModel-Provider"] == "a" and headers["X-GoModel-Model"] == "m"
    assert b.requests == [r for r in b.requests if r.path == "/v1/models"]  # b never asked to answer


async def test_plain_answers_carry_the_provider_headers_too(gateway: Gateway, mock_upstream: MockUpstream) -> None:
    mock_upstream.on("x", ok("x-2024"))
    status, headers, raw = await chat(gateway, "up/x")
    assert status == 200, raw
    assert headers["X-GoModel-Provider"] == "up" and headers["X-GoModel-Model"] == "x"
    assert json.loads(raw)["model"] == "x-2024"  # the provider's own answer, untouched
    assert gateway.state.router.active is False  # nothing configured: the plain path


async def test_connection_refused_fails_over(make_gateway: MakeGateway, make_mock_upstream: MakeMock) -> None:
    b = await make_mock_upstream(model_ids=["m2"])
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(unused_port_url(), models=["m"]), "b": up(b)}, failover=CHAIN)
    status, headers, raw = await chat(gateway, "a/m")
    assert status == 200, raw
    assert headers["X-GoModel-Provider"] == "b"
    record = await gateway.record(headers["X-Request-ID"])
    assert [s.reason for s in record.failovers] == ["upstream_unreachable"]


async def test_a_hang_past_timeout_ms_is_cancelled_and_fails_over(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m", delay_before_headers=3.0))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    started = time.monotonic()
    status, headers, raw = await chat(gateway, "a/m")
    elapsed = time.monotonic() - started
    assert status == 200, raw
    assert 0.25 <= elapsed < 2.0  # the 300 ms deadline, not the 3 s hang nor the 5 s provider timeout
    assert headers["X-GoModel-Provider"] == "b"
    await asyncio.wait_for(a.last("m").client_gone.wait(), 2)  # the attempt on a was cancelled
    record = await gateway.record(headers["X-Request-ID"])
    assert [s.reason for s in record.failovers] == ["timeout"]


async def test_a_stream_whose_primary_fails_before_the_first_byte_fails_over(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", fail(503))
    b.on("m2", stream_ok("m2", ["Hel", "lo"]))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    status, headers, raw = await chat(gateway, "a/m", stream=True)
    assert status == 200, raw
    assert headers["X-GoModel-Provider"] == "b" and headers["Content-Type"].startswith("text/event-stream")
    assert raw.rstrip().endswith(b"data: [DONE]")
    chunks = payloads_of(raw)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello"
    assert {c["model"] for c in chunks} == {"m2"}


async def test_a_stream_that_fails_midway_ends_with_an_error_and_does_not_fail_over(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", stream_ok("m", ["one", "two", "three", "four"], drop_after=2, max_pieces=10))
    b.on("m2", stream_ok("m2", ["never"]))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    status, headers, raw = await chat(gateway, "a/m", stream=True)
    assert status == 200 and headers["X-GoModel-Provider"] == "a"
    assert b"[DONE]" not in raw
    payloads = payloads_of(raw)
    assert payloads[0]["choices"][0]["delta"]["content"] == "one"  # the client got the start
    assert "error" in payloads[-1]  # ended with an error event, never a fake end
    assert b"never" not in raw
    assert b.requests_for("m2") == []
    record = await gateway.record(headers["X-Request-ID"])
    assert record.failovers == () and record.outcome == "upstream_error"


async def test_provider_wildcard_chains_keep_the_model_name(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b, c = [await make_mock_upstream(model_ids=["x"]) for _ in range(3)]
    a.on("x", fail(502))
    b.on("x", fail(500))
    c.on("x", ok("x", "from c"))
    chains = "failover:\n  a/*: [b/*, c/*]\n"
    gateway = await make_gateway(providers={"a": up(a), "b": up(b), "c": up(c)}, failover=chains)
    status, headers, raw = await chat(gateway, "a/x")
    assert status == 200, raw
    assert headers["X-GoModel-Provider"] == "c" and json.loads(raw)["choices"][0]["message"]["content"] == "from c"
    assert [len(m.requests_for("x")) for m in (a, b, c)] == [1, 1, 1]
    record = await gateway.record(headers["X-Request-ID"])
    assert [(s.from_model, s.to_model) for s in record.failovers] == [("a/x", "b/x"), ("b/x", "c/x")]


async def test_the_last_target_s_error_is_the_client_s(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", fail(500))
    b.on("m2", fail(503))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover=CHAIN)
    status, headers, raw = await chat(gateway, "a/m")
    assert status == 503 and headers["X-GoModel-Provider"] == "b", raw


async def test_failover_across_formats_goes_through_the_translator(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a = await make_mock_upstream(model_ids=["gpt-x"])
    a.on("gpt-x", fail(500))
    claude = await MockAnthropic(model_ids=["claude-haiku-4-5"]).start()
    try:
        message = {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "Bonjour"}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 3},
        }
        claude.on("claude-haiku-4-5", Scenario(status=200, body=json.dumps(message).encode()))
        providers = {
            "a": up(a),
            "claude": {"type": "anthropic", "base_url": claude.base_url, "api_key": UPSTREAM_KEY, "timeout_s": 5},
        }
        gateway = await make_gateway(providers=providers, failover="failover:\n  a/gpt-x: [claude/claude-haiku-4-5]\n")
        status, headers, raw = await chat(gateway, "a/gpt-x")
        assert status == 200, raw
        body = json.loads(raw)
        assert body["object"] == "chat.completion"  # OpenAI's shape, translated from Anthropic's
        assert body["choices"][0]["message"]["content"] == "Bonjour"
        assert body["model"] == "claude-haiku-4-5-20251001"
        assert headers["X-GoModel-Provider"] == "claude" and headers["X-GoModel-Model"] == "claude-haiku-4-5"
        rec = claude.last("claude-haiku-4-5")
        assert rec.path == "/v1/messages" and rec.problems == []
        record = await gateway.record(headers["X-Request-ID"])
        assert record.usage is not None and (record.usage.input_tokens, record.usage.output_tokens) == (9, 3)
    finally:
        await claude.close()


async def test_embeddings_fail_over(make_gateway: MakeGateway, make_mock_upstream: MakeMock) -> None:
    a, b = await make_mock_upstream(model_ids=["e"]), await make_mock_upstream(model_ids=["e"])
    a.on("e", fail(503))
    answer = {"object": "list", "model": "e", "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
              "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    b.on("e", Scenario(status=200, body=json.dumps(answer).encode()))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, failover="failover:\n  a/*: [b/*]\n")
    async with gateway.http.post("v1/embeddings", json={"model": "a/e", "input": "x"}) as r:
        assert r.status == 200, await r.text()
        assert r.headers["X-GoModel-Provider"] == "b"
        assert (await r.json())["data"][0]["embedding"] == [0.5]


# -- aliases and virtual models ------------------------------------------------------------------------------

async def test_an_alias_resolves_and_is_listed(make_gateway: MakeGateway, make_mock_upstream: MakeMock) -> None:
    a, b = await two(make_mock_upstream)
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, extra={"models": {"fast": "b/m2"}})
    status, headers, raw = await chat(gateway, "fast")
    assert status == 200, raw
    assert b.last("m2").json["model"] == "m2" and headers["X-GoModel-Model"] == "m2"
    record = await gateway.record(headers["X-Request-ID"])
    assert record.model_requested == "fast" and record.provider == "b"
    async with gateway.http.get("v1/models") as r:
        listed = {m["id"]: m for m in (await r.json())["data"]}
    assert listed["fast"]["owned_by"] == "gomodel-proxy" and "a/m" in listed
    async with gateway.http.get("v1/models/fast") as r:
        assert r.status == 200 and (await r.json())["id"] == "fast"
    async with gateway.http.get("v1/models/slow") as r:
        assert r.status == 404


async def test_an_alias_gets_its_target_s_failover_chain(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", fail(500))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, extra={"models": {"fast": "a/m"}},
                                 failover=CHAIN)
    status, headers, raw = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Provider"] == "b", raw


def virtual(strategy: str, *targets: str | tuple[str, float]) -> dict[str, Any]:
    items = [{"model": t} if isinstance(t, str) else {"model": t[0], "weight": t[1]} for t in targets]
    return {"models": {"smart": {"strategy": strategy, "targets": items}}}


async def answered_by(gateway: Gateway, n: int, **extra: Any) -> list[str]:
    out = []
    for _ in range(n):
        status, headers, raw = await chat(gateway, "smart", **extra)
        assert status == 200, raw
        out.append(headers["X-GoModel-Provider"])
    return out


async def test_weighted_virtual_model_shares_by_weight(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m"))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)},
                                 extra=virtual("weighted", ("a/m", 3), ("b/m2", 1)))
    got = await answered_by(gateway, 40)
    assert collections.Counter(got) == {"a": 30, "b": 10}
    assert "b" in got[:4]  # interleaved, not in runs


async def test_round_robin_virtual_model_alternates(make_gateway: MakeGateway, make_mock_upstream: MakeMock) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m"))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, extra=virtual("round_robin", "a/m", "b/m2"))
    assert await answered_by(gateway, 6) == ["a", "b"] * 3
    async with gateway.http.get("v1/models") as r:
        assert {"id": "smart", "object": "model", "created": 0, "owned_by": "gomodel-proxy"} in (await r.json())["data"]


async def test_least_in_flight_sends_to_the_idle_target(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m", delay_before_headers=0.5))  # slow: its requests stay in flight
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)},
                                 extra=virtual("least_in_flight", "a/m", "b/m2"))
    slow = asyncio.create_task(chat(gateway, "smart"))  # goes to a (both idle: configuration order)
    await asyncio.sleep(0.1)
    got = await answered_by(gateway, 5)  # a still has one in flight: each of these goes to b
    assert got == ["b"] * 5
    status, headers, _ = await slow
    assert status == 200 and headers["X-GoModel-Provider"] == "a"
    assert [t.in_flight for t in gateway.state.router.virtual["smart"].targets] == [0, 0]


async def test_lowest_latency_prefers_the_faster_upstream(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m", delay_before_headers=0.08))
    b.on("m2", ok("m2", delay_before_headers=0.005))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)},
                                 extra=virtual("lowest_latency", "a/m", "b/m2"))
    got = await answered_by(gateway, 12)
    assert got[:2] == ["a", "b"]  # each measured once first
    assert got[2:] == ["b"] * 10
    ewma = [t.ewma_s for t in gateway.state.router.virtual["smart"].targets]
    assert ewma[0] is not None and ewma[1] is not None and ewma[0] > ewma[1]


async def test_a_target_whose_breaker_is_open_is_skipped(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m"))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, extra=virtual("round_robin", "a/m", "b/m2"))
    breaker = llm(gateway, "a").breaker
    breaker._open(time.monotonic())
    assert llm(gateway, "a").available() is False
    assert await answered_by(gateway, 4) == ["b"] * 4
    assert a.requests_for("m") == []
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_failovers_total") is None  # skipped up front, not failed over


async def test_a_failing_virtual_target_falls_back_to_the_others(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", fail(502))
    b.on("m2", ok("m2"))
    gateway = await make_gateway(providers={"a": up(a), "b": up(b)}, extra=virtual("round_robin", "a/m", "b/m2"))
    assert await answered_by(gateway, 4) == ["b"] * 4
    assert len(a.requests_for("m")) == 2  # round robin still picked a first for every other request


# -- the kill test -------------------------------------------------------------------------------------------

async def test_killing_one_of_two_upstreams_under_200_concurrent_requests(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    a, b = await two(make_mock_upstream)
    a.on("m", ok("m", delay_before_headers=0.05))
    b.on("m2", ok("m2", delay_before_headers=0.05))
    breaker = {"failure_threshold": 3, "window_s": 10, "cooldown_s": 30}
    providers = {"a": up(a, circuit_breaker=breaker), "b": up(b, circuit_breaker=breaker)}
    gateway = await make_gateway(providers=providers, extra=virtual("round_robin", "a/m", "b/m2"))
    ids = [f"kill-{i:03d}" for i in range(200)]

    async def one(rid: str) -> tuple[int, str, bytes]:
        async with gateway.http.post("v1/chat/completions", headers={"X-Request-ID": rid},
                                     json={"model": "smart", "messages": MESSAGES}) as r:
            return r.status, r.headers.get("X-GoModel-Provider", ""), await r.read()

    async def kill() -> None:
        while len(a.requests_for("m")) < 30:  # mid-run: a is answering
            await asyncio.sleep(0.005)
        await a.close()

    tasks = [asyncio.create_task(one(rid)) for rid in ids]
    await asyncio.gather(kill(), *tasks)
    results = [t.result() for t in tasks]
    assert [s for s, _, _ in results] == [200] * 200, [r for r in results if r[0] != 200][:3]
    by = collections.Counter(p for _, p, _ in results)
    assert by["a"] >= 1 and by["b"] >= 100 and by["a"] + by["b"] == 200
    # Every request after the kill was answered by b: the last ones sent all went there.
    after = [await chat(gateway, "smart") for _ in range(10)]
    assert [(s, h["X-GoModel-Provider"]) for s, h, _ in after] == [(200, "b")] * 10
    records = [c for c in gateway.records if c.request_id.startswith("kill-")]
    assert sorted(c.request_id for c in records) == ids  # exactly one usage record per request
    assert all(c.status == 200 and c.usage is not None for c in records)
    moved = [c for c in records if c.failovers]
    assert moved and all(c.provider == "b" and c.failovers[0].from_model == "a/m" for c in moved)
