"""Keys, retries and circuit breakers end to end: the gateway in front of a mock upstream with injected faults.

The mock answers by the key it receives (``KeyedMock``): one key may be rate limited, revoked or failing while
the others answer. Clocks are shifted (the keyring's and the client's ``clock``) rather than slept on.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gomodel_proxy.llmclient import LLMClient, fingerprint
from tests.support.gateway import Gateway, provider_config
from tests.support.mock_upstream import MockUpstream, Scenario, unused_port_url

from .helpers import MESSAGES, payloads_of

MakeGateway = Callable[..., Awaitable[Gateway]]
KEYS = ["sk-test-key-alpha-000001", "sk-test-key-bravo-000002", "sk-test-key-charlie-0003"]
FAST_RETRY = {"backoff_base_ms": 1, "backoff_max_ms": 2000}


def ok_body(text: str = "hi") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


OK = Scenario(status=200, body=json.dumps(ok_body()).encode())


def error(status: int, **headers: str) -> Scenario:
    body = {"error": {"message": f"upstream says {status}", "type": "server_error", "param": None, "code": None}}
    return Scenario.error(status, body, headers=dict(headers))


class KeyedMock(MockUpstream):
    """Answers by the key received: ``by_key[key]`` (a Scenario or a function of the request), else ``queue``
    (one scenario per request, in order), else the model's scenario."""

    def __init__(self) -> None:
        super().__init__(model_ids=["m"])
        self.by_key: dict[str, Scenario | Callable[[Any], Scenario]] = {}
        self.queue: list[Scenario] = []

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            key = rec.headers.get("Authorization", "").removeprefix("Bearer ")
            chosen = self.by_key.get(key)
            if callable(chosen):
                chosen = chosen(rec)
            if chosen is None and self.queue:
                chosen = self.queue.pop(0)
            scenario = chosen or self.scenarios.get(rec.model or "") or OK
            return await self._respond(request, scenario, rec)
        except (asyncio.CancelledError, ConnectionResetError):
            rec._client_went_away()
            raise
        finally:
            rec.done.set()

    def keys_seen(self) -> list[str]:
        sent = self.requests_to("/v1/chat/completions")
        return [r.headers.get("Authorization", "").removeprefix("Bearer ") for r in sent]


async def keyed_gateway(make_gateway: MakeGateway, keys: list[Any], **overrides: Any) -> tuple[Gateway, KeyedMock]:
    mock = KeyedMock()
    await mock.start()
    gateway = await make_gateway(providers={"up": provider_config(
        mock.base_url, api_key="", api_keys=keys, models=["m"], **overrides
    )})
    gateway._closers.append(mock.close)
    return gateway, mock


def llm(gateway: Gateway, name: str = "up") -> LLMClient:
    client = getattr(gateway.state.providers[name], "llm_client")  # noqa: B009
    assert isinstance(client, LLMClient)
    return client


def shift_clock(gateway: Gateway, seconds: float) -> None:
    client = llm(gateway)
    client.clock = client.keyring.clock = lambda: time.monotonic() + seconds


async def chat(gateway: Gateway, **extra: Any) -> tuple[int, Any, bytes]:
    async with gateway.http.post("v1/chat/completions", json={"model": "up/m", "messages": MESSAGES, **extra}) as r:
        return r.status, r.headers, await r.read()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of ``name{labels}`` in the exposition text (labels matched as a subset)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# -- the keyring ---------------------------------------------------------------------------------------------

async def test_429_moves_the_request_to_the_next_key_and_the_key_rests(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:2], retry=FAST_RETRY)
    mock.by_key[KEYS[0]] = error(429, **{"retry-after": "30"})
    status, _, raw = await chat(gateway)
    assert status == 200, raw
    assert mock.keys_seen() == [KEYS[0], KEYS[1]]  # the same request, at once on the next key
    first, second = mock.requests_to("/v1/chat/completions")
    assert first.body == second.body
    for _ in range(4):
        assert (await chat(gateway))[0] == 200
    assert mock.keys_seen()[2:] == [KEYS[1]] * 4  # the rested key is left alone
    mock.by_key.pop(KEYS[0])
    shift_clock(gateway, 31.0)  # its retry-after is over
    for _ in range(4):
        assert (await chat(gateway))[0] == 200
    assert collections.Counter(mock.keys_seen()[6:]) == {KEYS[0]: 2, KEYS[1]: 2}
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_provider_key_failures_total", key=fingerprint(KEYS[0]), reason="rate_limited") == 1
    assert metric(text, "gomodel_upstream_retries_total", provider="up", reason="key_429") == 1


