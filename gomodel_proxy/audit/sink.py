"""What an audit backend is to the audit pipeline: somewhere a batch of entries is written.

An entry is a flat-ish JSON-able ``dict`` (see ``audit.entries``), already free of secrets. ``write`` either
stores the whole batch or raises (any exception): the pipeline then keeps the batch (spilled to a local
file) and gives it to ``write`` again later, so a sink must tolerate seeing a batch twice after a failure
it could not tell apart from success (entries carry an ``id`` to deduplicate on where the store can).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable


class AuditSink(Protocol):
    #: The backend's name for logs and metrics (``file``, ``postgres``, ``mongodb``, ...).
    name: str

    async def start(self) -> None:
        """Connect, create what must exist (a table, an index); may raise: the pipeline retries later."""
        ...

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        """Store every entry of the batch, or raise."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PacedSink(Protocol):
    """A sink that does its CPU work on the event loop in slices (the file sink's serialization). The pipeline
    gives it ``hurry``: true while another full batch waits, when slices would only make it fall behind."""

    hurry: Callable[[], bool]
