"""Observes a native OpenAI Responses stream as it passes, forwarding its bytes untouched.

It reads the response id (from ``response.created``, to remember which provider owns it), the usage
(from the terminal ``response.completed``/``incomplete``/``failed``) and the provider's ``error``
event. Only those few events are parsed; a text delta is recognised by a substring test and passed.
A stream that ends without its terminal event gets an ``error`` event and ``response.failed`` in the
Responses format, so a client never takes a cut stream for a finished one.
"""

from __future__ import annotations

from typing import Any

import orjson

from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

#: Substrings of the events worth parsing. Inside a JSON string these quotes would be escaped, so a
#: delta whose text mentions them cannot match.
_CREATED = b'"response.created"'
_TERMINAL = (b'"response.completed"', b'"response.incomplete"', b'"response.failed"')
_ERROR = (b'"type":"error"', b'"type": "error"', b"event: error", b"event:error")
_SEQUENCE = b'"sequence_number":'


class ResponsesStreamTap:
    """Feed upstream bytes in; the same bytes come out; id, usage, error and completeness are kept."""

    __slots__ = (
        "_created", "_framer", "_last_seq", "complete", "content_events", "error", "response_id", "status", "usage",
    )

    def __init__(self) -> None:
        self._framer = SSEFramer()
        self._last_seq = -1
        self._created: dict[str, Any] | None = None  # the response as announced, for a failure to echo
        self.response_id: str | None = None
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        #: The terminal status (completed, incomplete, failed) once the terminal event passed.
        self.status: str | None = None
        self.complete = False
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        for event in self._framer.feed(chunk):
            self._observe(event)
        return chunk

    def finish(self) -> bytes:
        rest = self._framer.flush()
        if rest.strip():
            self._observe(rest)
        if self.complete:
            return b""
        return self.fail("The provider ended the stream before the response was complete.",
                         code="stream_truncated", error_type="upstream_error")

    def fail(self, message: str, *, code: str | None = None, error_type: str = "server_error") -> bytes:
        """An ``error`` event and ``response.failed`` for a stream the gateway has to end itself."""
        error = {"type": error_type, "code": code, "message": message, "param": None}
        self.error = error
        self.complete = True
        seq = self._last_seq + 1
        events: list[tuple[str, dict[str, Any]]] = [
            ("error", {"type": "error", "code": code, "message": message, "param": None, "error": error,
                       "sequence_number": seq}),
        ]
        if self._created is not None:
            response = {**self._created, "status": "failed", "error": {"code": "server_error", "message": message}}
            events.append(("response.failed", {"type": "response.failed", "response": response,
                                               "sequence_number": seq + 1}))
        return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(p) + b"\n\n" for name, p in events)

    def _observe(self, raw: bytes) -> None:
        if _SEQUENCE in raw:
            self._track_sequence(raw)
        created = self.response_id is None and _CREATED in raw
        terminal = any(t in raw for t in _TERMINAL)
        failed = any(e in raw for e in _ERROR)
        if not (created or terminal or failed):
            if b"data:" in raw:
                self.content_events += 1
            return
        event = parse_event(raw)
        try:
            payload = orjson.loads(event.data) if event.data else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type") or event.event
        response = payload.get("response")
        if kind == "response.created" and isinstance(response, dict) and isinstance(response.get("id"), str):
            self.response_id = response["id"]
            self._created = response
        elif kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(response, dict):
            self.status = str(response.get("status") or kind.removeprefix("response."))
            self.complete = True
            usage = Usage.from_openai(response.get("usage"))
            if usage is not None:
                self.usage = usage
            if kind == "response.failed" and self.error is None:
                error = response.get("error")
                self.error = error if isinstance(error, dict) else {"message": "the response failed"}
        elif kind == "error":
            self.complete = True  # the provider ended the stream with its error: nothing was cut
            error = payload.get("error")
            self.error = error if isinstance(error, dict) else {
                k: payload.get(k) for k in ("code", "message", "param")
            }

    def _track_sequence(self, raw: bytes) -> None:
        pos = raw.rfind(_SEQUENCE) + len(_SEQUENCE)
        end = pos
        while end < len(raw) and raw[end : end + 1] in b" 0123456789":
            end += 1
        digits = raw[pos:end].strip()
        if digits.isdigit():
            self._last_seq = max(self._last_seq, int(digits))
