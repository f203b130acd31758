"""The real services the tests talk to: Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, db ``test``).

``GOMODEL_TEST_REDIS_URL`` / ``GOMODEL_TEST_PG_URL`` point elsewhere. A test needing one skips, saying
why, only when it cannot be reached (CI starts both, so there they always run). Each test isolates
itself: a fresh key prefix in Redis (``redis_prefix()``), a fresh schema in PostgreSQL (``pg_schema()``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from gomodel_proxy.storage.database import Database

_PG_CANDIDATES = [
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
]
#: Probed once per run: {"url": ...} or {"reason": ...}.
_pg: dict[str, str] = {}
_redis: dict[str, str] = {}


async def find_pg() -> str | None:
    """A reachable PostgreSQL URL (``postgresql+asyncpg://...``), or None (``pg_unreachable()`` says why)."""
    if _pg:
        return _pg.get("url")
    env = os.environ.get("GOMODEL_TEST_PG_URL")
    errors = []
    for url in [env] if env else _PG_CANDIDATES:
        try:
            conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        await conn.close()
        _pg["url"] = url
        return url
    _pg["reason"] = "PostgreSQL not reachable (" + "; ".join(errors) + ")"
    return None


def pg_unreachable() -> str:
    return _pg.get("reason", "PostgreSQL not probed")


def pg_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def find_redis() -> str | None:
    """A reachable Redis URL, or None (``redis_unreachable()`` says why)."""
    if _redis:
        return _redis.get("url")
    url = os.environ.get("GOMODEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    client = aioredis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        _redis["reason"] = f"Redis not reachable at {url} ({type(exc).__name__}: {exc})"
        return None
    finally:
        await client.aclose()
    _redis["url"] = url
    return url


def redis_unreachable() -> str:
    return _redis.get("reason", "Redis not probed")


def redis_prefix() -> str:
    """A key prefix no other test (or test run) shares: ``gmtest:<random>:``."""
    return f"gmtest:{uuid.uuid4().hex[:12]}:"


async def drop_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


# -- fixtures (imported by tests/conftest.py) ------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
async def db_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], Database]]:
    """Makes ``Database`` objects on one backend, all pointing at the same (fresh) database: every test
    using it runs twice, on SQLite (a file in tmp_path) and on PostgreSQL (a schema of its own)."""
    made: list[Database] = []
    schema: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'gomodel.db'}"
    else:
        pg = await find_pg()
        if pg is None:
            pytest.skip(pg_unreachable())
        url, schema = pg, pg_schema()

    def make() -> Database:
        db = Database(url, pool_size=2, max_overflow=2, schema=schema)
        made.append(db)
        return db

    yield make
    for db in made:
        await db.close()
    if schema is not None:
        await drop_schema(url, schema)


@pytest.fixture
async def db(db_factory: Callable[[], Database]) -> AsyncIterator[Database]:
    """A connected, migrated ``Database`` (SQLite, then PostgreSQL)."""
    database = db_factory()
    await database.connect()
    yield database


@pytest.fixture
async def pg() -> AsyncIterator[tuple[str, str]]:
    """The real PostgreSQL's URL and a schema of the test's own (dropped after); skipped when unreachable."""
    url = await find_pg()
    if url is None:
        pytest.skip(pg_unreachable())
    schema = pg_schema()
    yield url, schema
    await drop_schema(url, schema)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The test Redis's URL (skips, saying why, when it cannot be reached)."""
    url = await find_redis()
    if url is None:
        pytest.skip(redis_unreachable())
    yield url


@pytest.fixture
async def redis_key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    prefix = redis_prefix()
    yield prefix
    await drop_prefix(redis_url, prefix)
