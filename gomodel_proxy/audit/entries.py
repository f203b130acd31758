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

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gomodel_proxy.core.ids import random_id
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


#: Fields of the entries this module builds whose values it makes itself from typed data (ids, names from
#: the configuration, numbers, the chain's decisions): no secret can be in them, so the processor skips
#: them (a third of an entry's building time otherwise). Anything else -- bodies, errors, a step's fields
#: -- goes through it.
_BUILT_SAFE = frozenset({
    "id", "kind", "ts", "time", "request_id", "endpoint", "stream", "principal", "key_id", "user_id", "team_id",
    "model_requested", "provider", "model", "status", "outcome", "latency_ms", "ttfb_ms", "overhead_ms", "usage",
    "cost_usd", "cached", "cache", "guardrails", "failovers", "attempts", "attempt", "provider_key",
    "started_ms", "bodies_truncated",
})


def redact(entry: dict[str, Any], *, trusted: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Processor: the entry with secret-named fields blanked (at any depth) and free text scrubbed.

    In place, and returned: entries are built fresh for this, nobody else holds them. ``trusted``: fields the
    caller built itself from typed data, passed over.
    """
    for name, value in entry.items():
        if value is None or name in trusted or type(value) in (int, float, bool):
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
    return random_id()


_iso_second: list[Any] = [None, ""]


def iso(ts: float) -> str:
    """``ts`` as ISO 8601 UTC with milliseconds; the date and time of day are formatted once a second."""
    second = int(ts)
    if _iso_second[0] != second:
        _iso_second[0] = second
        _iso_second[1] = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_iso_second[1]}.{int((ts - second) * 1000):03d}Z"


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
    body kept (0: no bodies). Every field is made here from typed data, so only the bodies (text that
    passed) go through :func:`redact`; durations are milliseconds, unrounded (rounding costs more than the
    digits). This runs once per request in the background task: it is kept lean.
    """
    started = call.started
    finished = call.finished or started
    start_wall = ended_wall - (finished - started)
    principal = call.principal
    usage = call.usage
    notes = call.notes
    attempts = call.attempts
    entry_id = new_id()
    first_byte = call.first_byte_at
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
        "latency_ms": (finished - started) * 1000,
        "ttfb_ms": (first_byte - started) * 1000 if first_byte else None,
        "overhead_ms": call.overhead_s * 1000,
        "usage": None if usage is None else {
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
            "estimated": usage.estimated,
        },
        "cost_usd": str(call.cost) if call.cost is not None else None,
        "cached": call.cached,
        "cache": notes.get("cache") if notes else None,
        "guardrails": notes.get("guardrails") if notes else None,
        "failovers": [{"from": f.from_model, "to": f.to_model, "reason": f.reason} for f in call.failovers]
        if call.failovers else None,
        "attempts": len(attempts) if attempts else 0,
    }
    bodies = call.audit
    if body_limit and bodies is not None:
        request_text, request_cut = body_text(bodies.request, body_limit)
        response_text, response_cut = body_text(bodies.response(), body_limit)
        entry["request_body"] = request_text
        entry["response_body"] = response_text
        if request_cut or response_cut or bodies.overflow:
            entry["bodies_truncated"] = {"request": request_cut, "response": response_cut or bodies.overflow}
        redact(entry, trusted=_BUILT_SAFE)
    if not attempts:
        return [entry]
    out = [entry]
    request_id, endpoint, model_requested = call.request_id, call.endpoint, call.model_requested or None
    key_id, user_id, team_id = principal.key_id, principal.user_id, principal.team_id
    for n, attempt in enumerate(attempts, 1):
        out.append({
            "id": f"{entry_id}.{n}",
            "kind": "attempt",
            "ts": start_wall + (attempt.started - started),
            "request_id": request_id,
            "attempt": n,
            "endpoint": endpoint,
            "key_id": key_id,
            "user_id": user_id,
            "team_id": team_id,
            "model_requested": model_requested,
            "provider": attempt.provider,
            "provider_key": attempt.key,  # the key's fingerprint, never the key
            "status": attempt.status,
            "error": attempt.error or None,  # a fixed word (timeout, connection), never a message
            "started_ms": (attempt.started - started) * 1000,
            "latency_ms": (attempt.ended - attempt.started) * 1000,
        })
    return out


def step_entry(fields: Mapping[str, Any], wall: float | None = None, kind: str = "step") -> dict[str, Any]:
    """A ``step`` (or ``response``) entry from what a middleware step (or a caller) reported."""
    ts = time.time() if wall is None else wall
    entry = {"id": new_id(), "kind": kind, "ts": ts, "time": iso(ts), **fields}
    return redact(entry)
