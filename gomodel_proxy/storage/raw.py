"""What start-up and the request path read from the governance database, through the raw drivers.

``Database.fetch`` runs these on asyncpg (PostgreSQL) or sqlite3 (SQLite), without SQLAlchemy: its
import alone would cost more than the rest of start-up. The rows come back as ``storage.records``
values equal to what ``storage.sql_repository`` (the admin API's SQLAlchemy code) returns for the same
records: times aware UTC (stored as UTC without an offset), JSON decoded, flags as ``bool``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from gomodel_proxy.storage.records import (
    BUDGET_COLUMNS,
    KEY_COLUMNS,
    TEAM_COLUMNS,
    USER_COLUMNS,
    BudgetRow,
    KeyRow,
    TeamRow,
    UserRow,
    budget_row,
    key_row,
    team_row,
    user_row,
)

if TYPE_CHECKING:
    from gomodel_proxy.storage.database import Database

#: The schema version this gateway writes (``migrations.latest_version()``, which checks that the two agree
#: when it is imported): a database at this version is opened without importing SQLAlchemy.
SCHEMA_VERSION = 1

#: Budget scopes ``spend_since`` knows, and the column each one sums by.
SPEND_SCOPES: dict[str, str | None] = {"key": "key_id", "user": "user_id", "team": "team_id", "global": None}
_COST_QUANTUM = Decimal("1e-9")

_TIMES = frozenset({"created_at", "updated_at", "expires_at", "revoked_at"})
_JSONS = frozenset({"metadata", "allowed_models"})


def too_new(version: int, latest: int) -> RuntimeError:
    return RuntimeError(
        f"the database is at schema version {version}, newer than this gateway knows ({latest}); "
        "upgrade the gateway or point database.url at another database"
    )


def time_param(db: Database, at: datetime) -> Any:
    """An aware ``at`` as the driver binds it for a ``UTCDateTime`` column (UTC without an offset; on
    SQLite the text SQLAlchemy writes)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("a naive datetime cannot be compared; pass an aware one (e.g. datetime.now(UTC))")
    naive = at.astimezone(UTC).replace(tzinfo=None)
    return naive if db.backend == "postgresql" else naive.isoformat(" ", "microseconds")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC)


def _json(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def _decode(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in _TIMES.intersection(out):
        out[name] = _time(out[name])
    for name in _JSONS.intersection(out):
        out[name] = _json(out[name])
    return out


def _select(columns: tuple[str, ...], table: str) -> str:
    return f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - names of our own tables and columns


async def keys_changed_since(db: Database, since: datetime | None) -> list[KeyRow]:
    """Every key (``since`` None) or those changed after ``since``, revoked ones included; oldest change first."""
    if since is None:
        rows = await db.fetch(_select(KEY_COLUMNS, "api_keys") + " ORDER BY updated_at, id")
    else:
        rows = await db.fetch(_select(KEY_COLUMNS, "api_keys") + " WHERE updated_at > ? ORDER BY updated_at, id",
                              time_param(db, since))
    return [key_row(_decode(r)) for r in rows]


async def all_users(db: Database) -> list[UserRow]:
    rows = await db.fetch(_select(USER_COLUMNS, "users") + " ORDER BY created_at, id")
    return [user_row(_decode(r)) for r in rows]


async def all_teams(db: Database) -> list[TeamRow]:
    rows = await db.fetch(_select(TEAM_COLUMNS, "teams") + " ORDER BY created_at, id")
    return [team_row(_decode(r)) for r in rows]


async def all_budgets(db: Database) -> list[BudgetRow]:
    rows = await db.fetch(_select(BUDGET_COLUMNS, "budgets") + " ORDER BY id")
    return [budget_row(_decode(r)) for r in rows]


async def spend_since(db: Database, *, scope: str, subject_id: str, start: datetime) -> Decimal:
    """USD spent by a key, user, team (``scope``) or everyone (``global``) since ``start``, to 1e-9
    (``billing.export.spend_since``, without SQLAlchemy: the budget ledger seeds its counters with it)."""
    if scope not in SPEND_SCOPES:
        raise ValueError(f"unknown budget scope {scope!r}; accepted: {', '.join(SPEND_SCOPES)}")
    sql = "SELECT coalesce(sum(cost), 0.0) AS total FROM usage_records WHERE created_at >= ?"
    args: list[Any] = [time_param(db, start)]
    column = SPEND_SCOPES[scope]
    if column is not None:
        sql += f" AND {column} = ?"
        args.append(subject_id)
    (row,) = await db.fetch(sql, *args)
    return Decimal(repr(float(row["total"]))).quantize(_COST_QUANTUM)
