"""The governance database: one async code path for SQLite (default, embedded) and PostgreSQL.

SQLAlchemy Core 2.x over ``aiosqlite`` or ``asyncpg``; the tables are ``gomodel_proxy.storage.tables``
(defined once), the schema is brought up to date by ``gomodel_proxy.storage.migrations`` when the
database connects.

    db = Database.from_config(config)
    await db.connect()                      # creates / migrates the schema
    async with db.begin() as conn:          # one transaction
        await conn.execute(api_keys.insert().values(...))
    async with db.connect_once() as conn:   # reads, no transaction kept open
        rows = (await conn.execute(select(...))).all()
    await db.close()

SQLite runs in WAL mode with a busy timeout, so that readers do not wait for the writer and several
gateway processes can share one file; PostgreSQL is the choice for several hosts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from gomodel_proxy.config.schema import Config, DatabaseConfig
from gomodel_proxy.storage import migrations

#: File name of the default SQLite database, inside ``cache.dir``.
DEFAULT_SQLITE_FILE = "gomodel.db"
#: How long a SQLite writer waits for another's lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


class DatabaseError(Exception):
    """The database cannot be used as configured (bad URL, unreachable, newer schema)."""


def default_url(cache_dir: str) -> str:
    return f"sqlite+aiosqlite:///{Path(cache_dir) / DEFAULT_SQLITE_FILE}"


def resolve_url(config: Config) -> str:
    """``database.url``, or the default SQLite file under ``cache.dir`` when it is empty."""
    return config.database.url or default_url(config.cache.dir)


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be used (a message that never shows its password), or ``None``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return (
            "not a database URL; write sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host:5432/dbname"
        )
    backend = parsed.get_backend_name()
    driver = _DRIVERS.get(backend)
    if driver is None:
        return (
            f"unsupported database '{backend}'; use sqlite+aiosqlite:///path/to/file.db "
            "or postgresql+asyncpg://user:password@host:5432/dbname"
        )
    if parsed.drivername != driver:
        return f"'{parsed.drivername}' is not an async driver; write the URL as {driver}://..."
    if backend == "postgresql" and not parsed.database:
        return "no database name; write it as postgresql+asyncpg://user:password@host:5432/dbname"
    return None


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


class Database:
    """An async engine for one database URL, with the schema migrated on ``connect()``.

    ``schema``: PostgreSQL only, a schema (namespace) to keep the tables in, created when missing
    (the tests use one per run). ``None``: the server's ``search_path`` (usually ``public``).
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        schema: str | None = None,
    ) -> None:
        problem = check_url(url)
        if problem is not None:
            raise DatabaseError(f"database.url {mask_url(url)!r}: {problem}")
        self.url: URL = make_url(url)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.schema = schema
        if schema is not None and (self.backend != "postgresql" or not schema.isidentifier()):
            raise DatabaseError("a schema is a PostgreSQL identifier (letters, digits, '_'), PostgreSQL only")
        self._engine: AsyncEngine | None = None

    @classmethod
    def from_config(cls, config: Config) -> Database:
        db: DatabaseConfig = config.database
        return cls(resolve_url(config), pool_size=db.pool_size, max_overflow=db.max_overflow,
                   schema=db.schema or None)

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        name = self.url.get_backend_name()
        return "sqlite" if name == "sqlite" else "postgresql"

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise DatabaseError("the database is not connected; call connect() first")
        return self._engine

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    # -- life cycle -----------------------------------------------------------------------------
    async def connect(self, *, migrate: bool = True) -> None:
        """Open the pool, check the database answers and (by default) migrate it to the current schema."""
        if self._engine is not None:
            return
        self._engine = self._create_engine()
        try:
            if self.schema is not None:
                async with self._engine.begin() as conn:
                    await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            if migrate:
                await self.migrate()
            else:
                async with self._engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> Database:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self) -> list[int]:
        """Apply what migrations the database lacks, in one transaction; the versions applied."""
        async with self.begin(immediate=True) as conn:
            return await conn.run_sync(migrations.migrate)

    async def schema_version(self) -> int:
        async with self.connect_once() as conn:
            return await conn.run_sync(migrations.current_version)

    # -- connections ----------------------------------------------------------------------------
    @asynccontextmanager
    async def begin(self, *, immediate: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success and rolled back on an exception.

        ``immediate``: on SQLite, take the write lock at once (``BEGIN IMMEDIATE``), for a
        read-then-write that must not interleave with another process; no effect on PostgreSQL.
        """
        async with self.engine.connect() as plain:
            conn = plain
            if immediate and self.backend == "sqlite":
                conn = await plain.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def connect_once(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for reads (its implicit transaction is rolled back at the end)."""
        async with self.engine.connect() as conn:
            yield conn

    async def connect_driver(self) -> Any:
        """A new asyncpg connection of its own, outside the pool, made from the same URL and ``schema``
        (PostgreSQL only; the caller closes it): for bulk work that SQLAlchemy's per-call overhead would
        dominate (the usage writer's ``COPY``)."""
        if self.backend != "postgresql":
            raise DatabaseError("a driver connection of its own is for PostgreSQL only")
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - PostgreSQL only

        # The arguments SQLAlchemy's asyncpg dialect passes to asyncpg.connect(), less its adapter's own.
        cargs, cparams = self.engine.dialect.create_connect_args(self.url)
        for adapter_only in ("async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func"):
            cparams.pop(adapter_only, None)
        if self.schema is not None:
            cparams["server_settings"] = {"search_path": self.schema}
        return await asyncpg.connect(*cargs, **cparams)

    # -- engine ---------------------------------------------------------------------------------
    def _create_engine(self) -> AsyncEngine:
        kwargs: dict[str, Any] = {}
        if self.backend == "sqlite":
            memory = self.url.database in (None, "", ":memory:")
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                Path(self.url.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs.update(pool_size=self.pool_size, max_overflow=self.max_overflow)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            engine = create_async_engine(self.url, **kwargs)
            _sqlite_events(engine, wal=not memory)
            return engine
        kwargs.update(pool_size=self.pool_size, max_overflow=self.max_overflow, pool_pre_ping=True)
        if self.schema is not None:
            kwargs["connect_args"] = {"server_settings": {"search_path": self.schema}}
        return create_async_engine(self.url, **kwargs)


def _sqlite_events(engine: AsyncEngine, *, wal: bool) -> None:
    """SQLite settings per connection, and transactions begun by SQLAlchemy, not the driver.

    The driver's own implicit ``BEGIN`` is turned off (SQLAlchemy's documented recipe) so that
    ``BEGIN IMMEDIATE`` can be chosen and SAVEPOINTs work.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))
