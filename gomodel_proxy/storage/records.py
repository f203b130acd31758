"""The governance records as Python values, and the tables' column names: no SQLAlchemy here.

Start-up reads keys, users, teams and budgets through the raw drivers (``storage.raw``) and the admin API
through SQLAlchemy (``storage.sql_repository``); both build these same records. The column names are
those of ``storage.tables`` (a test compares them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TEAM_COLUMNS = ("id", "name", "rpm", "tpm", "metadata", "created_at", "updated_at")
USER_COLUMNS = ("id", "email", "name", "team_id", "is_admin", "rpm", "tpm", "metadata", "created_at", "updated_at")
KEY_COLUMNS = (
    "id", "key_hash", "key_prefix", "name", "user_id", "team_id", "is_admin", "allowed_models", "rpm", "tpm",
    "expires_at", "metadata", "revoked_at", "created_at", "updated_at",
)
BUDGET_COLUMNS = ("id", "scope", "subject_id", "max_budget", "period", "created_at", "updated_at")
USAGE_COLUMNS = (
    "id", "request_id", "created_at", "key_id", "user_id", "team_id", "provider", "model_requested", "model",
    "endpoint", "status", "stream", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
    "cache_write_tokens", "estimated", "cost", "latency_ms", "ttfb_ms", "outcome", "error",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    """The stored form of a virtual key: SHA-256, lower-case hex (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TeamRow:
    id: str
    name: str
    rpm: int | None
    tpm: int | None
    metadata: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str | None
    name: str | None
    team_id: str | None
    is_admin: bool
    rpm: int | None
    tpm: int | None
    metadata: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    key_hash: str
    key_prefix: str
    name: str | None
    user_id: str | None
    team_id: str | None
    is_admin: bool
    allowed_models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    expires_at: datetime | None
    revoked_at: datetime | None
    updated_at: datetime
    metadata: Mapping[str, Any]
    #: Last, with a default, so that code building a ``KeyRow`` by the fields above keeps working.
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BudgetRow:
    id: str
    scope: str
    subject_id: str
    max_budget: float
    period: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RateLimitRow:
    """One subject's own limits (at least one of them set)."""

    scope: str
    subject_id: str
    rpm: int | None
    tpm: int | None


# -- from a row's values (times aware UTC, JSON decoded, as ``UTCDateTime`` and ``JSON`` give them) -----
def team_row(m: Mapping[Any, Any]) -> TeamRow:
    return TeamRow(
        id=m["id"], name=m["name"], rpm=m["rpm"], tpm=m["tpm"], metadata=dict(m["metadata"] or {}),
        created_at=m["created_at"], updated_at=m["updated_at"],
    )


def user_row(m: Mapping[Any, Any]) -> UserRow:
    return UserRow(
        id=m["id"], email=m["email"], name=m["name"], team_id=m["team_id"], is_admin=bool(m["is_admin"]),
        rpm=m["rpm"], tpm=m["tpm"], metadata=dict(m["metadata"] or {}),
        created_at=m["created_at"], updated_at=m["updated_at"],
    )


def key_row(m: Mapping[Any, Any]) -> KeyRow:
    allowed = m["allowed_models"]
    return KeyRow(
        id=m["id"], key_hash=m["key_hash"], key_prefix=m["key_prefix"], name=m["name"],
        user_id=m["user_id"], team_id=m["team_id"], is_admin=bool(m["is_admin"]),
        allowed_models=None if allowed is None else tuple(str(x) for x in allowed),
        rpm=m["rpm"], tpm=m["tpm"], expires_at=m["expires_at"], revoked_at=m["revoked_at"],
        updated_at=m["updated_at"], metadata=dict(m["metadata"] or {}), created_at=m["created_at"],
    )


def budget_row(m: Mapping[Any, Any]) -> BudgetRow:
    return BudgetRow(
        id=m["id"], scope=m["scope"], subject_id=m["subject_id"], max_budget=float(m["max_budget"]),
        period=m["period"], created_at=m["created_at"], updated_at=m["updated_at"],
    )
