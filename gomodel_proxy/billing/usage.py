"""One usage record per billable call: the row of ``usage_records`` that ``UsageWriter`` stores.

The row is a plain dict of JSON-friendly values (``created_at`` aside, which orjson writes as an ISO
string), so that the writer can put it in its spool file unchanged while the database is down.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from gomodel_proxy.core.types import CallRecord

#: Column widths of ``usage_records`` (``storage.tables``): values are cut to fit, because a
#: client-chosen ``X-Request-ID`` that PostgreSQL refuses would otherwise bounce the whole batch.
_WIDTHS = {
    "request_id": 128, "key_id": 64, "user_id": 64, "team_id": 64, "provider": 64,
    "model_requested": 255, "model": 255, "endpoint": 64, "outcome": 32,
}


def new_call_id() -> str:
    """The gateway's own id of a call (24 hex chars): the primary key that makes a replay idempotent."""
    return os.urandom(12).hex()


def usage_row(call: CallRecord, call_id: str, created_at: datetime) -> dict[str, Any]:
    """The ``usage_records`` row of ``call`` (zero tokens and cost when unknown, never ``None``)."""
    usage = call.usage
    principal = call.principal
    ttfb = call.ttfb_s
    row: dict[str, Any] = {
        "id": call_id,
        "request_id": call.request_id,
        "created_at": created_at,
        "key_id": principal.key_id,
        "user_id": principal.user_id,
        "team_id": principal.team_id,
        "provider": call.provider,
        "model_requested": call.model_requested,
        "model": call.model,
        "endpoint": call.endpoint,
        "status": call.status,
        "stream": call.stream,
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "reasoning_tokens": usage.reasoning_tokens if usage else 0,
        "cache_write_tokens": usage.cache_write_tokens if usage else 0,
        "estimated": usage.estimated if usage else False,
        "cost": float(call.cost) if call.cost is not None else 0.0,
        "latency_ms": round(call.latency_s * 1000, 3),
        "ttfb_ms": round(ttfb * 1000, 3) if ttfb is not None else None,
        "outcome": call.outcome,
        "error": None,
    }
    for column, width in _WIDTHS.items():
        value = row[column]
        if isinstance(value, str) and len(value) > width:
            row[column] = value[:width]
    return row
