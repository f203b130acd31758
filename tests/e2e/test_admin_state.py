"""The dashboard's view of the gateway through a whole gateway on a loopback port (master key, admin API,
SQLite, a priced mock provider and an OpenAI-compatible mock upstream): ``GET /admin/providers`` (breakers,
keys by fingerprint), ``GET /admin/config`` (secrets masked), ``GET /admin/requests/live`` (server-sent
events of finished requests), and budgets with what they have used."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import fastjsonschema
import pytest

from gomodel_proxy.admin import sessions, state_routes
from gomodel_proxy.admin.openapi import DOCUMENT
from gomodel_proxy.admin.sessions import COOKIE_NAME
from gomodel_proxy.llmclient.keyring import fingerprint
from gomodel_proxy.observability import live
from tests.support.gateway import Gateway, provider_config
from tests.support.governed import MASTER, PRICES, Admin, governed_config, mock_provider
from tests.support.mock_upstream import MockUpstream, Scenario

from .helpers import MESSAGES

MakeGateway = Callable[..., Awaitable[Gateway]]
KEYS = ["sk-upstream-alpha-key-0000000001", "sk-upstream-bravo-key-0000000002"]
AUTH = {"Authorization": f"Bearer {MASTER}"}
LIVE = "admin/requests/live"
OK_BODY = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}
STATE_PATHS = ("admin/providers", "admin/config", LIVE + "?backlog=0")


def conforms(schema: str, data: Any) -> None:
    """``data`` matches the OpenAPI document's component ``schema`` (what the dashboard is built against)."""
    validate = fastjsonschema.compile({"components": DOCUMENT["components"],
                                       "allOf": [{"$ref": f"#/components/schemas/{schema}"}]})
    validate(data)


async def _gateway(make_gateway: MakeGateway, tmp_path: Any, upstream: MockUpstream, *,
                   features: dict[str, Any] | None = None, **more: Any) -> Gateway:
    providers = {
        "up": provider_config(upstream.base_url, api_key="", api_keys=KEYS, models=["m"],
                              retry={"max_attempts": 1},
                              circuit_breaker={"failure_threshold": 2, "window_s": 30, "cooldown_s": 60}),
        **mock_provider(),
        "local": provider_config(upstream.base_url, api_key=""),  # a local server: no key at all
    }
    return await make_gateway(providers=providers, server={"master_key": MASTER, **more.pop("server", {})},
                              extra=governed_config(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}",
                                                    features=features, extra=more or None))


@pytest.fixture
async def upstream() -> AsyncIterator[MockUpstream]:
    mock = await MockUpstream(model_ids=["m", "n"]).start()
    mock.on("m", Scenario(status=200, body=json.dumps(OK_BODY).encode()))
    yield mock
    await mock.close()


@pytest.fixture
async def gateway(make_gateway: MakeGateway, tmp_path: Any, upstream: MockUpstream) -> Gateway:
    return await _gateway(make_gateway, tmp_path, upstream)


