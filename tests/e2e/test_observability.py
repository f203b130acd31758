"""What every answer carries (request id, overhead) and what ``/metrics`` shows after real traffic."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures import load_fixture
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES, usage_numbers

CHAT = "v1/chat/completions"

# (method, path, json body or None, expected status); models "up/text", "up/stream", "up/err" are set below.
REQUESTS: list[tuple[str, str, Any, int]] = [
    ("POST", CHAT, {"model": "up/text", "messages": MESSAGES}, 200),
    ("POST", CHAT, {"model": "up/stream", "messages": MESSAGES, "stream": True}, 200),
    ("POST", CHAT, {"model": "up/err", "messages": MESSAGES}, 429),
    ("POST", "v1/embeddings", {"model": "up/embed", "input": "x", "encoding_format": "float"}, 200),
    ("POST", CHAT, {"messages": MESSAGES}, 400),
    ("POST", CHAT, {"model": "nope", "messages": MESSAGES}, 404),
    ("GET", "v1/models", None, 200),
    ("GET", "v1/models/up/text", None, 200),
    ("GET", "v1/models/up/nope", None, 404),
    ("GET", "v1/unknown", None, 404),
    ("GET", CHAT, None, 405),
    ("GET", "health", None, 200),
    ("GET", "ready", None, 200),
    ("GET", "metrics", None, 200),
]
_GENERATED_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


@pytest.fixture
async def busy_gateway(make_gateway: Any, make_mock_upstream: Any) -> Gateway:
    mock: MockUpstream = await make_mock_upstream(model_ids=["text", "stream", "err", "embed"])
    mock.replay("text", "openai/chat-completions/nonstream-text-gpt4o-mini")
    mock.replay("stream", "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    mock.replay("err", "openai/chat-completions/error-429-insufficient-quota-2023")
    mock.replay("embed", "openai/embeddings/float-1536d-text-embedding-3-small")
    gateway: Gateway = await make_gateway(upstream=mock)
    return gateway


def _ids(req: tuple[str, str, Any, int]) -> str:
    return f"{req[0]} {req[1]} {req[3]}"


@pytest.mark.parametrize("req", REQUESTS, ids=[_ids(r) for r in REQUESTS])
async def test_every_answer_has_request_id_and_overhead(busy_gateway: Gateway, req: tuple[str, str, Any, int]) -> None:
    method, path, body, status = req
    async with busy_gateway.http.request(method, path, json=body, headers={"X-Request-ID": "client-id.42"}) as resp:
        await resp.read()
        assert resp.status == status
        assert resp.headers["X-Request-ID"] == "client-id.42"
        overhead = float(resp.headers["X-GoModel-Overhead-Ms"])
        assert 0.0 <= overhead < 1000.0
    async with busy_gateway.http.request(method, path, json=body) as resp:
        await resp.read()
        generated = resp.headers["X-Request-ID"]
        assert _GENERATED_ID.match(generated) and generated != "client-id.42"
        assert float(resp.headers["X-GoModel-Overhead-Ms"]) >= 0.0


async def test_request_ids_are_unique_and_unsafe_ones_replaced(busy_gateway: Gateway) -> None:
    seen = set()
    for _ in range(5):
        async with busy_gateway.http.get("v1/models") as resp:
            seen.add(resp.headers["X-Request-ID"])
    assert len(seen) == 5
    for unsafe in ["has space", "x" * 200, "semi;colon", "new\\nline"]:
        async with busy_gateway.http.get("v1/models", headers={"X-Request-ID": unsafe}) as resp:
            assert resp.headers["X-Request-ID"] != unsafe
            assert _GENERATED_ID.match(resp.headers["X-Request-ID"])


async def test_request_id_names_the_usage_record(busy_gateway: Gateway) -> None:
    body = {"model": "up/text", "messages": MESSAGES}
    async with busy_gateway.http.post(CHAT, json=body, headers={"X-Request-ID": "trace-abc"}) as resp:
        assert resp.status == 200
    record = await busy_gateway.record("trace-abc")
    assert (record.endpoint, record.provider, record.model, record.model_requested) == (
        "chat.completions", "up", "text", "up/text"
    )
    assert record.latency_s >= record.overhead_s >= 0


async def test_sdk_sees_the_request_id(busy_gateway: Gateway) -> None:
    client = busy_gateway.async_openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="up/text", messages=MESSAGES, extra_headers={"X-Request-ID": "sdk-trace-1"}
    )
    assert raw.headers["x-request-id"] == "sdk-trace-1"
    assert float(raw.headers["x-gomodel-overhead-ms"]) >= 0


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out.append((dict(sample.labels), sample.value))
    return out


def _value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    matching = [v for lbl, v in samples if all(lbl.get(k) == want for k, want in labels.items())]
    assert len(matching) == 1, (labels, samples)
    return matching[0]


async def test_metrics_count_requests_and_tokens(busy_gateway: Gateway) -> None:
    text_fx = load_fixture("openai/chat-completions/nonstream-text-gpt4o-mini")
    stream_fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    for _ in range(2):
        async with busy_gateway.http.post(CHAT, json={"model": "up/text", "messages": MESSAGES}) as resp:
            assert resp.status == 200
    async with busy_gateway.http.post(CHAT, json={"model": "up/stream", "messages": MESSAGES, "stream": True},
                                      headers={"X-Request-ID": "metrics-stream"}) as r:
        assert r.status == 200
        await r.read()
    async with busy_gateway.http.post(CHAT, json={"model": "up/err", "messages": MESSAGES}) as resp:
        assert resp.status == 429
    async with busy_gateway.http.post(CHAT, json={"model": "unknown-model", "messages": MESSAGES}) as resp:
        assert resp.status == 404
    await busy_gateway.record("metrics-stream")  # a stream is recorded when its handler ends

    text = await busy_gateway.metrics_text()
    requests = _samples(text, "gomodel_requests_total")
    common = {"provider": "up", "endpoint": "chat.completions"}
    assert _value(requests, **common, model="text", status="200", stream="false") == 2
    assert _value(requests, **common, model="stream", status="200", stream="true") == 1
    assert _value(requests, **common, model="err", status="429", stream="false") == 1
    assert _value(requests, provider="", model="", endpoint="chat.completions", status="404", stream="false") == 1
    # Operational routes are not requests for the service.
    assert not [lbl for lbl, _ in requests if lbl["endpoint"] == "other" and lbl["status"] == "200"]

    tokens = _samples(text, "gomodel_tokens_total")
    t_in, t_out, _, _ = usage_numbers(text_fx.json["usage"])
    assert _value(tokens, provider="up", model="text", kind="input") == 2 * t_in
    assert _value(tokens, provider="up", model="text", kind="output") == 2 * t_out
    s_in, s_out, _, _ = usage_numbers(stream_fx.usage or {})
    assert _value(tokens, provider="up", model="stream", kind="input") == s_in
    assert _value(tokens, provider="up", model="stream", kind="output") == s_out

    durations = _samples(text, "gomodel_request_duration_seconds_count")
    assert _value(durations, provider="up", endpoint="chat.completions", stream="false") == 3
    assert _value(_samples(text, "gomodel_provider_models"), provider="up") == 4
