"""OpenTelemetry traces: a SERVER span per request and a CLIENT span per provider attempt.

Off by default (``observability.tracing.enabled``); this module and the OpenTelemetry SDK are imported only
when it is on, so a gateway without tracing pays neither their import time nor anything per request.

How a request is traced:

- When it arrives (the edge, :meth:`Tracing.begin`) its trace context is decided: the client's W3C
  ``traceparent``/``tracestate`` are continued when valid, otherwise a new trace starts; the request's span
  id and the sampling decision (parent-based, else ``sample_ratio`` of trace ids) are fixed then, on
  ``CallRecord.trace``. The LLM client sends ``traceparent`` (and the client's ``tracestate``) to the
  provider from it (``TraceContext.outgoing``), sampled or not, so the provider's spans join the trace.
- When it has been answered (the recorder, :meth:`Tracing.record`) its spans are built from the record
  with their real start and end times: nothing is held open while the request runs. Spans follow the
  OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.provider.name``, ``gen_ai.usage.input_tokens``, ...).
- Export happens in the SDK's ``BatchSpanProcessor`` thread, never on the request path: OTLP over HTTP
  (protobuf) to a collector, or to the Datadog Agent's OTLP receiver (``otlp_config.receiver.protocols.http``,
  port 4318) for Datadog APM; ``console`` prints them (development).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from gomodel_proxy.config.schema import Config, TracingConfig
from gomodel_proxy.core.types import Attempt, CallRecord, TraceContext

#: ``version-traceid-parentid-flags`` (W3C Trace Context §3.2); later versions may append fields.
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
#: tracestate is printable ASCII (list members ``key=value``); longer than 512 characters it may be dropped.
_TRACESTATE = re.compile(r"^[\x20-\x7e]{1,512}$")
_MASK_64 = (1 << 64) - 1

#: The gateway's endpoints as GenAI operation names (others keep their own name).
OPERATIONS = {
    "chat.completions": "chat", "messages": "chat", "responses": "chat", "completions": "text_completion",
    "embeddings": "embeddings",
}
#: Provider types as ``gen_ai.provider.name`` values of the semantic conventions.
PROVIDER_NAMES = {
    "openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic", "gemini": "gcp.gemini",
    "groq": "groq", "xai": "x_ai", "openrouter": "openrouter", "openai_compatible": "openai", "mock": "mock",
}


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """``(trace_id, parent span id, sampled)`` of a valid ``traceparent``; ``None`` for anything else."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(flags_hex, 16) & 1)


