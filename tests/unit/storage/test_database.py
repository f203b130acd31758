"""The storage layer: the same tests on SQLite and on PostgreSQL (see conftest.py's ``db`` fixtures)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from gomodel_proxy.cli import mask_secrets
from gomodel_proxy.config.loader import ConfigError, load_config
from gomodel_proxy.config.schema import Config
from gomodel_proxy.storage import migrations
from gomodel_proxy.storage.database import Database, DatabaseError, check_url, mask_url, resolve_url
from gomodel_proxy.storage.tables import (
    api_keys,
    budgets,
    hash_key,
    metadata,
    schema_fingerprint,
    teams,
    usage_records,
    users,
)

#: The schema ``tables.py`` defines, per migration version. Changed a table? Add a migration for
#: existing databases (migrations.MIGRATIONS), then record the new fingerprint under its version.
PINNED_FINGERPRINTS = {1: "1aed90ced9c4f247"}

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _usage(request_id: str, key_id: str | None, at: datetime, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": f"c-{request_id}", "request_id": request_id, "created_at": at, "key_id": key_id,
        "user_id": "u1", "team_id": "t1",
        "provider": "openai", "model": "gpt-4o-mini", "endpoint": "/v1/chat/completions", "status": 200,
        "stream": False, "input_tokens": 10, "output_tokens": 5, "cached_tokens": 0, "reasoning_tokens": 0,
        "estimated": False, "cost": 0.001, "latency_ms": 12.5, "ttfb_ms": None,
    }
    row.update(kw)
    return row


# -- migrations ----------------------------------------------------------------------------------
async def test_migrate_empty_database_then_again_is_a_no_op(db_factory) -> None:
    db = db_factory()
    await db.connect(migrate=False)
    assert await db.schema_version() == 0
    assert await db.migrate() == [migrations.latest_version()]
    assert await db.schema_version() == migrations.latest_version()
    async with db.connect_once() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"users", "teams", "api_keys", "budgets", "usage_records", "schema_version"} <= names
    assert await db.migrate() == []
    async with db.connect_once() as conn:
        rows = (await conn.execute(select(migrations.schema_version))).all()
    assert len(rows) == 1 and rows[0].version == migrations.latest_version()


async def test_reconnect_to_a_migrated_database_keeps_its_data(db_factory) -> None:
    first = db_factory()
    await first.connect()
    async with first.begin() as conn:
        await conn.execute(insert(teams).values(id="t1", name="research"))
    await first.close()
    second = db_factory()
    await second.connect()
    assert await second.migrate() == []
    async with second.connect_once() as conn:
        assert (await conn.execute(select(teams.c.name))).scalar_one() == "research"


async def test_concurrent_start_up_migrates_once(db_factory) -> None:
    dbs = [db_factory() for _ in range(3)]
    for d in dbs:
        await d.connect(migrate=False)
    results = await asyncio.gather(*(d.migrate() for d in dbs))
    assert sorted(len(r) for r in results) == [0, 0, 1]
    async with dbs[0].connect_once() as conn:
        count = (await conn.execute(select(func.count()).select_from(migrations.schema_version))).scalar_one()
    assert count == 1


async def test_a_newer_schema_is_refused(db) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(migrations.schema_version).values(version=999, name="future", applied_at=T0))
    with pytest.raises(RuntimeError, match="newer than this gateway knows"):
        await db.migrate()


async def test_indexes_for_the_usage_queries_exist(db) -> None:
    async with db.connect_once() as conn:
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("usage_records"))
        uniques = await conn.run_sync(lambda c: inspect(c).get_unique_constraints("api_keys"))
    cols = {tuple(i["column_names"]) for i in indexes}
    assert {("created_at",), ("key_id", "created_at"), ("team_id", "created_at")} <= cols
    key_unique = {tuple(u["column_names"]) for u in uniques} | {
        tuple(i["column_names"]) for i in indexes if i.get("unique")
    }
    assert ("key_hash",) in key_unique or db.backend == "sqlite"  # SQLite reports it as an autoindex


def test_the_schema_fingerprint_is_pinned_to_the_latest_migration() -> None:
    version = migrations.latest_version()
    assert PINNED_FINGERPRINTS.get(version) == schema_fingerprint(), (
        "tables.py changed: add a migration for existing databases, then pin the new fingerprint "
        f"{schema_fingerprint()!r} under its version"
    )


# -- keys ----------------------------------------------------------------------------------------
async def test_insert_select_update_a_key_by_hash(db) -> None:
    secret = "sk-gm-0123456789abcdef"
    async with db.begin() as conn:
        await conn.execute(insert(teams).values(id="t1", name="research"))
        await conn.execute(insert(users).values(id="u1", email="a@example.com", team_id="t1"))
        await conn.execute(insert(api_keys).values(
            id="k1", key_hash=hash_key(secret), key_prefix=secret[:10], user_id="u1", team_id="t1",
            allowed_models=["openai/gpt-4o-mini", "anthropic/*"], rpm=60, tpm=10_000,
            expires_at=T0 + timedelta(days=30), metadata={"env": "ci", "n": 1},
        ))
    async with db.connect_once() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == hash_key(secret)))).one()
    assert row.id == "k1" and row.key_prefix == "sk-gm-0123"
    assert row.allowed_models == ["openai/gpt-4o-mini", "anthropic/*"]
    assert row._mapping["metadata"] == {"env": "ci", "n": 1}
    assert row.expires_at == T0 + timedelta(days=30) and row.expires_at.tzinfo is not None
    assert row.revoked_at is None and row.created_at.tzinfo is not None
    assert len(hash_key(secret)) == 64

    revoked = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    async with db.begin() as conn:
        result = await conn.execute(
            update(api_keys).where(api_keys.c.key_hash == hash_key(secret)).values(revoked_at=revoked, rpm=30)
        )
        assert result.rowcount == 1
    async with db.connect_once() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == "k1"))).one()
    assert row.revoked_at == revoked and row.revoked_at.utcoffset() == timedelta(0) and row.rpm == 30
    assert row.updated_at >= row.created_at

    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(api_keys).values(id="k2", key_hash=hash_key(secret), key_prefix="x"))


async def test_a_naive_datetime_is_refused(db) -> None:
    with pytest.raises(Exception, match="naive datetime"):
        async with db.begin() as conn:
            await conn.execute(insert(teams).values(id="t9", name="n", created_at=datetime(2026, 1, 1)))


async def test_a_budget_per_subject_is_unique(db) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(budgets).values(id="b1", scope="team", subject_id="t1", max_budget=10, period="daily")
        )
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(
                insert(budgets).values(id="b2", scope="team", subject_id="t1", max_budget=5, period="weekly")
            )


# -- usage -------------------------------------------------------------------------------------
async def test_usage_insert_and_tokens_summed_by_key_over_a_window(db) -> None:
    rows = [
        _usage("r1", "k1", T0, input_tokens=100, output_tokens=20, cost=0.5),
        _usage("r2", "k1", T0 + timedelta(minutes=30), input_tokens=50, output_tokens=10, cached_tokens=40,
               stream=True, estimated=True, ttfb_ms=80.0, cost=0.25),
        _usage("r3", "k2", T0 + timedelta(minutes=10), input_tokens=7, output_tokens=3),
        _usage("r4", "k1", T0 + timedelta(hours=2), input_tokens=1000, output_tokens=1000),  # outside
        _usage("r5", "k1", T0 - timedelta(seconds=1), input_tokens=1000),  # outside
    ]
    async with db.begin() as conn:
        await conn.execute(insert(usage_records), rows)
    start, end = T0, T0 + timedelta(hours=1)
    query = (
        select(
            usage_records.c.key_id,
            func.count().label("requests"),
            func.sum(usage_records.c.input_tokens).label("input"),
            func.sum(usage_records.c.output_tokens).label("output"),
            func.sum(usage_records.c.cached_tokens).label("cached"),
            func.sum(usage_records.c.cost).label("cost"),
        )
        .where(usage_records.c.created_at >= start, usage_records.c.created_at < end)
        .group_by(usage_records.c.key_id)
        .order_by(usage_records.c.key_id)
    )
    async with db.connect_once() as conn:
        result = [tuple(r) for r in (await conn.execute(query)).all()]
    assert [(k, n, int(i), int(o), int(c)) for k, n, i, o, c, _ in result] == [
        ("k1", 2, 150, 30, 40), ("k2", 1, 7, 3, 0)
    ]
    assert result[0][5] == pytest.approx(0.75)
    async with db.connect_once() as conn:
        r2 = (await conn.execute(select(usage_records).where(usage_records.c.request_id == "r2"))).one()
    assert r2.stream is True and r2.estimated is True and r2.ttfb_ms == 80.0 and r2.created_at.tzinfo is not None


async def test_the_call_id_is_unique(db) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(usage_records).values(_usage("dup", "k1", T0)))
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(insert(usage_records).values(_usage("dup", "k1", T0, input_tokens=99)))
    async with db.connect_once() as conn:
        rows = (await conn.execute(select(usage_records.c.input_tokens))).all()
    assert [r[0] for r in rows] == [10]


# -- configuration -------------------------------------------------------------------------------
def test_default_url_is_sqlite_under_the_cache_dir(tmp_path) -> None:
    config = Config()
    config.cache.dir = str(tmp_path / "cache")
    assert resolve_url(config) == f"sqlite+aiosqlite:///{tmp_path / 'cache' / 'gomodel.db'}"
    db = Database.from_config(config)
    assert db.backend == "sqlite" and db.pool_size == 5


async def test_the_default_database_file_is_created(tmp_path) -> None:
    config = Config()
    config.cache.dir = str(tmp_path / "nested" / "cache")
    async with Database.from_config(config) as db:
        assert await db.schema_version() == migrations.latest_version()
    assert (tmp_path / "nested" / "cache" / "gomodel.db").is_file()


def test_database_section_loads_strictly(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("database:\n  url: postgresql+asyncpg://gw:hunter2@db:5432/gw\n  pool_size: 20\n")
    config = load_config(good, env={})
    assert config.database.pool_size == 20 and config.database.url.endswith("@db:5432/gw")
    masked = mask_secrets(config)["database"]
    assert "hunter2" not in str(masked) and masked["url"] == "postgresql+asyncpg://gw:***@db:5432/gw"

    bad = tmp_path / "bad.yaml"
    bad.write_text("database:\n  url: 5\n  pool_sise: 3\n  pool_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, env={})
    text = "\n".join(info.value.problems)
    assert f"{bad}:3:3: database.pool_sise: unknown key (did you mean 'pool_size'?)" in text
    assert f"{bad}:4:3: database.pool_size: must be at least 1, got 0" in text


def test_bad_urls_are_explained_without_the_password() -> None:
    assert check_url("sqlite+aiosqlite:///x.db") is None
    assert check_url("postgresql+asyncpg://u:p@h/db") is None
    assert "async driver" in (check_url("postgresql://u:p@h/db") or "")
    assert "unsupported database" in (check_url("mysql+aiomysql://u:p@h/db") or "")
    assert "no database name" in (check_url("postgresql+asyncpg://u:p@h") or "")
    assert "not a database URL" in (check_url("nonsense") or "")
    with pytest.raises(DatabaseError) as info:
        Database("postgresql+psycopg2://gw:hunter2@db/gw")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)
    assert mask_url("postgresql+asyncpg://gw:hunter2@db/gw") == "postgresql+asyncpg://gw:***@db/gw"
    assert "hunter2" not in repr(Database("postgresql+asyncpg://gw:hunter2@db/gw"))
    with pytest.raises(DatabaseError, match="PostgreSQL only"):
        Database("sqlite+aiosqlite:///x.db", schema="s1")


async def test_using_an_unconnected_database_is_an_error() -> None:
    db = Database("sqlite+aiosqlite://")
    with pytest.raises(DatabaseError, match="not connected"):
        db.engine  # noqa: B018
    async with db:  # in memory
        assert await db.schema_version() == migrations.latest_version()
        assert set(metadata.tables) <= set(
            await (await db.engine.connect()).run_sync(lambda c: inspect(c).get_table_names())
        )
