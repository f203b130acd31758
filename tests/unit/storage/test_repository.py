"""The governance repository on SQLite and PostgreSQL (the ``db`` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, NotFoundError
from gomodel_proxy.storage import repository as repo
from gomodel_proxy.storage.tables import api_keys, hash_key


async def _conflict(coro: object) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await coro  # type: ignore[misc]
    assert info.value.status == 409 and info.value.code == "conflict"
    return info.value


# -- teams ----------------------------------------------------------------------------------------
async def test_team_crud(db) -> None:
    team = await repo.create_team(db, id="research", name="Research", rpm=10, metadata={"cc": "R&D"})
    assert (team.id, team.name, team.rpm, team.tpm, dict(team.metadata)) == ("research", "Research", 10, None,
                                                                           {"cc": "R&D"})
    assert team.created_at.tzinfo is not None
    generated = await repo.create_team(db, name="Ops")
    assert re.fullmatch(r"t_[0-9a-f]{16}", generated.id)
    assert [t.id for t in await repo.list_teams(db)] == ["research", generated.id]
    assert await repo.get_team(db, "research") == team

    changed = await repo.update_team(db, "research", {"name": "Science", "tpm": 1000})
    assert (changed.name, changed.rpm, changed.tpm) == ("Science", 10, 1000)
    assert changed.updated_at >= team.updated_at

    deleted = await repo.delete_team(db, "research")
    assert deleted.name == "Science"
    with pytest.raises(NotFoundError):
        await repo.get_team(db, "research")
    assert [t.id for t in await repo.all_teams(db)] == [generated.id]


async def test_team_conflicts_and_not_found(db) -> None:
    await repo.create_team(db, id="a", name="Alpha")
    await repo.create_team(db, id="b", name="Beta")
    assert (await _conflict(repo.create_team(db, id="a", name="Other"))).param == "id"
    assert (await _conflict(repo.create_team(db, name="Alpha"))).param == "name"
    assert (await _conflict(repo.update_team(db, "b", {"name": "Alpha"}))).param == "name"
    assert (await repo.update_team(db, "b", {"name": "Beta"})).name == "Beta"  # its own name is no clash
    for call in (repo.get_team(db, "zz"), repo.update_team(db, "zz", {"rpm": 1}), repo.delete_team(db, "zz")):
        with pytest.raises(NotFoundError):
            await call
    with pytest.raises(InvalidRequestError) as info:
        await repo.update_team(db, "a", {"colour": "red"})
    assert info.value.param == "colour"


# -- users ----------------------------------------------------------------------------------------
async def test_user_crud_and_references(db) -> None:
    await repo.create_team(db, id="t1", name="T1")
    user = await repo.create_user(db, id="alice", email="alice@example.com", team_id="t1", is_admin=True, rpm=5)
    assert (user.team_id, user.is_admin, user.rpm, user.email) == ("t1", True, 5, "alice@example.com")
    bob = await repo.create_user(db, name="Bob")
    assert re.fullmatch(r"u_[0-9a-f]{16}", bob.id) and bob.team_id is None and bob.is_admin is False
    assert [u.id for u in await repo.list_users(db)] == ["alice", bob.id]
    assert [u.id for u in await repo.list_users(db, team_id="t1")] == ["alice"]

    with pytest.raises(InvalidRequestError) as info:
        await repo.create_user(db, email="x@example.com", team_id="nope")
    assert info.value.param == "team_id" and info.value.status == 400
    with pytest.raises(InvalidRequestError):
        await repo.update_user(db, "alice", {"team_id": "nope"})
    assert (await _conflict(repo.create_user(db, email="alice@example.com"))).param == "email"
    assert (await _conflict(repo.create_user(db, id="alice"))).param == "id"
    assert (await _conflict(repo.update_user(db, bob.id, {"email": "alice@example.com"}))).param == "email"

    moved = await repo.update_user(db, "alice", {"team_id": None, "is_admin": False, "name": "Alice"})
    assert (moved.team_id, moved.is_admin, moved.name, moved.rpm) == (None, False, "Alice", 5)
    assert (await repo.delete_user(db, bob.id)).name == "Bob"
    with pytest.raises(NotFoundError):
        await repo.get_user(db, bob.id)
    assert [u.id for u in await repo.all_users(db)] == ["alice"]


async def test_deleting_a_team_detaches_its_users_and_keys_and_drops_its_budget(db) -> None:
    await repo.create_team(db, id="t1", name="T1")
    await repo.create_user(db, id="u1", team_id="t1")
    key, _ = await repo.create_key(db, team_id="t1", user_id="u1")
    await repo.put_budget(db, "team:t1", max_budget=5, period="daily")
    before = datetime.now(UTC) - timedelta(seconds=1)
    await repo.delete_team(db, "t1")
    assert (await repo.get_user(db, "u1")).team_id is None
    changed = await repo.keys_changed_since(db, key.updated_at)
    assert [k.id for k in changed] == [key.id] and changed[0].team_id is None
    assert changed[0].updated_at > before
    assert await repo.all_budgets(db) == []
    await repo.delete_user(db, "u1")
    assert (await repo.get_key(db, key.id)).user_id is None


# -- keys -----------------------------------------------------------------------------------------
async def test_create_key_returns_plaintext_once_and_stores_only_its_hash(db) -> None:
    await repo.create_user(db, id="u1")
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    row, plaintext = await repo.create_key(
        db, name="ci", user_id="u1", allowed_models=["openai/*", "gpt-4o"], rpm=60, expires_at=expires,
        metadata={"env": "ci"},
    )
    assert re.fullmatch(r"sk-gm-[A-Za-z0-9_-]{43}", plaintext)
    assert re.fullmatch(r"k_[0-9a-f]{16}", row.id)
    assert row.key_prefix == plaintext[:12] and row.key_hash == hash_key(plaintext)
    assert row.allowed_models == ("openai/*", "gpt-4o") and row.expires_at == expires
    assert (row.user_id, row.rpm, row.is_admin, row.revoked_at) == ("u1", 60, False, None)
    async with db.connect_once() as conn:
        stored = (await conn.execute(select(api_keys))).mappings().one()
    assert plaintext not in [str(v) for v in stored.values()]
    assert stored["key_hash"] == hash_key(plaintext)
    other, second = await repo.create_key(db)
    assert second != plaintext and other.allowed_models is None and other.user_id is None


async def test_key_references_list_update_and_revoke(db) -> None:
    await repo.create_team(db, id="t1", name="T1")
    await repo.create_user(db, id="u1", team_id="t1")
    with pytest.raises(InvalidRequestError) as info:
        await repo.create_key(db, user_id="ghost")
    assert info.value.param == "user_id"
    with pytest.raises(InvalidRequestError):
        await repo.create_key(db, team_id="ghost")
    a, _ = await repo.create_key(db, name="a", user_id="u1")
    b, _ = await repo.create_key(db, name="b", team_id="t1")
    assert [k.id for k in await repo.list_keys(db)] == [a.id, b.id]
    assert [k.id for k in await repo.list_keys(db, user_id="u1")] == [a.id]
    assert [k.id for k in await repo.list_keys(db, team_id="t1")] == [b.id]

    changed = await repo.update_key(
        db, a.id, {"name": "renamed", "allowed_models": ["x/*"], "tpm": 99, "is_admin": True, "team_id": "t1"}
    )
    assert (changed.name, changed.allowed_models, changed.tpm, changed.is_admin, changed.team_id) == (
        "renamed", ("x/*",), 99, True, "t1")
    assert changed.key_hash == a.key_hash and changed.updated_at >= a.updated_at
    with pytest.raises(InvalidRequestError):
        await repo.update_key(db, a.id, {"key_hash": "0" * 64})
    with pytest.raises(InvalidRequestError):
        await repo.update_key(db, a.id, {"user_id": "ghost"})

    revoked = await repo.revoke_key(db, a.id)
    assert revoked.revoked_at is not None
    again = await repo.revoke_key(db, a.id)
    assert again.revoked_at == revoked.revoked_at and again.updated_at == revoked.updated_at
    assert [k.id for k in await repo.list_keys(db)] == [b.id]
    assert {k.id for k in await repo.list_keys(db, include_revoked=True)} == {a.id, b.id}
    for call in (repo.get_key(db, "k_none"), repo.revoke_key(db, "k_none"), repo.update_key(db, "k_none", {})):
        with pytest.raises(NotFoundError):
            await call


async def test_keys_changed_since_is_incremental_and_includes_revoked(db) -> None:
    assert await repo.keys_changed_since(db, None) == []
    a, _ = await repo.create_key(db, name="a")
    b, _ = await repo.create_key(db, name="b")
    everything = await repo.keys_changed_since(db, None)
    assert [k.id for k in everything] == [a.id, b.id]
    assert isinstance(everything[0], repo.KeyRow)
    mark = max(k.updated_at for k in everything)
    assert await repo.keys_changed_since(db, mark) == []

    await asyncio.sleep(0.002)  # a later change gets a later timestamp on any clock resolution
    await repo.revoke_key(db, a.id)
    changed = await repo.keys_changed_since(db, mark)
    assert [k.id for k in changed] == [a.id] and changed[0].revoked_at is not None
    mark = changed[0].updated_at
    await asyncio.sleep(0.002)
    await repo.set_rate_limit(db, "key", b.id, rpm=7, tpm=None)
    changed = await repo.keys_changed_since(db, mark)
    assert [(k.id, k.rpm) for k in changed] == [(b.id, 7)]


# -- budgets --------------------------------------------------------------------------------------
async def test_budget_put_is_an_upsert_checked_against_its_subject(db) -> None:
    await repo.create_user(db, id="u1")
    key, _ = await repo.create_key(db)
    created, was_new = await repo.put_budget(db, "user:u1", max_budget=10.5, period="monthly")
    assert was_new and (created.scope, created.subject_id, created.max_budget) == ("user", "u1", 10.5)
    replaced, was_new = await repo.put_budget(db, "user:u1", max_budget=20, period="weekly")
    assert not was_new and (replaced.max_budget, replaced.period) == (20.0, "weekly")
    assert replaced.created_at == created.created_at
    glob, _ = await repo.put_budget(db, "global", max_budget=1000, period="total")
    assert (glob.scope, glob.subject_id) == ("global", "")
    await repo.put_budget(db, f"key:{key.id}", max_budget=1, period="daily")
    assert [b.id for b in await repo.list_budgets(db)] == ["global", f"key:{key.id}", "user:u1"]
    assert (await repo.get_budget(db, "user:u1")).period == "weekly"

    for bad in ("user", "user:", "org:x", "key"):
        with pytest.raises(InvalidRequestError):
            await repo.put_budget(db, bad, max_budget=1, period="daily")
    with pytest.raises(InvalidRequestError) as info:
        await repo.put_budget(db, "team:ghost", max_budget=1, period="daily")
    assert info.value.code == "unknown_reference"
    with pytest.raises(InvalidRequestError):
        await repo.put_budget(db, "user:u1", max_budget=1, period="hourly")

    assert (await repo.delete_budget(db, "user:u1")).id == "user:u1"
    for call in (repo.get_budget(db, "user:u1"), repo.delete_budget(db, "user:u1")):
        with pytest.raises(NotFoundError):
            await call
    assert len(await repo.all_budgets(db)) == 2


# -- rate limits ----------------------------------------------------------------------------------
async def test_rate_limits_set_clear_and_list(db) -> None:
    await repo.create_team(db, id="t1", name="T1", rpm=100)
    await repo.create_user(db, id="u1")
    key, _ = await repo.create_key(db)
    revoked, _ = await repo.create_key(db, rpm=3)
    await repo.revoke_key(db, revoked.id)
    await repo.set_rate_limit(db, "user", "u1", rpm=None, tpm=5000)
    row = await repo.set_rate_limit(db, "key", key.id, rpm=30, tpm=None)
    assert (row.scope, row.subject_id, row.rpm, row.tpm) == ("key", key.id, 30, None)
    listed = [(r.scope, r.subject_id, r.rpm, r.tpm) for r in await repo.list_rate_limits(db)]
    assert listed == [("team", "t1", 100, None), ("user", "u1", None, 5000), ("key", key.id, 30, None)]

    await repo.set_rate_limit(db, "team", "t1", rpm=None, tpm=None)
    assert [r.scope for r in await repo.list_rate_limits(db)] == ["user", "key"]
    with pytest.raises(NotFoundError):
        await repo.set_rate_limit(db, "user", "ghost", rpm=1, tpm=1)
    with pytest.raises(InvalidRequestError):
        await repo.set_rate_limit(db, "org", "t1", rpm=1, tpm=1)
