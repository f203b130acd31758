"""The governance database: one async code path for SQLite (default, embedded) and PostgreSQL.

Two layers over the same URL:

- the raw drivers (asyncpg, sqlite3), which ``connect()`` uses to check the schema version and which
  ``fetch`` runs start-up's and the request path's reads on (``storage.raw``): keys, users, teams,
  budgets, a budget's spend. A gateway whose database is at the current schema starts without importing
  SQLAlchemy (~170 ms and ~17 MB);
- SQLAlchemy Core 2.x over ``aiosqlite`` or ``asyncpg`` (the tables are ``gomodel_proxy.storage.tables``),
  created on first use: migrations, the admin API (``storage.sql_repository``), reports, the SQLite usage
  writer. ``begin()`` and ``connect_once()`` import it in a worker thread the first time, so that the
  event loop does not stall on the import.

    db = Database.from_config(config)
    await db.connect()                      # checks (creates / migrates) the schema
    rows = await db.fetch("SELECT id FROM teams WHERE name = ?", "Research")   # raw driver
    async with db.begin() as conn:          # one SQLAlchemy transaction
        await conn.execute(api_keys.insert().values(...))
    async with db.connect_once() as conn:   # reads, no transaction kept open
        rows = (await conn.execute(select(...))).all()
    await db.close()

SQLite runs in WAL mode with a busy timeout, so that readers do not wait for the writer and several
gateway processes can share one file; PostgreSQL is the choice for several hosts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import itertools
import os
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gomodel_proxy.config.schema import Config, DatabaseConfig
from gomodel_proxy.storage import raw
from gomodel_proxy.storage.urls import DEFAULT_SQLITE_FILE, DbUrl, check_url, default_url, mask_url, parse_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = [
    "DEFAULT_SQLITE_FILE", "SQLITE_BUSY_TIMEOUT_MS", "Database", "DatabaseError", "check_url", "default_url",
    "mask_url", "resolve_url",
]

#: How long a SQLite writer waits for another's lock before failing (ms).
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Raw PostgreSQL connections kept for ``fetch`` (key cache refreshes, budget seeds: short reads).
RAW_PG_POOL_MAX = 2
#: Query parameters of a URL that SQLAlchemy's asyncpg adapter takes for itself.
_ADAPTER_ONLY = ("async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func")
_QMARK = re.compile(r"\?")


class DatabaseError(Exception):
    """The database cannot be used as configured (bad URL, unreachable, newer schema)."""


def resolve_url(config: Config) -> str:
    """``database.url``, or the default SQLite file under ``cache.dir`` when it is empty."""
    return config.database.url or default_url(config.cache.dir)


#: SQLAlchemy's async engine and what uses it here, imported together by ``load_sqlalchemy``.
_SQL_MODULES = (
    "sqlalchemy.ext.asyncio",
    "gomodel_proxy.storage.tables",
    "gomodel_proxy.storage.migrations",
    "gomodel_proxy.storage.sql_repository",
)
#: The import's future, once started (a list, so that it can be set without ``global``).
_sql_loading: list[concurrent.futures.Future[None]] = []
_sql_lock = threading.Lock()


def _import_sql(future: concurrent.futures.Future[None]) -> None:
    try:
        for name in _SQL_MODULES:
            importlib.import_module(name)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(None)


async def load_sqlalchemy() -> None:
    """Import SQLAlchemy and the modules that use it (``_SQL_MODULES``), once, in a thread of its own: the
    import holds the GIL, but the event loop gets it back every switch interval (5 ms) rather than waiting
    ~200 ms for the whole import. Concurrent callers, from any event loop, wait for the same import."""
    if _sql_loading and _sql_loading[0].done() and _sql_loading[0].exception() is None:
        return
    with _sql_lock:
        if not _sql_loading or (_sql_loading[0].done() and _sql_loading[0].exception() is not None):
            _sql_loading[:] = [concurrent.futures.Future()]  # the first call, or again after a failure
            _sql_loading[0].set_running_or_notify_cancel()  # a waiter that is cancelled cannot cancel it
            threading.Thread(target=_import_sql, args=(_sql_loading[0],), name="gomodel-import-sqlalchemy",
                             daemon=True).start()
        future = _sql_loading[0]
    await asyncio.wrap_future(future)


class Database:
    """A database URL: raw drivers for the schema check and ``fetch``, a SQLAlchemy engine made on first use.

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
        self.parsed: DbUrl = parse_url(url)
        self._url_text = url
        self._url: URL | None = None
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.schema = schema
        if schema is not None and (self.backend != "postgresql" or not schema.isidentifier()):
            raise DatabaseError("a schema is a PostgreSQL identifier (letters, digits, '_'), PostgreSQL only")
        self._engine: AsyncEngine | None = None
        self._connected = False
        self._pg_pool: Any = None  # asyncpg.Pool, for fetch()

    @classmethod
    def from_config(cls, config: Config) -> Database:
        db: DatabaseConfig = config.database
        return cls(resolve_url(config), pool_size=db.pool_size, max_overflow=db.max_overflow,
                   schema=db.schema or None)

    @property
    def url(self) -> URL:
        """The URL as SQLAlchemy's ``URL`` (imports SQLAlchemy: not for start-up; ``parsed`` is the light one)."""
        if self._url is None:
            from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy when used

            self._url = make_url(self._url_text)
        return self._url

    @property
    def backend(self) -> Literal["sqlite", "postgresql"]:
        return self.parsed.backend

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine, made on first use after ``connect()`` (importing SQLAlchemy if needed)."""
        if not self._connected:
            raise DatabaseError("the database is not connected; call connect() first")
        if self._engine is None:
            self._engine = self._create_engine()
        return self._engine

    def __repr__(self) -> str:
        return f"Database({self.parsed.render(hide_password=True)!r})"

    @property
    def _raw_sqlite(self) -> bool:
        """A SQLite file the raw driver opens as SQLAlchemy's would (an in-memory database, or a URL with
        query options, is SQLAlchemy's alone: the engine keeps it)."""
        return self.backend == "sqlite" and not self.parsed.query and self.parsed.database not in (None, "", ":memory:")

    @property
    def _raw(self) -> bool:
        return self.backend == "postgresql" or self._raw_sqlite

    # -- life cycle -----------------------------------------------------------------------------
    async def connect(self, *, migrate: bool = True) -> None:
        """Check the database answers and (by default) that its schema is current, migrating it when not.

        A database at the current version is checked with the raw driver alone; creating the schema or
        upgrading it goes through SQLAlchemy (a first start, or the first after an upgrade).
        """
        if self._connected:
            return
        self._connected = True
        try:
            if not self._raw:  # SQLite in memory, or with query options (a schema is PostgreSQL's)
                if migrate:
                    await self.migrate()
                else:
                    async with self.connect_once() as conn:
                        await conn.exec_driver_sql("SELECT 1")
                return
            version = await self._raw_version(wal=True)
            if not migrate:
                return
            if version > raw.SCHEMA_VERSION:
                raise raw.too_new(version, raw.SCHEMA_VERSION)
            if version < raw.SCHEMA_VERSION:
                await self.migrate()
                # Its pool's connections go: what runs next reads through the raw driver.
                engine, self._engine = self._engine, None
                if engine is not None:
                    await engine.dispose()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._connected = False
        engine, self._engine = self._engine, None
        pool, self._pg_pool = self._pg_pool, None
        try:
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except Exception:
                    pool.terminate()
        finally:
            if engine is not None:
                await engine.dispose()

    async def __aenter__(self) -> Database:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def migrate(self) -> list[int]:
        """Apply what migrations the database lacks, in one transaction; the versions applied (SQLAlchemy)."""
        await load_sqlalchemy()
        from gomodel_proxy.storage import migrations  # noqa: PLC0415 - SQLAlchemy, loaded above

        async with self.begin(immediate=True) as conn:
            return await conn.run_sync(migrations.migrate)

    async def schema_version(self) -> int:
        if self._raw:
            if not self._connected:
                raise DatabaseError("the database is not connected; call connect() first")
            return await self._raw_version(wal=False)
        from gomodel_proxy.storage import migrations  # noqa: PLC0415 - SQLAlchemy

        async with self.connect_once() as conn:
            return await conn.run_sync(migrations.current_version)

    # -- raw driver -----------------------------------------------------------------------------
    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """The rows of one read (``?`` placeholders) on the raw driver: asyncpg on PostgreSQL (a small pool of
        its own; a connection found broken is replaced and the read tried once more), sqlite3 in a worker
        thread on a SQLite file. Values as the driver returns them (``storage.raw`` decodes them)."""
        if not self._connected:
            raise DatabaseError("the database is not connected; call connect() first")
        if self.backend == "postgresql":
            return await self._pg_fetch(_numbered(sql), args)
        if self._raw_sqlite:
            return await asyncio.to_thread(self._sqlite_fetch, sql, args)
        async with self.connect_once() as conn:  # in memory: the engine's database is the only one
            result = await conn.exec_driver_sql(sql, tuple(args))
            return [dict(m) for m in result.mappings().all()]

    async def ping(self) -> None:
        """Raises unless the database answers ``SELECT 1``."""
        await self.fetch("SELECT 1 AS one")

    def _pg_connect_args(self) -> dict[str, Any]:
        """What SQLAlchemy's asyncpg dialect passes to ``asyncpg.connect()`` for this URL, less its adapter's
        own parameters, plus the ``search_path`` of ``schema``."""
        u = self.parsed
        names = [k for k, _ in u.query]
        if "host" in names or len(set(names)) != len(names):  # several hosts, a repeated option: SQLAlchemy's
            from sqlalchemy.dialects.postgresql.asyncpg import dialect  # noqa: PLC0415 - rare URLs only

            _, params = dialect().create_connect_args(self.url)  # type: ignore[no-untyped-call]
        else:
            params = {name: value for name, value in (
                ("host", u.host), ("database", u.database), ("user", u.username), ("password", u.password),
                ("port", u.port)) if value}
            params.update(u.query)
        for adapter_only in _ADAPTER_ONLY:
            params.pop(adapter_only, None)
        if self.schema is not None:
            params["server_settings"] = {"search_path": self.schema}
        return dict(params)

    async def _open_pg_pool(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # noqa: PLC0415 - PostgreSQL only

        if self._pg_pool is None:
            pool = await asyncpg.create_pool(min_size=1, max_size=RAW_PG_POOL_MAX, **self._pg_connect_args())
            if self._pg_pool is None:
                self._pg_pool = pool
            else:  # another task opened one meanwhile
                await pool.close()
        return self._pg_pool

    async def _pg_fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        for attempt in (1, 2):
            pool = await self._open_pg_pool()
            try:
                async with pool.acquire() as conn:
                    return [dict(r) for r in await conn.fetch(sql, *args)]
            except Exception as exc:
                # A read is safe to repeat: once more after a failure of the connection (closed while idle by
                # a server restart or a failover: OSError, InterfaceError, InternalClientError, or SQLSTATE
                # class 08 / 57); the pool drops a connection that failed so. Not after an error of the query.
                sqlstate = getattr(exc, "sqlstate", None)
                if attempt == 2 or (isinstance(sqlstate, str) and not sqlstate.startswith(("08", "57"))):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _sqlite_connect(self) -> Any:
        import sqlite3  # noqa: PLC0415 - SQLite only

        # As SQLAlchemy's pysqlite dialect opens it (an absolute path), with its connect event's busy timeout.
        path = os.path.abspath(self.parsed.database or "")
        conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return conn

    def _sqlite_fetch(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        conn = self._sqlite_connect()
        try:
            cursor = conn.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.close()

    async def _raw_version(self, *, wal: bool) -> int:
        """The schema version (0: an empty database), read with the raw driver; ``wal``: on SQLite, first
        put the file in WAL mode (persistent: what SQLAlchemy's connections also ask for)."""
        if self.backend == "postgresql":
            import asyncpg  # noqa: PLC0415 - PostgreSQL only

            pool = await self._open_pg_pool()
            async with pool.acquire() as conn:
                try:  # one round trip in the usual case: the table is there
                    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
                except asyncpg.UndefinedTableError:
                    pass
                if wal and self.schema is not None:  # an empty database: its schema, for the migration
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                return 0
        return await asyncio.to_thread(self._sqlite_version, wal)

    def _sqlite_version(self, wal: bool) -> int:
        if wal:
            Path(self.parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        conn = self._sqlite_connect()
        try:
            if wal:
                conn.execute("PRAGMA journal_mode=WAL")
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
            if found.fetchone() is None:
                return 0
            return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])
        finally:
            conn.close()

    # -- SQLAlchemy -----------------------------------------------------------------------------
    @asynccontextmanager
    async def begin(self, *, immediate: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success and rolled back on an exception.

        ``immediate``: on SQLite, take the write lock at once (``BEGIN IMMEDIATE``), for a
        read-then-write that must not interleave with another process; no effect on PostgreSQL.
        """
        await load_sqlalchemy()
        async with self.engine.connect() as plain:
            conn = plain
            if immediate and self.backend == "sqlite":
                conn = await plain.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def connect_once(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for reads (its implicit transaction is rolled back at the end)."""
        await load_sqlalchemy()
        async with self.engine.connect() as conn:
            yield conn

    async def connect_driver(self) -> Any:
        """A new asyncpg connection of its own, outside the pools, made from the same URL and ``schema``
        (PostgreSQL only; the caller closes it): for bulk work that SQLAlchemy's per-call overhead would
        dominate (the usage writer's ``COPY``)."""
        if self.backend != "postgresql":
            raise DatabaseError("a driver connection of its own is for PostgreSQL only")
        import asyncpg  # noqa: PLC0415 - PostgreSQL only

        return await asyncpg.connect(**self._pg_connect_args())

    def _create_engine(self) -> AsyncEngine:
        from sqlalchemy.ext.asyncio import create_async_engine  # noqa: PLC0415 - SQLAlchemy on first use
        from sqlalchemy.pool import StaticPool  # noqa: PLC0415

        kwargs: dict[str, Any] = {}
        if self.backend == "sqlite":
            memory = self.parsed.database in (None, "", ":memory:")
            if memory:
                kwargs["poolclass"] = StaticPool
            else:
                Path(self.parsed.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
                kwargs.update(pool_size=self.pool_size, max_overflow=self.max_overflow)
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            engine = create_async_engine(self.url, **kwargs)
            _sqlite_events(engine, wal=not memory)
            return engine
        kwargs.update(pool_size=self.pool_size, max_overflow=self.max_overflow, pool_pre_ping=True)
        if self.schema is not None:
            kwargs["connect_args"] = {"server_settings": {"search_path": self.schema}}
        return create_async_engine(self.url, **kwargs)


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``, ... (the queries here have no ``?`` in a literal)."""
    count = itertools.count(1)
    return _QMARK.sub(lambda _: f"${next(count)}", sql)


def _sqlite_events(engine: AsyncEngine, *, wal: bool) -> None:
    """SQLite settings per connection, and transactions begun by SQLAlchemy, not the driver.

    The driver's own implicit ``BEGIN`` is turned off (SQLAlchemy's documented recipe) so that
    ``BEGIN IMMEDIATE`` can be chosen and SAVEPOINTs work.
    """
    from sqlalchemy import event  # noqa: PLC0415 - SQLAlchemy on first use

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
