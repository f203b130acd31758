"""A ``db`` fixture run twice: SQLite (a file in tmp_path) and the real PostgreSQL on 127.0.0.1:5432.

PostgreSQL runs each test in its own schema (``t_<random>``), dropped afterwards, so that parallel runs
never see each other's tables. ``GOMODEL_TEST_PG_URL`` points elsewhere; PostgreSQL is skipped, with the
reason, only when it cannot be reached.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from gomodel_proxy.storage.database import Database

_PG_CANDIDATES = [
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg://root@127.0.0.1:5432/test",
]
#: Probed once per run: {"url": ...} or {"reason": ...}.
_pg: dict[str, str] = {}


async def _find_pg() -> str | None:
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


def pg_schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


async def drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_factory(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[object]:
    """Makes ``Database`` objects on one backend, all pointing at the same (fresh) database."""
    made: list[Database] = []
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'gomodel.db'}"
        schema = None
    else:
        pg = await _find_pg()
        if pg is None:
            pytest.skip(_pg["reason"])
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
async def db(db_factory) -> AsyncIterator[Database]:
    database = db_factory()
    await database.connect()
    yield database
