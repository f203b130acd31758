"""Audit entries from what a request left behind (``CallRecord``), and the processor that removes secrets.

Built in the pipeline's background task, never on the request path. Cheap by design: no body is parsed
(a body is kept as the text that passed, cut at the configured size), times are arithmetic on the
``perf_counter`` stamps the request already took, and secrets are removed by one processor
(:func:`redact`) that every entry goes through before any sink sees it.

Entries (flat JSON-able dicts; ``kind`` says which):

- ``request``: one per request: who (key, user, team), what (route, model asked, target that answered),
  how it ended (status, outcome, latency, time to first byte), usage and cost, the chain's decisions
  (guardrails, cache), the failover steps, and the bodies when ``audit.include_bodies``.
- ``attempt``: one per send to a provider (a retry, another key, a failover target): provider, key
  fingerprint, status or error, when it started relative to the request and how long it took.
- ``step``: what a middleware step reports itself (``log_middleware_step``: a guardrail's decision).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.observability import logging as log_redaction

#: Field names whose values are secrets (the log pipeline's list): blanked wherever they appear.
SECRET_FIELDS = log_redaction.SECRET_FIELDS
REDACTED = log_redaction.REDACTED
#: Free-text fields scrubbed of secret-looking text (bearer tokens, provider key formats, ``?key=``).
TEXT_FIELDS = ("request_body", "response_body", "path", "detail", "error")


def scrub(text: str) -> str:
    """``text`` without bearer tokens, provider keys or a URL's ``key=`` (the log pipeline's patterns)."""
    return log_redaction._scrub(text)


def redact(entry: dict[str, Any]) -> dict[str, Any]:
    """Processor: the entry with secret-named fields blanked (at any depth) and free text scrubbed.

    In place, and returned: entries are built fresh for this, nobody else holds them.
    """
    for name, value in entry.items():
        if value is None or type(value) in (int, float, bool):
            continue
        if name.lower() in SECRET_FIELDS:
            entry[name] = REDACTED
        elif isinstance(value, str):
            if name in TEXT_FIELDS:
                entry[name] = scrub(value)
        elif isinstance(value, Mapping | list | tuple):
            entry[name] = log_redaction._redact_fields(value)
    return entry


def new_id() -> str:
    """An entry id: unique, sortable within a second is not needed (``ts`` orders entries)."""
    return os.urandom(12).hex()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 3) if seconds is not None else None


def body_text(data: bytes | None, limit: int) -> tuple[str | None, bool]:
    """``data`` as text cut at ``limit`` bytes (a cut UTF-8 sequence is replaced), and whether it was cut."""
    if data is None:
        return None, False
    cut = len(data) > limit
    return (data[:limit] if cut else data).decode("utf-8", "replace"), cut


def request_entries(call: CallRecord, ended_wall: float, *, body_limit: int = 0) -> list[dict[str, Any]]:
    """The ``request`` entry of a finished call, then one ``attempt`` entry per provider send.

    ``ended_wall``: the wall-clock time the call was recorded at (its ``finished`` stamp); every other
    time is placed from it with the call's ``perf_counter`` stamps. ``body_limit``: the most bytes of each
    body kept (0: no bodies).
    """
    started = call.started
    finished = call.finished or started
    start_wall = ended_wall - (finished - started)
    principal = call.principal
    usage = call.usage
    notes = call.notes or {}
    entry_id = new_id()
    entry: dict[str, Any] = {
        "id": entry_id,
        "kind": "request",
        "ts": start_wall,
        "time": iso(start_wall),
        "request_id": call.request_id,
        "endpoint": call.endpoint,
        "stream": call.stream,
        "principal": principal.kind,
        "key_id": principal.key_id,
        "user_id": principal.user_id,
        "team_id": principal.team_id,
        "model_requested": call.model_requested or None,
        "provider": call.provider or None,
        "model": call.model or None,
        "status": call.status,
        "outcome": call.outcome,
        "latency_ms": _ms(finished - started),
        "ttfb_ms": _ms(call.first_byte_at - started) if call.first_byte_at else None,
        "overhead_ms": _ms(call.overhead_s),
        "usage": None if usage is None else {
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
        },
        "cost_usd": str(call.cost) if call.cost is not None else None,
        "cached": call.cached,
        "cache": notes.get("cache"),
        "guardrails": notes.get("guardrails"),
        "failovers": [{"from": f.from_model, "to": f.to_model, "reason": f.reason} for f in call.failovers]
        if call.failovers else None,
        "attempts": len(call.attempts) if call.attempts else 0,
    }
    bodies = call.audit
    if body_limit and bodies is not None:
        request_text, request_cut = body_text(bodies.request, body_limit)
        response_text, response_cut = body_text(bodies.response(), body_limit)
        entry["request_body"] = request_text
        entry["response_body"] = response_text
        if request_cut or response_cut or bodies.overflow:
            entry["bodies_truncated"] = {"request": request_cut, "response": response_cut or bodies.overflow}
    out = [redact(entry)]
    for n, attempt in enumerate(call.attempts or (), 1):
        at = start_wall + (attempt.started - started)
        out.append(redact({
            "id": f"{entry_id}.{n}",
            "kind": "attempt",
            "ts": at,
            "time": iso(at),
            "request_id": call.request_id,
            "attempt": n,
            "endpoint": call.endpoint,
            "key_id": principal.key_id,
            "user_id": principal.user_id,
            "team_id": principal.team_id,
            "model_requested": call.model_requested or None,
            "provider": attempt.provider,
            "provider_key": attempt.key,
            "status": attempt.status,
            "error": attempt.error or None,
            "started_ms": _ms(attempt.started - started),
            "latency_ms": _ms(attempt.ended - attempt.started),
        }))
    return out


def step_entry(fields: Mapping[str, Any], wall: float | None = None, kind: str = "step") -> dict[str, Any]:
    """A ``step`` (or ``response``) entry from what a middleware step (or a caller) reported."""
    ts = time.time() if wall is None else wall
    entry = {"id": new_id(), "kind": kind, "ts": ts, "time": iso(ts), **fields}
    return redact(entry)
