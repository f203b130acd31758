"""Providers' keys from a credential store, through the gateway: a key rotated in the store (file, PostgreSQL,
Vault) is what the provider receives on the next request after ``POST /admin/credentials/reload``.

The mock upstream records the ``Authorization`` header of every request it receives. Vault is the fake of its
HTTP API (``tests/unit/credentials/fake_vault.py``): no Vault server can be installed here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gomodel_proxy.credentials import CredentialError
from gomodel_proxy.credentials.postgres_store import PostgresStore
from gomodel_proxy.llmclient import fingerprint
from gomodel_proxy.storage.database import Database
from tests.support.gateway import UPSTREAM_KEY, Gateway, provider_config, start_gateway, write_config
from tests.support.mock_upstream import MockUpstream, Scenario
from tests.unit.credentials.fake_vault import FakeVault

from .helpers import MESSAGES

MASTER = "sk-master-credentials-4b7e1d"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
SECRET = "credentials master secret for the e2e tests"
CHAT = {"model": "up/m", "messages": MESSAGES}
ANSWER = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}).encode()


@pytest.fixture
async def upstream(make_mock_upstream: Any) -> MockUpstream:
    mock: MockUpstream = await make_mock_upstream(model_ids=["m"])
    mock.on("m", Scenario(body=ANSWER))
    return mock


async def gateway_with(aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream, credentials: dict[str, Any],
                       **extra: Any) -> Gateway:
    """A gateway with the master key and the admin API, whose provider ``up`` has no key in the config."""
    path = write_config(
        tmp_path, {"up": provider_config(upstream.base_url, api_key="")}, server={"master_key": MASTER},
        extra={"features": {"admin_api": True, "usage_tracking": False}, "credentials": {"reload_s": 0, **credentials},
               **extra},
    )
    return await start_gateway(aiohttp_server, path)


async def chat(gateway: Gateway) -> None:
    async with gateway.http.post("v1/chat/completions", json=CHAT, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()


async def reload(gateway: Gateway, headers: dict[str, str] = ADMIN, status: int = 200) -> dict[str, Any]:
    async with gateway.http.post("admin/credentials/reload", headers=headers) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == status, body
        return body


def sent_auth(upstream: MockUpstream) -> str:
    return upstream.last("m").headers["Authorization"]


async def test_a_key_rotated_in_the_file_is_used_after_the_reload(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("providers:\n  up: {api_key: sk-file-old-0001}\n")
    gateway = await gateway_with(aiohttp_server, tmp_path, upstream, {"source": "file", "file": "keys.yaml"})
    # The model list was fetched with the store's key: keys are in before the provider serves.
    assert upstream.requests_to("/v1/models")[0].headers["Authorization"] == "Bearer sk-file-old-0001"
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-file-old-0001"

    keys.write_text("providers:\n  up: {api_key: sk-file-new-0002}\n")
    body = await reload(gateway)
    assert body["source"] == "file" and body["ok"] is True
    assert body["providers"] == [{
        "provider": "up", "keys": 1, "fingerprints": [fingerprint("sk-file-new-0002")],
        "added": [fingerprint("sk-file-new-0002")], "removed": [fingerprint("sk-file-old-0001")], "error": None,
    }]
    assert "sk-file" not in json.dumps(body)
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-file-new-0002"

    # The admin API only: no key, or a wrong one, is refused.
    await reload(gateway, headers={}, status=401)
    await reload(gateway, headers={"Authorization": "Bearer nope"}, status=401)
    await gateway.close_clients()


async def test_a_request_in_flight_finishes_with_its_key_and_the_next_uses_the_new_one(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("providers:\n  up: {api_key: sk-inflight-old}\n")
    gateway = await gateway_with(aiohttp_server, tmp_path, upstream, {"source": "file", "file": str(keys)})
    upstream.on("m", Scenario(body=ANSWER, delay_before_headers=0.3))
    first = asyncio.get_running_loop().create_task(chat(gateway))
    while not upstream.requests_for("m"):  # the request has reached the provider
        await asyncio.sleep(0.005)
    keys.write_text("providers:\n  up: {api_key: sk-inflight-new}\n")
    await reload(gateway)
    await first  # it completes, with the key it was sent with
    assert upstream.requests_for("m")[0].headers["Authorization"] == "Bearer sk-inflight-old"
    upstream.on("m", Scenario(body=ANSWER))
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-inflight-new"
    await gateway.close_clients()


async def test_a_key_rotated_in_postgres_is_used_after_the_reload(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream, pg: tuple[str, str],
) -> None:
    url, schema = pg
    admin_store = PostgresStore(Database(url, pool_size=1, max_overflow=1, schema=schema), SECRET)
    await admin_store.open()
    await admin_store.put_key("up", "sk-pg-old-0001")
    gateway = await gateway_with(
        aiohttp_server, tmp_path, upstream, {"source": "postgres", "master_secret": SECRET},
        database={"url": url, "schema": schema},
    )
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-pg-old-0001"
    await admin_store.set_keys("up", ["sk-pg-new-0002"])
    body = await reload(gateway)
    assert body["providers"][0]["fingerprints"] == [fingerprint("sk-pg-new-0002")]
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-pg-new-0002"
    await admin_store.close()
    await gateway.close_clients()


async def test_a_wrong_master_secret_stops_the_start(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream, pg: tuple[str, str],
) -> None:
    url, schema = pg
    store = PostgresStore(Database(url, pool_size=1, max_overflow=1, schema=schema), SECRET)
    await store.open()
    await store.put_key("up", "sk-pg-0001")
    await store.close()
    with pytest.raises(CredentialError, match=r"credentials.master_secret does not match"):
        await gateway_with(aiohttp_server, tmp_path, upstream, {"source": "postgres", "master_secret": "other"},
                           database={"url": url, "schema": schema})


async def test_a_provider_without_a_key_in_the_store_stops_the_start(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    (tmp_path / "keys.yaml").write_text("providers:\n  someone-else: {api_key: sk-x}\n")
    path = write_config(
        tmp_path, {"up": provider_config(upstream.base_url, api_key=""),
                   "oai": {"type": "openai", "base_url": upstream.base_url}},
        extra={"credentials": {"source": "file", "file": "keys.yaml"}},
    )
    with pytest.raises(CredentialError, match=r"provider 'oai': no API key in credentials file .*keys.yaml"):
        await start_gateway(aiohttp_server, path)


async def test_a_key_rotated_in_vault_is_used_after_the_reload(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    loop = asyncio.get_running_loop()
    fake = FakeVault(clock=loop.time)
    fake.add_approle("gomodel-role", "gomodel-secret", namespace="ai")
    fake.put_secret("gomodel/providers/up", {"api_key": "sk-vault-old"}, namespace="ai")
    vault = await aiohttp_server(fake.app())
    gateway = await gateway_with(aiohttp_server, tmp_path, upstream, {"source": "vault", "vault": {
        "url": str(vault.make_url("")).rstrip("/"), "role_id": "gomodel-role", "secret_id": "gomodel-secret",
        "namespace": "ai",
    }})
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-vault-old"
    fake.put_secret("gomodel/providers/up", {"api_keys": ["sk-vault-new"]}, namespace="ai")
    body = await reload(gateway)
    assert body["source"] == "vault" and body["providers"][0]["fingerprints"] == [fingerprint("sk-vault-new")]
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-vault-new"
    await gateway.close_clients()


async def test_the_default_source_reports_the_configured_keys(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    path = write_config(tmp_path, {"up": provider_config(upstream.base_url)}, server={"master_key": MASTER},
                        extra={"features": {"admin_api": True}})
    gateway = await start_gateway(aiohttp_server, path)
    assert gateway.state.credentials is not None and gateway.state.credentials.source == "env"
    body = await reload(gateway)
    assert body["source"] == "env" and body["providers"][0]["fingerprints"] == [fingerprint(UPSTREAM_KEY)]
    # The hook a SIGHUP handler calls.
    reports = await gateway.state.credentials.reload()
    assert reports[0].fingerprints == [fingerprint(UPSTREAM_KEY)]
    await chat(gateway)
    assert sent_auth(upstream) == f"Bearer {UPSTREAM_KEY}"
    await gateway.close_clients()


async def test_a_key_changed_in_the_config_file_is_used_after_a_config_reload(
    aiohttp_server: Any, tmp_path: Path, upstream: MockUpstream,
) -> None:
    """The default source reads the running configuration: the configuration reload (SIGHUP, or its admin
    endpoint) applies the new ``api_key``, then reloads the credentials (``state.credentials.reload()``)."""
    providers = {"up": provider_config(upstream.base_url, api_key="sk-config-old")}
    extra = {"features": {"admin_api": True, "usage_tracking": False}}
    path = write_config(tmp_path, providers, server={"master_key": MASTER}, extra=extra)
    gateway = await start_gateway(aiohttp_server, path)
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-config-old"
    providers["up"]["api_key"] = "sk-config-new"
    write_config(tmp_path, providers, server={"master_key": MASTER}, extra=extra)
    async with gateway.http.post("admin/reload", headers=ADMIN) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert body.get("credentials") == "reloaded", body
    await chat(gateway)
    assert sent_auth(upstream) == "Bearer sk-config-new"
    await gateway.close_clients()
