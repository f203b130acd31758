"""Tracing: the spans of a finished request, built from its record, exported to memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gomodel_proxy.config.schema import Config, ProviderConfig, TracingConfig
from gomodel_proxy.core.context import CURRENT_CALL
from gomodel_proxy.core.types import Attempt, CallRecord, FailoverStep, Principal, TraceContext, Usage
from gomodel_proxy.observability.tracing import Tracing, _server_address, parse_traceparent
from gomodel_proxy.server import app as app_module
from gomodel_proxy.server.state import STATE
from tests.unit.llmclient._fakes import make_client

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
PROVIDERS = {"openai": ("openai", "https://api.openai.com/v1"), "backup": ("anthropic", "http://127.0.0.1:9000")}


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(memory: InMemorySpanExporter) -> Iterator[Tracing]:
    t = Tracing(TracingConfig(enabled=True), providers=PROVIDERS, exporter=memory, service_version="1.2.3")
    yield t
    t.shutdown()


def finished(tracing: Tracing, memory: InMemorySpanExporter) -> list[ReadableSpan]:
    assert tracing.force_flush()
    return list(memory.get_finished_spans())


def two_attempt_call(trace: TraceContext) -> CallRecord:
    """A chat request whose first send got a 503 and whose retry with another key was answered."""
    t0 = time.perf_counter()
    call = CallRecord(request_id="req-1", endpoint="chat.completions", started=t0, model_requested="openai/gpt-4o",
                      provider="openai", model="gpt-4o", status=200, usage=Usage(12, 34, cached_tokens=5),
                      cost=Decimal("0.00042"), trace=trace)
    call.attempts = [
        Attempt("openai", "aaaa1111", t0 + 0.001, t0 + 0.002, status=503),
        Attempt("openai", "bbbb2222", t0 + 0.003, t0 + 0.010, status=200),
    ]
    call.first_byte_at = t0 + 0.011
    call.finished = t0 + 0.020
    return call


def test_request_with_two_attempts(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    trace = tracing.begin({})
    assert trace.parent_span_id == 0 and trace.sampled
    call = two_attempt_call(trace)
    tracing.record(call)
    spans = finished(tracing, memory)
    assert len(spans) == 3
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    clients = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    # The ids decided at arrival are the span's: the provider got them in its traceparent.
    assert server.context is not None
    assert server.context.trace_id == trace.trace_id and server.context.span_id == trace.span_id
    assert server.parent is None
    assert server.name == "chat openai/gpt-4o"
    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "openai/gpt-4o"
    assert attrs["gen_ai.response.model"] == "gpt-4o"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 34
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 5
    assert attrs["http.response.status_code"] == 200
    assert attrs["gomodel.request_id"] == "req-1"
    assert attrs["gomodel.cost_usd"] == pytest.approx(0.00042)
    assert "error.type" not in attrs
    assert server.status.status_code is StatusCode.UNSET
    assert server.resource.attributes["service.name"] == "gomodel-proxy"
    assert server.resource.attributes["service.version"] == "1.2.3"
    # Times: the record's perf_counter readings, as epoch nanoseconds.
    assert server.start_time is not None and server.end_time is not None
    assert server.end_time - server.start_time == pytest.approx(20_000_000, abs=2_000)
    assert abs(server.start_time - time.time_ns()) < 60 * 10**9

    assert [c.name for c in clients] == ["chat gpt-4o", "chat gpt-4o"]
    first, second = clients
    for c in clients:
        assert c.parent is not None and c.parent.span_id == trace.span_id
        assert c.context is not None and c.context.trace_id == trace.trace_id
    a1, a2 = dict(first.attributes or {}), dict(second.attributes or {})
    assert a1["gomodel.key_fingerprint"] == "aaaa1111" and a2["gomodel.key_fingerprint"] == "bbbb2222"
    assert a1["http.response.status_code"] == 503 and a1["error.type"] == "503"
    assert first.status.status_code is StatusCode.ERROR
    assert (a1["server.address"], a1["server.port"]) == ("api.openai.com", 443)
    assert a1["gomodel.attempt"] == 1 and a2["gomodel.attempt"] == 2
    assert "gen_ai.usage.input_tokens" not in a1  # the failed send used nothing
    assert a2["gen_ai.usage.input_tokens"] == 12 and a2["gen_ai.response.model"] == "gpt-4o"
    assert second.status.status_code is StatusCode.UNSET
    assert (first.end_time or 0) - (first.start_time or 0) == pytest.approx(1_000_000, abs=2_000)


def test_incoming_traceparent_is_the_parent(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    trace = tracing.begin({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "congo=t61rcWkgMzE"})
    assert trace.trace_id == int(CLIENT_TRACE, 16) and trace.parent_span_id == int(CLIENT_SPAN, 16)
    assert trace.traceparent.startswith(f"00-{CLIENT_TRACE}-") and trace.traceparent.endswith("-01")
    assert trace.span_id != int(CLIENT_SPAN, 16)
    call = two_attempt_call(trace)
    tracing.record(call)
    spans = finished(tracing, memory)
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert server.context is not None and f"{server.context.trace_id:032x}" == CLIENT_TRACE
    assert server.context.trace_state.get("congo") == "t61rcWkgMzE"
    assert all(s.context is not None and f"{s.context.trace_id:032x}" == CLIENT_TRACE for s in spans)


def test_error_request_and_failover_attempts(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    t0 = time.perf_counter()
    call = CallRecord(request_id="r", endpoint="embeddings", started=t0, model_requested="m", provider="backup",
                      model="m2", status=502, outcome="upstream_error", trace=tracing.begin({}))
    call.attempts = [Attempt("openai", "k1", t0, t0 + 0.001, error="timeout"),
                     Attempt("backup", "", t0 + 0.002, t0 + 0.003, status=502)]
    call.finished = t0 + 0.004
    tracing.record(call)
    spans = finished(tracing, memory)
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert server.name == "embeddings m"
    assert server.status.status_code is StatusCode.ERROR
    assert dict(server.attributes or {})["error.type"] == "upstream_error"
    assert dict(server.attributes or {})["gen_ai.provider.name"] == "anthropic"
    clients = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    a1 = dict(clients[0].attributes or {})
    assert clients[0].name == "embeddings"  # another target: its model is not on the record
    assert a1["error.type"] == "timeout" and "http.response.status_code" not in a1
    assert "gomodel.key_fingerprint" not in dict(clients[1].attributes or {})  # a keyless provider


def test_client_error_is_not_a_server_span_error(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    call = CallRecord(request_id="r", endpoint="chat.completions", model_requested="nope", status=429,
                      outcome="error", error_code="rate_limit_exceeded", trace=tracing.begin({}))
    call.outcome = "ok"
    call.finished = time.perf_counter()
    tracing.record(call)
    (server,) = finished(tracing, memory)
    assert server.name == "chat"  # no provider: the requested model (client input) stays out of the name
    assert dict(server.attributes or {})["error.type"] == "rate_limit_exceeded"
    assert server.status.status_code is StatusCode.UNSET


def test_sampling_off(memory: InMemorySpanExporter) -> None:
    tracing = Tracing(TracingConfig(enabled=True, sample_ratio=0.0), exporter=memory)
    try:
        trace = tracing.begin({})
        assert not trace.sampled and trace.traceparent.endswith("-00")
        tracing.record(two_attempt_call(trace))
        # A sampled parent decides for its children, whatever the ratio (parent-based sampling)...
        sampled_parent = tracing.begin({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert sampled_parent.sampled
        # ...and so does one that is not.
        unsampled_parent = tracing.begin({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})
        assert not unsampled_parent.sampled
        tracing.record(two_attempt_call(unsampled_parent))
        assert finished(tracing, memory) == []
        tracing.record(two_attempt_call(sampled_parent))
        assert len(finished(tracing, memory)) == 3
    finally:
        tracing.shutdown()


def test_ratio_sampler_agrees_with_the_sdk(memory: InMemorySpanExporter) -> None:
    tracing = Tracing(TracingConfig(enabled=True, sample_ratio=0.5), exporter=memory)
    try:
        decisions = [tracing.begin({}) for _ in range(400)]
        sampled = [t for t in decisions if t.sampled]
        assert 0 < len(sampled) < 400
        for trace in decisions:
            call = CallRecord(request_id="r", endpoint="models", status=200, trace=trace)
            call.finished = call.started
            tracing.record(call)
        spans = finished(tracing, memory)
        assert {s.context.trace_id for s in spans if s.context} == {t.trace_id for t in sampled}
    finally:
        tracing.shutdown()


def test_untraced_call_is_skipped(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    tracing.record(CallRecord(request_id="r", endpoint="other"))
    assert finished(tracing, memory) == []


@pytest.mark.parametrize("value", [
    None, "", "garbage", f"00-{'0' * 32}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{'0' * 16}-01",
    f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01-extra",
    f"00-{CLIENT_TRACE.upper()}-{CLIENT_SPAN}-01",
])
def test_invalid_traceparent_starts_a_new_trace(tracing: Tracing, value: str | None) -> None:
    assert parse_traceparent(value) is None
    headers = {"traceparent": value} if value is not None else {}
    trace = tracing.begin(headers)
    assert trace.parent_span_id == 0 and trace.trace_id != int(CLIENT_TRACE, 16)


def test_future_version_and_bad_tracestate(tracing: Tracing) -> None:
    assert parse_traceparent(f"01-{CLIENT_TRACE}-{CLIENT_SPAN}-03-more") == (
        int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), True)
    trace = tracing.begin({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "bad\x01state"})
    assert trace.tracestate == ""


def test_outgoing_headers_replace_a_passed_through_trace_context() -> None:
    trace = TraceContext(int(CLIENT_TRACE, 16), 0x1122334455667788, 5, True, "a=1")
    expected = f"traceparent: 00-{CLIENT_TRACE}-1122334455667788-01\r\ntracestate: a=1\r\n".encode()
    assert trace.outgoing(b"Accept: */*\r\n") == b"Accept: */*\r\n" + expected
    client = b"TraceParent: 00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01\r\ntracestate: x=y\r\nA: b\r\n"
    assert trace.outgoing(client) == b"A: b\r\n" + expected
    unsampled = TraceContext(1, 2, sampled=False)
    assert unsampled.outgoing(b"") == b"traceparent: 00-" + b"0" * 31 + b"1-0000000000000002-00\r\n"


async def test_llm_client_sends_traceparent() -> None:
    """The LLM client adds the request's trace context to each send (nothing outside a traced request)."""
    client, http, _, _ = make_client([503, 200])
    await client.request(b"GET", b"/x", b"A: b\r\n")
    trace = TraceContext(0xABC, 0xDEF)
    call = CallRecord(request_id="r", endpoint="chat.completions", trace=trace)
    token = CURRENT_CALL.set(call)
    try:
        await client.request(b"GET", b"/x", [(b"A", b"b")])
    finally:
        CURRENT_CALL.reset(token)
    header = b"traceparent: 00-" + f"{0xABC:032x}-{0xDEF:016x}".encode() + b"-01\r\n"
    assert [s.headers for s in http.sent] == [b"A: b\r\n", b"A: b\r\n", b"A: b\r\n" + header]
    assert call.attempts is not None and [a.status for a in call.attempts] == [200]