async def test_401_revokes_the_key_and_the_request_succeeds_on_the_next(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS, retry=FAST_RETRY)
    mock.by_key[KEYS[0]] = error(401)
    status, _, raw = await chat(gateway)
    assert status == 200, raw
    assert mock.keys_seen() == [KEYS[0], KEYS[1]]
    for _ in range(6):
        assert (await chat(gateway))[0] == 200
    assert KEYS[0] not in mock.keys_seen()[2:]
    text = await gateway.metrics_text()
    fp = fingerprint(KEYS[0])
    assert metric(text, "gomodel_provider_key_state", provider="up", key=fp) == 3  # revoked
    assert metric(text, "gomodel_provider_key_state", provider="up", key=fingerprint(KEYS[1])) == 0
    assert metric(text, "gomodel_provider_key_failures_total", key=fp, reason="revoked") == 1
    assert not any(k in text for k in KEYS)  # fingerprints only


async def test_every_key_429_gives_the_client_a_429_with_retry_after(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:2], retry=FAST_RETRY)
    mock.by_key[KEYS[0]] = error(429, **{"retry-after": "40"})
    mock.by_key[KEYS[1]] = error(429, **{"retry-after": "20"})
    status, headers, raw = await chat(gateway)
    assert status == 429 and headers["retry-after"] == "20", raw  # the provider's own answer, last key's
    assert len(mock.keys_seen()) == 2
    status, headers, raw = await chat(gateway)  # now refused by the gateway: no key is ready
    assert status == 429
    error_body = json.loads(raw)["error"]
    assert error_body["code"] == "provider_keys_rate_limited" and error_body["type"] == "rate_limit_error"
    assert 19 <= int(headers["retry-after"]) <= 20
    assert len(mock.keys_seen()) == 2  # nothing sent


async def test_a_key_revoked_mid_run_under_concurrent_requests(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS, retry=FAST_RETRY)
    served = collections.Counter[str]()

    def bravo(_rec: Any) -> Scenario:
        served["bravo"] += 1
        return OK if served["bravo"] <= 5 else error(401)

    mock.by_key[KEYS[1]] = bravo
    results = await asyncio.gather(*(chat(gateway) for _ in range(90)))
    assert [s for s, _, _ in results] == [200] * 90
    assert llm(gateway).keyring.keys[1].revoked
    before = len(mock.keys_seen())
    results = await asyncio.gather(*(chat(gateway) for _ in range(30)))
    assert [s for s, _, _ in results] == [200] * 30
    assert KEYS[1] not in mock.keys_seen()[before:]
    assert collections.Counter(mock.keys_seen()[before:]) == {KEYS[0]: 15, KEYS[2]: 15}


async def test_weighted_keys_share_the_traffic_by_weight(make_gateway: MakeGateway) -> None:
    keys = [{"key": KEYS[0], "weight": 3}, {"key": KEYS[1], "weight": 1}]
    gateway, mock = await keyed_gateway(make_gateway, keys, key_strategy="weighted")
    for _ in range(40):
        assert (await chat(gateway))[0] == 200
    assert collections.Counter(mock.keys_seen()) == {KEYS[0]: 30, KEYS[1]: 10}


async def test_a_key_rpm_limit_moves_traffic_to_the_other_key(make_gateway: MakeGateway) -> None:
    keys = [{"key": KEYS[0], "rpm": 2}, KEYS[1]]
    gateway, mock = await keyed_gateway(make_gateway, keys)
    for _ in range(8):
        assert (await chat(gateway))[0] == 200
    assert collections.Counter(mock.keys_seen()) == {KEYS[0]: 2, KEYS[1]: 6}
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_provider_key_state", key=fingerprint(KEYS[0])) == 1  # rate limited


async def test_tpm_budget_is_charged_with_recorded_usage(make_gateway: MakeGateway) -> None:
    keys = [{"key": KEYS[0], "tpm": 10}, KEYS[1]]  # one answer (7 tokens) twice spends it
    gateway, mock = await keyed_gateway(make_gateway, keys)
    for _ in range(6):
        assert (await chat(gateway))[0] == 200
    assert mock.keys_seen()[:4] == [KEYS[0], KEYS[1], KEYS[0], KEYS[1]]
    assert mock.keys_seen()[4:] == [KEYS[1], KEYS[1]]  # 14 tokens charged to a 10/min budget


# -- retries -------------------------------------------------------------------------------------------------

async def test_server_errors_are_retried_with_backoff_then_succeed(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:1], retry={**FAST_RETRY, "max_attempts": 5})
    mock.queue = [error(500), error(502), error(503), error(529)]
    status, _, raw = await chat(gateway)
    assert status == 200, raw
    sent = mock.requests_to("/v1/chat/completions")
    assert len(sent) == 5 and len({r.body for r in sent}) == 1
    text = await gateway.metrics_text()
    for reason in ("status_500", "status_502", "status_503", "status_529"):
        assert metric(text, "gomodel_upstream_retries_total", provider="up", reason=reason) == 1


async def test_the_last_attempts_error_reaches_the_client(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:1], retry={**FAST_RETRY, "max_attempts": 2})
    mock.queue = [error(503), error(502), error(500)]
    status, _, raw = await chat(gateway)
    assert status == 502 and json.loads(raw)["error"]["message"] == "upstream says 502"
    assert len(mock.requests_to("/v1/chat/completions")) == 2


