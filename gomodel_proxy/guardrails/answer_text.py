"""Guardrail text filters applied to a provider's answer in the shape the client receives it.

Output guardrails (:class:`~gomodel_proxy.guardrails.interface.TextFilter`) see plain text, one channel at a
time (a choice, a content block, an output part); the client sees JSON bodies and server-sent events in
three different APIs. This module is the bridge, kept pure (no I/O, no event loop) so that it can run inline
on the hot path and be tested byte by byte:

- :func:`edit_answer_body` runs every text channel of a complete JSON answer through its own filter;
- :class:`AnswerStreamEditor` does the same to an SSE stream fed in arbitrary splits: text deltas carry what
  the filters let go of, held-back text is flushed (as extra delta events) before the event that ends its
  channel, and the Responses API's "done" events, which repeat the full text, carry the edited text.

Only text is touched: tool-call arguments, reasoning, refusals and images pass as they came. Events that
cannot carry text are recognised by a bytes search and forwarded as their original bytes; an event is
re-serialised only when something in it changed. A ``GuardrailBlockedError`` raised by a filter propagates
to the caller, which answers the client with an error instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import orjson

from gomodel_proxy.guardrails.interface import GuardedApi, TextFilter
from gomodel_proxy.wire.sse import SSEFramer

#: Builds a fresh filter; called once for every text channel of an answer.
MakeFilter = Callable[[], TextFilter]

JSONObject = dict[str, Any]
#: Where one text sits in a parsed body: the object holding it and its key.
_TextSlot = tuple[JSONObject, str]


# -- complete answers ---------------------------------------------------------------------------------------


def edit_answer_body(api: GuardedApi, body: bytes, make: MakeFilter) -> tuple[bytes, list[str]]:
    """Run each text channel of a non-streamed JSON answer through its own filter (fed once, finished).

    Returns the new body and the texts as the client will see them. When no text changed, the original
    ``body`` object is returned as is; a body that is not a JSON object comes back unchanged with ``[]``.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, []
    if not isinstance(doc, dict):
        return body, []
    texts: list[str] = []
    changed = False
    for holder, key in _BODY_TEXT_SLOTS[api](doc):
        original: str = holder[key]
        text_filter = make()
        edited = text_filter.feed(original) + text_filter.finish()
        texts.append(edited)
        if edited != original:
            holder[key] = edited
            changed = True
    return (orjson.dumps(doc) if changed else body), texts


def _dicts(value: Any) -> Iterator[JSONObject]:
    """The objects of a JSON list (nothing when ``value`` is not a list)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _chat_body_slots(doc: JSONObject) -> Iterator[_TextSlot]:
    for choice in _dicts(doc.get("choices")):
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            yield message, "content"


def _output_text_parts(item: JSONObject) -> Iterator[tuple[int, JSONObject]]:
    """The ``output_text`` parts of one Responses output item, with their content index."""
    content = item.get("content")
    if isinstance(content, list):
        for index, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                yield index, part


def _responses_body_slots(doc: JSONObject) -> Iterator[_TextSlot]:
    for item in _dicts(doc.get("output")):
        for _, part in _output_text_parts(item):
            yield part, "text"


def _messages_body_slots(doc: JSONObject) -> Iterator[_TextSlot]:
    for block in _dicts(doc.get("content")):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            yield block, "text"


_BODY_TEXT_SLOTS: dict[GuardedApi, Callable[[JSONObject], Iterator[_TextSlot]]] = {
    "chat": _chat_body_slots,
    "responses": _responses_body_slots,
    "messages": _messages_body_slots,
}


# -- streams: SSE events ------------------------------------------------------------------------------------


class _Event:
    """One SSE event taken apart: its ``data`` payload and the lines around it (``event:``, ``id:``,
    comments), kept as they were so a changed payload can be put back in the same frame."""

    __slots__ = ("data", "eol", "head", "tail")

    def __init__(self, data: bytes, head: list[bytes], tail: list[bytes], eol: bytes) -> None:
        self.data = data
        self.head = head
        self.tail = tail
        self.eol = eol

    @classmethod
    def parse(cls, raw: bytes) -> _Event | None:
        """The event's parts, or ``None`` when it has no ``data:`` line."""
        if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.count(b"\n") == 2:
            return cls(raw[6:-2], [], [], b"\n")  # the common one-line event, without splitting lines
        eol = b"\r\n" if b"\r\n" in raw else b"\n" if b"\n" in raw else b"\r"
        head: list[bytes] = []
        tail: list[bytes] = []
        data: list[bytes] = []
        for line in raw.splitlines():
            if line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line:
                (tail if data else head).append(line)
        if not data:
            return None
        return cls(b"\n".join(data), head, tail, eol)

    def payload(self) -> JSONObject | None:
        """The data as a JSON object, ``None`` when it is not one (``[DONE]``, a stray line)."""
        try:
            value = orjson.loads(self.data)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def render(self, payload: JSONObject) -> bytes:
        """This event's frame with ``payload`` as its data."""
        eol = self.eol
        data = b"data: " + orjson.dumps(payload)
        if not self.head and not self.tail:
            return data + eol + eol
        return eol.join([*self.head, data, *self.tail]) + eol + eol


