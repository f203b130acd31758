"""``CredentialManager``: keys into the providers' keyrings at start, reloads (admin route, periodic), errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.admin import credentials_routes
from gomodel_proxy.config.schema import Config, CredentialsConfig, KeyConfig, ProviderConfig, VaultConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.credentials import CredentialError, CredentialManager, build_store
from gomodel_proxy.credentials.env_store import EnvStore
from gomodel_proxy.credentials.file_store import FileStore
from gomodel_proxy.credentials.vault_store import VaultStore
from gomodel_proxy.llmclient import LLMClient, fingerprint
from gomodel_proxy.providers.registry import build_provider

from .test_file_env_stores import Log

OAI = "https://api.openai.com/v1"


@web.middleware
async def render_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """What the gateway's edge middleware does with a ``GatewayError``: OpenAI error JSON."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return web.Response(status=exc.status, body=exc.to_json(), content_type="application/json")


def remote(**kw: Any) -> ProviderConfig:
    return ProviderConfig(type="openai_compatible", base_url="http://127.0.0.1:9/v1", **kw)


def providers_of(config: Config) -> dict[str, Provider]:
    return {name: build_provider(name, pc) for name, pc in config.providers.items()}


def sent_key(provider: Provider) -> str:
    client = provider.llm_client  # type: ignore[attr-defined]
    assert isinstance(client, LLMClient)
    return client.keyring.acquire().header.decode().split("Bearer ")[1].strip()


def file_config(path: Path, **providers: ProviderConfig) -> Config:
    return Config(providers=dict(providers), credentials=CredentialsConfig(source="file", file=str(path), reload_s=0))


async def test_file_keys_reach_the_keyrings_and_a_reload_rotates_them(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers:\n  openai: {api_keys: [sk-a, sk-b]}\n  mock: {api_key: unused}\n")
    path.chmod(0o600)
    config = file_config(
        path, openai=ProviderConfig(type="openai", base_url=OAI, api_keys=[KeyConfig(key="sk-b", weight=5.0)]),
        mock=ProviderConfig(type="mock"),
    )
    providers = providers_of(config)
    log = Log()
    manager = CredentialManager.build(config, providers, log)
    assert manager.source == "file" and set(manager.keyrings) == {"openai"}  # a mock sends with no key
    await manager.start()
    keyring = providers["openai"].llm_client.keyring  # type: ignore[attr-defined]
    assert [k.fingerprint for k in keyring.keys] == [fingerprint("sk-a"), fingerprint("sk-b")]
    assert keyring.keys[1].weight == 5.0  # the configured settings of a key the store returns
    assert manager.snapshot() == {"openai": [fingerprint("sk-a"), fingerprint("sk-b")]}
    kept = keyring.keys[1]

    path.write_text("providers:\n  openai: {api_keys: [sk-b, sk-c]}\n")
    reports = await manager.reload()
    assert [r.as_dict() for r in reports] == [{
        "provider": "openai", "keys": 2, "fingerprints": [fingerprint("sk-b"), fingerprint("sk-c")],
        "added": [fingerprint("sk-c")], "removed": [fingerprint("sk-a")], "error": None,
    }]
    assert keyring.keys[0] is kept
    assert {sent_key(providers["openai"]) for _ in range(4)} == {"sk-b", "sk-c"}
    events = [ev for _, ev, _ in log.lines]
    assert events == ["provider keys loaded", "provider keys reloaded", "credentials reloaded"]
    for secret in ("sk-a", "sk-b", "sk-c"):
        assert f"'{secret}'" not in repr(log.lines)
    await manager.close()


async def test_a_provider_without_a_key_in_the_store_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers:\n  openai: {api_key: sk-a}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI),
                         groq=ProviderConfig(type="groq", base_url=OAI), local=remote())
    manager = CredentialManager.build(config, providers_of(config))
    with pytest.raises(CredentialError) as info:
        await manager.start()
    message = str(info.value)
    assert "provider 'groq': no API key in credentials file" in message and "credentials.source: file" in message
    assert "openai" not in message and "local" not in message  # a local server needs no key


async def test_a_failed_or_emptied_reload_keeps_the_current_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers:\n  openai: {api_key: sk-a}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI))
    providers = providers_of(config)
    log = Log()
    manager = CredentialManager.build(config, providers, log)
    await manager.start()
    path.write_text("providers: [broken\n")
    (report,) = await manager.reload()
    assert report.error is not None and "not valid YAML" in report.error
    assert report.fingerprints == [fingerprint("sk-a")] and sent_key(providers["openai"]) == "sk-a"
    path.write_text("providers: {}\n")
    (report,) = await manager.reload()
    assert report.error is not None and "no API key" in report.error and "1 current key(s) are kept" in report.error
    assert sent_key(providers["openai"]) == "sk-a"
    assert [lvl for lvl, ev, _ in log.lines if ev == "provider keys not reloaded"] == ["error", "error"]
    await manager.close()