async def test_connection_refused_is_retried_then_502(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"up": provider_config(
        unused_port_url(), models=["m"], retry={**FAST_RETRY, "max_attempts": 3},
    )})
    status, _, raw = await chat(gateway)
    assert status == 502 and json.loads(raw)["error"]["code"] == "upstream_unreachable"
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_upstream_retries_total", provider="up", reason="connection") == 2


async def test_a_hang_past_the_timeout_is_a_504_retried_when_configured(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(
        make_gateway, KEYS[:1], timeout_s=0.3, retry={**FAST_RETRY, "on_timeout": True},
    )
    mock.on("m", Scenario(status=200, body=b"{}", delay_before_headers=3.0))
    started = time.perf_counter()
    status, _, raw = await chat(gateway)
    elapsed = time.perf_counter() - started
    assert status == 504 and json.loads(raw)["error"]["code"] == "upstream_timeout"
    assert len(mock.requests_to("/v1/chat/completions")) == 2 and 0.6 <= elapsed < 2.5


async def test_a_hang_is_not_retried_by_default(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:1], timeout_s=0.3)
    mock.on("m", Scenario(status=200, body=b"{}", delay_before_headers=3.0))
    assert (await chat(gateway))[0] == 504
    assert len(mock.requests_to("/v1/chat/completions")) == 1


async def test_a_stream_dropped_midway_ends_with_an_error_event_never_a_retry(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:2], retry={**FAST_RETRY, "max_attempts": 3})
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
    mock.on("m", Scenario.sse([chunk] * 6 + ["[DONE]"], max_pieces=7, drop_after=3))
    status, _, raw = await chat(gateway, stream=True)
    assert status == 200
    payloads = payloads_of(raw)
    assert payloads[-1]["error"]["code"] == "upstream_unreachable", payloads[-1]  # the drop, said as an error
    assert sum(1 for p in payloads if "choices" in p) == 3  # what arrived, once
    assert len(mock.requests_to("/v1/chat/completions")) == 1  # no second send
    assert llm(gateway).retries == {}


# -- circuit breakers ----------------------------------------------------------------------------------------

async def test_breaker_opens_fails_fast_and_a_probe_closes_it(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(
        make_gateway, KEYS[:1], retry={"max_attempts": 1},
        circuit_breaker={"failure_threshold": 3, "window_s": 30, "cooldown_s": 20},
    )
    mock.on("m", error(503))
    for _ in range(3):
        assert (await chat(gateway))[0] == 503
    sent = len(mock.requests)
    status, headers, raw = await chat(gateway)
    body = json.loads(raw)["error"]
    assert status == 503 and body["code"] == "circuit_open" and "'up'" in body["message"]
    assert 1 <= int(headers["retry-after"]) <= 20
    assert len(mock.requests) == sent  # no network

    # The time a request spends on the open provider, in the client that refuses it.
    client = llm(gateway)
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        try:
            await client.request(b"POST", b"/chat/completions", b"", b"{}")
        except Exception as exc:
            assert getattr(exc, "code", None) == "circuit_open"
    per_request_us = (time.perf_counter() - started) / n * 1e6
    print(f"\nopen breaker: {per_request_us:.2f} us per refused request")
    assert per_request_us < 200, per_request_us  # microseconds (a few on an idle machine)
    assert len(mock.requests) == sent

    text = await gateway.metrics_text()
    assert metric(text, "gomodel_circuit_breaker_state", provider="up", key="") == 2
    assert metric(text, "gomodel_circuit_breaker_transitions_total", provider="up", key="", to="open") == 1

    mock.on("m", OK)
    shift_clock(gateway, 21.0)  # the cooldown is over: the next request is the probe
    assert (await chat(gateway))[0] == 200
    assert (await chat(gateway))[0] == 200
    text = await gateway.metrics_text()
    assert metric(text, "gomodel_circuit_breaker_state", provider="up", key="") == 0
    assert metric(text, "gomodel_circuit_breaker_transitions_total", provider="up", key="", to="closed") == 1


async def test_4xx_answers_never_open_the_breaker(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(make_gateway, KEYS[:1], circuit_breaker={"failure_threshold": 2})
    mock.on("m", error(400))
    for _ in range(5):
        assert (await chat(gateway))[0] == 400
    assert llm(gateway).breaker.state == 0 and len(mock.requests_to("/v1/chat/completions")) == 5


async def test_breaker_can_be_disabled(make_gateway: MakeGateway) -> None:
    gateway, mock = await keyed_gateway(
        make_gateway, KEYS[:1], retry={"max_attempts": 1},
        circuit_breaker={"enabled": False, "failure_threshold": 1},
    )
    mock.on("m", error(500))
    for _ in range(4):
        assert (await chat(gateway))[0] == 500
    assert len(mock.requests_to("/v1/chat/completions")) == 4
