"""What the gateway reads from Anthropic Messages traffic it forwards untouched, and the shapes it
answers Anthropic clients in (error bodies, the model list).

:class:`MessagesStreamTap` watches a native Messages stream go by: bytes are forwarded as they came,
usage and errors are read on the way, and only the few events that carry them are parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from gomodel_proxy.core.errors import InvalidRequestError, anthropic_error_type
from gomodel_proxy.core.types import ModelInfo, Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

#: Events that carry no usage and no error: counted, never parsed (Anthropic writes ``event:`` first).
_CONTENT_DELTA = b"event: content_block_delta"
_UNPARSED = (_CONTENT_DELTA, b"event: content_block_start", b"event: content_block_stop", b"event: ping")


_USAGE_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


def usage_from_anthropic(usage: Any) -> Usage | None:
    """Anthropic's ``usage`` normalised: ``input_tokens`` counts all input, cache reads and writes included
    (Anthropic's own ``input_tokens`` is only the uncached part)."""
    if not isinstance(usage, dict):
        return None
    fresh, read, written, output = (_int(usage.get(k)) for k in _USAGE_KEYS)
    return Usage(
        input_tokens=fresh + read + written, output_tokens=output, cached_tokens=read, cache_write_tokens=written
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class MessagesStreamTap:
    """Pass-through observer of an Anthropic Messages SSE stream (a ``StreamTranslator`` that changes
    nothing): ``usage`` from ``message_start``/``message_delta``, ``error`` from an ``error`` event,
    ``complete`` once ``message_stop`` (or an error) arrived."""

    __slots__ = ("_framer", "_usage", "complete", "content_events", "error", "usage")

    def __init__(self) -> None:
        self._framer = SSEFramer()
        #: The latest figure of each usage member: ``message_delta`` carries cumulative totals of some.
        self._usage: dict[str, Any] = {}
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.complete = False
        self.content_events = 0

    def feed(self, data: bytes) -> bytes:
        for raw in self._framer.feed(data):
            self._observe(raw)
        return data

    def finish(self) -> bytes:
        rest = self._framer.flush()
        if rest.strip():
            self._observe(rest)
        return b""  # already forwarded by feed

    def _observe(self, raw: bytes) -> None:
        if raw.startswith(_UNPARSED):
            if raw.startswith(_CONTENT_DELTA):
                self.content_events += 1
            return
        event = parse_event(raw)
        if event.event == "message_stop":
            self.complete = True
            return
        if not event.data or event.event not in ("message_start", "message_delta", "error"):
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            payload = None
        if event.event == "error":
            error = payload.get("error") if isinstance(payload, dict) else None
            self.error = error if isinstance(error, dict) else {"message": event.data.decode("utf-8", "replace")}
            self.complete = True
            return
        if not isinstance(payload, dict):
            return
        holder = payload.get("message") if event.event == "message_start" else payload
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            self._usage.update((k, v) for k, v in usage.items() if k in _USAGE_KEYS and isinstance(v, int))
            self.usage = usage_from_anthropic(self._usage)


def anthropic_error_body(body: bytes, status: int, provider: str) -> bytes:
    """An upstream error body in Anthropic's shape: kept byte for byte when it already is, else rebuilt
    from whatever message it holds (an OpenAI-shaped error, plain text, nothing)."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    message = ""
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            if parsed.get("type") == "error" and isinstance(error.get("type"), str) \
                    and isinstance(error.get("message"), str):
                return body
            message = str(error["message"]) if isinstance(error.get("message"), str) else ""
        elif isinstance(error, str):
            message = error
        if not message and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    if not message:
        message = body.decode("utf-8", "replace").strip()[:2000]
    if not message:
        message = f"provider '{provider}' answered HTTP {status}"
    return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})


def anthropic_model(info: ModelInfo) -> dict[str, Any]:
    """A model as Anthropic's ``GET /v1/models`` lists it."""
    created = datetime.fromtimestamp(max(0, info.created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": info.qualified_id, "display_name": info.qualified_id, "created_at": created}


def anthropic_model_list(models: list[ModelInfo], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of Anthropic's model list: ``limit`` (1-1000, default 20), ``after_id``, ``before_id``."""
    ids = [m.qualified_id for m in models]
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise InvalidRequestError("'limit' must be an integer between 1 and 1000.", param="limit") from None
    if not 1 <= limit <= 1000:
        raise InvalidRequestError("'limit' must be an integer between 1 and 1000.", param="limit")
    start, end = 0, len(models)
    after, before = query.get("after_id"), query.get("before_id")
    if before:
        end = ids.index(before) if before in ids else 0
        start = max(0, end - limit)
    elif after:
        start = ids.index(after) + 1 if after in ids else len(ids)
        end = min(len(ids), start + limit)
    else:
        end = min(len(ids), limit)
    page = [anthropic_model(m) for m in models[start:end]]
    has_more = start > 0 if before else end < len(ids)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
