"""What an audit backend is to the audit pipeline: somewhere a batch of entries is written.

An entry is a flat-ish JSON-able ``dict`` (see ``audit.entries``), already free of secrets. ``write`` either
stores the whole batch or raises (any exception): the pipeline then keeps the batch (spilled to a local
file) and gives it to ``write`` again later, so a sink must tolerate seeing a batch twice after a failure
it could not tell apart from success (entries carry an ``id`` to deduplicate on where the store can).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


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
