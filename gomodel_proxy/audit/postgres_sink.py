"""``audit.backend: postgres``: batched inserts into a table of the audit's own (``audit.index``).

The project's one storage code path (``storage.database``: SQLAlchemy Core over asyncpg, or aiosqlite
when the configured database is the embedded SQLite file). The table is created at start when missing;
it is not part of the governance schema's migrations (its name is configurable and it only grows), so a
gateway without audit never has it. One multi-row ``INSERT ... ON CONFLICT (id) DO NOTHING`` per batch:
a batch replayed after a failure that had in fact been written is not stored twice.

The columns are what ``GET /admin/audit`` filters on (indexed), plus the whole entry as JSON text
(``entry``; ``entry::jsonb`` in SQL reads inside it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, Text, and_, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gomodel_proxy.audit.query import AuditQuery
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.tables import UTCDateTime

#: Rows per INSERT: 13 parameters each stays under PostgreSQL's 32,767 bind parameters per statement
#: (and SQLite's 32,766).
_ROWS_PER_STATEMENT = 2000


def audit_table(name: str) -> Table:
    if not name.isidentifier():
        raise ValueError(f"audit.index {name!r} is not a table name (letters, digits, '_')")
    metadata = MetaData()
    return Table(
        name,
        metadata,
        Column("id", String(64), primary_key=True),
        #: Epoch seconds (exact: the cursor of ``GET /admin/audit``), and the same as a timestamp for SQL.
        Column("ts", Double, nullable=False),
        Column("at", UTCDateTime(), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("request_id", String(128)),
        Column("key_id", String(64)),
        Column("user_id", String(64)),
        Column("team_id", String(64)),
        Column("model_requested", String(255)),
        Column("model", String(255)),
        Column("provider", String(64)),
        Column("status", Integer),
        Column("entry", Text, nullable=False),
        Index(f"ix_{name}_ts", "ts"),
        Index(f"ix_{name}_key_ts", "key_id", "ts"),
        Index(f"ix_{name}_request", "request_id"),
    )


def _text(value: Any, size: int) -> str | None:
    return value[:size] if isinstance(value, str) else None


def _row(e: dict[str, Any]) -> dict[str, Any]:
    ts = float(e["ts"])
    status = e.get("status")
    return {
        "id": str(e["id"])[:64], "ts": ts, "at": datetime.fromtimestamp(ts, UTC), "kind": str(e.get("kind"))[:16],
        "request_id": _text(e.get("request_id"), 128), "key_id": _text(e.get("key_id"), 64),
        "user_id": _text(e.get("user_id"), 64), "team_id": _text(e.get("team_id"), 64),
        "model_requested": _text(e.get("model_requested"), 255), "model": _text(e.get("model"), 255),
        "provider": _text(e.get("provider"), 64),
        "status": status if isinstance(status, int) and not isinstance(status, bool) else None,
        # NUL cannot be stored in PostgreSQL text; orjson writes it escaped (\u0000), never raw.
        "entry": orjson.dumps(e).decode(),
    }


class SqlAuditSink:
    """Writes batches with one statement; ``query`` serves ``GET /admin/audit``."""

    name = "postgres"

    def __init__(self, db: Database, table: str = "gomodel_audit") -> None:
        self.db = db
        self.table = audit_table(table)
        self._insert = pg_insert if db.backend == "postgresql" else sqlite_insert

    async def start(self) -> None:
        await self.db.connect(migrate=False)
        async with self.db.begin() as conn:
            await conn.run_sync(self.table.metadata.create_all, checkfirst=True)

    async def write(self, entries: Sequence[dict[str, Any]]) -> None:
        if not entries:
            return
        rows = [_row(e) for e in entries]
        async with self.db.begin() as conn:
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                stmt = self._insert(self.table).values(rows[start:start + _ROWS_PER_STATEMENT])
                await conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))

    async def close(self) -> None:
        await self.db.close()

    async def query(self, q: AuditQuery) -> list[dict[str, Any]]:
        t = self.table.c
        where = []
        if q.start is not None:
            where.append(t.ts >= q.start)
        if q.end is not None:
            where.append(t.ts < q.end)
        if q.key_id is not None:
            where.append(t.key_id == q.key_id)
        if q.model is not None:
            where.append(or_(t.model_requested == q.model, t.model == q.model))
        if q.status is not None:
            where.append(t.status == q.status)
        if q.kind is not None:
            where.append(t.kind == q.kind)
        if q.request_id is not None:
            where.append(t.request_id == q.request_id)
        if q.after is not None:
            where.append(tuple_(t.ts, t.id) < tuple_(q.after[0], q.after[1]))
        stmt = select(t.entry).where(and_(True, *where)).order_by(t.ts.desc(), t.id.desc()).limit(q.limit + 1)
        async with self.db.connect_once() as conn:
            rows = (await conn.execute(stmt)).all()
        return [orjson.loads(r[0]) for r in rows]
