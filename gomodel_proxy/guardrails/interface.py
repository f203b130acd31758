"""What a guardrail is to the gateway, and the validated description of one from ``guardrails.yaml``.

The architecture's interface (``name``, ``priority``, ``process_input``, ``process_output``) carried to an
API-neutral, streaming form:

- ``process_input`` sees the request (:class:`GuardedRequest`: which API, the parsed body, who sent it) and
  may rewrite the body in place or refuse with :class:`~gomodel_proxy.core.errors.GuardrailBlockedError`;
- ``process_output`` hands back a :class:`TextFilter` for one channel of the answer's text (a choice, a
  content block), or ``None`` when the guardrail has nothing to do on the way back. The same filter serves a
  whole answer (fed once) and a stream (fed delta by delta), so streamed and non-streamed answers are held to
  one rule; a filter holds back the few characters a split pattern needs and no more;
- ``review_output`` is the asynchronous check of a complete answer's text (a moderation endpoint), run on
  non-streamed answers only: a network round trip per chunk is not something a stream should wait for.

Every decision is appended to ``GuardedRequest.decisions`` (never with the matched text); the Guardrails
step counts them in ``/metrics`` and writes them to the audit trail.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gomodel_proxy.core.types import Principal

GuardrailKind = Literal["pii-redactor", "token-limiter", "system-prompt", "content-filter", "regex"]
KNOWN_KINDS: tuple[GuardrailKind, ...] = ("pii-redactor", "token-limiter", "system-prompt", "content-filter", "regex")

#: Prompt characters a guardrail scans on the event loop; a larger prompt is scanned in a worker thread
#: (pattern work is about 1-2 ms per 16 KB: other requests should not wait behind a 1 MB prompt).
INLINE_CHARS = 16_384

#: The client-facing APIs guardrails run on (never pass-through).
GuardedApi = Literal["chat", "responses", "messages"]
Stage = Literal["input", "output"]
#: What a guardrail did: ``pass`` is not recorded (only decisions that changed or noticed something are).
Action = Literal["block", "redact", "restore", "log", "rewrite", "clamp"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing a guardrail decided about one request; ``detail`` names kinds and counts, never content."""

    guardrail: str
    stage: Stage
    action: Action
    detail: str = ""


@dataclass(slots=True)
class GuardedRequest:
    """One request as the guardrails see it. ``state`` keeps a guardrail's per-request memory (the PII
    placeholders it issued, to restore them in the answer), keyed by the guardrail's name."""

    api: GuardedApi
    body: dict[str, Any]
    principal: Principal
    stream: bool = False
    decisions: list[Decision] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def decide(self, guardrail: str, stage: Stage, action: Action, detail: str = "") -> None:
        self.decisions.append(Decision(guardrail, stage, action, detail))


class TextFilter(Protocol):
    """One channel of the answer's text as it passes: ``feed`` returns what may go to the client now (it may
    hold back a tail that could still become a match), ``finish`` the rest. Refuses by raising
    ``GuardrailBlockedError``."""

    def feed(self, text: str) -> str: ...

    def finish(self) -> str: ...


class Guardrail(Protocol):
    """One check or rewrite of requests and their answers (see the module docstring)."""

    name: str
    priority: int

    async def process_input(self, req: GuardedRequest) -> None: ...

    def process_output(self, req: GuardedRequest) -> TextFilter | None: ...

    async def review_output(self, req: GuardedRequest, text: str) -> None: ...


class BaseGuardrail:
    """Defaults for the hooks a guardrail does not need (most act on one side only)."""

    name: str
    priority: int

    def __init__(self, name: str, priority: int) -> None:
        self.name = name
        self.priority = priority

    async def process_input(self, req: GuardedRequest) -> None:
        return None

    def process_output(self, req: GuardedRequest) -> TextFilter | None:
        return None

    async def review_output(self, req: GuardedRequest, text: str) -> None:
        return None


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