def test_from_config_and_exporters() -> None:
    config = Config(providers={"oa": ProviderConfig(type="openai", api_key="sk-x")})
    config.observability.tracing.enabled = True
    config.observability.tracing.headers = {"dd-api-key": "secret"}
    tracing = Tracing.from_config(config)
    try:
        assert tracing._providers["oa"] == ("openai", ("api.openai.com", 443))
        exporter = Tracing._exporter(config.observability.tracing)
        assert type(exporter).__name__ == "OTLPSpanExporter"
        console = Tracing._exporter(TracingConfig(enabled=True, exporter="console"))
        assert type(console).__name__ == "ConsoleSpanExporter"
    finally:
        tracing.shutdown()


def test_every_attribute_of_a_rich_record(tracing: Tracing, memory: InMemorySpanExporter) -> None:
    call = CallRecord(request_id="r", endpoint="messages", model_requested="fast", provider="backup", model="claude",
                      status=200, cached=True, trace=tracing.begin({}),
                      usage=Usage(10, 20, reasoning_tokens=7, cache_write_tokens=4),
                      principal=Principal(kind="key", key_id="key-1", team_id="team-1"))
    call.failovers = (FailoverStep("openai/gpt", "backup/claude", "status_503"),)
    call.finished = call.started
    tracing.record(call)
    (server,) = finished(tracing, memory)
    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 4
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 7
    assert attrs["gomodel.cached"] is True and attrs["gomodel.failovers"] == 1
    assert (attrs["gomodel.principal"], attrs["gomodel.key_id"], attrs["gomodel.team_id"]) == ("key", "key-1", "team-1")
    assert "gen_ai.usage.cache_read.input_tokens" not in attrs


def test_a_base_url_without_a_usable_host() -> None:
    assert _server_address("http://[::1") is None
    assert _server_address("") is None
    assert _server_address("http://h:8080/v1") == ("h", 8080)


async def test_stop_gives_up_on_a_collector_that_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    warnings: list[str] = []
    tracer = SimpleNamespace(shutdown=lambda: release.wait(10))
    recorder = SimpleNamespace(tracer=tracer, dogstatsd=None)
    logger = SimpleNamespace(warning=lambda event, **_: warnings.append(event))
    state = SimpleNamespace(recorder=recorder, logger=logger)
    monkeypatch.setattr(app_module, "_TRACE_FLUSH_S", 0.01)
    try:
        await app_module._stop_telemetry({STATE: state})  # type: ignore[arg-type]
    finally:
        release.set()
    assert recorder.tracer is None
    assert warnings == ["tracing: spans still queued at shutdown were not exported"]