async def _get(gateway: Gateway, path: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    async with gateway.http.get(path, headers=AUTH if headers is None else headers) as resp:
        text = await resp.text()
        assert resp.status == status, (path, resp.status, text)
        return json.loads(text), text


async def _chat(gateway: Gateway, model: str, **extra: Any) -> tuple[int, Any]:
    async with gateway.http.post("v1/chat/completions", headers=AUTH,
                                 json={"model": model, "messages": MESSAGES, **extra}) as resp:
        return resp.status, await resp.json(content_type=None)


class SSE:
    """The events of a live stream as a browser's EventSource would see them (comments kept apart)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        name, data = "message", list[str]()
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.resp.content.readline()).decode()
                if not line:
                    raise EOFError("the stream ended")
                line = line.rstrip("\n")
                if line == "":
                    if data:
                        return name, json.loads("\n".join(data))
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])

    async def until(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            name, event = await self.next(max(0.01, deadline - time.monotonic()))
            if name == "request" and event["request_id"] == request_id:
                return dict(event)


# -- GET /admin/providers -------------------------------------------------------------------------------------
async def test_providers_show_fingerprints_never_the_keys(gateway: Gateway) -> None:
    assert (await _chat(gateway, "up/m"))[0] == 200
    body, text = await _get(gateway, "admin/providers")
    conforms("ProviderStateList", body)
    assert body["object"] == "list"
    assert [p["name"] for p in body["data"]] == ["up", "mock", "local"]  # configuration order
    up, mock, local = body["data"]
    assert up["type"] == "openai_compatible" and up["base_url"] == gateway.config.providers["up"].base_url
    assert up["available"] is True and up["breaker"]["state"] == "closed" and up["breaker"]["retry_at"] is None
    assert [k["fingerprint"] for k in up["keys"]] == [fingerprint(k) for k in KEYS]
    assert all(k["state"] == "active" and k["cooldown_until"] is None for k in up["keys"])
    assert sum(k["requests"] for k in up["keys"]) == 1
    assert up["models"] == 1 and up["models_status"] == "ok"  # its configured list: m
    assert mock["type"] == "mock" and mock["keys"] == [] and mock["breaker"]["state"] == "closed"
    assert mock["models"] == 2
    assert local["keys"] == [] and local["breaker"]["enabled"] is True and local["models"] == 2  # m and n
    for key in KEYS:
        assert key not in text and key[-12:] not in text
    assert "Bearer" not in text and "Authorization" not in text and MASTER not in text


async def test_after_upstream_failures_the_breaker_shows_open(gateway: Gateway, upstream: MockUpstream) -> None:
    upstream.fail("m", 503, {"error": {"message": "overloaded", "type": "server_error"}})
    for _ in range(2):
        assert (await _chat(gateway, "up/m"))[0] == 503
    status, refused = await _chat(gateway, "up/m")
    assert status == 503 and refused["error"]["code"] == "circuit_open"
    body, _ = await _get(gateway, "admin/providers")
    conforms("ProviderStateList", body)
    up = body["data"][0]
    breaker = up["breaker"]
    assert breaker["state"] == "open" and breaker["transitions"]["open"] == 1
    assert breaker["opened_at"] is not None and breaker["retry_at"] is not None
    retry_at = time.mktime(time.strptime(breaker["retry_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert 50 <= retry_at - time.time() <= 61  # the 60 s cooldown, begun just now
    assert up["fast_failures"] == 1
    assert sum(k["failures"].get("server_error", 0) for k in up["keys"]) == 2


# -- GET /admin/config ----------------------------------------------------------------------------------------
SECRETS = {
    "provider_key": "sk-provider-secret-CONFIG-0001",
    "provider_key_2": "provider-secret-CONFIG-0002",
    "header": "header-secret-CONFIG-0003",
    "cred_master": "cred-master-secret-CONFIG-0004",
    "vault_token": "hvs.vault-token-CONFIG-0005",
    "vault_secret_id": "vault-secret-id-CONFIG-0006",
    "audit_pw": "audit-password-CONFIG-0007",
    "audit_key": "audit-api-key-CONFIG-0008",
    "trace_header": "trace-header-CONFIG-0009",
    "trace_token": "trace-token-CONFIG-0010",
}


async def test_the_config_has_every_secret_masked(make_gateway: MakeGateway, tmp_path: Any,
                                                 upstream: MockUpstream) -> None:
    s = SECRETS
    providers = {"up": provider_config(upstream.base_url, api_key=s["provider_key"],
                                       api_keys=[s["provider_key_2"]], headers={"X-Org-Token": s["header"]}),
                 **mock_provider()}
    extra = governed_config(f"sqlite+aiosqlite:///{tmp_path / 'config.db'}", extra={
        "credentials": {"master_secret": s["cred_master"],
                        "vault": {"token": s["vault_token"], "secret_id": s["vault_secret_id"]}},
        "audit": {"url": f"mongodb://audit:{s['audit_pw']}@mongo.internal/audit", "api_key": s["audit_key"]},
        "observability": {"tracing": {"headers": {"Authorization": f"Bearer {s['trace_header']}"},
                                      "endpoint": f"https://otlp.example.com/v1/traces?token={s['trace_token']}"}},
    })
    gateway = await make_gateway(providers=providers, server={"master_key": MASTER}, extra=extra)
    body, text = await _get(gateway, "admin/config")
    leaked = [name for name, value in {**s, "master": MASTER}.items() if value in text]
    assert not leaked, leaked
    conforms("EffectiveConfig", body)
    assert body["object"] == "config" and body["source"] == gateway.config.source
    config = body["config"]
    assert config["server"]["master_key"] == "***" and config["server"]["host"] == "127.0.0.1"
    assert config["providers"]["up"]["api_key"] == f"fp:{fingerprint(s['provider_key'])}"
    assert config["providers"]["up"]["base_url"] == upstream.base_url
    assert config["audit"]["url"] == "mongodb://audit:***@mongo.internal/audit"
    assert config["features"]["admin_api"] is True and config["pricing"]["models"]["mock/m"]["input"] == 1000.0


# -- GET /admin/requests/live ---------------------------------------------------------------------------------
async def _listen(gateway: Gateway, query: str = "?backlog=0", headers: dict[str, str] | None = None
                  ) -> aiohttp.ClientResponse:
    resp = await gateway.http.get(LIVE + query, headers=AUTH if headers is None else headers)
    assert resp.status == 200, (resp.status, await resp.text())
    return resp


async def test_a_call_through_the_sdk_arrives_as_an_event(gateway: Gateway) -> None:
    resp = await _listen(gateway)
    try:
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Cache-Control"] == "no-store"
        client = gateway.openai(api_key=MASTER)
        reply = await asyncio.to_thread(lambda: client.chat.completions.create(
            model="mock/m", messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"X-Request-ID": "live-sdk-1"},
        ))
        event = await SSE(resp).until("live-sdk-1")
    finally:
        resp.close()
    assert reply.usage is not None
    conforms("LiveRequest", event)
    assert (event["model"], event["provider"], event["status"], event["outcome"]) == ("mock/m", "mock", 200, "ok")
    assert (event["input_tokens"], event["output_tokens"]) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    expected = (Decimal(reply.usage.prompt_tokens) * Decimal("0.001")
                + Decimal(reply.usage.completion_tokens) * Decimal("0.002"))
    assert Decimal(event["cost_usd"]) == expected  # $1000 / $2000 per million tokens
    assert event["stream"] is False and event["latency_ms"] > 0 and event["endpoint"] == "chat.completions"
    assert event["time"].endswith("Z") and event["key_id"] is None
    content = reply.choices[0].message.content or ""
    assert content and content not in json.dumps(event) and MESSAGES[0]["content"] not in json.dumps(event)


async def test_the_backlog_comes_first(gateway: Gateway) -> None:
    for n in range(3):
        status, _ = await _chat(gateway, "mock/m", user=f"u{n}")
        assert status == 200
    expected = [c.request_id for c in gateway.records[-2:]]
    resp = await _listen(gateway, "?backlog=2")
    try:
        sse = SSE(resp)
        first = [await sse.next(), await sse.next()]
        assert [e["request_id"] for _, e in first] == expected
        status, _ = await _chat(gateway, "mock/m")
        name, event = await sse.next()
        assert name == "request" and event["request_id"] == gateway.records[-1].request_id
    finally:
        resp.close()
    for query in ("?backlog=501", "?backlog=-1", "?backlog=x"):
        body, _ = await _get(gateway, LIVE + query, 400)
        assert body["error"]["param"] == "backlog" and body["error"]["type"] == "invalid_request_error"


async def _ids_until(sse: SSE, marker: str) -> list[tuple[str, str]]:
    """``(request_id, endpoint)`` of each event up to the one of ``marker`` (not included)."""
    seen: list[tuple[str, str]] = []
    while True:
        name, event = await sse.next()
        if name != "request":
            continue
        if event["request_id"] == marker:
            return seen
        seen.append((event["request_id"], event["endpoint"]))


async def _operator_call(gateway: Gateway, request_id: str) -> None:
    async with gateway.http.get("admin/keys", headers={**AUTH, "X-Request-ID": request_id}) as resp:
        assert resp.status == 200, await resp.text()


async def _client_call(gateway: Gateway, request_id: str) -> None:
    async with gateway.http.post("v1/chat/completions", headers={**AUTH, "X-Request-ID": request_id},
                                 json={"model": "mock/m", "messages": MESSAGES}) as resp:
        assert resp.status == 200, await resp.text()


async def test_the_operators_own_calls_only_with_admin_true(gateway: Gateway) -> None:
    await _client_call(gateway, "client-1")
    await _operator_call(gateway, "operator-1")
    for query, operators in (("", False), ("?admin=false", False), ("?admin=true", True), ("?admin=1", True)):
        resp = await _listen(gateway, query)
        try:
            sse = SSE(resp)
            tag = query.strip("?").replace("=", "-") or "default"
            await _operator_call(gateway, f"operator-live-{tag}")
            await _client_call(gateway, f"marker-{tag}")
            seen = await _ids_until(sse, f"marker-{tag}")
        finally:
            resp.close()
        ids = [request_id for request_id, _ in seen]
        assert "client-1" in ids, (query, seen)  # the backlog's client call, either way
        assert ("operator-1" in ids) is operators, (query, seen)  # from the backlog
        assert (f"operator-live-{tag}" in ids) is operators, (query, seen)  # as it happened
        operator_endpoints = {e for _, e in seen if e.startswith(("admin", "dashboard"))}
        assert bool(operator_endpoints) is operators, (query, seen)
        if operators:
            assert dict(seen)["operator-1"] == "admin GET /admin/keys"
    for bad in ("?admin=maybe", "?admin=", "?admin=yes"):
        body, _ = await _get(gateway, LIVE + bad, 400)
        assert body["error"]["param"] == "admin" and body["error"]["type"] == "invalid_request_error", body


async def test_keep_alive_comments(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_S", 0.05)
    resp = await _listen(gateway)
    try:
        async with asyncio.timeout(5):
            assert await resp.content.readline() == b": keep-alive\n"
            assert await resp.content.readline() == b"\n"
    finally:
        resp.close()


async def test_the_33rd_listener_gets_503(gateway: Gateway) -> None:
    async with aiohttp.ClientSession(base_url=gateway.url + "/",
                                     connector=aiohttp.TCPConnector(limit=0)) as http:
        streams = [await http.get(LIVE + "?backlog=0", headers=AUTH) for _ in range(live.MAX_SUBSCRIBERS)]
        try:
            assert all(r.status == 200 for r in streams)
            async with http.get(LIVE, headers=AUTH) as refused:
                body = await refused.json()
                assert refused.status == 503, body
                assert body["error"]["code"] == "too_many_listeners" and body["error"]["type"] == "server_error"
            streams.pop().close()
            deadline = time.monotonic() + 5
            while True:  # the closed one leaves as soon as the gateway sees it gone
                async with http.get(LIVE + "?backlog=0", headers=AUTH) as again:
                    if again.status == 200 or time.monotonic() > deadline:
                        assert again.status == 200
                        break
                await asyncio.sleep(0.05)
        finally:
            for r in streams:
                r.close()


async def test_a_slow_listener_never_slows_the_gateway(gateway: Gateway) -> None:
    """A listener that reads nothing: the calls go on at full speed; its queue stays bounded."""
    resp = await _listen(gateway)
    try:
        feed = gateway.app[state_routes.LIVE]
        started = time.monotonic()
        results = await asyncio.gather(*(_chat(gateway, "mock/m") for _ in range(40)))
        assert all(status == 200 for status, _ in results) and time.monotonic() - started < 10
        [sub] = feed.subscribers
        assert len(sub.queue) <= feed.queue_size
    finally:
        resp.close()


async def test_streams_end_at_shutdown_without_delaying_it(gateway: Gateway) -> None:
    resp = await _listen(gateway)
    sse = SSE(resp)
    started = time.monotonic()
    await gateway.server.close()
    took = time.monotonic() - started
    with pytest.raises(EOFError):  # ended cleanly by the gateway, not cut by the shutdown's timeout
        await sse.next(timeout=2)
    resp.close()
    assert took < 0.9, took  # the tests' server waits 1 s for handlers still running


# -- who may read them -------------------------------------------------------------------------------------
async def test_a_read_only_dashboard_session_reads_all_three(gateway: Gateway) -> None:
    session = sessions.new_session("read_only", "viewer")
    cookie = {"Cookie": f"{COOKIE_NAME}={sessions.sign(session, MASTER)}"}
    for path in STATE_PATHS:
        resp = await gateway.http.get(path, headers=cookie)
        try:
            assert resp.status == 200, (path, resp.status, await resp.text())
            if path.startswith(LIVE):
                assert resp.headers["Content-Type"] == "text/event-stream"
            else:
                assert (await resp.json())["object"] in ("list", "config")
        finally:
            resp.close()
    async with gateway.http.post("admin/providers", headers={**cookie, "X-CSRF-Token": session.csrf}) as resp:
        assert resp.status in (403, 405)  # reading only


async def test_a_virtual_key_that_is_not_an_admins_gets_403(gateway: Gateway) -> None:
    key = await Admin(gateway).key()
    admin_key = await Admin(gateway).key(is_admin=True)
    for path in STATE_PATHS:
        body, text = await _get(gateway, path, 403, headers={"Authorization": f"Bearer {key}"})
        assert body["error"]["type"] == "permission_error", text
        _, _ = await _get(gateway, path, 401, headers={})
    resp = await gateway.http.get(LIVE + "?backlog=0", headers={"Authorization": f"Bearer {admin_key}"})
    assert resp.status == 200
    resp.close()


async def test_without_the_admin_api_there_are_no_such_routes(make_gateway: MakeGateway,
                                                               upstream: MockUpstream) -> None:
    gateway = await make_gateway(upstream=upstream, server={"master_key": MASTER})
    for path in STATE_PATHS:
        async with gateway.http.get(path, headers=AUTH) as resp:
            assert resp.status == 404, path
            assert (await resp.json())["error"]["type"] == "invalid_request_error"


# -- budgets: what they have used ----------------------------------------------------------------------------
async def test_budgets_show_what_a_priced_call_used(gateway: Gateway) -> None:
    admin = Admin(gateway)
    await admin.call("PUT", "admin/budgets/global", {"max_budget": 100, "period": "monthly"})
    before = await admin.call("GET", "admin/budgets/global")
    assert (before["used"], before["reserved"], before["remaining"]) == ("0", "0", "100")
    client = gateway.openai(api_key=MASTER)
    reply = await asyncio.to_thread(lambda: client.chat.completions.create(
        model="mock/m", messages=MESSAGES))  # type: ignore[arg-type]
    assert reply.usage is not None
    cost = (Decimal(reply.usage.prompt_tokens) * Decimal(PRICES["mock/m"]["input"])
            + Decimal(reply.usage.completion_tokens) * Decimal(PRICES["mock/m"]["output"])) / 1_000_000
    deadline = time.monotonic() + 5
    while True:
        after = await admin.call("GET", "admin/budgets/global")
        if Decimal(after["used"]) > 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert Decimal(after["used"]) == cost and Decimal(after["reserved"]) == 0
    assert Decimal(after["remaining"]) == 100 - cost
    listed = await admin.call("GET", "admin/budgets")
    conforms("BudgetList", listed)
    assert [(b["id"], b["used"]) for b in listed["data"]] == [("global", after["used"])]
    replaced = await admin.call("PUT", "admin/budgets/global", {"max_budget": 50, "period": "monthly"})
    assert "used" not in replaced  # a change answers the record alone


async def test_with_budgets_off_used_is_null(make_gateway: MakeGateway, tmp_path: Any, upstream: MockUpstream) -> None:
    gateway = await _gateway(make_gateway, tmp_path, upstream, features={"budgets": False})
    admin = Admin(gateway)
    await admin.call("PUT", "admin/budgets/global", {"max_budget": 100, "period": "monthly"})
    got = await admin.call("GET", "admin/budgets/global")
    assert (got["used"], got["reserved"], got["remaining"]) == (None, None, None)
    assert (await admin.call("GET", "admin/budgets"))["data"][0]["used"] is None


async def test_the_openapi_document_describes_them(gateway: Gateway) -> None:
    doc, _ = await _get(gateway, "admin/openapi.json")
    for path in ("/admin/providers", "/admin/config", "/admin/requests/live"):
        assert "get" in doc["paths"][path], path
    assert "text/event-stream" in doc["paths"]["/admin/requests/live"]["get"]["responses"]["200"]["content"]
    budget = doc["components"]["schemas"]["Budget"]
    assert {"used", "remaining"} <= set(budget["properties"]) and "used" not in budget["required"]
