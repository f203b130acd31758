"""The Vault store against a fake of Vault's documented HTTP API (``fake_vault.py``; no Vault server here):
KV v2 reads, a static token, AppRole login, namespaces, lease renewal and a new login after expiry or 403."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gomodel_proxy.config.schema import VaultConfig
from gomodel_proxy.credentials.interface import CredentialError
from gomodel_proxy.credentials.vault_store import VaultStore
from tests.unit.llmclient._fakes import Clock

from .fake_vault import FakeVault

MakeVault = Callable[..., Awaitable[tuple[FakeVault, str]]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_vault(aiohttp_server: Any, clock: Clock) -> MakeVault:
    async def make() -> tuple[FakeVault, str]:
        fake = FakeVault(clock=clock)
        server = await aiohttp_server(fake.app())
        return fake, str(server.make_url("")).rstrip("/")

    return make


def store(url: str, clock: Clock, **vault: Any) -> VaultStore:
    return VaultStore(VaultConfig(url=url, timeout_s=3, **vault), clock=clock)


async def test_a_token_reads_kv_v2_secrets(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    token = fake.add_token()  # a root-like token: no lease
    fake.put_secret("gomodel/providers/openai", {"api_key": "sk-v1", "api_keys": ["sk-v2", "sk-v1"]})
    fake.put_secret("gomodel/providers/groq", {"api_keys": "gsk-1, gsk-2"})
    fake.put_secret("gomodel/providers/gone", {"api_key": "sk-gone"})
    fake.delete_latest("gomodel/providers/gone")
    fake.put_secret("gomodel/providers/odd", {"other": "x"})
    s = store(url, clock, token=token)
    await s.open()
    assert await s.get_provider_keys("openai") == ["sk-v1", "sk-v2"]
    assert await s.get_provider_keys("groq") == ["gsk-1", "gsk-2"]
    assert await s.get_provider_keys("missing") == []  # 404
    assert await s.get_provider_keys("gone") == []  # latest version deleted
    assert await s.get_provider_keys("odd") == []
    reads = [r for r in fake.requests if r.path.startswith("/v1/secret/data/")]
    assert reads[0].path == "/v1/secret/data/gomodel/providers/openai"
    assert all(r.headers["X-Vault-Token"] == token and "X-Vault-Namespace" not in r.headers for r in reads)
    # A new version is what the next read answers (rotation in Vault).
    fake.put_secret("gomodel/providers/openai", {"api_key": "sk-v3"})
    assert await s.get_provider_keys("openai") == ["sk-v3"]
    assert "secret/data/gomodel/providers/<provider>" in s.describe()
    await s.close()
    await s.close()


async def test_a_refused_token_is_an_error_naming_the_fix(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    with pytest.raises(CredentialError, match=r"credentials.vault.token is refused"):
        await store(url, clock, token="hvs.unknown").open()
    token = fake.add_token()
    s = store(url, clock, token=token)
    await s.open()
    fake.revoke(token)
    with pytest.raises(CredentialError, match=r"refused reading 'openai' \(403: permission denied\).*AppRole"):
        await s.get_provider_keys("openai")
    await s.close()


async def test_a_static_token_with_a_lease_is_renewed_before_it_ends(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    token = fake.add_token(ttl=300, renewable=True)
    fake.put_secret("gomodel/providers/up", {"api_key": "sk-up"})
    s = store(url, clock, token=token)
    await s.open()
    clock.advance(150)
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert s.renewals == 0
    clock.advance(100)  # past two thirds of the lease
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert s.renewals == 1
    clock.advance(250)  # the original lease is over; the renewed one is not
    assert await s.get_provider_keys("up") == ["sk-up"]
    # Not renewable any more: once it expires, a clear error (a static token cannot log in again).
    fake.refuse_renewal = True
    clock.advance(1000)
    with pytest.raises(CredentialError, match="token expired and cannot be renewed"):
        await s.get_provider_keys("up")
    await s.close()


async def test_approle_logs_in_renews_and_logs_in_again(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    fake.add_approle("role-1", "secret-1", ttl=60, renewable=True)
    fake.put_secret("gomodel/providers/up", {"api_key": "sk-up"})
    s = store(url, clock, role_id="role-1", secret_id="secret-1")
    await s.open()
    login = next(r for r in fake.requests if r.path == "/v1/auth/approle/login")
    assert login.body == {"role_id": "role-1", "secret_id": "secret-1"} and "X-Vault-Token" not in login.headers
    assert s.logins == 1
    first = s._token
    assert await s.get_provider_keys("up") == ["sk-up"]
    clock.advance(45)  # two thirds in: renewed, same token
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert (s.renewals, s.logins, s._token) == (1, 1, first)
    # Renewal refused: a new login.
    fake.refuse_renewal = True
    clock.advance(45)
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert s.logins == 2 and s._token != first
    # Expired without the store noticing (its lease looked longer): 403, a new login, the read again.
    second = s._token
    fake.revoke(second)
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert s.logins == 3 and s._token != second
    # The token expired altogether (the process slept): a new login before the read.
    clock.advance(10_000)
    assert await s.get_provider_keys("up") == ["sk-up"]
    assert s.logins == 4
    await s.close()


async def test_approle_login_failure_is_clear(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    fake.add_approle("role-1", "secret-1")
    with pytest.raises(CredentialError, match=r"AppRole login failed \(HTTP 400: invalid role or secret ID\)"):
        await store(url, clock, role_id="role-1", secret_id="wrong").open()


async def test_namespace_header_is_sent_and_scopes_everything(make_vault: MakeVault, clock: Clock) -> None:
    fake, url = await make_vault()
    fake.add_approle("role-ns", "secret-ns", namespace="team-a")
    fake.put_secret("llm/keys/up", {"api_key": "sk-team-a"}, mount="kv", namespace="team-a")
    fake.put_secret("llm/keys/up", {"api_key": "sk-root"}, mount="kv")
    s = store(url, clock, role_id="role-ns", secret_id="secret-ns", namespace="team-a", mount="kv", path="/llm/keys/")
    await s.open()
    assert await s.get_provider_keys("up") == ["sk-team-a"]
    assert all(r.headers.get("X-Vault-Namespace") == "team-a" for r in fake.requests)
    assert fake.requests[-1].path == "/v1/kv/data/llm/keys/up"
    assert "(namespace team-a)" in s.describe()
    await s.close()
    # Without the namespace, the role does not exist.
    with pytest.raises(CredentialError, match="AppRole login failed"):
        await store(url, clock, role_id="role-ns", secret_id="secret-ns", mount="kv").open()


async def test_configuration_and_connection_errors(clock: Clock, make_vault: MakeVault) -> None:
    with pytest.raises(CredentialError, match="set token, or role_id and secret_id"):
        VaultStore(VaultConfig(role_id="only-role"))
    s = store("http://127.0.0.1:1", clock, token="t")
    with pytest.raises(CredentialError, match=r"failed: .*check credentials.vault.url"):
        await s.open()
    await s.close()
    with pytest.raises(CredentialError, match="not open"):
        await store("http://127.0.0.1:1", clock, token="t").get_provider_keys("up")
    fake, url = await make_vault()
    token = fake.add_token()
    fake.put_secret("gomodel/providers/up", {"api_key": 123})
    s = store(url, clock, token=token)
    await s.open()
    with pytest.raises(CredentialError, match="secret/gomodel/providers/up: api_key: expected a key") as info:
        await s.get_provider_keys("up")
    assert "123" not in str(info.value)
    # A sealed Vault: the status and Vault's own message.
    fake.read_status = 503
    with pytest.raises(CredentialError, match=r"reading 'up' answered HTTP 503 \(Vault is sealed\)"):
        await s.get_provider_keys("up")
    await s.close()
