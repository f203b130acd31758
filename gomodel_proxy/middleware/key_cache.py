"""Virtual keys, users, teams and budgets held in memory: authentication never waits on the database.

Each instance loads everything at start-up (with the raw drivers, ``storage.raw``: no SQLAlchemy on
the start path), then reads what changed every ``auth.refresh_s`` (keys by
their ``updated_at``; users, teams and budgets whole, they are few). A change made through this
instance's admin API is applied at once (``refresh()``); one made on another instance within
``refresh_s``. Keys are found by the SHA-256 of what the client presents, so the plaintext is never
held, and a wrong key costs one hash and one dict lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from gomodel_proxy.core.types import Principal
from gomodel_proxy.storage import raw
from gomodel_proxy.storage.database import Database
from gomodel_proxy.storage.records import BudgetRow, KeyRow, TeamRow, UserRow, hash_key, utcnow

#: Re-read keys changed up to this long before the newest one seen: a transaction that committed late
#: (its ``updated_at`` older than one already read) is not missed.
_OVERLAP = timedelta(seconds=10)


class KeyCache:
    """The governance tables as dictionaries, refreshed in the background."""

    def __init__(self, db: Database, *, refresh_s: float, logger: Any) -> None:
        self.db = db
        self.refresh_s = refresh_s
        self.logger = logger
        self._keys: dict[str, KeyRow] = {}  # by key_hash
        self._principals: dict[str, Principal] = {}  # by key_hash
        self._revoked: set[str] = set()  # key hashes revoked, so that the client can be told so
        self.keys_by_id: dict[str, KeyRow] = {}
        self.users: dict[str, UserRow] = {}
        self.teams: dict[str, TeamRow] = {}
        self.budgets: dict[str, BudgetRow] = {}
        self._since: datetime | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.loaded = False

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="gomodel-key-cache")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the database is down: keep serving what is known
                if not failing:
                    self.logger.warning("key cache refresh failed; serving the keys last read",
                                        error=f"{type(exc).__name__}: {exc}"[:200])
                failing = True
            else:
                if failing:
                    self.logger.info("key cache refresh works again")
                failing = False

    async def refresh(self) -> None:
        """Read what changed since the last refresh (everything the first time)."""
        async with self._lock:
            changed = await raw.keys_changed_since(self.db, self._since)
            users = await raw.all_users(self.db)
            teams = await raw.all_teams(self.db)
            budgets = await raw.all_budgets(self.db)
            self.users = {u.id: u for u in users}
            self.teams = {t.id: t for t in teams}
            self.budgets = {b.id: b for b in budgets}
            for row in changed:
                old = self.keys_by_id.get(row.id)
                if old is not None and old.key_hash != row.key_hash:
                    self._keys.pop(old.key_hash, None)
                self.keys_by_id[row.id] = row
                if row.revoked_at is None:
                    self._keys[row.key_hash] = row
                    self._revoked.discard(row.key_hash)
                else:
                    self._keys.pop(row.key_hash, None)
                    self._revoked.add(row.key_hash)
                if self._since is None or row.updated_at - _OVERLAP > self._since:
                    self._since = row.updated_at - _OVERLAP
            # Users' teams and admin flags feed the principals: rebuild them all (cheap dict work).
            self._principals = {h: self._principal(k) for h, k in self._keys.items()}
            self.loaded = True

    def _principal(self, key: KeyRow) -> Principal:
        user = self.users.get(key.user_id) if key.user_id else None
        team_id = key.team_id or (user.team_id if user is not None else None)
        return Principal(
            kind="key", key_id=key.id, user_id=key.user_id, team_id=team_id,
            is_admin=key.is_admin or bool(user is not None and user.is_admin),
            allowed_models=key.allowed_models, rpm=key.rpm, tpm=key.tpm,
        )

    @property
    def live_count(self) -> int:
        return len(self._keys)

    def lookup(self, presented: str) -> tuple[KeyRow, Principal] | None:
        """The live key the client presented and who it stands for, or ``None``."""
        digest = hash_key(presented)
        row = self._keys.get(digest)
        if row is None:
            return None
        return row, self._principals[digest]

    def live_principal(self, key_id: str) -> Principal | None:
        """Who the key ``key_id`` stands for while it is live and unexpired, else ``None``."""
        row = self.keys_by_id.get(key_id)
        if row is None or row.revoked_at is not None or self.expired(row):
            return None
        return self._principals.get(row.key_hash)

    def revoked(self, presented: str) -> bool:
        return hash_key(presented) in self._revoked

    @staticmethod
    def expired(row: KeyRow, now: datetime | None = None) -> bool:
        return row.expires_at is not None and row.expires_at <= (now or utcnow())
