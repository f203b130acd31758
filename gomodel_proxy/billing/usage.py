"""One usage record per billable call: the row of ``usage_records`` that ``UsageWriter`` stores.

A request's record is a tuple in ``RECORD_COLUMNS`` order (``usage_record``), the form the writer copies to
the database; ``usage_row`` gives the same values as a dict by column, the form of the spool file's lines
(JSON-friendly values, ``created_at`` aside, which orjson writes as an ISO string).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gomodel_proxy.core.ids import random_id
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.storage.records import USAGE_COLUMNS

#: The columns of a usage record (``usage_record``), in order: ``storage.records.USAGE_COLUMNS`` with
#: ``created_at`` last (the order the writer copies them in).
RECORD_COLUMNS: tuple[str, ...] = (*(c for c in USAGE_COLUMNS if c != "created_at"), "created_at")
#: Column widths of ``usage_records`` (``storage.tables``): values are cut to fit, because a
#: client-chosen ``X-Request-ID`` that PostgreSQL refuses would otherwise bounce the whole batch.
_WIDTHS = {
    "request_id": 128, "key_id": 64, "user_id": 64, "team_id": 64, "provider": 64,
    "model_requested": 255, "model": 255, "endpoint": 64, "outcome": 32,
}
#: The same as (position in a record, width).
_WIDTH_AT = tuple((RECORD_COLUMNS.index(column), width) for column, width in _WIDTHS.items())


def new_call_id() -> str:
    """The gateway's own id of a call (24 hex chars): the primary key that makes a replay idempotent."""
    return random_id()


def usage_record(call: CallRecord, call_id: str, created_at: datetime) -> tuple[Any, ...]:
    """The ``usage_records`` row of ``call`` as the writer hands it to the database: the values in
    ``RECORD_COLUMNS`` order (``created_at``, an aware UTC datetime, last), zero tokens and cost when unknown.

    Built directly as the tuple ``COPY`` takes: the request's end makes no dict that the writer would only
    take apart again (``usage_writer`` turns a record into a dict only for its spool and rejected files).
    """
    usage = call.usage
    principal = call.principal
    ttfb = call.ttfb_s
    record: tuple[Any, ...] = (
        call_id, call.request_id, principal.key_id, principal.user_id, principal.team_id, call.provider,
        call.model_requested, call.model, call.endpoint, call.status, call.stream,
        usage.input_tokens if usage else 0,
        usage.output_tokens if usage else 0,
        usage.cached_tokens if usage else 0,
        usage.reasoning_tokens if usage else 0,
        usage.cache_write_tokens if usage else 0,
        usage.estimated if usage else False,
        float(call.cost) if call.cost is not None else 0.0,
        round(call.latency_s * 1000, 3),
        round(ttfb * 1000, 3) if ttfb is not None else None,
        call.outcome,
        None,
        created_at,
    )
    for i, width in _WIDTH_AT:
        value = record[i]
        if isinstance(value, str) and len(value) > width:
            return _fitted(record)
    return record


def _fitted(record: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(record)
    for i, width in _WIDTH_AT:
        value = values[i]
        if isinstance(value, str) and len(value) > width:
            values[i] = value[:width]
    return tuple(values)


def usage_row(call: CallRecord, call_id: str, created_at: datetime) -> dict[str, Any]:
    """``usage_record`` as a dict by column (for callers that want names: tests, tools)."""
    return dict(zip(RECORD_COLUMNS, usage_record(call, call_id, created_at), strict=True))