class _Channel:
    """One text channel of a stream: its filter, what it let out so far, and the last delta event that
    carried its text (the model for the extra event that flushes held-back text)."""

    __slots__ = ("choice", "event", "filter", "open", "parts", "payload")

    def __init__(self, text_filter: TextFilter) -> None:
        self.filter = text_filter
        self.parts: list[str] = []
        self.open = True
        self.event: _Event | None = None
        self.payload: JSONObject = {}
        self.choice: JSONObject = {}  # chat only: the choice inside ``payload``

    def feed(self, text: str) -> str:
        out = self.filter.feed(text)
        if out:
            self.parts.append(out)
        return out

    def flush(self) -> str:
        self.open = False
        out = self.filter.finish()
        if out:
            self.parts.append(out)
        return out

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _StreamEdit:
    """What the three APIs share: channels by key, the output queue, flushing held-back text."""

    def __init__(self, make: MakeFilter) -> None:
        self._make = make
        self._channels: dict[Hashable, _Channel] = {}
        self._open = 0
        self.out: list[bytes] = []

    def event(self, raw: bytes) -> None:
        """Handle one complete raw event, appending what to send to ``out``."""
        raise NotImplementedError

    def end(self) -> None:
        """The stream is over: flush every channel still holding text back."""
        self._flush_all()

    def texts(self) -> list[str]:
        return [channel.text for channel in self._channels.values()]

    def _channel(self, key: Hashable, event: _Event, payload: JSONObject) -> _Channel:
        """The open channel for ``key`` (a new one, with a new filter, when there is none), with ``event``
        recorded as its latest delta."""
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(self._make())
            self._open += 1
        elif not channel.open:  # text after the channel was closed: a fresh filter takes it from here
            channel.filter = self._make()
            channel.open = True
            self._open += 1
        channel.event = event
        channel.payload = payload
        return channel

    def _close(self, channel: _Channel) -> str:
        self._open -= 1
        return channel.flush()

    def _flush(self, key: Hashable) -> None:
        """Close the channel ``key`` if it is open, sending what it still held as an extra delta event."""
        channel = self._channels.get(key)
        if channel is not None and channel.open:
            rest = self._close(channel)
            if rest:
                self.out.append(self._extra_delta(channel, rest))

    def _flush_all(self) -> None:
        if self._open:
            for key in list(self._channels):
                self._flush(key)

    def _extra_delta(self, channel: _Channel, text: str) -> bytes:
        """A delta event carrying ``text``, modelled on the channel's last delta event."""
        raise NotImplementedError


