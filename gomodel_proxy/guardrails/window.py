"""The hold-back window: pattern guardrails applied to text that arrives in pieces.

A stream's text comes as deltas split anywhere, so a card number or a secret may begin in one chunk and end
in the next. :class:`WindowedFilter` keeps the last ``hold_back`` characters of what it was fed, scans the
rest together with them, and lets go only of text that no match still being written can reach: the cut
moves back to the start of any match that straddles it. A pattern at most ``hold_back`` characters long is
therefore always seen whole; the price is that the client sees the text ``hold_back`` characters later.

Fed once and finished, the same filter handles a non-streamed answer. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gomodel_proxy.guardrails.interface import TextFilter


@dataclass(frozen=True, slots=True)
class Match:
    """One finding in the scanned text: ``replacement`` is the text to put in its place (``None``: leave
    it), ``label`` what was found (``email``, a pattern's name) for decisions and errors."""

    start: int
    end: int
    label: str
    replacement: str | None = None


#: Finds the matches in a text, sorted by ``start`` and not overlapping.
Scanner = Callable[[str], list[Match]]
#: Called once for every match that is final (it will not grow); may raise ``GuardrailBlockedError``.
OnMatch = Callable[[Match], None]


class WindowedFilter:
    """A :class:`~gomodel_proxy.guardrails.interface.TextFilter` from a scanner, see the module docstring."""

    __slots__ = ("_hold_back", "_on_match", "_pending", "_scan")

    def __init__(self, scan: Scanner, on_match: OnMatch, *, hold_back: int) -> None:
        self._scan = scan
        self._on_match = on_match
        self._hold_back = max(0, hold_back)
        self._pending = ""

    def feed(self, text: str) -> str:
        buf = self._pending + text if self._pending else text
        cut = len(buf) - self._hold_back
        if cut <= 0:
            self._pending = buf
            return ""
        matches = self._scan(buf)
        for m in matches:
            if m.start < cut < m.end:
                cut = m.start
                break
        self._pending = buf[cut:]
        return self._apply(buf, cut, matches)

    def finish(self) -> str:
        buf, self._pending = self._pending, ""
        if not buf:
            return ""
        return self._apply(buf, len(buf), self._scan(buf))

    def _apply(self, buf: str, cut: int, matches: list[Match]) -> str:
        parts: list[str] = []
        pos = 0
        for m in matches:
            if m.end > cut:
                break
            self._on_match(m)
            if m.replacement is not None:
                parts.append(buf[pos:m.start])
                parts.append(m.replacement)
                pos = m.end
        if not parts:
            return buf[:cut]
        parts.append(buf[pos:cut])
        return "".join(parts)


class _Chained:
    """Filters in a row: each one's output is the next one's input."""

    __slots__ = ("_filters",)

    def __init__(self, filters: list[TextFilter]) -> None:
        self._filters = filters

    def feed(self, text: str) -> str:
        for f in self._filters:
            if not text:
                return ""
            text = f.feed(text)
        return text

    def finish(self) -> str:
        text = ""
        for f in self._filters:
            text = (f.feed(text) if text else "") + f.finish()
        return text


def chain_filters(filters: list[TextFilter]) -> TextFilter | None:
    """One filter for several (``None`` for none, the filter itself for one)."""
    if not filters:
        return None
    if len(filters) == 1:
        return filters[0]
    return _Chained(filters)
