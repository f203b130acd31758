"""Server-sent events framing, fed bytes in arbitrary splits, with no I/O.

The framer only finds event boundaries (a blank line: ``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``, per the
HTML living standard's SSE grammar); it hands back each event's raw bytes untouched so that callers
can forward them byte for byte and parse only the few events they care about.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


class SSEFramer:
    """Splits a byte stream into raw events, each ending with its blank-line terminator."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the events it completed (possibly none)."""
        buffer = self._buffer + data if self._buffer else data
        events: list[bytes] = []
        start = 0
        # A terminator absent from the buffer stays absent from every later part of it; searching only
        # for the present ones keeps a large read with many events linear (CRLF streams have no \n\n).
        present = tuple(sep for sep in _SEPARATORS if sep in buffer)
        while present:
            end = _find_event_end(buffer, start, present)
            if end < 0:
                break
            events.append(buffer[start:end])
            start = end
        self._buffer = buffer[start:] if start else buffer
        return events

    def flush(self) -> bytes:
        """Whatever trails the last complete event (a stream cut mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _find_event_end(buffer: bytes, start: int, separators: tuple[bytes, ...] = _SEPARATORS) -> int:
    """Index just past the first event terminator at or after ``start``; -1 when none."""
    best = -1
    for sep in separators:
        # Once a terminator is known, only an earlier-ending one matters: bounding the search avoids
        # rescanning the rest of the buffer for every event.
        pos = buffer.find(sep, start) if best < 0 else buffer.find(sep, start, best - 1)
        if pos >= 0 and (best < 0 or pos + len(sep) < best):
            best = pos + len(sep)
    return best


@dataclass(slots=True, frozen=True)
class SSEEvent:
    """The parsed fields of one event (comments dropped, ``data`` lines joined with ``\\n``)."""

    event: str
    data: bytes

    @property
    def is_comment_only(self) -> bool:
        return not self.event and not self.data


def parse_event(raw: bytes) -> SSEEvent:
    """Parse one raw event as returned by :class:`SSEFramer`."""
    name = ""
    data_lines: list[bytes] = []
    for line in raw.splitlines():
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data_lines.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return SSEEvent(event=name, data=b"\n".join(data_lines))
