"""The ``regex`` guardrail: an operator's own patterns (secrets, internal code names, ticket ids).

Each pattern has its action: ``block`` refuses the request (or ends the answer), ``redact`` puts
``[REDACTED:<pattern name>]`` in place of the match, ``log`` records it. The answer is scanned too unless
``scan_output: false``, through the hold-back window, so a match split across stream chunks is caught.
Errors and decisions name the pattern, never the text it matched.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.guardrails.interface import INLINE_CHARS, BaseGuardrail, GuardedRequest, Stage, TextFilter
from gomodel_proxy.guardrails.request_text import TextSlot, input_slots
from gomodel_proxy.guardrails.window import Match, WindowedFilter


class RegexFilter(BaseGuardrail):
    def __init__(self, name: str, priority: int, config: Mapping[str, Any], *, hold_back: int) -> None:
        super().__init__(name, priority)
        self.patterns: list[tuple[str, re.Pattern[str], str]] = [
            (p["name"], p["pattern"], p["action"]) for p in config["patterns"]
        ]
        self.actions = {name: action for name, _, action in self.patterns}
        self.scan_output: bool = config.get("scan_output", True)
        self.hold_back = hold_back

    def scan(self, text: str) -> list[Match]:
        """Every pattern's matches, sorted, overlaps resolved in favour of the earlier (then longer) one."""
        found: list[Match] = []
        for name, pattern, action in self.patterns:
            replacement = f"[REDACTED:{name}]" if action == "redact" else None
            found += [Match(m.start(), m.end(), name, replacement)
                      for m in pattern.finditer(text) if m.end() > m.start()]
        if len(found) < 2:
            return found
        found.sort(key=lambda m: (m.start, -m.end))
        kept: list[Match] = []
        for m in found:
            if not kept or m.start >= kept[-1].end:
                kept.append(m)
        return kept

    def _act(self, req: GuardedRequest, stage: Stage, m: Match) -> None:
        action = self.actions[m.label]
        req.decide(self.name, stage, "block" if action == "block" else ("redact" if action == "redact" else "log"),
                   f"pattern={m.label}")
        if action == "block":
            what = "prompt" if stage == "input" else "answer"
            raise GuardrailBlockedError(self.name, f"the {what} matches pattern '{m.label}'", stage=stage)

    async def process_input(self, req: GuardedRequest) -> None:
        slots = input_slots(req.api, req.body)
        if sum(len(slot.get()) for slot in slots) > INLINE_CHARS:  # large prompts: off the event loop
            await asyncio.to_thread(self._scan_input, req, slots)
        else:
            self._scan_input(req, slots)

    def _scan_input(self, req: GuardedRequest, slots: list[TextSlot]) -> None:
        for slot in slots:
            text = slot.get()
            matches = self.scan(text)
            if not matches:
                continue
            parts: list[str] = []
            pos = 0
            for m in matches:
                self._act(req, "input", m)
                if m.replacement is not None:
                    parts += (text[pos:m.start], m.replacement)
                    pos = m.end
            if parts:
                parts.append(text[pos:])
                slot.set("".join(parts))

    def process_output(self, req: GuardedRequest) -> TextFilter | None:
        if not self.scan_output:
            return None
        return WindowedFilter(self.scan, lambda m: self._act(req, "output", m), hold_back=self.hold_back)
