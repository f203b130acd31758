"""Reading entries back (``GET /admin/audit``): one filter, one order, one cursor for every store.

Entries come newest first, ordered by ``(ts, id)`` descending; a page's cursor is the last entry's
``(ts, id)``, and the next page is what comes strictly after it in that order, so pages never overlap
nor skip an entry, even while new ones are written.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


@dataclass(slots=True, frozen=True)
class AuditQuery:
    #: Epoch seconds, inclusive start and exclusive end.
    start: float | None = None
    end: float | None = None
    key_id: str | None = None
    #: The model asked for, or the model that answered.
    model: str | None = None
    status: int | None = None
    #: ``request``, ``attempt``, ``step``, ``response``.
    kind: str | None = None
    request_id: str | None = None
    limit: int = 100
    #: Only entries strictly after this ``(ts, id)`` in newest-first order.
    after: tuple[float, str] | None = None

    def matches(self, e: dict[str, Any]) -> bool:
        ts = e.get("ts")
        if not isinstance(ts, int | float):
            return False
        if self.start is not None and ts < self.start:
            return False
        if self.end is not None and ts >= self.end:
            return False
        if self.key_id is not None and e.get("key_id") != self.key_id:
            return False
        if self.model is not None and self.model not in (e.get("model_requested"), e.get("model")):
            return False
        if self.status is not None and e.get("status") != self.status:
            return False
        if self.kind is not None and e.get("kind") != self.kind:
            return False
        if self.request_id is not None and e.get("request_id") != self.request_id:
            return False
        if self.after is not None:
            return (ts, str(e.get("id", ""))) < self.after
        return True


class QueryableSink(Protocol):
    async def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        """Up to ``q.limit + 1`` matching entries, newest first (one more than a page says there is more)."""
        ...


def sort_key(e: dict[str, Any]) -> tuple[float, str]:
    return (float(e.get("ts", 0.0)), str(e.get("id", "")))


def encode_cursor(e: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([e["ts"], e["id"]])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The ``(ts, id)`` of a cursor; ``ValueError`` when it is not one this server made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, entry_id = orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise ValueError("not a cursor this server made") from exc
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not isinstance(entry_id, str):
        raise ValueError("not a cursor this server made")
    return float(ts), entry_id
