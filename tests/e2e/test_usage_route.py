"""``GET /v1/usage``: a key holder sees its own usage, limits and budgets; the master key the gateway's;
bad parameters are 400s; a gateway that records no usage says so (503). On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from gomodel_proxy.billing.usage import RECORD_COLUMNS
from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.server.routes_usage import _filters, parse_time
from gomodel_proxy.storage.database import Database
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin, governed_config, mock_provider, usage_rows
from tests.support.services import drop_schema, find_pg, pg_schema, pg_unreachable

CHAT = {"model": "mock/m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 10}


@pytest.fixture(params=["sqlite", "postgresql"])
async def governed(request: pytest.FixtureRequest, make_gateway: Any, tmp_path: Any
                   ) -> AsyncIterator[tuple[Gateway, Admin, Database]]:
    if request.param == "sqlite":
        url, schema = f"sqlite+aiosqlite:///{tmp_path / 'usage.db'}", None
    else:
        pg = await find_pg()
        if pg is None:
            pytest.skip(pg_unreachable())
        url, schema = pg, pg_schema()
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER},
                                 extra=governed_config(url, schema=schema))
    db = Database(url, schema=schema)
    await db.connect(migrate=False)
    yield gateway, Admin(gateway), db
    await db.close()
    await gateway.server.close()
    if schema is not None:
        await drop_schema(url, schema)


async def _get(gateway: Gateway, path: str, key: str, expect: int = 200) -> dict[str, Any]:
    async with gateway.http.get(path, headers={"Authorization": f"Bearer {key}"}) as resp:
        body: dict[str, Any] = await resp.json()
        assert resp.status == expect, body
        return body


async def test_a_key_sees_its_own_usage_limits_and_budget_and_the_master_key_sees_all(
    governed: tuple[Gateway, Admin, Database],
) -> None:
    gateway, admin, db = governed
    mine = await admin.key(rpm=50, max_budget=1.0, budget_period="monthly")
    other = await admin.key()
    mine_id = gateway.state.governance.keys.lookup(mine)[0].id
    for key in (mine, mine, other):
        async with gateway.http.post("v1/chat/completions", json=CHAT,
                                     headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status == 200
    await usage_rows(db, expect=3)

    own = await _get(gateway, "v1/usage", mine)
    assert own["object"] == "usage" and own["group_by"] == ["model"]
    assert own["subject"] == {"kind": "key", "key_id": mine_id, "user_id": None, "team_id": None}
    assert [(row["model"], row["requests"]) for row in own["data"]] == [("m", 2)]  # not the other key's
    assert own["rate_limits"] == [{"name": f"key:{mine_id}", "rpm": 50, "tpm": None}]
    (budget,) = own["budgets"]
    assert budget["id"] == f"key:{mine_id}" and budget["max_budget"] == 1.0 and budget["period"] == "monthly"
    assert 0 < budget["spent"] < 1.0 and budget["reserved"] == 0
    assert budget["remaining"] == pytest.approx(1.0 - budget["spent"])
    assert own["end"].endswith("Z") and own["start"].endswith("-01T00:00:00Z")  # this calendar month

    everyone = await _get(gateway, "v1/usage?group_by=key,model", MASTER)
    assert everyone["subject"]["kind"] == "master" and everyone["rate_limits"] == [] and everyone["budgets"] == []
    assert sorted(row["requests"] for row in everyone["data"]) == [1, 2]

    past = await _get(gateway, "v1/usage?start=2020-01-01&end=2020-02-01T00:00:00Z", mine)
    assert past["data"] == [] and (past["start"], past["end"]) == ("2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z")


@pytest.mark.parametrize(("query", "param"), [
    ("start=yesterday", "start"),
    ("end=2026-13-01", "end"),
    ("start=2026-02-01&end=2026-01-01", "end"),
    ("start=2026-01-01T00:00:00Z&end=2026-01-01", "end"),  # equal is not after
    ("group_by=model,colour", "group_by"),
])
async def test_bad_parameters_are_400s_naming_the_parameter(
    governed: tuple[Gateway, Admin, Database], query: str, param: str
) -> None:
    gateway, _, _ = governed
    body = await _get(gateway, f"v1/usage?{query}", MASTER, expect=400)
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param


async def test_a_gateway_that_records_no_usage_answers_503(make_gateway: Any) -> None:
    gateway = await make_gateway(providers=mock_provider(), extra={"features": {"usage_tracking": False}})
    async with gateway.http.get("v1/usage") as resp:
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "usage_not_tracked"


async def test_a_zero_config_gateway_records_usage_in_its_embedded_store_once_open(make_gateway: Any) -> None:
    gateway = await make_gateway(providers=mock_provider(), extra={"usage": {"flush_interval_ms": 20}})
    gov = gateway.state.governance
    assert gov.usage_later  # no keys and no configured database: the store opens after start-up
    opened = gov._opening
    db, writer = gov.db, gov.writer
    gov.db, gov.writer, gov._opening = None, None, None  # as if still opening
    async with gateway.http.get("v1/usage") as resp:
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "usage_store_opening"
        assert resp.headers["Retry-After"] == "1"
    async with gateway.http.post("v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200
    request_id = RECORD_COLUMNS.index("request_id")  # the records wait as tuples (billing.usage.usage_record)
    assert [row[request_id] for row in gov._early] == [resp.headers["X-Request-ID"]]  # kept meanwhile
    gov._opening = opened
    await opened
    if gov.writer is None:  # it had opened before the test looked: put it back and hand over what waited
        gov.db, gov.writer = db, writer
        early, gov._early = gov._early, []
        for row in early:
            writer.submit(row)
    assert gov.db is not None
    rows = await usage_rows(gov.db, expect=1)
    assert [r["request_id"] for r in rows] == [resp.headers["X-Request-ID"]]


async def test_an_open_gateway_reports_all_usage_to_anyone(make_gateway: Any, tmp_path: Any) -> None:
    gateway = await make_gateway(providers=mock_provider(), extra={
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path / 'open.db'}"}, "usage": {"flush_interval_ms": 20}})
    async with gateway.http.post("v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'open.db'}")
    await db.connect(migrate=False)
    try:
        await usage_rows(db, expect=1)
    finally:
        await db.close()
    async with gateway.http.get("v1/usage?group_by=provider") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["subject"]["kind"] == "anonymous"
    assert [(row["provider"], row["requests"]) for row in body["data"]] == [("mock", 1)]


# -- the helpers, as units --------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),  # naive means UTC
])
def test_parse_time_gives_aware_utc(value: str, expected: datetime) -> None:
    parsed = parse_time(value, "start")
    assert parsed == expected and parsed.utcoffset() is not None and parsed.tzinfo == UTC


def test_parse_time_refuses_what_is_not_a_time() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_time("next tuesday", "end")
    assert caught.value.param == "end" and "'next tuesday'" in caught.value.message


@pytest.mark.parametrize(("principal", "filters"), [
    (Principal(kind="key", key_id="k1", user_id="alice", team_id="t1"), {"key": "k1"}),
    (Principal(kind="jwt", user_id="alice", team_id="t1"), {"user": "alice"}),
    (Principal(kind="jwt", team_id="t1"), {"team": "t1"}),
    (Principal(kind="master", is_admin=True), {}),
])
def test_each_principal_sees_what_its_credential_stands_for(principal: Principal, filters: dict[str, str]) -> None:
    assert _filters(principal) == filters
