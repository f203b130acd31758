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
    #: Which filter found it, when several share one window (``merge_windows``).
    owner: int = 0


#: Finds the matches in a text, sorted by ``start`` and not overlapping.
Scanner = Callable[[str], list[Match]]
#: Called once for every match that is final (it will not grow); may raise ``GuardrailBlockedError``.
OnMatch = Callable[[Match], None]


class WindowedFilter:
    """A :class:`~gomodel_proxy.guardrails.interface.TextFilter` from a scanner, see the module docstring.

    The scanner also sees up to ``hold_back`` characters of text already let go, as context only (a
    look-behind, a word boundary), so a stream is scanned as the whole text would be; a match that starts
    in that context was dealt with before. ``replace`` makes the replacement of a match once it is final
    (numbered placeholders: a value still arriving must not use up a number); without it a match's own
    ``replacement`` is used.
    """

    __slots__ = ("_context", "_hold_back", "_on_match", "_pending", "_replace", "_scan")

    def __init__(self, scan: Scanner, on_match: OnMatch, *, hold_back: int,
                 replace: Callable[[Match, str], str | None] | None = None) -> None:
        self._scan = scan
        self._on_match = on_match
        self._hold_back = max(0, hold_back)
        self._replace = replace
        self._pending = ""
        self._context = ""

    def feed(self, text: str) -> str:
        pending = self._pending + text if self._pending else text
        if len(pending) <= self._hold_back:
            self._pending = pending
            return ""
        context = self._context
        buf = context + pending if context else pending
        start = len(context)
        cut = len(buf) - self._hold_back
        matches = [m for m in self._scan(buf) if m.start >= start]
        for m in matches:
            if m.start < cut < m.end:
                cut = m.start
                break
        out = self._apply(buf, start, cut, matches)
        self._pending = buf[cut:]
        self._context = buf[max(0, cut - self._hold_back):cut] if self._hold_back else ""
        return out

    def finish(self) -> str:
        pending, self._pending = self._pending, ""
        if not pending:
            return ""
        context, self._context = self._context, ""
        buf = context + pending
        start = len(context)
        return self._apply(buf, start, len(buf), [m for m in self._scan(buf) if m.start >= start])

    def _apply(self, buf: str, start: int, cut: int, matches: list[Match]) -> str:
        parts: list[str] = []
        pos = start
        for m in matches:
            if m.end > cut:
                break
            self._on_match(m)
            replacement = self._replace(m, buf[m.start:m.end]) if self._replace is not None else m.replacement
            if replacement is not None:
                parts.append(buf[pos:m.start])
                parts.append(replacement)
                pos = m.end
        if not parts:
            return buf[start:cut]
        parts.append(buf[pos:cut])
        return "".join(parts)


def merge_windows(windows: list[WindowedFilter]) -> WindowedFilter:
    """One window for several pattern filters: their held-back text would otherwise add up (two guardrails
    of 64 characters each would hold 128). Each filter scans the same text; where their matches overlap the
    earlier (then longer) one wins, and it is handled by the filter that found it."""
    if len(windows) == 1:
        return windows[0]

    def scan(text: str) -> list[Match]:
        found = [Match(m.start, m.end, m.label, m.replacement, owner)
                 for owner, w in enumerate(windows) for m in w._scan(text)]
        if len(found) < 2:
            return found
        found.sort(key=lambda m: (m.start, -m.end))
        kept = [found[0]]
        for m in found[1:]:
            if m.start >= kept[-1].end:
                kept.append(m)
        return kept

    def on_match(m: Match) -> None:
        windows[m.owner]._on_match(m)

    def replace(m: Match, value: str) -> str | None:
        own = windows[m.owner]._replace
        return own(m, value) if own is not None else m.replacement

    return WindowedFilter(scan, on_match, hold_back=max(w._hold_back for w in windows), replace=replace)


def flatten(filters: list[TextFilter]) -> list[TextFilter]:
    """Chained filters as their parts, in order."""
    out: list[TextFilter] = []
    for f in filters:
        out.extend(f._filters if isinstance(f, _Chained) else (f,))
    return out


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
