"""Schema migrations: a small ordered runner over one SQLAlchemy connection, for every backend.

- ``schema_version`` holds one row per version applied (``version``, ``name``, ``applied_at``).
- An empty database gets the current schema from ``tables.metadata`` in one step and is stamped with
  the latest version (the *baseline*); ``MIGRATIONS`` are the steps that bring an *existing* database
  from an older version forward, each applied in order and recorded in the same transaction.
- Running it again is a no-op. Several processes starting at once are serialized: PostgreSQL by a
  transaction-level advisory lock, SQLite by ``BEGIN IMMEDIATE`` (the database's write lock).

Adding a migration: change the ``Table`` in ``tables.py``, append ``Migration(n + 1, "what", fn)``
where ``fn(conn)`` alters an existing database (``conn.execute(text("ALTER TABLE ..."))`` or
``sqlalchemy`` DDL constructs; both backends), set ``storage.raw.SCHEMA_VERSION`` to ``n + 1`` (what
start-up compares with, without importing this module), and update the pinned schema fingerprint in the
tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, func, select, text

from gomodel_proxy.storage.raw import SCHEMA_VERSION, too_new
from gomodel_proxy.storage.tables import UTCDateTime, metadata, utcnow

#: Kept apart from ``tables.metadata``: the runner's own bookkeeping, never migrated itself.
_version_metadata = MetaData()
schema_version = Table(
    "schema_version",
    _version_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(255), nullable=False),
    Column("applied_at", UTCDateTime(), nullable=False),
)

#: ``pg_advisory_xact_lock`` key: "gomodel" in ASCII, so that other applications are unlikely to share it.
_PG_LOCK_KEY = 0x676F6D6F64656C


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _baseline(conn: Connection) -> None:
    metadata.create_all(conn)


#: Version 1 is the schema ``tables.py`` defines today (created whole on an empty database).
BASELINE = Migration(1, "governance tables: users, teams, api_keys, budgets, usage_records", _baseline)

#: Upgrades of an existing database, ascending and contiguous after the baseline.
MIGRATIONS: tuple[Migration, ...] = ()


def latest_version() -> int:
    return MIGRATIONS[-1].version if MIGRATIONS else BASELINE.version


if latest_version() != SCHEMA_VERSION:  # pragma: no cover - a migration added without its version
    raise RuntimeError(f"storage.raw.SCHEMA_VERSION is {SCHEMA_VERSION}, the migrations end at {latest_version()}")


def current_version(conn: Connection) -> int:
    """The version a database is at (0: no ``schema_version`` table, an empty database)."""
    if not conn.dialect.has_table(conn, schema_version.name):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one())


def migrate(conn: Connection) -> list[int]:
    """Bring the database on ``conn`` (inside a transaction) to ``latest_version()``.

    Returns the versions applied (``[]`` when it was current already).
    """
    _check_sequence()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    version = current_version(conn)
    latest = latest_version()
    if version > latest:
        raise too_new(version, latest)
    if version == latest:
        return []
    _version_metadata.create_all(conn)
    if version == 0:
        _baseline(conn)
        conn.execute(schema_version.insert().values(version=latest, name="baseline", applied_at=utcnow()))
        return [latest]
    applied: list[int] = []
    for step in MIGRATIONS:
        if step.version <= version:
            continue
        step.apply(conn)
        conn.execute(schema_version.insert().values(version=step.version, name=step.name, applied_at=utcnow()))
        applied.append(step.version)
    return applied


def _check_sequence() -> None:
    expected = BASELINE.version + 1
    for step in MIGRATIONS:
        if step.version != expected:
            raise RuntimeError(f"migration {step.name!r} has version {step.version}, expected {expected}")
        expected += 1
