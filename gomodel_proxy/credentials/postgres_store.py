"""``credentials.source: postgres``: providers' keys in the gateway's database, encrypted at rest.

Two tables of their own (created at start-up when missing, next to the governance tables, in
``database.schema`` when set; kept out of the governance migrations so that a gateway not using this
source never has them):

- ``provider_credential_kdf``: one row: the scrypt parameters and random salt the encryption key is derived
  with from ``credentials.master_secret``, and a check value (a known text encrypted with that key) so that
  a wrong secret is a clear error at start-up instead of keys that do not decrypt;
- ``provider_credentials``: one row per key: ``provider``, ``fingerprint`` (the first 8 hex digits of the
  key's SHA-256, as metrics show it), ``nonce`` and ``ciphertext`` (AES-256-GCM; the provider's name is
  authenticated data, so a row moved to another provider does not decrypt).

The plain key is never stored, logged or put in a message. ``put_key`` / ``delete_key`` manage the keys
(the tests use them; an operator may too, from a Python shell); a change is used after the next reload.
Changing the master secret means entering the keys again (re-encryption is not offered).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, delete, insert, select, text
from sqlalchemy.exc import SQLAlchemyError

from gomodel_proxy.config.schema import Config
from gomodel_proxy.credentials.interface import CredentialError
from gomodel_proxy.storage.database import Database, DatabaseError, mask_url
from gomodel_proxy.storage.tables import UTCDateTime

#: scrypt's cost (2**15: ~32 MiB and ~0.1 s once at start-up), block size and parallelism for a new table.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_CHECK_TEXT = b"gomodel-proxy provider credentials v1"
_AAD_PREFIX = b"gomodel-proxy:provider-key:v1:"
#: ``pg_advisory_xact_lock`` key for creating the tables (another than the migrations' own).
_PG_LOCK_KEY = 0x676F6D6F64656C + 1

credential_metadata = MetaData()
credential_kdf = Table(
    "provider_credential_kdf",
    credential_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("kdf", String(16), nullable=False),
    Column("n", Integer, nullable=False),
    Column("r", Integer, nullable=False),
    Column("p", Integer, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("check_nonce", LargeBinary, nullable=False),
    Column("check_ciphertext", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
provider_credentials = Table(
    "provider_credentials",
    credential_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider", String(64), nullable=False, index=True),
    Column("fingerprint", String(8), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


def _fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def _derive(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret.encode("utf-8"))


class PostgresStore:
    source = "postgres"

    def __init__(self, db: Database, master_secret: str, *, owns_db: bool = True,
                 scrypt_n: int = SCRYPT_N) -> None:
        if not master_secret:
            raise CredentialError(
                "credentials.master_secret: required for credentials.source: postgres (the keys are encrypted "
                "with it); set it, e.g. master_secret: ${GOMODEL_CREDENTIALS_SECRET}"
            )
        self.db = db
        self._secret = master_secret
        self._owns_db = owns_db
        self._scrypt_n = scrypt_n
        self._aead: AESGCM | None = None

    @classmethod
    def from_config(cls, config: Config) -> PostgresStore:
        db = config.database
        return cls(Database(db.url, pool_size=2, max_overflow=2, schema=db.schema or None),
                   config.credentials.master_secret)

    def describe(self) -> str:
        return f"database {mask_url(self.db.url.render_as_string(hide_password=False))}, table provider_credentials"

    # -- life cycle -------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, create the tables when missing, derive the key and check it against the stored check value."""
        if self._aead is not None:
            return
        try:
            await self.db.connect(migrate=False)
            async with self.db.begin(immediate=True) as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                await conn.run_sync(credential_metadata.create_all)
                row = (await conn.execute(select(credential_kdf).where(credential_kdf.c.id == 1))).first()
                if row is None:
                    salt = os.urandom(16)
                    key = await asyncio.to_thread(_derive, self._secret, salt, self._scrypt_n, SCRYPT_R, SCRYPT_P)
                    nonce = os.urandom(12)
                    await conn.execute(insert(credential_kdf).values(
                        id=1, kdf="scrypt", n=self._scrypt_n, r=SCRYPT_R, p=SCRYPT_P, salt=salt,
                        check_nonce=nonce, check_ciphertext=AESGCM(key).encrypt(nonce, _CHECK_TEXT, None),
                        created_at=datetime.now(UTC),
                    ))
                    self._aead = AESGCM(key)
                    return
        except (SQLAlchemyError, DatabaseError, OSError) as exc:
            await self.db.close()
            raise CredentialError(
                f"credentials.source postgres: cannot use {self.describe()}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}; check database.url and that the server is up"
            ) from None
        key = await asyncio.to_thread(_derive, self._secret, bytes(row.salt), row.n, row.r, row.p)
        aead = AESGCM(key)
        try:
            plain = aead.decrypt(bytes(row.check_nonce), bytes(row.check_ciphertext), None)
        except InvalidTag:
            plain = b""
        if plain != _CHECK_TEXT:
            await self.db.close()
            raise CredentialError(
                "credentials.master_secret does not match the secret the stored provider keys were encrypted with "
                f"({self.describe()}); set the original master_secret (the keys cannot be read without it), or "
                "drop the tables provider_credentials and provider_credential_kdf and store the keys again"
            )
        self._aead = aead

    async def close(self) -> None:
        self._aead = None
        if self._owns_db:
            await self.db.close()

    @property
    def aead(self) -> AESGCM:
        if self._aead is None:
            raise CredentialError("the postgres credential store is not open; call open() first")
        return self._aead

    # -- reading ----------------------------------------------------------------------------------------
    async def get_provider_keys(self, provider: str) -> list[str]:
        aead = self.aead
        try:
            async with self.db.connect_once() as conn:
                rows = (await conn.execute(
                    select(provider_credentials.c.id, provider_credentials.c.nonce, provider_credentials.c.ciphertext)
                    .where(provider_credentials.c.provider == provider)
                    .order_by(provider_credentials.c.id)
                )).all()
        except SQLAlchemyError as exc:
            raise CredentialError(
                f"credentials.source postgres: reading the keys of '{provider}' failed: {type(exc).__name__}"
            ) from None
        keys: list[str] = []
        for row in rows:
            try:
                plain = aead.decrypt(bytes(row.nonce), bytes(row.ciphertext), _AAD_PREFIX + provider.encode())
            except InvalidTag:
                raise CredentialError(
                    f"provider_credentials row {row.id} ('{provider}') does not decrypt with credentials.master_secret "
                    "(altered, or written with another secret); delete the row and store the key again"
                ) from None
            keys.append(plain.decode("utf-8"))
        return list(dict.fromkeys(keys))

    # -- writing ----------------------------------------------------------------------------------------
    async def put_key(self, provider: str, key: str) -> str:
        """Store ``key`` for ``provider`` (once: a key already stored is not added again); its fingerprint."""
        if not key or not key.strip():
            raise ValueError("an empty key")
        key = key.strip()
        if key in await self.get_provider_keys(provider):
            return _fingerprint(key)
        nonce = os.urandom(12)
        ciphertext = self.aead.encrypt(nonce, key.encode("utf-8"), _AAD_PREFIX + provider.encode())
        async with self.db.begin() as conn:
            await conn.execute(insert(provider_credentials).values(
                provider=provider, fingerprint=_fingerprint(key), nonce=nonce, ciphertext=ciphertext,
                created_at=datetime.now(UTC),
            ))
        return _fingerprint(key)

    async def delete_key(self, provider: str, key: str | None = None, *, fingerprint: str | None = None) -> int:
        """Delete ``provider``'s ``key`` (or the key(s) with ``fingerprint``; neither: all its keys); how many."""
        table = provider_credentials
        ids: list[int] | None = None
        if key is not None or fingerprint is not None:
            wanted = _fingerprint(key.strip()) if key is not None else fingerprint
            async with self.db.connect_once() as conn:
                rows = (await conn.execute(
                    select(table.c.id, table.c.nonce, table.c.ciphertext)
                    .where(table.c.provider == provider, table.c.fingerprint == wanted)
                )).all()
            ids = []
            for row in rows:
                if key is not None:
                    try:
                        plain = self.aead.decrypt(bytes(row.nonce), bytes(row.ciphertext),
                                                  _AAD_PREFIX + provider.encode())
                    except InvalidTag:
                        continue
                    if plain.decode("utf-8") != key.strip():
                        continue
                ids.append(row.id)
            if not ids:
                return 0
        async with self.db.begin() as conn:
            stmt = delete(table).where(table.c.provider == provider)
            if ids is not None:
                stmt = stmt.where(table.c.id.in_(ids))
            result: Any = await conn.execute(stmt)
            return int(result.rowcount or 0)

    async def set_keys(self, provider: str, keys: list[str]) -> list[str]:
        """Make ``keys`` the provider's keys (rotation in one step); their fingerprints."""
        current = await self.get_provider_keys(provider)
        fps = [await self.put_key(provider, k) for k in keys]
        wanted = {k.strip() for k in keys}
        for old in current:
            if old not in wanted:
                await self.delete_key(provider, old)
        return fps
