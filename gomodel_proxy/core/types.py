"""Typed payloads that cross layer boundaries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal


@dataclass(slots=True)
class Usage:
    """Token counts of one call, normalised across providers."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    #: Input tokens written to a prompt cache (Anthropic's ``cache_creation_input_tokens``), part of
    #: ``input_tokens`` like ``cached_tokens`` (reads) are; billed at the provider's cache-write price.
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read OpenAI's ``usage`` object (chat or embeddings); ``None`` when absent or malformed.

        ``"estimated": true`` (not OpenAI's; the gateway's translations add it when a provider counted
        nothing) marks the figures as an estimate.
        """
        if not isinstance(usage, dict):
            return None
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
        written = _int(prompt_details.get("cache_write_tokens")) if isinstance(prompt_details, dict) else 0
        written = written or _int(usage.get("cache_write_tokens"))
        reasoning = (
            _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        )
        return cls(input_tokens=prompt, output_tokens=completion, cached_tokens=cached, reasoning_tokens=reasoning,
                   estimated=usage.get("estimated") is True, cache_write_tokens=written)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """One model a provider serves, as listed by ``/v1/models``."""

    id: str
    provider: str
    owned_by: str = ""
    created: int = 0

    @property
    def qualified_id(self) -> str:
        return f"{self.provider}/{self.id}"

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.qualified_id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by or self.provider,
        }


@dataclass(slots=True, frozen=True)
class FailoverStep:
    """One move of a request from a target to the next (``routing.executor``): ids are ``provider/model``."""

    from_model: str
    to_model: str
    reason: str


@dataclass(slots=True, frozen=True)
class Attempt:
    """One send of a request to a provider (a retry, another key, a failover target are attempts of
    their own): who was asked, with which key (its fingerprint only), and how it ended."""

    provider: str
    key: str
    started: float
    ended: float
    status: int = 0
    #: Why it failed without an answer (``connection``, ``timeout``, ``circuit_open``); "": it was answered.
    error: str = ""


@dataclass(slots=True)
class TraceContext:
    """W3C trace context of one request, decided when it arrives (``observability.tracing``): the ids of its
    span, its parent's (the client's span, when it sent a ``traceparent``) and whether it is sampled."""

    trace_id: int
    span_id: int
    #: The client's span (from its ``traceparent``); 0: the request starts the trace.
    parent_span_id: int = 0
    sampled: bool = True
    #: The client's ``tracestate``, passed on unchanged.
    tracestate: str = ""
    #: The header lines for the provider (``traceparent``, ``tracestate``), built once.
    _header: bytes = b""

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{'01' if self.sampled else '00'}"

    def outgoing(self, headers: bytes) -> bytes:
        """``headers`` (``Name: value\r\n`` lines) for a provider: any trace context in them (a pass-through
        of the client's) replaced by this request's."""
        if not self._header:
            line = b"traceparent: " + self.traceparent.encode("ascii") + b"\r\n"
            if self.tracestate:
                line += b"tracestate: " + self.tracestate.encode("latin-1") + b"\r\n"
            self._header = line
        if b"trace" in headers.lower():
            headers = b"".join(
                line for line in headers.splitlines(keepends=True)
                if line.partition(b":")[0].strip().lower() not in (b"traceparent", b"tracestate")
            )
        return headers + self._header


PrincipalKind = Literal["anonymous", "master", "key", "jwt"]


@dataclass(slots=True, frozen=True)
class Principal:
    """Who sent a request, as authentication established it: the subject of limits, budgets and usage.

    ``anonymous`` when the gateway has no authentication configured; ``master`` for the master key;
    ``key`` for a virtual key (``key_id`` set); ``jwt`` for a token from the configured issuer.
    """

    kind: PrincipalKind = "anonymous"
    key_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    #: May use the admin API.
    is_admin: bool = False
    #: Model ids or ``fnmatch`` patterns this principal may use (``None``: every model).
    allowed_models: tuple[str, ...] | None = None
    #: The key's own limits (``None``: the configured default applies).
    rpm: int | None = None
    tpm: int | None = None


ANONYMOUS = Principal()


@dataclass(slots=True)
class CallRecord:
    """What the gateway observed of one client request: the source of access logs, metrics and usage."""

    request_id: str
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    stream: bool = False
    model_requested: str = ""
    provider: str = ""
    model: str = ""
    status: int = 0
    outcome: str = "ok"
    usage: Usage | None = None
    upstream_started: float = 0.0
    upstream_answered_at: float = 0.0
    first_byte_at: float = 0.0
    finished: float = 0.0
    #: The failover steps taken before the answering target (empty for nearly every request).
    failovers: tuple[FailoverStep, ...] = ()
    #: Who sent it (set by authentication; ``ANONYMOUS`` when the gateway has none).
    principal: Principal = ANONYMOUS
    #: Headers the gateway adds to the answer (e.g. its own ``x-ratelimit-*``); ``None``: none.
    headers: dict[str, str] | None = None
    #: The price of the call in USD once known (``billing``); ``None``: not priced (yet, or no price).
    cost: Decimal | None = None
    #: Whether this request is accounted as usage (LLM API routes; not /admin, /v1/models, probes).
    billable: bool = False
    #: Answered from the response cache: no provider was called, so it costs nothing.
    cached: bool = False
    #: The provider sends made for it (``core.context.note_attempt``); ``None``: none yet.
    attempts: list[Attempt] | None = None
    #: What the chain's steps decided (``guardrails``: decisions, ``cache``: hit / miss / bypass), for the
    #: audit trail; ``None``: nothing.
    notes: dict[str, Any] | None = None
    #: What a streamed answer passes through on its way to the client, besides its tap (output
    #: guardrails, the cache's recorder): ``core.interfaces.StreamFilter`` objects, the last added
    #: (the step nearest the provider) first; ``None``: none.
    stream_filters: list[Any] | None = None
    #: The bodies kept for the audit trail (``audit.capture.Bodies``), only when ``audit.include_bodies``;
    #: ``None``: none kept.
    audit: Any = None
    #: The request's place in a distributed trace (``observability.tracing``); ``None``: tracing is off.
    trace: TraceContext | None = None
    #: The ``code`` of the gateway error that answered it (``rate_limit_exceeded``, ``budget_exceeded``,
    #: ...); "": none. Set by the edge, read by the metrics.
    error_code: str = ""

    @property
    def latency_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def ttfb_s(self) -> float | None:
        return self.first_byte_at - self.started if self.first_byte_at else None

    @property
    def overhead_s(self) -> float:
        """Time spent in the gateway itself before answering, excluding the provider's wait."""
        if not self.upstream_started:
            end = self.first_byte_at or self.finished or time.perf_counter()
            return end - self.started
        end = self.first_byte_at or self.finished or time.perf_counter()
        # A provider that never answered (refused, timed out) was waited on until the gateway answered.
        provider_wait = (self.upstream_answered_at or end) - self.upstream_started
        return max(0.0, end - self.started - provider_wait)
