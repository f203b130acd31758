"""The raw-driver start path (``storage.raw``, ``Database.connect``/``fetch``): what start-up reads without
SQLAlchemy equals what the SQLAlchemy repository reads, on SQLite and on PostgreSQL (the ``db`` fixtures run
each test on both). That start-up itself imports no SQLAlchemy is tests/e2e/test_cold_start_imports.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import insert, inspect
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from gomodel_proxy.billing import export
from gomodel_proxy.storage import migrations, raw, records, sql_repository
from gomodel_proxy.storage import repository as repo
from gomodel_proxy.storage.database import Database, DatabaseError
from gomodel_proxy.storage.tables import api_keys, budgets, teams, usage_records, users
from gomodel_proxy.storage.urls import check_url, mask_url, parse_url

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

URLS = [
    "sqlite+aiosqlite:///x.db",
    "sqlite+aiosqlite:////abs/path/gomodel.db",
    "sqlite+aiosqlite://",
    "sqlite+aiosqlite:///:memory:",
    "postgresql+asyncpg://u:p@h/db",
    "postgresql+asyncpg://gw:hunter2@db:5432/gw",
    "postgresql+asyncpg://gw:p%40ss%2Fw%3Ard@db.example.com:6543/my%20db?ssl=require&application_name=gm",
    "postgresql+asyncpg://user@[::1]:5432/test",
    "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "postgresql+asyncpg:///test?host=/var/run/postgresql",
    "postgresql+asyncpg://u:p@h",
    "postgresql://u:p@h/db",
    "mysql+aiomysql://u:p@h/db",
    "postgresql+asyncpg://u@h/db?a=1&b=2&a=3",
]


# -- URLs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", URLS)
def test_a_url_reads_and_prints_as_sqlalchemy_reads_and_prints_it(url: str) -> None:
    ours, theirs = parse_url(url), make_url(url)
    assert (ours.drivername, ours.username, ours.password, ours.host, ours.port, ours.database) == (
        theirs.drivername, theirs.username, theirs.password, theirs.host, theirs.port, theirs.database)
    assert ours.backend_name == theirs.get_backend_name()
    for hide in (True, False):
        assert ours.render(hide_password=hide) == theirs.render_as_string(hide_password=hide)


def test_what_is_not_a_url_is_said_so() -> None:
    assert "not a database URL" in (check_url("nonsense") or "")
    assert "not a database URL" in (check_url("postgresql+asyncpg://u:p@h:port/db") or "")
    assert mask_url("nonsense") == "<not a database URL>"


@pytest.mark.parametrize("url", [u for u in URLS if u.startswith("postgresql+asyncpg") and check_url(u) is None])
def test_the_raw_connection_gets_the_arguments_sqlalchemy_would_pass(url: str) -> None:
    db = Database(url, schema="s1")
    _, expected = asyncpg_dialect().create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    expected["server_settings"] = {"search_path": "s1"}
    assert db._pg_connect_args() == expected


# -- the schema ----------------------------------------------------------------------------------
def test_the_raw_layer_knows_the_tables_and_the_schema_version() -> None:
    assert migrations.latest_version() == raw.SCHEMA_VERSION
    for columns, table in ((records.TEAM_COLUMNS, teams), (records.USER_COLUMNS, users),
                           (records.KEY_COLUMNS, api_keys), (records.BUDGET_COLUMNS, budgets),
                           (records.USAGE_COLUMNS, usage_records)):
        assert columns == tuple(c.name for c in table.columns), table.name


async def test_a_fresh_database_is_migrated_then_opened_without_migrating(
    db_factory: Callable[[], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = db_factory()
    await first.connect()  # empty: created through SQLAlchemy
    assert await first.schema_version() == migrations.latest_version()
    async with first.connect_once() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"users", "teams", "api_keys", "budgets", "usage_records", "schema_version"} <= names
    await first.close()

    async def no_migration(self: Database) -> list[int]:
        raise AssertionError("a database at the current version is not migrated")

    monkeypatch.setattr(Database, "migrate", no_migration)
    again = db_factory()
    await again.connect()
    assert again._engine is None  # the version was read with the raw driver: no engine, no SQLAlchemy
    assert await again.schema_version() == migrations.latest_version()
    assert await raw.all_teams(again) == []
    assert again._engine is None


async def test_a_database_newer_than_the_gateway_is_refused(db: Database, db_factory: Callable[[], Database]) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(migrations.schema_version).values(version=99, name="future", applied_at=T0))
    newer = db_factory()
    with pytest.raises(RuntimeError, match="schema version 99, newer than this gateway knows"):
        await newer.connect()
    assert not newer.connected


async def test_reading_before_connecting_is_an_error(db_factory: Callable[[], Database]) -> None:
    with pytest.raises(DatabaseError, match="not connected"):
        await raw.all_users(db_factory())


# -- the records ---------------------------------------------------------------------------------
async def _populate(db: Database) -> dict[str, Any]:
    await repo.create_team(db, id="research", name="Research", rpm=10, metadata={"cc": "R&D", "n": [1, 2.5]})
    await repo.create_team(db, id="ops", name="Ops")
    await repo.create_user(db, id="alice", email="a@example.com", team_id="research", is_admin=True, tpm=99)
    await repo.create_user(db, id="bob", metadata={"nested": {"x": None}})
    plain, _ = await repo.create_key(db, name="plain")
    full, _ = await repo.create_key(db, name="full", user_id="alice", team_id="ops", is_admin=True,
                                    allowed_models=["mock/*", "openai/gpt-4o"], rpm=5, tpm=500,
                                    expires_at=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
                                    metadata={"env": "prod", "ünïcode": "✓"})
    empty, _ = await repo.create_key(db, allowed_models=[])
    revoked, _ = await repo.create_key(db, name="gone")
    await repo.revoke_key(db, revoked.id)
    await repo.put_budget(db, f"key:{full.id}", max_budget=5.25, period="daily")
    await repo.put_budget(db, "team:research", max_budget=100.0, period="monthly")
    await repo.put_budget(db, "global", max_budget=1e6, period="total")
    return {"plain": plain, "full": full, "empty": empty, "revoked": revoked}


async def test_what_start_up_reads_raw_equals_what_the_repository_reads(db: Database) -> None:
    made = await _populate(db)
    keys = await raw.keys_changed_since(db, None)
    assert keys == await sql_repository.keys_changed_since(db, None)
    assert {k.id for k in keys} == {k.id for k in made.values()} and len(keys) == 4
    full = next(k for k in keys if k.id == made["full"].id)
    assert full == made["full"]
    assert full.allowed_models == ("mock/*", "openai/gpt-4o") and full.expires_at is not None
    assert full.expires_at.tzinfo is UTC and full.updated_at.tzinfo is UTC and full.created_at is not None
    assert next(k for k in keys if k.id == made["plain"].id).allowed_models is None
    assert next(k for k in keys if k.id == made["empty"].id).allowed_models == ()
    assert next(k for k in keys if k.id == made["revoked"].id).revoked_at is not None
    assert await raw.all_users(db) == await sql_repository.all_users(db)
    assert await raw.all_teams(db) == await sql_repository.all_teams(db)
    assert await raw.all_budgets(db) == await sql_repository.all_budgets(db)
    assert [t.metadata for t in await raw.all_teams(db)] == [{"cc": "R&D", "n": [1, 2.5]}, {}]
    assert [(u.id, u.is_admin, u.team_id) for u in await raw.all_users(db)] == [
        ("alice", True, "research"), ("bob", False, None)]

    # Incremental: only what changed after ``since``, as the SQLAlchemy query returns it.
    since = max(k.updated_at for k in keys) - timedelta(microseconds=1)
    assert await raw.keys_changed_since(db, since) == await sql_repository.keys_changed_since(db, since)
    await repo.update_key(db, made["plain"].id, {"name": "renamed"})
    newest = max(k.updated_at for k in keys)
    changed = await raw.keys_changed_since(db, newest)
    assert [k.name for k in changed] == ["renamed"] == [k.name for k in
                                                         await sql_repository.keys_changed_since(db, newest)]
    with pytest.raises(ValueError, match="naive"):
        await raw.keys_changed_since(db, datetime(2026, 1, 1))


async def test_an_empty_database_reads_empty(db: Database) -> None:
    assert await raw.keys_changed_since(db, None) == []
    assert await raw.all_users(db) == [] and await raw.all_teams(db) == [] and await raw.all_budgets(db) == []
    assert await raw.spend_since(db, scope="global", subject_id="", start=T0) == Decimal("0E-9")


async def test_spend_since_raw_equals_the_report_query(db: Database) -> None:
    rows = []
    for i, (key, user, team, cost, at) in enumerate([
        ("k1", "u1", "t1", 0.1, T0 - timedelta(hours=1)),  # before the period
        ("k1", "u1", "t1", 0.000000123, T0),  # on its first instant: counted
        ("k1", "u2", "t1", 1.25, T0 + timedelta(minutes=5)),
        ("k2", None, None, 2.5, T0 + timedelta(days=2)),
        (None, None, None, 0.3333333333, T0 + timedelta(seconds=1)),
    ]):
        rows.append({"id": f"c{i}", "request_id": f"r{i}", "created_at": at, "key_id": key, "user_id": user,
                     "team_id": team, "provider": "p", "model": "m", "endpoint": "chat", "status": 200,
                     "cost": cost})
    async with db.begin() as conn:
        await conn.execute(insert(usage_records), rows)
    for scope, subject in (("key", "k1"), ("key", "k2"), ("key", "nobody"), ("user", "u1"), ("team", "t1"),
                           ("global", "")):
        for start in (T0 - timedelta(days=1), T0, T0 + timedelta(microseconds=1), T0 + timedelta(days=3)):
            ours = await raw.spend_since(db, scope=scope, subject_id=subject, start=start)
            assert ours == await export.spend_since(db, scope=scope, subject_id=subject, start=start), (scope, start)
    assert await raw.spend_since(db, scope="key", subject_id="k1", start=T0) == Decimal("1.250000123")
    with pytest.raises(ValueError, match="unknown budget scope"):
        await raw.spend_since(db, scope="org", subject_id="x", start=T0)


# -- the drivers ---------------------------------------------------------------------------------
async def test_an_in_memory_sqlite_database_reads_through_its_engine() -> None:
    async with Database("sqlite+aiosqlite://") as db:  # one connection, SQLAlchemy's: no raw file to open
        await repo.create_team(db, id="t", name="T")
        assert await raw.all_teams(db) == await sql_repository.all_teams(db)
        await db.ping()


async def test_a_broken_raw_postgresql_connection_is_replaced(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("the raw pool is PostgreSQL's")
    await repo.create_team(db, id="t", name="T")
    assert len(await raw.all_teams(db)) == 1
    pids = [h._con.get_server_pid() for h in db._pg_pool._holders if h._con is not None]
    assert pids
    admin = await asyncpg.connect(**{k: v for k, v in db._pg_connect_args().items() if k != "server_settings"})
    try:  # the server ends the pool's connections (a restart, a failover)
        await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
    finally:
        await admin.close()
    assert len(await raw.all_teams(db)) == 1  # tried once more on a new connection
    await db.ping()


def test_the_repository_offers_every_function_of_the_sql_repository_lazily() -> None:
    import inspect as pyinspect  # noqa: PLC0415

    public = {name for name, fn in vars(sql_repository).items() if pyinspect.iscoroutinefunction(fn)
              and not name.startswith("_") and fn.__module__ == sql_repository.__name__}
    assert public == repo._FUNCTIONS and set(repo.__all__) >= repo._FUNCTIONS
    assert repo.create_team.__name__ == "create_team" and repo.create_team is repo.create_team
    with pytest.raises(AttributeError):
        repo.no_such_function  # noqa: B018


async def test_sqlalchemy_is_loaded_once_for_every_waiter_and_a_cancelled_waiter_does_not_stop_it() -> None:
    from gomodel_proxy.storage import database  # noqa: PLC0415

    saved = list(database._sql_loading)
    database._sql_loading.clear()  # as if nothing had loaded it yet (the modules are imported: it is quick)
    try:
        first = asyncio.ensure_future(database.load_sqlalchemy())
        second = asyncio.ensure_future(database.load_sqlalchemy())
        await asyncio.sleep(0)
        first.cancel()
        await second
        assert len(database._sql_loading) == 1 and database._sql_loading[0].result() is None
        await database.load_sqlalchemy()  # done: returns at once
    finally:
        database._sql_loading[:] = saved or database._sql_loading
