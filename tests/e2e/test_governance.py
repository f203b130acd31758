"""Governance end to end: virtual keys, 401/403 in each API's shape, rate limits, budgets, usage records.

Every test runs twice: on SQLite and on PostgreSQL (a schema of its own). Clients are the official
OpenAI and Anthropic SDKs and raw HTTP; keys are made through the admin API as an operator would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from gomodel_proxy.storage.database import Database
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin, governed_config, mock_provider, usage_rows
from tests.support.services import drop_schema, find_pg, pg_schema, pg_unreachable

MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass
class Governed:
    gateway: Gateway
    admin: Admin
    db: Database
    url: str
    schema: str | None


@pytest.fixture(params=["sqlite", "postgresql"])
async def gov_factory(request: pytest.FixtureRequest, make_gateway: Any, tmp_path: Any) -> AsyncIterator[Any]:
    made: list[Database] = []
    gateways: list[Gateway] = []
    schemas: list[tuple[str, str]] = []

    async def make(*, same_db_as: Governed | None = None, **kwargs: Any) -> Governed:
        mock = kwargs.pop("mock", {})
        if same_db_as is not None:
            url, schema = same_db_as.url, same_db_as.schema
        elif request.param == "sqlite":
            url, schema = f"sqlite+aiosqlite:///{tmp_path / f'gov-{len(made)}.db'}", None
        else:
            pg = await find_pg()
            if pg is None:
                pytest.skip(pg_unreachable())
            url, schema = pg, pg_schema()
            schemas.append((pg, schema))
        gateway = await make_gateway(providers=mock_provider(**mock), server={"master_key": MASTER},
                                     extra=governed_config(url, schema=schema, **kwargs))
        gateways.append(gateway)
        db = Database(url, schema=schema)
        await db.connect(migrate=False)
        made.append(db)
        return Governed(gateway, Admin(gateway), db, url, schema)

    yield make
    for db in made:
        await db.close()
    for gateway in gateways:  # stopped (usage flushed, caches closed) before their schema goes
        await gateway.server.close()
    for url, schema in schemas:
        await drop_schema(url, schema)


@pytest.fixture
async def gov(gov_factory: Any) -> Governed:
    return await gov_factory()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "mock/m", "messages": MESSAGES, **extra}


# -- authentication -------------------------------------------------------------------------------
async def test_a_virtual_key_works_through_the_openai_sdk_and_is_stored_only_hashed(gov: Governed) -> None:
    key = await gov.admin.key(user_id=None)
    client = gov.gateway.async_openai(api_key=key)
    answer = await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    listed = await gov.admin.call("GET", "admin/keys")
    assert all("key" not in k for k in listed["data"])
    assert key not in json.dumps(listed)
    async with gov.db.connect_once() as conn:
        hashes = [r[0] for r in (await conn.exec_driver_sql("SELECT key_hash FROM api_keys")).all()]
    assert hashlib.sha256(key.encode()).hexdigest() in hashes and key not in hashes


async def test_wrong_missing_revoked_and_expired_keys_get_401_in_the_clients_shape(gov: Governed) -> None:
    key = await gov.admin.key()
    created = await gov.admin.call("GET", "admin/keys")
    key_id = created["data"][0]["id"]
    http = gov.gateway.http
    for headers in ({}, {"Authorization": "Bearer sk-gm-not-a-key"}, {"x-api-key": key + "x"}):
        async with http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            assert resp.status == 401
            error = (await resp.json())["error"]
            assert error["type"] == "authentication_error" and key not in error["message"]
        async with http.post("v1/messages", json={"model": "mock/m", "max_tokens": 5, "messages": MESSAGES},
                             headers={**headers, "anthropic-version": "2023-06-01"}) as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    await gov.admin.call("DELETE", f"admin/keys/{key_id}")
    async with http.post("v1/chat/completions", json=chat_body(), headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "revoked_api_key"
    expired = await gov.admin.key(expires_at="2020-01-01T00:00:00Z")
    async with http.post("v1/chat/completions", json=chat_body(),
                         headers={"Authorization": f"Bearer {expired}"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "expired_api_key"


async def test_a_model_outside_the_keys_list_gets_403_and_the_admin_api_refuses_plain_keys(gov: Governed) -> None:
    key = await gov.admin.key(allowed_models=["mock/m"])
    client = gov.gateway.async_openai(api_key=key)
    await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="mock/other", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 403 and "mock/other" in caught.value.message
    messages_client = anthropic.AsyncAnthropic(base_url=gov.gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await messages_client.messages.create(model="mock/other", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert refused.value.status_code == 403
    await messages_client.close()
    async with gov.gateway.http.get("admin/keys", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 403
    listed = await client.models.list()
    assert [m.id for m in listed.data] == ["mock/m"]  # the key sees only the models it may use
    async with gov.gateway.http.get("mock/v1/models", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status in (403, 400)  # limited keys never pass through unchecked


async def test_an_admin_key_may_use_the_admin_api(gov: Governed) -> None:
    key = await gov.admin.key(is_admin=True)
    async with gov.gateway.http.get("admin/teams", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200


# -- rate limits ------------------------------------------------------------------------------------
async def test_a_keys_rpm_refuses_with_429_retry_after_and_openai_headers(gov: Governed) -> None:
    key = await gov.admin.key(rpm=3)
    http = gov.gateway.http
    headers = {"Authorization": f"Bearer {key}"}
    statuses = []
    for _ in range(5):
        async with http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            statuses.append(resp.status)
            if resp.status == 200:
                assert resp.headers["x-ratelimit-limit-requests"] == "3"
            else:
                assert int(resp.headers["retry-after"]) >= 1
                assert resp.headers["x-ratelimit-remaining-requests"] == "0"
                error = (await resp.json())["error"]
                assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert statuses == [200, 200, 200, 429, 429]


async def test_a_teams_tpm_counts_real_usage_of_streams(gov: Governed) -> None:
    await gov.admin.call("POST", "admin/teams", {"id": "research", "name": "Research", "tpm": 30})
    key = await gov.admin.key(team_id="research")
    client = gov.gateway.async_openai(api_key=key)
    seen = 0
    with pytest.raises(openai.RateLimitError):
        for _ in range(10):
            stream = await client.chat.completions.create(model="mock/m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            async for _chunk in stream:
                pass
            seen += 1
            await asyncio.sleep(0.05)  # the charge of the real usage settles in the background
    assert 1 <= seen < 10


# -- budgets ----------------------------------------------------------------------------------------
async def test_a_key_budget_refuses_once_spent_and_usage_shows_it(gov: Governed) -> None:
    key = await gov.admin.key(max_budget=0.2, budget_period="monthly")
    client = gov.gateway.async_openai(api_key=key)
    ok = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            await client.chat.completions.create(model="mock/m", messages=MESSAGES, max_tokens=10)  # type: ignore[arg-type]
            ok += 1
    assert caught.value.code == "budget_exceeded" and ok >= 1
    await usage_rows(gov.db, expect=ok + 1)
    own = await gov.gateway.http.get("v1/usage", headers={"Authorization": f"Bearer {key}"})
    data = await own.json()
    budget = data["budgets"][0]
    assert budget["max_budget"] == pytest.approx(0.2) and budget["spent"] <= 0.2
    assert sum(row["requests"] for row in data["data"]) == ok + 1  # the refused one is recorded too
    assert Decimal(str(budget["spent"])) > 0


# -- usage records ----------------------------------------------------------------------------------
async def test_every_request_yields_one_usage_record_with_tokens_cost_and_owner(gov: Governed) -> None:
    await gov.admin.call("POST", "admin/teams", {"id": "t1", "name": "T1"})
    await gov.admin.call("POST", "admin/users", {"id": "alice", "team_id": "t1"})
    key = await gov.admin.key(user_id="alice")
    created = (await gov.admin.call("GET", "admin/keys"))["data"][0]
    client = gov.gateway.async_openai(api_key=key)
    await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(model="mock/m", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    async for _ in stream:
        pass
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nowhere/nope", messages=MESSAGES)  # type: ignore[arg-type]
    rows = await usage_rows(gov.db, expect=3)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    ok = [r for r in rows if r["status"] == 200]
    assert len(ok) == 2 and {r["stream"] for r in ok} == {True, False}
    for row in ok:
        assert (row["key_id"], row["user_id"], row["team_id"]) == (created["id"], "alice", "t1")
        assert row["input_tokens"] > 0 and row["output_tokens"] == 10
        expected = (row["input_tokens"] * 1000 + row["output_tokens"] * 2000) / 1e6
        assert row["cost"] == pytest.approx(expected)
        assert row["provider"] == "mock" and row["model"] == "m" and row["latency_ms"] > 0
    assert [r["status"] for r in rows if r["status"] != 200] == [404]
    metrics = await gov.gateway.metrics_text()
    assert 'gomodel_usage_records_total{state="written"} 3.0' in metrics
    assert "gomodel_virtual_keys 1.0" in metrics and "gomodel_usage_spooling 0.0" in metrics


async def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_streamed(gov_factory: Any) -> None:
    gov = await gov_factory(mock={"completion_tokens": 400, "chunk_delay_ms": 5})
    key = await gov.admin.key()
    async with gov.gateway.http.post("v1/chat/completions", json=chat_body(stream=True),
                                     headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
        got = 0
        async for _line in resp.content:
            got += 1
            if got >= 40:
                break
        resp.close()
    rows = await usage_rows(gov.db, expect=1)
    assert len(rows) == 1
    row = rows[0]
    assert row["outcome"] == "client_disconnected" and row["status"] == 499
    assert row["estimated"] is True and 5 <= row["output_tokens"] < 400
    assert row["cost"] > 0


async def test_admin_usage_export_groups_and_csv(gov: Governed) -> None:
    key = await gov.admin.key()
    client = gov.gateway.async_openai(api_key=key)
    for _ in range(3):
        await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    await usage_rows(gov.db, expect=3)
    report = await gov.admin.call("GET", "admin/usage?group_by=key,model")
    assert [(r["model"], r["requests"]) for r in report["data"]] == [("m", 3)]
    async with gov.gateway.http.get("admin/usage?group_by=provider&format=csv", headers=gov.admin.headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/csv"
        lines = (await resp.text()).strip().splitlines()
    assert lines[0].startswith("provider,") and lines[1].startswith("mock,3,")


# -- shared state in Redis ----------------------------------------------------------------------------
@pytest.fixture
async def redis_prefix_for_gateway(redis_url: str, redis_key_prefix: str) -> dict[str, Any]:
    return {"url": redis_url, "key_prefix": redis_key_prefix, "retry_s": 0.3}


async def test_two_gateways_sharing_redis_and_the_database_share_one_rpm_and_one_budget(
    gov_factory: Any, redis_prefix_for_gateway: dict[str, Any]
) -> None:
    first = await gov_factory(redis=redis_prefix_for_gateway)
    second = await gov_factory(redis=redis_prefix_for_gateway, same_db_as=first)
    key = await first.admin.key(rpm=4)
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(100):  # the second instance learns of the key at its next refresh (0.2 s)
        if second.gateway.state.governance.keys.lookup(key) is not None:
            break
        await asyncio.sleep(0.02)
    statuses = []
    for target in (first, second, first, second, first, second):
        async with target.gateway.http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 200, 200, 429, 429]
    # A budget set on one instance holds on both: 2 requests' worth at most (max_tokens caps each).
    team_key = await first.admin.key(max_budget=0.05, budget_period="total")
    team_key_id = await _key_id(first, team_key)
    for _ in range(100):
        if second.gateway.state.governance.keys.budgets.get(f"key:{team_key_id}"):
            break
        await asyncio.sleep(0.02)
    passed = 0
    for target in (first, second) * 5:
        async with target.gateway.http.post("v1/chat/completions", json=chat_body(max_tokens=10),
                                            headers={"Authorization": f"Bearer {team_key}"}) as resp:
            passed += resp.status == 200
    rows = await usage_rows(first.db, expect=6 + 10)
    spent = sum(r["cost"] for r in rows if r["key_id"] == team_key_id)
    assert 1 <= passed < 10 and spent <= 0.05


async def _key_id(gov: Governed, key: str) -> str:
    found = gov.gateway.state.governance.keys.lookup(key)
    assert found is not None
    return str(found[0].id)


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_an_unreachable_redis_fails_open_or_closed_as_configured(gov_factory: Any, policy: str) -> None:
    from tests.support.tcp_proxy import TcpProxy  # noqa: PLC0415

    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()
    try:
        gov = await gov_factory(redis={"url": f"redis://127.0.0.1:{proxy.port}/0", "on_failure": policy,
                                       "timeout_ms": 200, "retry_s": 0.3, "key_prefix": "gmtest:failpolicy:"})
        key = await gov.admin.key(rpm=500, max_budget=100, budget_period="daily")  # no leases: each asks Redis
        headers = {"Authorization": f"Bearer {key}"}
        http = gov.gateway.http
        async with http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            assert resp.status == 200 and resp.headers["x-ratelimit-limit-requests"] == "500"
        await proxy.stop()
        async with http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            body = await resp.json()
            assert "gomodel_limiter_redis_up 0.0" in await gov.gateway.metrics_text()
            if policy == "open":
                assert resp.status == 200 and "x-ratelimit-limit-requests" not in resp.headers
            else:
                assert resp.status == 503 and body["error"]["code"] == "limiter_unavailable"
                assert resp.headers["Retry-After"] == "1"
        await proxy.start()
        await asyncio.sleep(0.4)  # past retry_s: Redis is asked again
        async with http.post("v1/chat/completions", json=chat_body(), headers=headers) as resp:
            assert resp.status == 200 and resp.headers["x-ratelimit-limit-requests"] == "500"
    finally:
        await proxy.stop()
