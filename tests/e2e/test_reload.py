"""Configuration hot reload on an in-process gateway: the files change, ``reload`` runs, the next request
follows them; a broken file is refused with its line and the old configuration keeps serving; a stream in
flight during a reload finishes intact.

Who answered is read from ``X-GoModel-Provider``; ``a`` and ``b`` are mock providers (no network) unless a
test needs an upstream that fails.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gomodel_proxy.server.reload import RELOADER, ReloadResult
from tests.support.gateway import Gateway, provider_config
from tests.support.mock_upstream import MockUpstream, Scenario

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeMock = Callable[..., Awaitable[MockUpstream]]
USER = [{"role": "user", "content": "Say hello."}]
MASTER = "sk-master-reload-test-0123456789"
BLOCK_WORD = """
guardrails:
  - name: words
    type: regex
    priority: 10
    config:
      patterns:
        - {name: banned, pattern: "forbidden-word", action: block}
"""


def mock(**settings: Any) -> dict[str, Any]:
    return {"type": "mock", "mock": settings}


def rewrite(gateway: Gateway, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the gateway's main file (JSON, which is YAML) in place."""
    path = Path(gateway.config.source)
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def folder(gateway: Gateway) -> Path:
    return Path(gateway.config.source).parent


async def reload(gateway: Gateway) -> ReloadResult:
    reloader = gateway.app[RELOADER]
    reloader.env = {}  # the tests' gateways are loaded with an empty environment (start_gateway)
    return await reloader.reload("test")


async def chat(gateway: Gateway, model: str, content: str = "Say hello.", **headers: str) -> tuple[int, Any, Any]:
    async with gateway.http.post("v1/chat/completions", headers=headers,
                                 json={"model": model, "messages": [{"role": "user", "content": content}]}) as r:
        return r.status, r.headers, await r.json()


async def test_aliases_change_live(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock(), "b": mock()}, extra={"models": {"fast": "a/m"}})
    status, headers, _ = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Provider"] == "a"
    old_router = gateway.state.router

    rewrite(gateway, lambda d: d.update(models={"fast": "b/m", "smart": "a/big"}))
    result = await reload(gateway)

    assert result.status == "applied", result
    assert sorted(result.changed) == ["models.fast", "models.smart"] and result.needs_restart == []
    assert gateway.state.router is not old_router
    status, headers, body = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Provider"] == "b", body
    status, headers, _ = await chat(gateway, "smart")
    assert status == 200 and headers["X-GoModel-Provider"] == "a" and headers["X-GoModel-Model"] == "big"
    async with gateway.http.get("v1/models") as r:
        listed = {m["id"] for m in (await r.json())["data"]}
    assert {"fast", "smart"} <= listed
    # Nothing changed since: nothing to apply.
    assert (await reload(gateway)).status == "unchanged"


async def test_a_failover_chain_added_by_reload_is_followed(
    make_gateway: MakeGateway, make_mock_upstream: MakeMock
) -> None:
    upstream = await make_mock_upstream(model_ids=["m"])
    upstream.on("m", Scenario.error(503, {"error": {"message": "overloaded", "type": "server_error"}}))
    gateway = await make_gateway(providers={
        "a": provider_config(upstream.base_url, retry={"max_attempts": 1}), "b": mock(),
    })
    status, _, _ = await chat(gateway, "a/m")
    assert status == 503  # no chain yet

    (folder(gateway) / "failover.yaml").write_text("failover:\n  a/*: [b/*]\n", encoding="utf-8")
    result = await reload(gateway)
    assert result.status == "applied" and any(k.startswith("failover") for k in result.changed), result

    status, headers, body = await chat(gateway, "a/m")
    assert status == 200 and headers["X-GoModel-Provider"] == "b" and headers["X-GoModel-Model"] == "m", body


async def test_guardrails_file_changes_live(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()})
    status, _, _ = await chat(gateway, "a/m", "say forbidden-word")
    assert status == 200  # no guardrails yet
    assert not gateway.state.chain

    (folder(gateway) / "guardrails.yaml").write_text(BLOCK_WORD, encoding="utf-8")
    result = await reload(gateway)
    assert result.status == "applied" and result.changed == ["guardrails.specs"], result
    assert gateway.state.chain.names() == ["Guardrails"]
    assert gateway.state.governance.chain is gateway.state.chain

    status, _, body = await chat(gateway, "a/m", "say forbidden-word")
    assert status == 400 and "words" in json.dumps(body), body
    assert (await chat(gateway, "a/m", "say something else"))[0] == 200

    # Emptied again: the step goes, nothing is blocked.
    (folder(gateway) / "guardrails.yaml").write_text("guardrails: []\n", encoding="utf-8")
    assert (await reload(gateway)).status == "applied"
    assert not gateway.state.chain
    assert (await chat(gateway, "a/m", "say forbidden-word"))[0] == 200


