"""Governance records (teams, users, virtual keys, budgets, per-subject rate limits) through SQLAlchemy Core.

The implementation behind ``storage.repository`` (import that: it loads this module, and SQLAlchemy, on
first use and in a worker thread). One SQLAlchemy Core code path for SQLite and PostgreSQL. Every
function raises a ``GatewayError`` subclass the admin API can render as is: 404 for an unknown id, 409
for a duplicate (team name, user email, existing id), 400 for a reference to a user or team that does
not exist.

The in-memory caches read the same records with the raw drivers (``storage.raw``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gomodel_proxy.core.errors import InvalidRequestError, NotFoundError
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.records import (
    BudgetRow,
    KeyRow,
    RateLimitRow,
    TeamRow,
    UserRow,
    budget_row,
    key_row,
    team_row,
    user_row,
)
from gomodel_proxy.storage.repository import (
    KEY_FIELDS,
    KEY_PREFIX_CHARS,
    PERIODS,
    TEAM_FIELDS,
    USER_FIELDS,
    ConflictError,
    new_id,
    new_key,
    parse_budget_id,
)
from gomodel_proxy.storage.tables import api_keys, budgets, hash_key, teams, users, utcnow


def _team(row: Row[Any]) -> TeamRow:
    return team_row(row._mapping)


def _user(row: Row[Any]) -> UserRow:
    return user_row(row._mapping)


def _key(row: Row[Any]) -> KeyRow:
    return key_row(row._mapping)


def _budget(row: Row[Any]) -> BudgetRow:
    return budget_row(row._mapping)


def _only(changes: Mapping[str, Any], allowed: frozenset[str], what: str) -> dict[str, Any]:
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise InvalidRequestError(f"{what} has no field '{unknown[0]}'", param=unknown[0])
    return dict(changes)


async def _exists(conn: AsyncConnection, table: Any, ident: str) -> bool:
    return (await conn.execute(select(table.c.id).where(table.c.id == ident))).first() is not None


async def _check_refs(conn: AsyncConnection, *, user_id: str | None = None, team_id: str | None = None) -> None:
    """400 when a referenced user or team does not exist (the request is wrong, not the URL)."""
    if user_id is not None and not await _exists(conn, users, user_id):
        raise InvalidRequestError(f"no user '{user_id}'", param="user_id", code="unknown_reference")
    if team_id is not None and not await _exists(conn, teams, team_id):
        raise InvalidRequestError(f"no team '{team_id}'", param="team_id", code="unknown_reference")


async def _one(conn: AsyncConnection, query: Select[Any], what: str, ident: str) -> Row[Any]:
    row: Row[Any] | None = (await conn.execute(query)).first()
    if row is None:
        raise NotFoundError(f"no {what} '{ident}'")
    return row


# -- teams ----------------------------------------------------------------------------------------
async def create_team(
    db: Database,
    *,
    name: str,
    id: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> TeamRow:
    team_id = id or new_id("t_")
    try:
        async with db.begin(immediate=True) as conn:
            if await _exists(conn, teams, team_id):
                raise ConflictError(f"a team with id '{team_id}' exists", param="id")
            if (await conn.execute(select(teams.c.id).where(teams.c.name == name))).first() is not None:
                raise ConflictError(f"a team named '{name}' exists", param="name")
            await conn.execute(
                insert(teams).values(id=team_id, name=name, rpm=rpm, tpm=tpm, metadata=dict(metadata or {}))
            )
            return _team(await _one(conn, select(teams).where(teams.c.id == team_id), "team", team_id))
    except IntegrityError as exc:  # a concurrent insert won the race
        raise ConflictError("the team exists (same id or name)") from exc


async def get_team(db: Database, team_id: str) -> TeamRow:
    async with db.connect_once() as conn:
        return _team(await _one(conn, select(teams).where(teams.c.id == team_id), "team", team_id))


async def list_teams(db: Database) -> list[TeamRow]:
    async with db.connect_once() as conn:
        rows = (await conn.execute(select(teams).order_by(teams.c.created_at, teams.c.id))).all()
    return [_team(r) for r in rows]


async def update_team(db: Database, team_id: str, changes: Mapping[str, Any]) -> TeamRow:
    """Set the fields in ``changes`` (name, rpm, tpm, metadata); the others keep their values."""
    values = _only(changes, TEAM_FIELDS, "a team")
    try:
        async with db.begin(immediate=True) as conn:
            await _one(conn, select(teams.c.id).where(teams.c.id == team_id), "team", team_id)
            if "name" in values:
                clash = select(teams.c.id).where(teams.c.name == values["name"], teams.c.id != team_id)
                if (await conn.execute(clash)).first() is not None:
                    raise ConflictError(f"a team named '{values['name']}' exists", param="name")
            await conn.execute(update(teams).where(teams.c.id == team_id).values(updated_at=utcnow(), **values))
            return _team(await _one(conn, select(teams).where(teams.c.id == team_id), "team", team_id))
    except IntegrityError as exc:
        raise ConflictError("a team with that name exists", param="name") from exc


async def delete_team(db: Database, team_id: str) -> TeamRow:
    """Delete a team and its budget; its users and keys lose the team (their ``updated_at`` is bumped)."""
    async with db.begin(immediate=True) as conn:
        row = _team(await _one(conn, select(teams).where(teams.c.id == team_id), "team", team_id))
        now = utcnow()
        await conn.execute(update(users).where(users.c.team_id == team_id).values(team_id=None, updated_at=now))
        await conn.execute(update(api_keys).where(api_keys.c.team_id == team_id).values(team_id=None, updated_at=now))
        await conn.execute(delete(budgets).where(budgets.c.id == f"team:{team_id}"))
        await conn.execute(delete(teams).where(teams.c.id == team_id))
    return row


async def all_teams(db: Database) -> list[TeamRow]:
    """Every team, for the caches."""
    return await list_teams(db)


# -- users ----------------------------------------------------------------------------------------
async def create_user(
    db: Database,
    *,
    id: str | None = None,
    email: str | None = None,
    name: str | None = None,
    team_id: str | None = None,
    is_admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> UserRow:
    user_id = id or new_id("u_")
    try:
        async with db.begin(immediate=True) as conn:
            if await _exists(conn, users, user_id):
                raise ConflictError(f"a user with id '{user_id}' exists", param="id")
            if email is not None and (await conn.execute(select(users.c.id).where(users.c.email == email))).first():
                raise ConflictError(f"a user with email '{email}' exists", param="email")
            await _check_refs(conn, team_id=team_id)
            await conn.execute(
                insert(users).values(
                    id=user_id, email=email, name=name, team_id=team_id, is_admin=is_admin,
                    rpm=rpm, tpm=tpm, metadata=dict(metadata or {}),
                )
            )
            return _user(await _one(conn, select(users).where(users.c.id == user_id), "user", user_id))
    except IntegrityError as exc:
        raise ConflictError("the user exists (same id or email)") from exc


async def get_user(db: Database, user_id: str) -> UserRow:
    async with db.connect_once() as conn:
        return _user(await _one(conn, select(users).where(users.c.id == user_id), "user", user_id))


async def list_users(db: Database, *, team_id: str | None = None) -> list[UserRow]:
    query = select(users).order_by(users.c.created_at, users.c.id)
    if team_id is not None:
        query = query.where(users.c.team_id == team_id)
    async with db.connect_once() as conn:
        rows = (await conn.execute(query)).all()
    return [_user(r) for r in rows]


async def update_user(db: Database, user_id: str, changes: Mapping[str, Any]) -> UserRow:
    """Set the fields in ``changes`` (email, name, team_id, is_admin, rpm, tpm, metadata)."""
    values = _only(changes, USER_FIELDS, "a user")
    try:
        async with db.begin(immediate=True) as conn:
            await _one(conn, select(users.c.id).where(users.c.id == user_id), "user", user_id)
            if values.get("email") is not None:
                clash = select(users.c.id).where(users.c.email == values["email"], users.c.id != user_id)
                if (await conn.execute(clash)).first() is not None:
                    raise ConflictError(f"a user with email '{values['email']}' exists", param="email")
            await _check_refs(conn, team_id=values.get("team_id"))
            await conn.execute(update(users).where(users.c.id == user_id).values(updated_at=utcnow(), **values))
            return _user(await _one(conn, select(users).where(users.c.id == user_id), "user", user_id))
    except IntegrityError as exc:
        raise ConflictError("a user with that email exists", param="email") from exc


async def delete_user(db: Database, user_id: str) -> UserRow:
    """Delete a user and its budget; its keys lose the user (their ``updated_at`` is bumped)."""
    async with db.begin(immediate=True) as conn:
        row = _user(await _one(conn, select(users).where(users.c.id == user_id), "user", user_id))
        await conn.execute(
            update(api_keys).where(api_keys.c.user_id == user_id).values(user_id=None, updated_at=utcnow())
        )
        await conn.execute(delete(budgets).where(budgets.c.id == f"user:{user_id}"))
        await conn.execute(delete(users).where(users.c.id == user_id))
    return row


async def all_users(db: Database) -> list[UserRow]:
    """Every user, for the caches."""
    return await list_users(db)


# -- keys -----------------------------------------------------------------------------------------
async def create_key(
    db: Database,
    *,
    name: str | None = None,
    user_id: str | None = None,
    team_id: str | None = None,
    is_admin: bool = False,
    allowed_models: Sequence[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    expires_at: datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[KeyRow, str]:
    """A new key: its record and the plaintext key, which is returned here only (only its hash is stored)."""
    key_id = new_id("k_")
    plaintext = new_key()
    async with db.begin(immediate=True) as conn:
        await _check_refs(conn, user_id=user_id, team_id=team_id)
        await conn.execute(
            insert(api_keys).values(
                id=key_id, key_hash=hash_key(plaintext), key_prefix=plaintext[:KEY_PREFIX_CHARS], name=name,
                user_id=user_id, team_id=team_id, is_admin=is_admin,
                allowed_models=None if allowed_models is None else list(allowed_models),
                rpm=rpm, tpm=tpm, expires_at=expires_at, metadata=dict(metadata or {}),
            )
        )
        row = await _one(conn, select(api_keys).where(api_keys.c.id == key_id), "key", key_id)
    return _key(row), plaintext


async def get_key(db: Database, key_id: str) -> KeyRow:
    async with db.connect_once() as conn:
        return _key(await _one(conn, select(api_keys).where(api_keys.c.id == key_id), "key", key_id))


async def list_keys(
    db: Database, *, user_id: str | None = None, team_id: str | None = None, include_revoked: bool = False
) -> list[KeyRow]:
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    if team_id is not None:
        query = query.where(api_keys.c.team_id == team_id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with db.connect_once() as conn:
        rows = (await conn.execute(query)).all()
    return [_key(r) for r in rows]


async def update_key(db: Database, key_id: str, changes: Mapping[str, Any]) -> KeyRow:
    """Set the fields in ``changes`` (name, allowed_models, rpm, tpm, expires_at, metadata, user_id,
    team_id, is_admin); the key itself never changes."""
    values = _only(changes, KEY_FIELDS, "a key")
    if values.get("allowed_models") is not None:
        values["allowed_models"] = list(values["allowed_models"])
    async with db.begin(immediate=True) as conn:
        await _one(conn, select(api_keys.c.id).where(api_keys.c.id == key_id), "key", key_id)
        await _check_refs(conn, user_id=values.get("user_id"), team_id=values.get("team_id"))
        await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(updated_at=utcnow(), **values))
        return _key(await _one(conn, select(api_keys).where(api_keys.c.id == key_id), "key", key_id))


async def revoke_key(db: Database, key_id: str) -> KeyRow:
    """Revoke a key (idempotent: revoking it again changes nothing, not even ``updated_at``)."""
    async with db.begin(immediate=True) as conn:
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow(), updated_at=utcnow())
        )
        return _key(await _one(conn, select(api_keys).where(api_keys.c.id == key_id), "key", key_id))


async def keys_changed_since(db: Database, since: datetime | None) -> list[KeyRow]:
    """Every key (``since`` None) or those changed after ``since``, revoked ones included so a cache
    can drop them; oldest change first."""
    query = select(api_keys).order_by(api_keys.c.updated_at, api_keys.c.id)
    if since is not None:
        query = query.where(api_keys.c.updated_at > since)
    async with db.connect_once() as conn:
        rows = (await conn.execute(query)).all()
    return [_key(r) for r in rows]


# -- budgets --------------------------------------------------------------------------------------
_SUBJECT_TABLES = {"key": api_keys, "user": users, "team": teams}


async def list_budgets(db: Database) -> list[BudgetRow]:
    async with db.connect_once() as conn:
        rows = (await conn.execute(select(budgets).order_by(budgets.c.id))).all()
    return [_budget(r) for r in rows]


async def all_budgets(db: Database) -> list[BudgetRow]:
    """Every budget, for the caches."""
    return await list_budgets(db)


async def get_budget(db: Database, budget_id: str) -> BudgetRow:
    async with db.connect_once() as conn:
        return _budget(await _one(conn, select(budgets).where(budgets.c.id == budget_id), "budget", budget_id))


async def put_budget(db: Database, budget_id: str, *, max_budget: float, period: str) -> tuple[BudgetRow, bool]:
    """Create or replace the budget ``budget_id``; the record and whether it was created.

    400 when the id is malformed, the period unknown or the key, user or team does not exist.
    """
    scope, subject = parse_budget_id(budget_id)
    if period not in PERIODS:
        raise InvalidRequestError(f"period must be one of {', '.join(PERIODS)}", param="period")
    if max_budget < 0:
        raise InvalidRequestError("max_budget must be >= 0", param="max_budget")
    try:
        async with db.begin(immediate=True) as conn:
            if scope != "global" and not await _exists(conn, _SUBJECT_TABLES[scope], subject):
                raise InvalidRequestError(f"no {scope} '{subject}'", param="budget_id", code="unknown_reference")
            created = not await _exists(conn, budgets, budget_id)
            if created:
                await conn.execute(
                    insert(budgets).values(
                        id=budget_id, scope=scope, subject_id=subject, max_budget=max_budget, period=period
                    )
                )
            else:
                await conn.execute(
                    update(budgets)
                    .where(budgets.c.id == budget_id)
                    .values(max_budget=max_budget, period=period, updated_at=utcnow())
                )
            row = await _one(conn, select(budgets).where(budgets.c.id == budget_id), "budget", budget_id)
    except IntegrityError as exc:  # a concurrent PUT created it first
        raise ConflictError(f"budget '{budget_id}' was created concurrently; retry") from exc
    return _budget(row), created


async def delete_budget(db: Database, budget_id: str) -> BudgetRow:
    async with db.begin(immediate=True) as conn:
        row = _budget(await _one(conn, select(budgets).where(budgets.c.id == budget_id), "budget", budget_id))
        await conn.execute(delete(budgets).where(budgets.c.id == budget_id))
    return row


# -- rate limits ----------------------------------------------------------------------------------
async def set_rate_limit(
    db: Database, scope: str, subject_id: str, *, rpm: int | None, tpm: int | None
) -> RateLimitRow:
    """Set (or, with None, clear) the own rpm/tpm of a key, user or team; 404 when it does not exist."""
    table = _SUBJECT_TABLES.get(scope)
    if table is None:
        raise InvalidRequestError("scope must be key, user or team", param="scope")
    async with db.begin(immediate=True) as conn:
        result = await conn.execute(
            update(table).where(table.c.id == subject_id).values(rpm=rpm, tpm=tpm, updated_at=utcnow())
        )
        if result.rowcount == 0:
            raise NotFoundError(f"no {scope} '{subject_id}'")
    return RateLimitRow(scope=scope, subject_id=subject_id, rpm=rpm, tpm=tpm)


async def list_rate_limits(db: Database) -> list[RateLimitRow]:
    """Every team, user and (unrevoked) key with a limit of its own, teams first."""
    out: list[RateLimitRow] = []
    async with db.connect_once() as conn:
        for scope, table in (("team", teams), ("user", users), ("key", api_keys)):
            query = select(table.c.id, table.c.rpm, table.c.tpm).where(
                or_(table.c.rpm.is_not(None), table.c.tpm.is_not(None))
            )
            if table is api_keys:
                query = query.where(and_(api_keys.c.revoked_at.is_(None)))
            for row in (await conn.execute(query.order_by(table.c.id))).all():
                out.append(RateLimitRow(scope=scope, subject_id=row.id, rpm=row.rpm, tpm=row.tpm))
    return out
