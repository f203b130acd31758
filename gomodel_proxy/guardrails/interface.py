"""What a guardrail is to the gateway, and the validated description of one from ``guardrails.yaml``.

Kept minimal on purpose: the middleware that runs guardrails needs only a name (for error messages and
logs), a priority (lower runs first) and the two hooks. Streaming output does not go through
``process_output`` (it would need the whole answer buffered); a separate sans-I/O hook fed chunk by chunk
will be added for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gomodel_proxy.core.interfaces import RequestContext

GuardrailKind = Literal["pii-redactor", "token-limiter", "system-prompt", "content-filter", "regex"]
KNOWN_KINDS: tuple[GuardrailKind, ...] = ("pii-redactor", "token-limiter", "system-prompt", "content-filter", "regex")


class Guardrail(Protocol):
    """One check or rewrite of a request and its (non-streamed) answer."""

    name: str
    priority: int

    async def process_input(self, ctx: RequestContext) -> None:
        """Check the request before the provider sees it.

        May rewrite ``ctx.body`` in place; refuses by raising a ``GatewayError`` with status 400 whose
        message names the guardrail (so a client knows which rule stopped it).
        """
        ...

    async def process_output(self, ctx: RequestContext, body: bytes) -> bytes:
        """Check or rewrite a complete, non-streamed answer; returns the bytes to send to the client."""
        ...


@dataclass(frozen=True, slots=True)
class GuardrailSpec:
    """One guardrail as ``guardrails.yaml`` describes it, validated; the factory building it needs no checks.

    ``kind`` is the implementation (one of ``KNOWN_KINDS``); ``name`` is unique in the file and equals
    ``kind`` unless the entry gave ``type:``. ``config`` is read-only, normalized per kind (lists become
    tuples; regex patterns are compiled ``re.Pattern`` objects). ``keys``/``teams``: the guardrail applies only
    to requests by those API keys / teams; ``None`` means everyone.
    """

    name: str
    kind: GuardrailKind
    enabled: bool
    priority: int
    config: Mapping[str, Any]
    keys: tuple[str, ...] | None = None
    teams: tuple[str, ...] | None = None
