"""The ``pii-redactor`` guardrail: personal data kept from the provider.

Input: every text the model reads is scanned (``pii.PIIDetector``); ``redact`` puts typed placeholders in
its place (``[EMAIL_1]``; one value, one placeholder, within a request), ``block`` refuses the request,
``log`` only records what kinds were seen. With ``restore: true`` the placeholders the provider echoes in
its answer are turned back into the user's own values on the way out, so the user reads their data while
the provider never saw it. ``scan_output: true`` also scans the answer (data the model produced itself)
with the same action, through the hold-back window.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any, cast

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.guardrails.interface import INLINE_CHARS, Action, BaseGuardrail, GuardedRequest, TextFilter
from gomodel_proxy.guardrails.pii import Finding, PIIDetector, PIIKind, Redactor, StreamRestorer
from gomodel_proxy.guardrails.request_text import TextSlot, input_slots
from gomodel_proxy.guardrails.window import Match, WindowedFilter, chain_filters


def _counts(findings: list[Finding]) -> str:
    return ",".join(f"{kind}={n}" for kind, n in sorted(Counter(f.kind for f in findings).items()))


class PIIRedactor(BaseGuardrail):
    def __init__(self, name: str, priority: int, config: Mapping[str, Any], *, hold_back: int) -> None:
        super().__init__(name, priority)
        self.detector = PIIDetector(config["detect"])
        self.action: str = config["action"]
        self.restore: bool = config.get("restore", False)
        self.scan_output: bool = config.get("scan_output", False)
        self.hold_back = hold_back

    async def process_input(self, req: GuardedRequest) -> None:
        """Large prompts (over ``INLINE_CHARS``) are scanned in a worker thread: a 100 KB prompt takes
        milliseconds of regex and libphonenumber work that other requests should not wait behind."""
        slots = [(slot, slot.get()) for slot in input_slots(req.api, req.body)]
        if sum(len(text) for _, text in slots) > INLINE_CHARS:
            await asyncio.to_thread(self._scan_input, req, slots)
        else:
            self._scan_input(req, slots)

    def _scan_input(self, req: GuardedRequest, slots: list[tuple[TextSlot, str]]) -> None:
        """``slots``: each with its text. A prompt without personal data (nearly all) allocates nothing more."""
        find = self.detector.find
        found: list[Finding] = []
        if self.action == "redact":
            redactor: Redactor | None = None
            for slot, text in slots:
                findings = find(text)
                if findings:
                    if redactor is None:
                        redactor = Redactor(self.detector)
                    slot.set(redactor.replace(text, findings))
                    found += findings
            if redactor is not None:
                req.state[self.name] = redactor
                req.decide(self.name, "input", "redact", _counts(found))
            return
        for _, text in slots:
            found += find(text)
        if not found:
            return
        if self.action == "block":
            req.decide(self.name, "input", "block", _counts(found))
            kinds = ", ".join(sorted({f.kind for f in found}))
            raise GuardrailBlockedError(self.name, f"the prompt contains personal data ({kinds})")
        req.decide(self.name, "input", "log", _counts(found))

    def process_output(self, req: GuardedRequest) -> TextFilter | None:
        redactor = req.state.get(self.name)
        if not self.restore or not isinstance(redactor, Redactor):
            redactor = None  # nothing to put back (the prompt had no personal data, or restoring is off)
            if not self.scan_output:
                return None
        filters: list[TextFilter] = []
        if self.scan_output:
            filters.append(self._output_scan(req))
        if redactor is not None:
            if not req.state.get(f"{self.name}:restoring"):
                req.state[f"{self.name}:restoring"] = True
                req.decide(self.name, "output", "restore", f"placeholders={len(redactor.mapping)}")
            filters.append(StreamRestorer(redactor))
        return chain_filters(filters)

    def _output_scan(self, req: GuardedRequest) -> TextFilter:
        prompt = req.state.get(self.name)
        placeholders = Redactor(self.detector, after=prompt if isinstance(prompt, Redactor) else None)
        action: Action = "block" if self.action == "block" else ("redact" if self.action == "redact" else "log")

        def scan(text: str) -> list[Match]:
            return [Match(f.start, f.end, f.kind) for f in self.detector.find(text)]

        def on_match(m: Match) -> None:
            req.decide(self.name, "output", action, m.label)
            if action == "block":
                raise GuardrailBlockedError(self.name, f"the answer contains personal data ({m.label})", stage="output")

        def replace(m: Match, value: str) -> str:  # issued for final matches only: numbering as if whole
            return placeholders.placeholder(cast(PIIKind, m.label), value)

        return WindowedFilter(scan, on_match, hold_back=self.hold_back,
                              replace=replace if action == "redact" else None)