def _finish_reason_set(raw: bytes) -> bool:
    """Whether a chat chunk may carry a ``finish_reason`` (more of them than ``null`` ones)."""
    return raw.count(b'"finish_reason"') != raw.count(b'"finish_reason":null')


class _ChatStreamEdit(_StreamEdit):
    """Chat completions: one channel per choice index, text in ``choices[].delta.content``."""

    def event(self, raw: bytes) -> None:
        if b'"content"' not in raw and not (self._open and (b"[DONE]" in raw or _finish_reason_set(raw))):
            self.out.append(raw)
            return
        event = _Event.parse(raw)
        payload = event.payload() if event is not None else None
        if event is None or payload is None:
            if event is not None and event.data == b"[DONE]":
                self._flush_all()
            self.out.append(raw)
            return
        changed = False
        for choice in _dicts(payload.get("choices")):
            changed |= self._edit_choice(choice, event, payload)
        if not changed:
            self.out.append(raw)
        elif not _chat_chunk_is_empty(payload):
            self.out.append(event.render(payload))

    def _edit_choice(self, choice: JSONObject, event: _Event, payload: JSONObject) -> bool:
        """Filter one choice's text in place (flushing it when the choice finishes); True if it changed."""
        key = choice.get("index", 0)
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        text = delta.get("content")
        finishing = choice.get("finish_reason") is not None
        if not isinstance(text, str) or (not text and key not in self._channels):
            if finishing:
                self._flush(key)
            return False
        channel = self._channel(key, event, payload)
        channel.choice = choice
        edited = channel.feed(text)
        if finishing:
            edited += self._close(channel)
        if edited == text:
            return False
        delta["content"] = edited
        return True

    def _extra_delta(self, channel: _Channel, text: str) -> bytes:
        assert channel.event is not None
        choice = {**channel.choice, "delta": {"content": text}, "finish_reason": None}
        if choice.get("logprobs") is not None:
            choice["logprobs"] = None
        chunk = {**channel.payload, "choices": [choice]}
        if chunk.get("usage") is not None:
            chunk["usage"] = None
        return channel.event.render(chunk)


def _chat_chunk_is_empty(payload: JSONObject) -> bool:
    """A chunk whose text was all held back and that carries nothing else: it can be left out."""
    if payload.get("usage") is not None:
        return False
    for choice in _dicts(payload.get("choices")):
        if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        for name, value in delta.items():
            if value is not None and not (name == "content" and value == ""):
                return False
    return True


class _MessagesStreamEdit(_StreamEdit):
    """Anthropic Messages: one channel per content block, text in ``text_delta`` deltas."""

    def event(self, raw: bytes) -> None:
        if b"text_delta" in raw:
            self._text_delta(raw)
        elif self._open and (
            b"content_block_stop" in raw or b"message_delta" in raw or b"message_stop" in raw or b"error" in raw
        ):
            self._ending(raw)
        else:
            self.out.append(raw)

    def _text_delta(self, raw: bytes) -> None:
        event = _Event.parse(raw)
        payload = event.payload() if event is not None else None
        delta = payload.get("delta") if payload is not None else None
        if (
            event is None
            or payload is None
            or payload.get("type") != "content_block_delta"
            or not isinstance(delta, dict)
            or delta.get("type") != "text_delta"
            or not isinstance(text := delta.get("text"), str)
        ):
            self.out.append(raw)
            return
        edited = self._channel(payload.get("index", 0), event, payload).feed(text)
        if edited == text:
            self.out.append(raw)
        elif edited:
            delta["text"] = edited
            self.out.append(event.render(payload))

    def _ending(self, raw: bytes) -> None:
        """Flush the block a ``content_block_stop`` ends, or every block before the message ends."""
        event = _Event.parse(raw)
        payload = (event.payload() if event is not None else None) or {}
        kind = payload.get("type")
        if kind == "content_block_stop":
            self._flush(payload.get("index", 0))
        elif kind in ("message_delta", "message_stop", "error"):
            self._flush_all()
        self.out.append(raw)

    def _extra_delta(self, channel: _Channel, text: str) -> bytes:
        assert channel.event is not None
        return channel.event.render({**channel.payload, "delta": {**channel.payload["delta"], "text": text}})


