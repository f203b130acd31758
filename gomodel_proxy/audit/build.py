"""The configured audit logger: ``features.audit_logging`` and ``audit.backend`` to a pipeline and its sink.

``noop`` (or the feature off) keeps nothing and costs nothing. ``file`` and ``postgres`` are this package's
own sinks; ``mongodb``, ``elasticsearch`` and ``datadog`` are ``audit/<backend>_sink.py``, each a class
``<Name>AuditSink`` with ``from_config(AuditConfig)``, imported only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gomodel_proxy.audit.pipeline import AuditLogger, NoopAuditLogger
from gomodel_proxy.audit.sink import AuditSink
from gomodel_proxy.config.schema import Config
from gomodel_proxy.core.types import CallRecord


def build_sink(config: Config) -> AuditSink:
    audit = config.audit
    backend = audit.backend
    if backend == "file":
        from gomodel_proxy.audit.file_sink import FileSink  # noqa: PLC0415

        return FileSink(Path(audit.path or Path(config.cache.dir) / "audit.jsonl"),
                        max_bytes=int(audit.max_file_mb * 1024 * 1024), rotate_s=audit.rotate_s,
                        keep_files=audit.keep_files)
    if backend == "postgres":
        from gomodel_proxy.audit.postgres_sink import SqlAuditSink  # noqa: PLC0415 - SQLAlchemy when used
        from gomodel_proxy.storage.database import Database, resolve_url  # noqa: PLC0415

        # Its own small pool: audit batches never wait behind (nor hold up) the governance queries.
        schema = None if audit.url else (config.database.schema or None)
        db = Database(audit.url or resolve_url(config), pool_size=2, max_overflow=2, schema=schema)
        return SqlAuditSink(db, audit.index)
    module = importlib.import_module(f"gomodel_proxy.audit.{backend}_sink")
    for name in dir(module):
        cls = getattr(module, name)
        if name.endswith("AuditSink") and hasattr(cls, "from_config"):
            sink: AuditSink = cls.from_config(audit)
            return sink
    raise ValueError(f"gomodel_proxy.audit.{backend}_sink has no *AuditSink class with from_config")


def build_audit(config: Config, logger: Any, *, settle: Callable[[CallRecord], Any] | None = None,
                sink: AuditSink | None = None) -> AuditLogger | NoopAuditLogger:
    """The audit logger the configuration asks for (``sink`` given: that one, e.g. in tests)."""
    audit = config.audit
    if sink is None:
        if not config.features.audit_logging or audit.backend == "noop":
            return NoopAuditLogger()
        sink = build_sink(config)
    return AuditLogger(
        sink,
        spill_dir=Path(audit.spill_dir or config.cache.dir),
        logger=logger,
        queue_size=audit.queue_size,
        batch_size=audit.batch_size,
        flush_interval_s=audit.flush_interval_ms / 1000,
        timeout_s=audit.timeout_s,
        body_limit=int(audit.max_body_kb * 1024) if audit.include_bodies else 0,
        settle=settle,
    )