async def test_the_store_error_at_start_is_raised_and_env_is_the_default() -> None:
    config = Config(providers={"openai": ProviderConfig(type="openai", base_url=OAI, api_key="sk-env")})
    providers = providers_of(config)
    manager = CredentialManager.build(config, providers)
    assert isinstance(manager.store, EnvStore)
    await manager.start()
    assert manager._task is None  # nothing to poll in the environment
    (report,) = await manager.reload()
    assert report.fingerprints == [fingerprint("sk-env")] and not report.added
    await manager.close()

    missing = file_config(Path("/nonexistent/keys.yaml"), openai=ProviderConfig(type="openai", base_url=OAI))
    with pytest.raises(CredentialError, match="cannot read the credentials file"):
        await CredentialManager.build(missing, providers_of(missing)).start()


def test_build_store_picks_the_source_and_resolves_a_relative_file(tmp_path: Path) -> None:
    config = Config(credentials=CredentialsConfig(source="file", file="keys.yaml"))
    config.source = str(tmp_path / "gateway.yaml")
    store = build_store(config)
    assert isinstance(store, FileStore) and store.path == tmp_path / "keys.yaml"
    vault = build_store(Config(credentials=CredentialsConfig(source="vault", vault=VaultConfig(token="t"))))
    assert isinstance(vault, VaultStore)


async def test_periodic_reload_applies_a_change_without_being_asked(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {openai: {api_key: sk-a}}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI))
    config.credentials.reload_s = 0.01
    providers = providers_of(config)
    manager = CredentialManager.build(config, providers)
    await manager.start()
    assert manager._task is not None
    path.write_text("providers: {openai: {api_key: sk-z}}\n")
    for _ in range(500):
        if manager.snapshot()["openai"] == [fingerprint("sk-z")]:
            break
        await asyncio.sleep(0.01)
    assert sent_key(providers["openai"]) == "sk-z"
    await manager.close()
    assert manager._task is None


async def test_the_periodic_loop_survives_an_unexpected_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {openai: {api_key: sk-a}}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI))
    log = Log()
    manager = CredentialManager.build(config, providers_of(config), log)
    await manager.start()
    calls = 0

    async def boom(*, quiet: bool = False) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("unexpected")
        return []

    manager.reload = boom  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(manager._every(0.001))
    for _ in range(500):
        if calls >= 2:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    assert calls >= 2 and ("error", "credential reload failed") in [(lvl, ev) for lvl, ev, _ in log.lines]
    await manager.close()


async def test_admin_route_reloads_and_answers_fingerprints(aiohttp_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {openai: {api_key: sk-a}}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI))
    providers = providers_of(config)
    manager = CredentialManager.build(config, providers)
    await manager.start()
    app = web.Application(middlewares=[render_errors])
    credentials_routes.add_routes(app, manager, authorize=lambda r: r.headers.get("Authorization") == "Bearer admin")
    client = await aiohttp_client(app)
    resp = await client.post("/admin/credentials/reload")
    assert resp.status == 403
    path.write_text("providers: {openai: {api_key: sk-rotated}}\n")
    resp = await client.post("/admin/credentials/reload", headers={"Authorization": "Bearer admin"})
    body = await resp.json()
    assert resp.status == 200 and body["object"] == "credentials_reload" and body["source"] == "file" and body["ok"]
    assert body["providers"][0]["fingerprints"] == [fingerprint("sk-rotated")]
    assert "sk-rotated" not in json.dumps(body)
    assert sent_key(providers["openai"]) == "sk-rotated"
    await manager.close()

    bare = web.Application(middlewares=[render_errors])
    credentials_routes.add_routes(bare, None, authorize=lambda r: True)
    from gomodel_proxy.server.state import STATE  # noqa: PLC0415

    bare[STATE] = type("S", (), {"credentials": None})()  # type: ignore[misc]
    client = await aiohttp_client(bare)
    resp = await client.post("/admin/credentials/reload")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "credentials_unavailable"


async def test_a_provider_the_store_lacks_keeps_its_configured_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("providers: {openai: {api_key: sk-a}}\n")
    config = file_config(path, openai=ProviderConfig(type="openai", base_url=OAI),
                         groq=ProviderConfig(type="groq", base_url=OAI, api_key="gsk-from-env"))
    providers = providers_of(config)
    log = Log()
    manager = CredentialManager.build(config, providers, log)
    await manager.start()
    assert sent_key(providers["groq"]) == "gsk-from-env" and sent_key(providers["openai"]) == "sk-a"
    warned = [kw for lvl, ev, kw in log.lines if ev == "provider keys from the configuration: none in the store"]
    assert warned == [{"provider": "groq", "source": "file", "keys": [fingerprint("gsk-from-env")]}]
    await manager.close()