_SEQUENCE_NUMBER = re.compile(rb'"sequence_number"\s*:\s*(\d+)')
#: Events of the Responses API that repeat the full text (or end the answer) and so are parsed.
_RESPONSES_FULL_TEXT = (
    b"response.output_text.done",
    b"response.content_part.done",
    b"response.output_item.done",
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
)
_RESPONSES_ENDINGS = ("response.completed", "response.incomplete", "response.failed", "error")


class _ResponsesStreamEdit(_StreamEdit):
    """OpenAI Responses: one channel per output text part, keyed by (item id or output index, content
    index). Events that repeat the full text get the edited text; ``sequence_number`` is renumbered so it
    still rises by one from event to event when deltas are added or left out."""

    def __init__(self, make: MakeFilter) -> None:
        super().__init__(make)
        self._sequence: int | None = None  # the last sequence number sent

    def event(self, raw: bytes) -> None:
        if b"response.output_text.delta" in raw:
            self._text_delta(raw)
        elif self._channels and (any(name in raw for name in _RESPONSES_FULL_TEXT) or b'"error"' in raw):
            self._full_text(raw)
        else:
            self.out.append(self._renumber_raw(raw))

    def _next_sequence(self, original: int) -> int:
        self._sequence = original if self._sequence is None else self._sequence + 1
        return self._sequence

    def _renumber_raw(self, raw: bytes) -> bytes:
        """``raw`` with its sequence number made the next one, its other bytes untouched."""
        if b'"sequence_number"' not in raw:
            return raw
        found = _SEQUENCE_NUMBER.search(raw)
        if found is None:
            return raw
        number = self._next_sequence(int(found[1]))
        if number == int(found[1]):
            return raw
        return raw[: found.start(1)] + str(number).encode() + raw[found.end(1) :]

    def _emit(self, raw: bytes, event: _Event, payload: JSONObject, changed: bool) -> None:
        """Send a parsed event: its original bytes (renumbered) when unchanged, else re-serialised."""
        if not changed:
            self.out.append(self._renumber_raw(raw))
            return
        number = payload.get("sequence_number")
        if isinstance(number, int):
            payload["sequence_number"] = self._next_sequence(number)
        self.out.append(event.render(payload))

    def _key(self, item_id: Any, output_index: Any, content_index: Any) -> Hashable:
        return (item_id if isinstance(item_id, str) and item_id else output_index, content_index)

    def _find(self, item_id: Any, output_index: Any, content_index: Any) -> _Channel | None:
        """The channel of a part named by item id and/or output index (deltas may carry either)."""
        channel = self._channels.get(self._key(item_id, output_index, content_index))
        if channel is None:
            channel = self._channels.get((output_index, content_index))
        return channel

    def _text_delta(self, raw: bytes) -> None:
        event = _Event.parse(raw)
        payload = event.payload() if event is not None else None
        if (
            event is None
            or payload is None
            or payload.get("type") != "response.output_text.delta"
            or not isinstance(text := payload.get("delta"), str)
        ):
            self.out.append(self._renumber_raw(raw))
            return
        key = self._key(payload.get("item_id"), payload.get("output_index"), payload.get("content_index", 0))
        edited = self._channel(key, event, payload).feed(text)
        if edited:
            payload["delta"] = edited
            self._emit(raw, event, payload, edited != text)

    def _full_text(self, raw: bytes) -> None:
        """Flush the channels an event ends and put their edited text wherever it repeats the full text."""
        event = _Event.parse(raw)
        payload = event.payload() if event is not None else None
        if event is None or payload is None:
            self.out.append(self._renumber_raw(raw))
            return
        kind = payload.get("type")
        item_id, output_index = payload.get("item_id"), payload.get("output_index")
        changed = False
        if kind == "response.output_text.done":
            changed = self._set_text(payload, self._find(item_id, output_index, payload.get("content_index", 0)))
        elif kind == "response.content_part.done":
            part = payload.get("part")
            if isinstance(part, dict) and part.get("type") == "output_text":
                changed = self._set_text(part, self._find(item_id, output_index, payload.get("content_index", 0)))
        elif kind == "response.output_item.done":
            item = payload.get("item")
            if isinstance(item, dict):
                changed = self._set_item_texts(item, output_index)
        elif kind in _RESPONSES_ENDINGS:
            self._flush_all()
            response = payload.get("response")
            if isinstance(response, dict):
                for index, item in enumerate(response.get("output") or ()):
                    if isinstance(item, dict):
                        changed |= self._set_item_texts(item, index)
        self._emit(raw, event, payload, changed)

    def _set_item_texts(self, item: JSONObject, output_index: Any) -> bool:
        changed = False
        for content_index, part in _output_text_parts(item):
            changed |= self._set_text(part, self._find(item.get("id"), output_index, content_index))
        return changed

    def _set_text(self, holder: JSONObject, channel: _Channel | None) -> bool:
        """Flush ``channel`` if still open and put its edited text in ``holder["text"]``; True if it changed."""
        if channel is None:
            return False
        if channel.open:
            rest = self._close(channel)
            if rest:
                self.out.append(self._extra_delta(channel, rest))
        text = channel.text
        if holder.get("text") == text:
            return False
        holder["text"] = text
        return True

    def _extra_delta(self, channel: _Channel, text: str) -> bytes:
        assert channel.event is not None
        payload = {**channel.payload, "delta": text}
        if payload.get("logprobs"):
            payload["logprobs"] = []
        number = payload.get("sequence_number")
        if isinstance(number, int):
            payload["sequence_number"] = self._next_sequence(number)
        return channel.event.render(payload)


