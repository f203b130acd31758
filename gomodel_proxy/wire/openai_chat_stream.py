"""Observes an OpenAI chat-completions stream as it passes, without changing what the client asked for.

Usage is read from the stream. When the client did not ask for ``stream_options.include_usage`` but the
gateway asked the provider for it (to account tokens), the tap removes what that request added: the
usage-only final chunk and the ``"usage":null`` member OpenAI then puts in every chunk. Otherwise the
bytes are forwarded exactly as they came.
"""

from __future__ import annotations

from typing import Any

import orjson

from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

_USAGE_KEY = b'"usage"'
_USAGE_NULL = b',"usage":null'
_NULL_USAGE = b'"usage":null'
_ERROR_KEY = b'"error"'
_DONE = b"[DONE]"
_FINISHED = b'"finish_reason":"'


class ChatStreamTap:
    """Feed upstream bytes in; get the bytes to forward out; read usage, errors and progress after."""

    __slots__ = ("_framer", "content_events", "error", "saw_done", "saw_finish", "strip_usage", "usage")

    def __init__(self, *, strip_usage: bool) -> None:
        self.strip_usage = strip_usage
        self._framer = SSEFramer()
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.saw_done = False
        self.saw_finish = False
        self.content_events = 0

    def feed(self, chunk: bytes) -> bytes:
        """Return the bytes to forward for ``chunk``.

        In pass-through mode this is ``chunk`` itself, at once. In strip mode only whole events are
        forwarded (an event split across reads waits for its end, which the client needs anyway).
        """
        events = self._framer.feed(chunk)
        if not self.strip_usage:
            for event in events:
                self._observe(event)
            return chunk
        out: list[bytes] = []
        for event in events:
            if self._observe(event):
                continue
            out.append(event.replace(_USAGE_NULL, b"") if _USAGE_NULL in event else event)
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """Whether the stream reached a proper end ([DONE], or a finish reason, or an error event)."""
        return self.saw_done or self.saw_finish or self.error is not None

    def finish(self) -> bytes:
        """Bytes left over at the end of the stream (a partial event), to forward like a whole one.

        In pass-through mode they were forwarded already by ``feed``; in strip mode the same removals
        apply as to a whole event.
        """
        rest = self._framer.flush()
        if not rest:
            return b""
        drop = self._observe(rest)
        if not self.strip_usage or drop:
            return b""
        return rest.replace(_USAGE_NULL, b"") if _USAGE_NULL in rest else rest

    def _observe(self, raw: bytes) -> bool:
        """Record what ``raw`` tells; True when it is an injected usage-only chunk to drop."""
        if _FINISHED in raw:
            self.saw_finish = True
        # Most events carry no usage (or only the ``"usage":null`` that include_usage adds to every
        # chunk) and no error: they are counted without being parsed.
        usage_free = _USAGE_KEY not in raw or (_NULL_USAGE in raw and raw.count(_USAGE_KEY) == 1)
        if usage_free and _ERROR_KEY not in raw:
            if _DONE in raw and parse_event(raw).data == _DONE:
                self.saw_done = True
            elif raw.startswith(b"data:") or parse_event(raw).data:
                # Comment-only events (OpenRouter's ": OPENROUTER PROCESSING" keep-alives) carry no tokens.
                self.content_events += 1
            return False
        event = parse_event(raw)
        if not event.data:
            return False
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(payload, dict):
            return False
        error = payload.get("error")
        is_error = isinstance(error, dict) or event.event == "error"
        if is_error:
            self.error = error if isinstance(error, dict) else {"message": str(payload)}
        usage = Usage.from_openai(payload.get("usage"))
        if usage is None:
            x_groq = payload.get("x_groq")
            usage = Usage.from_openai(x_groq.get("usage")) if isinstance(x_groq, dict) else None
        if usage is not None:
            self.usage = usage
        if payload.get("choices"):
            self.content_events += 1
        return (
            self.strip_usage
            and usage is not None
            and payload.get("choices") == []
            and not is_error
        )