async def test_a_broken_file_is_refused_and_the_old_config_keeps_serving(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock(), "b": mock()}, extra={"models": {"fast": "a/m"}},
                                 failover="failover:\n  a/*: [b/*]\n")
    router, chain, config = gateway.state.router, gateway.state.chain, gateway.state.config

    # The failover file names a provider that does not exist (line 3), the guardrails file is not YAML.
    (folder(gateway) / "failover.yaml").write_text("failover:\n  a/*: [b/*]\n  b/*: [nowhere/*]\n",
                                                   encoding="utf-8")
    (folder(gateway) / "guardrails.yaml").write_text("guardrails:\n  - name: [oops\n", encoding="utf-8")
    rewrite(gateway, lambda d: d.update(models={"fast": "b/m"}))
    result = await reload(gateway)

    assert result.status == "refused" and result.changed == []
    problems = "\n".join(result.problems)
    assert "failover.yaml:3" in problems and "nowhere" in problems, problems
    assert "guardrails.yaml:" in problems, problems
    # Nothing was swapped: the same objects serve, the alias still goes to a.
    assert gateway.state.router is router and gateway.state.chain is chain and gateway.state.config is config
    status, headers, _ = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Provider"] == "a"
    assert 'gomodel_config_reloads_total{result="refused"} 1.0' in await gateway.metrics_text()

    # Fixed: applied.
    (folder(gateway) / "failover.yaml").write_text("failover:\n  a/*: [b/*]\n", encoding="utf-8")
    (folder(gateway) / "guardrails.yaml").unlink()
    assert (await reload(gateway)).status == "applied"
    status, headers, _ = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Provider"] == "b"
    assert 'gomodel_config_reloads_total{result="applied"} 1.0' in await gateway.metrics_text()


async def test_changes_that_need_a_restart_are_reported_and_the_rest_applied(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()}, extra={"models": {"fast": "a/m"}})
    port = gateway.state.config.server.port

    def change(d: dict[str, Any]) -> None:
        d["server"]["port"] = port + 1
        d["server"]["workers"] = 2
        d["providers"]["c"] = {"type": "mock"}
        d["features"] = {"audit_logging": False, "admin_api": False, "budgets": False}
        d["models"] = {"fast": "a/other"}

    rewrite(gateway, change)
    result = await reload(gateway)
    assert result.status == "applied" and result.changed == ["models.fast"], result
    assert {"server.port", "server.workers", "providers.c", "features.budgets"} == set(result.needs_restart)
    assert gateway.state.config.server.port == port  # what runs, not what the file says
    assert "c" not in gateway.state.config.providers
    status, headers, _ = await chat(gateway, "fast")
    assert status == 200 and headers["X-GoModel-Model"] == "other"
    # Until it is restarted, the next reload says so again.
    again = await reload(gateway)
    assert again.status == "unchanged" and set(again.needs_restart) == set(result.needs_restart)


async def test_rate_limits_and_cache_ttls_change_live(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()}, cache={"responses": {"enabled": True, "ttl_s": 60}})
    cache = gateway.state.governance.cache
    assert cache is not None and cache.config.ttl_s == 60
    assert (await chat(gateway, "a/m", "one"))[0] == 200

    def change(d: dict[str, Any]) -> None:
        d["rate_limits"] = {"global": {"rpm": 1}}
        d["cache"]["responses"]["ttl_s"] = 5
        d["cache"]["responses"]["ttl_by_model"] = {"a/m": 2}

    rewrite(gateway, change)
    result = await reload(gateway)
    assert result.status == "applied", result
    assert set(result.changed) == {"rate_limits.global.rpm", "cache.responses.ttl_s", "cache.responses.ttl_by_model"}
    assert gateway.state.chain.names() == ["RateLimit", "ResponseCache"]
    assert gateway.state.governance.cache is cache and cache.config.ttl_s == 5 and cache.config.ttl_by_model == {
        "a/m": 2}
    assert (await chat(gateway, "a/m", "two"))[0] == 200
    assert (await chat(gateway, "a/m", "three"))[0] == 429