class _PresetIds(IdGenerator):
    """Random ids, except the request span's, decided when the request arrived (set just before its span
    is started: spans are built on the loop's thread, one at a time)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        trace_id, self.trace_id = self.trace_id, 0
        return trace_id or random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or random.getrandbits(64) or 1


def _server_address(base_url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


class Tracing:
    """The gateway's tracer: trace context at arrival, spans at the end, export in the background."""

    def __init__(self, config: TracingConfig, *, providers: Mapping[str, tuple[str, str]] | None = None,
                 exporter: SpanExporter | None = None, service_version: str = "") -> None:
        """``providers``: name -> (type, base_url) of the configured providers; ``exporter`` replaces the
        configured one (tests)."""
        self.config = config
        ratio = config.sample_ratio
        #: The ratio sampler's bound on a trace id's lower 64 bits (as ``TraceIdRatioBased`` computes it).
        self._bound = round(ratio * (_MASK_64 + 1))
        self._ids = _PresetIds()
        attributes: dict[str, str] = {"service.name": config.service_name}
        if service_version:
            attributes["service.version"] = service_version
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(ratio)), resource=Resource.create(attributes),
            id_generator=self._ids, shutdown_on_exit=False,
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter or self._exporter(config)))
        self.tracer = self.provider.get_tracer("gomodel_proxy")
        self._providers: dict[str, tuple[str, tuple[str, int] | None]] = {
            name: (PROVIDER_NAMES.get(kind, kind), _server_address(url))
            for name, (kind, url) in (providers or {}).items()
        }
        #: perf_counter seconds -> epoch nanoseconds (the record's times are perf_counter readings).
        self._offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
        self.exported = 0

    @classmethod
    def from_config(cls, config: Config) -> Tracing:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - start-up only

        try:
            service_version = version("gomodel-proxy")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
            service_version = ""
        from gomodel_proxy.config.provider_defaults import PROVIDER_DEFAULTS  # noqa: PLC0415

        providers = {name: (pc.type, pc.base_url or PROVIDER_DEFAULTS[pc.type].base_url)
                     for name, pc in config.providers.items()}
        return cls(config.observability.tracing, providers=providers, service_version=service_version)

    @staticmethod
    def _exporter(config: TracingConfig) -> SpanExporter:
        if config.exporter == "console":
            return ConsoleSpanExporter(service_name=config.service_name)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        return OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers) or None)

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Another destination for the spans (tests: a ``SimpleSpanProcessor`` over an in-memory exporter)."""
        self.provider.add_span_processor(processor)

    # -- at arrival --------------------------------------------------------------------------------
    def begin(self, headers: Mapping[str, str]) -> TraceContext:
        """The trace context of a request with these headers: the client's trace continued, or a new one."""
        parent = parse_traceparent(headers.get("traceparent"))
        span_id = random.getrandbits(64) or 1
        if parent is not None:
            trace_id, parent_id, sampled = parent
            tracestate = headers.get("tracestate", "")
            if tracestate and not _TRACESTATE.match(tracestate):
                tracestate = ""
            return TraceContext(trace_id, span_id, parent_id, sampled, tracestate)
        trace_id = random.getrandbits(128) or 1
        return TraceContext(trace_id, span_id, 0, (trace_id & _MASK_64) < self._bound)

    # -- at the end --------------------------------------------------------------------------------
    def _ns(self, perf: float) -> int:
        return self._offset_ns + int(perf * 1e9)

    def record(self, call: CallRecord) -> None:
        """The request's span and its attempts' spans, when sampled (export is the processor's thread)."""
        ctx = call.trace
        if ctx is None or not ctx.sampled:
            return
        if ctx.parent_span_id:
            remote = SpanContext(
                ctx.trace_id, ctx.parent_span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                trace_state=TraceState.from_header([ctx.tracestate]) if ctx.tracestate else None,
            )
            parent: Context | None = trace_api.set_span_in_context(NonRecordingSpan(remote))
        else:
            parent = Context()
            self._ids.trace_id = ctx.trace_id
        operation = OPERATIONS.get(call.endpoint, call.endpoint)
        gen_ai_provider, _ = self._providers.get(call.provider, (call.provider, None))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "http.response.status_code": call.status,
            "gomodel.request_id": call.request_id,
            "gomodel.endpoint": call.endpoint,
            "gomodel.outcome": call.outcome,
            "gomodel.stream": call.stream,
            "gomodel.overhead_ms": round(call.overhead_s * 1000, 3),
        }
        if call.model_requested:
            attributes["gen_ai.request.model"] = call.model_requested
        if call.provider:
            attributes["gen_ai.provider.name"] = gen_ai_provider
            attributes["gen_ai.system"] = gen_ai_provider
            attributes["gomodel.provider"] = call.provider
        if call.model:
            attributes["gen_ai.response.model"] = call.model
        usage = call.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_tokens
            if usage.cache_write_tokens:
                attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
            if usage.reasoning_tokens:
                attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
        ttfb = call.ttfb_s
        if ttfb is not None:
            attributes["gomodel.time_to_first_byte_ms"] = round(ttfb * 1000, 3)
        if call.cost is not None:
            attributes["gomodel.cost_usd"] = float(call.cost)
        if call.cached:
            attributes["gomodel.cached"] = True
        if call.failovers:
            attributes["gomodel.failovers"] = len(call.failovers)
        principal = call.principal
        attributes["gomodel.principal"] = principal.kind
        if principal.key_id:
            attributes["gomodel.key_id"] = principal.key_id
        if principal.team_id:
            attributes["gomodel.team_id"] = principal.team_id
        error = call.status >= 500 or call.outcome in ("error", "upstream_error")
        if error or call.status >= 400:
            attributes["error.type"] = call.error_code or (call.outcome if call.outcome != "ok" else str(call.status))
        self._ids.span_id = ctx.span_id
        name = f"{operation} {call.model_requested}" if call.provider and call.model_requested else operation
        finished = call.finished or time.perf_counter()
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes,
                                      start_time=self._ns(call.started))
        self._ids.trace_id = self._ids.span_id = 0  # unused when the sampler said no (cannot: same decision)
        if error:
            span.set_status(Status(StatusCode.ERROR))
        attempts = call.attempts
        if attempts:
            request_ctx = trace_api.set_span_in_context(span)
            answering = _answering(call, attempts)
            for index, attempt in enumerate(attempts):
                self._attempt_span(call, attempt, index, request_ctx, operation=operation,
                                   answering=attempt is answering)
        span.end(end_time=self._ns(finished))
        self.exported += 1

    def _attempt_span(self, call: CallRecord, attempt: Attempt, index: int, parent: Context, *, operation: str,
                      answering: bool) -> None:
        gen_ai_provider, address = self._providers.get(attempt.provider, (attempt.provider, None))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": gen_ai_provider,
            "gen_ai.system": gen_ai_provider,
            "gomodel.provider": attempt.provider,
            "gomodel.attempt": index + 1,
        }
        if attempt.key:
            attributes["gomodel.key_fingerprint"] = attempt.key
        same_target = attempt.provider == call.provider
        if same_target and call.model:
            attributes["gen_ai.request.model"] = call.model
        if address is not None:
            attributes["server.address"], attributes["server.port"] = address
        if attempt.status:
            attributes["http.response.status_code"] = attempt.status
        failed = bool(attempt.error) or attempt.status >= 400
        if failed:
            attributes["error.type"] = attempt.error or str(attempt.status)
        usage = call.usage
        if answering and usage is not None:
            if call.model:
                attributes["gen_ai.response.model"] = call.model
            attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        name = f"{operation} {call.model}" if same_target and call.model else operation
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.CLIENT, attributes=attributes,
                                      start_time=self._ns(attempt.started))
        if failed:
            span.set_status(Status(StatusCode.ERROR))
        span.end(end_time=self._ns(attempt.ended))

    # -- lifecycle ---------------------------------------------------------------------------------
    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is queued and stop the export thread (blocking: call it off the event loop)."""
        self.provider.shutdown()


def _answering(call: CallRecord, attempts: list[Attempt]) -> Attempt | None:
    """The attempt whose answer the client got: the last one of the answering provider that was answered."""
    for attempt in reversed(attempts):
        if attempt.provider == call.provider and not attempt.error and attempt.status < 400:
            return attempt
    return None
