"""Governance records (teams, users, virtual keys, budgets, per-subject rate limits) over ``Database``.

One SQLAlchemy Core code path for SQLite and PostgreSQL (``storage.sql_repository``). Every function
raises a ``GatewayError`` subclass the admin API can render as is: 404 for an unknown id, 409 for a
duplicate (team name, user email, existing id), 400 for a reference to a user or team that does not exist.

This module is light: the records, the constants, and the functions, each of which loads
``sql_repository`` (and SQLAlchemy, ~170 ms of import) in a worker thread the first time one is called,
so that a gateway that never uses the admin API never imports SQLAlchemy, and the first admin request
does not stall the event loop while it is imported.

The in-memory caches other code keeps read the same records with the raw drivers (``storage.raw``:
``keys_changed_since``, ``all_users``, ``all_teams``, ``all_budgets``), not through this module.
"""

from __future__ import annotations

import functools
import importlib
import secrets
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError
from gomodel_proxy.storage.database import load_sqlalchemy
from gomodel_proxy.storage.records import BudgetRow, KeyRow, RateLimitRow, TeamRow, UserRow

if TYPE_CHECKING:  # the functions, as sql_repository defines them (loaded on first use: __getattr__)
    from gomodel_proxy.storage.sql_repository import (
        all_budgets,
        all_teams,
        all_users,
        create_key,
        create_team,
        create_user,
        delete_budget,
        delete_team,
        delete_user,
        get_budget,
        get_key,
        get_team,
        get_user,
        keys_changed_since,
        list_budgets,
        list_keys,
        list_rate_limits,
        list_teams,
        list_users,
        put_budget,
        revoke_key,
        set_rate_limit,
        update_key,
        update_team,
        update_user,
    )

#: The functions ``sql_repository`` implements (coroutine functions, loaded on first use).
_FUNCTIONS = frozenset({
    "all_budgets", "all_teams", "all_users", "create_key", "create_team", "create_user", "delete_budget",
    "delete_team", "delete_user", "get_budget", "get_key", "get_team", "get_user", "keys_changed_since",
    "list_budgets", "list_keys", "list_rate_limits", "list_teams", "list_users", "put_budget", "revoke_key",
    "set_rate_limit", "update_key", "update_team", "update_user",
})
__all__ = [
    "KEY_FIELDS", "KEY_PREFIX", "KEY_PREFIX_CHARS", "PERIODS", "SCOPES", "TEAM_FIELDS", "USER_FIELDS",
    "BudgetRow", "ConflictError", "KeyRow", "RateLimitRow", "Scope", "TeamRow", "UserRow", "all_budgets",
    "all_teams", "all_users", "create_key", "create_team", "create_user", "delete_budget", "delete_team",
    "delete_user", "get_budget", "get_key", "get_team", "get_user", "keys_changed_since", "list_budgets",
    "list_keys", "list_rate_limits", "list_teams", "list_users", "new_id", "new_key", "parse_budget_id",
    "put_budget", "revoke_key", "set_rate_limit", "update_key", "update_team", "update_user",
]

#: What a virtual key starts with; the rest is 43 characters of ``secrets.token_urlsafe(32)``.
KEY_PREFIX = "sk-gm-"
#: How many leading characters of a key are kept in clear (``key_prefix``), for listings.
KEY_PREFIX_CHARS = 12

Scope = Literal["key", "user", "team", "global"]
SCOPES: tuple[str, ...] = ("key", "user", "team", "global")
PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "total")

TEAM_FIELDS = frozenset({"name", "rpm", "tpm", "metadata"})
USER_FIELDS = frozenset({"email", "name", "team_id", "is_admin", "rpm", "tpm", "metadata"})
KEY_FIELDS = frozenset(
    {"name", "allowed_models", "rpm", "tpm", "expires_at", "metadata", "user_id", "team_id", "is_admin"}
)

_SQL = "gomodel_proxy.storage.sql_repository"


class ConflictError(GatewayError):
    """The record would duplicate one that exists (id, team name, user email)."""

    status = 409
    error_type = "invalid_request_error"
    code = "conflict"


def new_id(prefix: str) -> str:
    """A fresh record id: ``prefix`` + 16 hex characters."""
    return prefix + secrets.token_hex(8)


def new_key() -> str:
    """A fresh virtual key: ``sk-gm-`` + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_budget_id(budget_id: str) -> tuple[str, str]:
    """``"key:k_1"`` -> ``("key", "k_1")``, ``"global"`` -> ``("global", "")``; 400 for anything else."""
    if budget_id == "global":
        return "global", ""
    scope, sep, subject = budget_id.partition(":")
    if not sep or scope not in ("key", "user", "team") or not subject:
        raise InvalidRequestError(
            f"budget id '{budget_id}' is not 'key:<id>', 'user:<id>', 'team:<id>' or 'global'", param="budget_id"
        )
    return scope, subject


async def load() -> ModuleType:
    """``sql_repository``, imported with SQLAlchemy in a thread of its own the first time."""
    await load_sqlalchemy()
    return importlib.import_module(_SQL)  # imported by now: a lookup in sys.modules


@functools.cache
def _lazy(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def call(*args: Any, **kwargs: Any) -> Any:
        return await getattr(await load(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__module__ = __name__
    return call


def __getattr__(name: str) -> Any:
    if name in _FUNCTIONS:
        return _lazy(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
