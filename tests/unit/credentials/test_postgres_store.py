"""The PostgreSQL store on the real test server (a schema per test): keys encrypted at rest with AES-256-GCM."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import select, update

from gomodel_proxy.config.schema import Config, CredentialsConfig, DatabaseConfig
from gomodel_proxy.credentials.interface import CredentialError
from gomodel_proxy.credentials.postgres_store import (
    PostgresStore,
    credential_kdf,
    provider_credentials,
)
from gomodel_proxy.llmclient import fingerprint
from gomodel_proxy.storage.database import Database

#: Cheap scrypt for the tests (the gateway's default is 2**15).
FAST_N = 2**10
SECRET = "correct horse battery staple"


@pytest.fixture
def make_store(pg: tuple[str, str]) -> Callable[..., PostgresStore]:
    url, schema = pg

    def make(secret: str = SECRET) -> PostgresStore:
        return PostgresStore(Database(url, pool_size=1, max_overflow=1, schema=schema), secret, scrypt_n=FAST_N)

    return make


async def raw_rows(url: str, schema: str, table: str) -> list[dict[str, object]]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return [dict(r) for r in await conn.fetch(f'SELECT * FROM "{schema}"."{table}"')]
    finally:
        await conn.close()


async def test_keys_round_trip_and_are_never_stored_in_clear(make_store: Callable[..., PostgresStore],
                                                              pg: tuple[str, str]) -> None:
    store = make_store()
    await store.open()
    await store.open()  # idempotent
    assert await store.get_provider_keys("openai") == []
    assert await store.put_key("openai", "sk-live-AAAA1111") == fingerprint("sk-live-AAAA1111")
    await store.put_key("openai", "sk-live-BBBB2222")
    await store.put_key("openai", "sk-live-AAAA1111")  # already there: not twice
    await store.put_key("groq", "gsk-CCCC3333")
    assert await store.get_provider_keys("openai") == ["sk-live-AAAA1111", "sk-live-BBBB2222"]
    assert await store.get_provider_keys("groq") == ["gsk-CCCC3333"]

    url, schema = pg
    rows = await raw_rows(url, schema, "provider_credentials")
    assert len(rows) == 3
    for row in rows:
        dump = repr(row).encode() + bytes(row["ciphertext"]) + bytes(row["nonce"])  # type: ignore[arg-type]
        for key in (b"sk-live-AAAA1111", b"sk-live-BBBB2222", b"gsk-CCCC3333", b"AAAA1111", b"CCCC3333"):
            assert key not in dump
        assert len(bytes(row["nonce"])) == 12  # type: ignore[arg-type]
    assert {r["fingerprint"] for r in rows} == {fingerprint(k) for k in ("sk-live-AAAA1111", "sk-live-BBBB2222",
                                                                          "gsk-CCCC3333")}
    kdf = await raw_rows(url, schema, "provider_credential_kdf")
    assert len(kdf) == 1 and kdf[0]["kdf"] == "scrypt" and len(bytes(kdf[0]["salt"])) == 16  # type: ignore[arg-type]
    assert SECRET.encode() not in repr(kdf).encode()

    # Rotation and deletion.
    assert await store.set_keys("openai", ["sk-live-BBBB2222", "sk-live-DDDD4444"]) == [
        fingerprint("sk-live-BBBB2222"), fingerprint("sk-live-DDDD4444")]
    assert await store.get_provider_keys("openai") == ["sk-live-BBBB2222", "sk-live-DDDD4444"]
    assert await store.delete_key("openai", "sk-not-there") == 0
    assert await store.delete_key("openai", fingerprint=fingerprint("sk-live-BBBB2222")) == 1
    assert await store.delete_key("openai", "sk-live-DDDD4444") == 1
    assert await store.get_provider_keys("openai") == []
    assert await store.delete_key("groq") == 1
    with pytest.raises(ValueError, match="empty"):
        await store.put_key("groq", " ")
    await store.close()


async def test_a_second_process_with_the_same_secret_reads_the_keys(make_store: Callable[..., PostgresStore]) -> None:
    first = make_store()
    await first.open()
    await first.put_key("up", "sk-shared")
    second = make_store()
    await second.open()
    assert await second.get_provider_keys("up") == ["sk-shared"]
    await first.close()
    await second.close()


async def test_a_wrong_master_secret_is_a_clear_error_at_start(make_store: Callable[..., PostgresStore]) -> None:
    store = make_store()
    await store.open()
    await store.put_key("up", "sk-one")
    await store.close()
    wrong = make_store("not the secret")
    with pytest.raises(CredentialError) as info:
        await wrong.open()
    message = str(info.value)
    assert "credentials.master_secret does not match" in message and "set the original master_secret" in message
    assert "not the secret" not in message and SECRET not in message
    with pytest.raises(CredentialError, match="not open"):
        await wrong.get_provider_keys("up")


async def test_a_row_altered_or_moved_to_another_provider_does_not_decrypt(
    make_store: Callable[..., PostgresStore],
) -> None:
    store = make_store()
    await store.open()
    await store.put_key("up", "sk-one")
    async with store.db.begin() as conn:
        await conn.execute(update(provider_credentials).values(provider="other"))
    with pytest.raises(CredentialError, match=r"row \d+ \('other'\) does not decrypt"):
        await store.get_provider_keys("other")
    async with store.db.connect_once() as conn:
        assert (await conn.execute(select(credential_kdf.c.n))).scalar_one() == FAST_N
    await store.close()


async def test_an_unreachable_database_and_a_missing_secret_are_clear_errors() -> None:
    with pytest.raises(CredentialError, match=r"credentials.master_secret: required"):
        PostgresStore(Database("postgresql+asyncpg://u@127.0.0.1:1/x"), "")
    store = PostgresStore(Database("postgresql+asyncpg://u:pw-hidden@127.0.0.1:1/x"), "s", scrypt_n=FAST_N)
    with pytest.raises(CredentialError, match=r"cannot use database .* check database.url") as info:
        await store.open()
    assert "pw-hidden" not in str(info.value)
    config = Config(database=DatabaseConfig(url="postgresql+asyncpg://u:pw@127.0.0.1:1/x", schema="s1"),
                    credentials=CredentialsConfig(source="postgres", master_secret="m"))
    built = PostgresStore.from_config(config)
    assert built.db.schema == "s1" and "provider_credentials" in built.describe() and "pw" not in built.describe()
