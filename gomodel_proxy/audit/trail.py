"""What a middleware step sees of the audit trail: ``log_middleware_step`` (the architecture's name).

The trail itself is ``audit.pipeline.AuditLogger`` (queued, batched, spilled and replayed, off the request
path) or ``NoopAuditLogger``; a step depends only on this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gomodel_proxy.audit.file_sink import FileSink
from gomodel_proxy.audit.pipeline import AuditLogger, NoopAuditLogger


class AuditTrail(Protocol):
    def log_middleware_step(self, entry: Mapping[str, Any]) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


#: Keeps nothing (``audit.backend: noop``).
NoopAuditTrail = NoopAuditLogger



class FileAuditTrail(AuditLogger):
    """The pipeline with a file sink (JSON lines in ``path``, spill files beside it): the first trail's API."""

    def __init__(self, path: Path, *, logger: Any, max_queue: int = 10_000, batch: int = 500) -> None:
        super().__init__(FileSink(path), spill_dir=path.parent, logger=logger, queue_size=max_queue,
                         batch_size=batch)
        self.path = path


__all__ = ["AuditTrail", "FileAuditTrail", "NoopAuditTrail"]
