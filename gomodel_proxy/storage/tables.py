"""The governance schema, defined once for every backend (SQLAlchemy Core ``Table`` objects).

SQLite and PostgreSQL share these definitions; the few type differences are variants chosen here
(``JSONB`` on PostgreSQL, ``INTEGER PRIMARY KEY`` on SQLite so that ids auto-increment), never a
second copy of a table.

Times are ``UTCDateTime``: timezone-aware ``datetime`` in, timezone-aware UTC ``datetime`` out, stored
as UTC without an offset on both backends (so that comparisons and indexes behave the same).
Money is USD as a double: exact budget enforcement happens in the limiter, these are the records.

Changing a table here changes what a *new* database gets; an existing one only changes through a
migration (``gomodel_proxy.storage.migrations``), and ``test_database.py`` pins a fingerprint of this
schema to the latest migration version so that one cannot be forgotten.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from gomodel_proxy.storage.records import hash_key, utcnow

__all__ = [
    "NAMING_CONVENTION", "UTCDateTime", "api_keys", "budgets", "hash_key", "metadata", "schema_fingerprint",
    "teams", "usage_records", "users", "utcnow",
]

#: Deterministic constraint and index names on every backend, so that a migration can name them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time: aware ``datetime`` in (naive refused), aware UTC ``datetime`` out."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime cannot be stored; pass an aware one (e.g. datetime.now(UTC))")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _json() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("metadata", _json(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("email", String(320), unique=True),
    Column("name", String(255)),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="SET NULL")),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("metadata", _json(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    #: SHA-256 hex of the key (``hash_key``); the lookup column.
    Column("key_hash", String(64), nullable=False, unique=True),
    #: The first characters of the key, shown in listings (``sk-gm-ab12...``).
    Column("key_prefix", String(32), nullable=False),
    Column("name", String(255)),
    Column("user_id", String(64), ForeignKey("users.id", ondelete="SET NULL")),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="SET NULL")),
    #: May use the admin API.
    Column("is_admin", Boolean, nullable=False, default=False),
    #: Model ids or patterns this key may use; null: every model.
    Column("allowed_models", _json()),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("expires_at", UTCDateTime()),
    Column("metadata", _json(), nullable=False, default=dict),
    Column("revoked_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    #: Bumped by every change (revocation included): instances read what changed since they last looked.
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    Index(None, "user_id"),
    Index(None, "team_id"),
    Index(None, "updated_at"),
)

budgets = Table(
    "budgets",
    metadata,
    #: ``{scope}:{subject_id}`` (``key:k_ab12``, ``user:alice``, ``team:research``) or ``global``.
    Column("id", String(140), primary_key=True),
    #: What the budget caps: ``key``, ``user``, ``team`` or ``global``.
    Column("scope", String(16), nullable=False),
    #: The key, user or team id ("" for ``global``).
    Column("subject_id", String(64), nullable=False),
    #: USD per period. What was spent is the sum of the usage records' cost in the period (the live,
    #: exact counter is the limiter's: memory or Redis).
    Column("max_budget", Double, nullable=False),
    #: ``daily``, ``weekly``, ``monthly`` (calendar periods in UTC) or ``total``.
    Column("period", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False, default=utcnow),
    Column("updated_at", UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow),
    UniqueConstraint("scope", "subject_id"),
)

usage_records = Table(
    "usage_records",
    metadata,
    #: The gateway's own id of the call (unique: a replayed spool file cannot bill twice).
    Column("id", String(32), primary_key=True),
    #: The ``X-Request-ID`` the client saw (its own when it sent one: not unique).
    Column("request_id", String(128), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("key_id", String(64)),
    Column("user_id", String(64)),
    Column("team_id", String(64)),
    Column("provider", String(64), nullable=False),
    #: The model as the client named it, and the provider's model that answered.
    Column("model_requested", String(255), nullable=False, default=""),
    Column("model", String(255), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("stream", Boolean, nullable=False, default=False),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cached_tokens", Integer, nullable=False, default=0),
    Column("reasoning_tokens", Integer, nullable=False, default=0),
    Column("cache_write_tokens", Integer, nullable=False, default=0),
    #: The token counts are the gateway's estimate (the provider reported none, or the client left).
    Column("estimated", Boolean, nullable=False, default=False),
    Column("cost", Double, nullable=False, default=0.0),
    Column("latency_ms", Double, nullable=False, default=0.0),
    Column("ttfb_ms", Double),
    #: ``ok``, ``error``, ``upstream_error``, ``client_disconnected``, ``cut_at_shutdown``, ...
    Column("outcome", String(32), nullable=False, default="ok"),
    Column("error", Text),
    Index(None, "created_at"),
    Index(None, "key_id", "created_at"),
    Index(None, "user_id", "created_at"),
    Index(None, "team_id", "created_at"),
    Index(None, "request_id"),
)


def schema_fingerprint() -> str:
    """A short hash of every table, column, type, constraint and index defined here."""
    parts: list[str] = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        parts.append(f"T {table.name}")
        for col in table.columns:
            variants = sorted((k, repr(v)) for k, v in getattr(col.type, "_variant_mapping", {}).items())
            parts.append(f"C {col.name} {col.type!r} {variants} null={col.nullable} pk={col.primary_key}")
        for cons in sorted(table.constraints, key=lambda c: str(c.name)):
            cols = ",".join(c.name for c in cons.columns)  # type: ignore[attr-defined]
            parts.append(f"K {type(cons).__name__} {cons.name} {cols}")
        for idx in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(f"I {idx.name} {','.join(c.name for c in idx.columns)} unique={idx.unique}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