async def test_a_stream_in_flight_during_a_reload_finishes_intact(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock(chunk_delay_ms=15, completion_tokens=24), "b": mock()},
                                 extra={"models": {"fast": "a/m"}})
    body = {"model": "fast", "messages": USER, "stream": True}

    async def whole_stream() -> tuple[str, list[bytes]]:
        async with gateway.http.post("v1/chat/completions", json=body) as r:
            assert r.status == 200
            return r.headers["X-GoModel-Provider"], [line async for line in r.content if line.strip()]

    provider, reference = await whole_stream()
    assert provider == "a"

    async with gateway.http.post("v1/chat/completions", json=body) as r:
        assert r.status == 200 and r.headers["X-GoModel-Provider"] == "a"
        lines = [await r.content.readline()]
        # Mid-stream: the alias moves to b and a guardrail that would block the prompt arrives.
        rewrite(gateway, lambda d: d.update(models={"fast": "b/m"}))
        (folder(gateway) / "guardrails.yaml").write_text(BLOCK_WORD.replace("forbidden-word", "hello"),
                                                         encoding="utf-8")
        result = await reload(gateway)
        assert result.status == "applied", result
        lines += [line async for line in r.content if line.strip()]

    def text(stream: list[bytes]) -> str:
        parts = []
        for line in stream:
            data = line.decode().removeprefix("data: ").strip()
            if data and data != "[DONE]":
                for choice in json.loads(data).get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
        return "".join(parts)

    assert lines[-1].strip() == b"data: [DONE]"
    assert text(lines) == text(reference) and text(lines)
    # The next request follows the new configuration: the guardrail blocks "hello".
    status, _, _ = await chat(gateway, "fast")
    assert status == 400
    status, headers, _ = await chat(gateway, "fast", "Good day.")
    assert status == 200 and headers["X-GoModel-Provider"] == "b"


async def test_admin_reload_route(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()}, server={"master_key": MASTER},
                                 extra={"models": {"fast": "a/m"}, "features": {"usage_tracking": False}})
    gateway.app[RELOADER].env = {}
    admin = {"Authorization": f"Bearer {MASTER}"}

    async with gateway.http.post("admin/reload") as r:
        assert r.status == 401
    rewrite(gateway, lambda d: d.update(models={"fast": "a/n"}))
    async with gateway.http.post("admin/reload", headers=admin) as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "applied" and body["changed"] == ["models.fast"]
    assert body["trigger"] == "POST /admin/reload"
    status, headers, _ = await chat(gateway, "fast", Authorization=f"Bearer {MASTER}")
    assert status == 200 and headers["X-GoModel-Model"] == "n"

    Path(gateway.config.source).write_text("server: {port: nope}\n", encoding="utf-8")
    async with gateway.http.post("admin/reload", headers=admin) as r:
        assert r.status == 422
        body = await r.json()
    assert body["status"] == "refused" and body["error"]["code"] == "config_invalid"
    assert any(f"{gateway.config.source}:1:" in p and "server.port" in p for p in body["problems"]), body


async def test_admin_reload_needs_the_master_key(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()})  # no master key: nobody is an admin
    async with gateway.http.post("admin/reload") as r:
        assert r.status == 403
        assert "master key" in (await r.json())["error"]["message"]


async def test_credentials_manager_is_reloaded_too(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock()})
    calls: list[int] = []

    class Credentials:
        async def reload(self) -> None:
            calls.append(1)

    if not hasattr(gateway.state, "credentials"):
        pytest.skip("GatewayState has no credentials slot yet (the credentials manager is not in)")
    previous = gateway.state.credentials
    gateway.state.credentials = Credentials()
    try:
        result = await reload(gateway)
    finally:
        gateway.state.credentials = previous
    assert calls == [1] and result.credentials == "reloaded"


async def test_concurrent_reloads_run_one_at_a_time(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(providers={"a": mock(), "b": mock()}, extra={"models": {"fast": "a/m"}})
    rewrite(gateway, lambda d: d.update(models={"fast": "b/m"}))
    first, second = await asyncio.gather(reload(gateway), reload(gateway))
    assert sorted([first.status, second.status]) == ["applied", "unchanged"]