_TERMINATORS = (b"\n\n", b"\r\r", b"\r\n\r\n")
_STREAM_EDITS: dict[GuardedApi, type[_StreamEdit]] = {
    "chat": _ChatStreamEdit,
    "responses": _ResponsesStreamEdit,
    "messages": _MessagesStreamEdit,
}


class AnswerStreamEditor:
    """Runs guardrail filters over a streamed answer: SSE bytes in, split anywhere; SSE bytes out.

    Each text channel gets its own filter from ``make``. Events that carry no text pass unchanged and in
    order, after any text their channel still held back. A filter's ``GuardrailBlockedError`` propagates
    from :meth:`feed` or :meth:`finish`; the editor is not to be used after that.
    """

    __slots__ = ("_edit", "_framer")

    def __init__(self, api: GuardedApi, make: MakeFilter) -> None:
        self._framer = SSEFramer()
        self._edit = _STREAM_EDITS[api](make)

    def feed(self, data: bytes) -> bytes:
        """The edited bytes of the events ``data`` completed (a partial event waits for the rest)."""
        events = self._framer.feed(data)
        if not events:
            return b""
        edit = self._edit
        for raw in events:
            edit.event(raw)
        return self._take()

    def finish(self) -> bytes:
        """End of stream: a trailing unterminated event, then everything the filters still held back."""
        edit = self._edit
        rest = self._framer.flush()
        if rest.strip():
            edit.event(rest)
        elif rest:
            edit.out.append(rest)
        # An unterminated last event stays last: text flushed after it would be glued to it.
        unterminated = edit.out.pop() if edit.out and not edit.out[-1].endswith(_TERMINATORS) else b""
        edit.end()
        if unterminated:
            edit.out.append(unterminated)
        return self._take()

    @property
    def texts(self) -> list[str]:
        """Each channel's text as sent to the client so far, in the order the channels began."""
        return self._edit.texts()

    def _take(self) -> bytes:
        out = self._edit.out
        if not out:
            return b""
        self._edit.out = []
        return out[0] if len(out) == 1 else b"".join(out)
