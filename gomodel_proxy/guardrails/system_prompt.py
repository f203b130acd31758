"""The ``system-prompt`` guardrail: the company's instructions put before, after or in place of the
client's system prompt, in whatever form the client's API carries it (chat's system message, Responses'
``instructions``, Messages' ``system``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

from gomodel_proxy.guardrails.interface import BaseGuardrail, GuardedRequest
from gomodel_proxy.guardrails.request_text import apply_system_prompt


class SystemPrompt(BaseGuardrail):
    def __init__(self, name: str, priority: int, config: Mapping[str, Any]) -> None:
        super().__init__(name, priority)
        mode = next(iter(config))
        self.mode = cast(Literal["prepend", "append", "replace"], mode)
        self.text: str = config[mode]

    async def process_input(self, req: GuardedRequest) -> None:
        apply_system_prompt(req.api, req.body, self.mode, self.text)
        req.decide(self.name, "input", "rewrite", self.mode)
