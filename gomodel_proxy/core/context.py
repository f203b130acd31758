"""The request being answered, reachable from code that is not handed it (the provider client's attempts).

The edge sets ``CURRENT_CALL`` for each request's task; layers below (the LLM client retrying, failing over
keys) add what they saw to it through :func:`note_attempt` without knowing about servers or audit trails.
"""

from __future__ import annotations

from contextvars import ContextVar

from gomodel_proxy.core.types import Attempt, CallRecord

CURRENT_CALL: ContextVar[CallRecord | None] = ContextVar("gomodel_current_call", default=None)


def note_attempt(attempt: Attempt) -> None:
    """One send to a provider, on the request being answered (nothing outside a request)."""
    call = CURRENT_CALL.get()
    if call is None:
        return
    if call.attempts is None:
        call.attempts = [attempt]
    else:
        call.attempts.append(attempt)
