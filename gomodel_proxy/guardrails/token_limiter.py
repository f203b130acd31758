"""``token-limiter``: refuse prompts above a token count, cap the answer's length.

Why at the gateway: a prompt of a million tokens costs money (or a provider's 400) that a client should
learn about before it is sent, and a cap on the answer bounds what one request can spend. The input is
counted with a real tokenizer (:mod:`gomodel_proxy.guardrails.tokens`): the text of every message, system
prompt and tool result, and the tool definitions. The output cap is written into the request itself
(``max_completion_tokens``, ``max_output_tokens``, ``max_tokens``), so the provider stops the answer there;
a larger cap the client asked for is lowered, a smaller one kept.
"""

from __future__ import annotations

from typing import Any

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.guardrails.interface import BaseGuardrail, GuardedRequest, GuardrailSpec
from gomodel_proxy.guardrails.request_text import clamp_output_tokens
from gomodel_proxy.guardrails.tokens import TokenCounter

#: One tokenizer for every limiter of the process (the vocabulary is loaded once).
_SHARED: TokenCounter | None = None


def shared_counter(logger: Any = None) -> TokenCounter:
    """The process's token counter (created on first use, with the first caller's logger)."""
    global _SHARED  # noqa: PLW0603 - a process-wide cache of an immutable vocabulary
    if _SHARED is None:
        _SHARED = TokenCounter(logger=logger)
    return _SHARED


class TokenLimiter(BaseGuardrail):
    """See the module docstring; config ``max_input_tokens`` and/or ``max_output_tokens`` (positive integers)."""

    def __init__(self, spec: GuardrailSpec, *, counter: TokenCounter | None = None, logger: Any = None) -> None:
        super().__init__(spec.name, spec.priority)
        max_in = spec.config.get("max_input_tokens")
        max_out = spec.config.get("max_output_tokens")
        self.max_input_tokens: int | None = int(max_in) if max_in is not None else None
        self.max_output_tokens: int | None = int(max_out) if max_out is not None else None
        self.counter = counter if counter is not None else shared_counter(logger)

    async def process_input(self, req: GuardedRequest) -> None:
        limit = self.max_input_tokens
        if limit is not None:
            n = await self.counter.count_request(req.api, req.body)
            if n > limit:
                req.decide(self.name, "input", "block", f"{n} input tokens > {limit}")
                raise GuardrailBlockedError(self.name, f"the prompt has {n} tokens, more than the {limit} allowed")
        cap = self.max_output_tokens
        if cap is not None and clamp_output_tokens(req.api, req.body, cap):
            req.decide(self.name, "input", "clamp", f"max output tokens set to {cap}")
