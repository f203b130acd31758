"""Tracing through the gateway: the client's trace continued, passed to the provider, spans exported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


class OtlpReceiver:
    """A stand-in OTLP/HTTP collector: keeps the spans of each export request it receives."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.server: TestServer | None = None

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    async def _traces(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        self.headers.append(dict(request.headers))
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1/traces"))

    def spans(self) -> list[Any]:
        return [span for req in self.requests for rs in req.resource_spans for ss in rs.scope_spans
                for span in ss.spans]


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = await OtlpReceiver().start()
    yield receiver
    assert receiver.server is not None
    await receiver.server.close()


@pytest.fixture
async def traced(otlp: OtlpReceiver, make_gateway: Any, make_mock_upstream: Any
                 ) -> tuple[Gateway, MockUpstream, InMemorySpanExporter]:
    # ``otlp`` first: it is set up before the gateway and closed after it, which exports its last spans.
    mock: MockUpstream = await make_mock_upstream(model_ids=["text", "stream"], echo=True)
    mock.replay("text", "openai/chat-completions/nonstream-text-gpt4o-mini")
    mock.replay("stream", "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    tracing = {"enabled": True, "endpoint": otlp.url, "headers": {"dd-api-key": "collector-secret"},
               "service_name": "gw-under-test"}
    gateway: Gateway = await make_gateway(upstream=mock, extra={"observability": {"tracing": tracing}})
    tracer = gateway.state.recorder.tracer
    assert tracer is not None
    memory = InMemorySpanExporter()
    tracer.add_span_processor(SimpleSpanProcessor(memory))
    return gateway, mock, memory


async def spans_of(gateway: Gateway, memory: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    """The spans of one request (recorded once its handler has ended)."""
    call = await gateway.record(request_id)
    assert call.trace is not None
    trace_id = call.trace.trace_id
    return [s for s in memory.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


async def test_provider_continues_the_clients_trace(traced: tuple[Gateway, MockUpstream, InMemorySpanExporter]
                                                    ) -> None:
    gateway, mock, memory = traced
    client = gateway.async_openai()
    answer = await client.chat.completions.create(
        model="up/text", messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={"traceparent": CLIENT_TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7",
                       "X-Request-ID": "traced-1"},
    )
    assert answer.choices[0].message.content
    sent = mock.last("text").headers
    assert sent.getall("traceparent") == [sent["traceparent"]]  # exactly one
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert parent_id != CLIENT_SPAN  # the gateway's span is the provider's parent
    assert sent["tracestate"] == "rojo=00f067aa0ba902b7"

    spans = await spans_of(gateway, memory, "traced-1")
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    (attempt,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert server.context is not None and f"{server.context.span_id:016x}" == parent_id
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    attrs = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "up/text"
    assert attrs["gen_ai.response.model"] == "text"
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "gw-under-test"
    a = dict(attempt.attributes or {})
    assert a["http.response.status_code"] == 200 and a["gomodel.provider"] == "up"
    assert a["gomodel.key_fingerprint"] and a["server.address"] == "127.0.0.1"


async def test_a_new_trace_and_otlp_export(traced: tuple[Gateway, MockUpstream, InMemorySpanExporter],
                                           otlp: OtlpReceiver) -> None:
    gateway, mock, memory = traced
    client = gateway.async_openai()
    stream = await client.chat.completions.create(
        model="up/stream", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_headers={"X-Request-ID": "traced-2"},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks
    sent = mock.last("stream").headers["traceparent"]
    spans = await spans_of(gateway, memory, "traced-2")
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert server.parent is None and server.context is not None
    assert sent == f"00-{server.context.trace_id:032x}-{server.context.span_id:016x}-01"
    assert dict(server.attributes or {})["gomodel.stream"] is True

    # The configured OTLP/HTTP exporter (batched, in its own thread) delivers the same spans.
    tracer = gateway.state.recorder.tracer
    assert await asyncio.to_thread(tracer.force_flush, 10_000)
    exported = {(s.trace_id.hex(), s.span_id.hex()) for s in otlp.spans()}
    assert (f"{server.context.trace_id:032x}", f"{server.context.span_id:016x}") in exported
    assert otlp.headers[-1]["dd-api-key"] == "collector-secret"
    otlp_server = next(s for s in otlp.spans() if s.span_id.hex() == f"{server.context.span_id:016x}")
    assert otlp_server.kind == 2  # SPAN_KIND_SERVER
    assert {kv.key for kv in otlp_server.attributes} >= {"gen_ai.operation.name", "gen_ai.request.model"}


async def test_passthrough_sends_one_traceparent(traced: tuple[Gateway, MockUpstream, InMemorySpanExporter]
                                                 ) -> None:
    gateway, _, memory = traced
    headers = {"traceparent": CLIENT_TRACEPARENT, "X-Request-ID": "traced-3"}
    async with gateway.http.get("up/v1/files", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        echoed = await resp.json()
    sent = [v for k, v in echoed["headers"] if k.lower() == "traceparent"]
    assert len(sent) == 1 and sent[0].split("-")[1] == CLIENT_TRACE and sent[0].split("-")[2] != CLIENT_SPAN
    spans = await spans_of(gateway, memory, "traced-3")
    assert {s.kind for s in spans} == {SpanKind.SERVER, SpanKind.CLIENT}


async def test_probes_are_not_traced(traced: tuple[Gateway, MockUpstream, InMemorySpanExporter]) -> None:
    gateway, _, memory = traced
    async with gateway.http.get("health") as resp:
        assert resp.status == 200
    async with gateway.http.get("v1/models", headers={"X-Request-ID": "traced-4"}) as resp:
        assert resp.status == 200
    spans = await spans_of(gateway, memory, "traced-4")
    assert [s.name for s in spans] == ["models"]
    assert all(dict(s.attributes or {}).get("gomodel.endpoint") != "other" for s in memory.get_finished_spans())


async def test_tracing_off_sends_nothing(make_gateway: Any, make_mock_upstream: Any) -> None:
    mock: MockUpstream = await make_mock_upstream(model_ids=["text"])
    mock.replay("text", "openai/chat-completions/nonstream-text-gpt4o-mini")
    gateway: Gateway = await make_gateway(upstream=mock)
    assert gateway.state.recorder.tracer is None
    client = gateway.async_openai()
    await client.chat.completions.create(model="up/text", messages=MESSAGES)  # type: ignore[arg-type]
    assert "traceparent" not in mock.last("text").headers
    assert all(c.trace is None for c in gateway.records)
