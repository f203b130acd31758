"""The admin API over HTTP, on SQLite and PostgreSQL: every route, its validation, errors and side effects."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import insert, select

from gomodel_proxy.admin import ADMIN, AdminContext, add_routes
from gomodel_proxy.admin.openapi import DOCUMENT
from gomodel_proxy.admin.routes import ROUTES
from gomodel_proxy.config.schema import RateLimitPair, RateLimitsConfig
from gomodel_proxy.core.errors import GatewayError, MethodNotAllowedError, NotFoundError
from gomodel_proxy.storage.tables import api_keys, budgets, teams, usage_records, users

ADMIN_AUTH = {"Authorization": "Bearer admin"}


@web.middleware
async def render_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """What the gateway's edge middleware does: every failure as OpenAI error JSON."""
    try:
        return await handler(request)
    except web.HTTPNotFound:
        exc: GatewayError = NotFoundError(f"no route {request.path}")
    except web.HTTPMethodNotAllowed:
        exc = MethodNotAllowedError("method not allowed")
    except GatewayError as err:
        exc = err
    return web.Response(status=exc.status, body=exc.to_json(), content_type="application/json")


def make_app(db: Any, changes: list[str], rate_limits: RateLimitsConfig | None = None) -> web.Application:
    async def on_change(what: str) -> None:
        changes.append(what)

    app = web.Application(middlewares=[render_errors])
    add_routes(app, AdminContext(
        db, on_change=on_change, rate_limits=rate_limits or RateLimitsConfig(),
        authorize=lambda r: r.headers.get("Authorization") == "Bearer admin",
    ))
    return app


@pytest.fixture
def changes() -> list[str]:
    return []


@pytest.fixture
async def client(aiohttp_client: Any, db: Any, changes: list[str]) -> Any:
    limits = RateLimitsConfig(default_key=RateLimitPair(rpm=60, tpm=0), global_=RateLimitPair(rpm=0, tpm=100000))
    return await aiohttp_client(make_app(db, changes, limits), headers=ADMIN_AUTH)


async def call(client: Any, method: str, path: str, status: int, **kw: Any) -> Any:
    resp = await client.request(method, path, **kw)
    text = await resp.text()
    assert resp.status == status, f"{method} {path}: {resp.status} {text}"
    return await resp.json() if resp.content_type == "application/json" else text


async def error(client: Any, method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
    body = await call(client, method, path, status, **kw)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# -- authorization --------------------------------------------------------------------------------
async def test_every_route_refuses_a_caller_not_authorized(aiohttp_client: Any, db: Any) -> None:
    changes: list[str] = []
    app = make_app(db, changes)
    assert isinstance(app[ADMIN], AdminContext)
    anonymous = await aiohttp_client(app)
    paths = 0
    for path, item in DOCUMENT["paths"].items():
        concrete = path.replace("{scope}", "user")
        for name in ("team_id", "user_id", "key_id", "budget_id", "subject_id"):
            concrete = concrete.replace("{" + name + "}", "x")
        for method in item:
            # Routes other modules serve on every gateway (POST /admin/reload) are not make_app's: their own
            # tests check their authorization.
            if method == "parameters" or (method.upper(), path) not in {(m, p) for m, p, _ in ROUTES}:
                continue
            for headers in ({}, {"Authorization": "Bearer nope"}):
                resp = await anonymous.request(method.upper(), concrete, json={}, headers=headers)
                body = await resp.json()
                assert resp.status == 403, (method, concrete)
                assert body["error"]["type"] == "permission_error"
                assert body["error"]["message"] == "this key may not use the admin API"
            paths += 1
    assert paths == 25
    async with db.connect_once() as conn:
        assert (await conn.execute(select(teams))).all() == []
    assert changes == []


# -- teams ----------------------------------------------------------------------------------------
async def test_teams_crud(client: Any, changes: list[str]) -> None:
    team = await call(client, "POST", "/admin/teams", 201, json={"id": "research", "name": "Research", "rpm": 10})
    assert team["id"] == "research" and team["rpm"] == 10 and team["tpm"] is None and team["metadata"] == {}
    assert team["created_at"].endswith("Z") and datetime.fromisoformat(team["created_at"]).tzinfo is not None
    assert changes == ["teams"]
    other = await call(client, "POST", "/admin/teams", 201, json={"name": "Ops", "metadata": {"cc": 42}})
    assert other["id"].startswith("t_") and other["metadata"] == {"cc": 42}

    listed = await call(client, "GET", "/admin/teams", 200)
    assert listed["object"] == "list" and [t["id"] for t in listed["data"]] == ["research", other["id"]]
    assert (await call(client, "GET", "/admin/teams/research", 200))["name"] == "Research"
    patched = await call(client, "PATCH", "/admin/teams/research", 200, json={"name": "Science", "rpm": None})
    assert patched["name"] == "Science" and patched["rpm"] is None
    assert changes[-1] == "teams"

    err = await error(client, "POST", "/admin/teams", 409, json={"name": "Science"})
    assert err["code"] == "conflict" and err["param"] == "name"
    assert (await error(client, "POST", "/admin/teams", 409, json={"id": "research", "name": "X"}))["param"] == "id"
    assert (await error(client, "PATCH", f"/admin/teams/{other['id']}", 409, json={"name": "Science"}))["code"] \
        == "conflict"
    await error(client, "GET", "/admin/teams/ghost", 404)
    await error(client, "PATCH", "/admin/teams/ghost", 404, json={})
    await error(client, "DELETE", "/admin/teams/ghost", 404)

    deleted = await call(client, "DELETE", "/admin/teams/research", 200)
    assert deleted["id"] == "research"
    assert changes[-2:] == ["teams", "budgets:team:research"]
    await error(client, "GET", "/admin/teams/research", 404)


async def test_body_validation_names_the_field(client: Any, changes: list[str]) -> None:
    cases: list[tuple[str, str, Any, str | None]] = [
        ("POST", "/admin/teams", {}, None),                              # name required
        ("POST", "/admin/teams", {"name": ""}, "name"),
        ("POST", "/admin/teams", {"name": "a", "rpm": -1}, "rpm"),
        ("POST", "/admin/teams", {"name": "a", "rpm": "5"}, "rpm"),
        ("POST", "/admin/teams", {"name": "a", "colour": "red"}, "colour"),  # unknown field
        ("POST", "/admin/teams", {"name": "a", "id": "no spaces"}, "id"),
        ("POST", "/admin/teams", {"name": "a", "metadata": {"x": {"nested": 1}}}, "metadata.x"),
        ("POST", "/admin/users", {"is_admin": "yes"}, "is_admin"),
        ("POST", "/admin/keys", {"allowed_models": "gpt-4o"}, "allowed_models"),
        ("POST", "/admin/keys", {"expires_at": "tomorrow"}, "expires_at"),
        ("POST", "/admin/keys", {"max_budget": -5}, "max_budget"),
        ("POST", "/admin/keys", {"budget_period": "hourly", "max_budget": 1}, "budget_period"),
        ("POST", "/admin/keys", {"key_hash": "0" * 64}, "key_hash"),
        ("PUT", "/admin/budgets/global", {"max_budget": 1}, None),      # period required
        ("PUT", "/admin/budgets/global", {"max_budget": 1, "period": "hourly"}, "period"),
        ("PUT", "/admin/rate-limits/team/x", {"rpm": 1}, None),         # tpm required
        ("POST", "/admin/teams", {"name": "nul\u0000"}, "name"),         # PostgreSQL cannot store NUL
        ("POST", "/admin/users", {"email": "a\u0000@b"}, "email"),
        ("POST", "/admin/keys", {"metadata": {"k": "\u0000"}}, "metadata.k"),
        ("PUT", "/admin/budgets/user:a%00b", {"max_budget": 1, "period": "daily"}, "budget_id"),
    ]
    for method, path, body, param in cases:
        err = await error(client, method, path, 400, json=body)
        assert err["type"] == "invalid_request_error"
        assert err["param"] == param, (body, err)
    for raw in (b"", b"{not json", b"[1, 2]", b'"text"', b'{"name": NaN}'):
        err = await error(client, "POST", "/admin/teams", 400, data=raw,
                          headers={"Content-Type": "application/json"})
        assert "JSON object" in err["message"] or "must be object" in err["message"]
    assert (await error(client, "POST", "/admin/teams", 400, json={"name": "a", "colour": 1}))["message"] \
        == "unknown field 'colour'"
    assert changes == []


# -- users ----------------------------------------------------------------------------------------
async def test_users_crud(client: Any, changes: list[str]) -> None:
    await call(client, "POST", "/admin/teams", 201, json={"id": "t1", "name": "T1"})
    user = await call(client, "POST", "/admin/users", 201,
                      json={"id": "alice", "email": "alice@example.com", "team_id": "t1", "is_admin": True})
    assert (user["team_id"], user["is_admin"], user["rpm"]) == ("t1", True, None)
    assert changes[-1] == "users"
    bob = await call(client, "POST", "/admin/users", 201, json={})
    assert bob["id"].startswith("u_") and bob["email"] is None

    err = await error(client, "POST", "/admin/users", 400, json={"team_id": "ghost"})
    assert (err["param"], err["code"]) == ("team_id", "unknown_reference")
    assert (await error(client, "POST", "/admin/users", 409, json={"email": "alice@example.com"}))["param"] \
        == "email"
    assert (await error(client, "POST", "/admin/users", 409, json={"id": "alice"}))["param"] == "id"

    assert [u["id"] for u in (await call(client, "GET", "/admin/users", 200))["data"]] == ["alice", bob["id"]]
    assert (await call(client, "GET", "/admin/users/alice", 200))["email"] == "alice@example.com"
    patched = await call(client, "PATCH", "/admin/users/alice", 200, json={"team_id": None, "tpm": 500})
    assert (patched["team_id"], patched["tpm"], patched["is_admin"]) == (None, 500, True)
    await error(client, "PATCH", "/admin/users/alice", 400, json={"team_id": "ghost"})
    await error(client, "PATCH", "/admin/users/ghost", 404, json={"name": "x"})
    await error(client, "GET", "/admin/users/ghost", 404)

    assert (await call(client, "DELETE", f"/admin/users/{bob['id']}", 200))["id"] == bob["id"]
    assert changes[-2:] == ["users", f"budgets:user:{bob['id']}"]
    await error(client, "DELETE", f"/admin/users/{bob['id']}", 404)


# -- keys -----------------------------------------------------------------------------------------
async def test_key_is_shown_once_and_stored_only_hashed(client: Any, db: Any, changes: list[str]) -> None:
    await call(client, "POST", "/admin/users", 201, json={"id": "u1"})
    created = await call(client, "POST", "/admin/keys", 201, json={
        "name": "ci", "user_id": "u1", "allowed_models": ["openai/*"], "rpm": 60,
        "expires_at": "2030-01-01T02:00:00+02:00", "metadata": {"env": "ci"},
        "max_budget": 12.5, "budget_period": "weekly",
    })
    plaintext = created["key"]
    assert plaintext.startswith("sk-gm-") and len(plaintext) == 49
    assert created["key_prefix"] == plaintext[:12]
    assert created["expires_at"] == "2030-01-01T00:00:00.000000Z"
    assert created["budget"]["id"] == f"key:{created['id']}" and created["budget"]["max_budget"] == 12.5
    assert created["budget"]["period"] == "weekly"
    assert "key_hash" not in created
    assert changes[-2:] == ["keys", f"budgets:key:{created['id']}"]

    async with db.connect_once() as conn:
        stored_hash = (await conn.execute(select(api_keys.c.key_hash))).scalar_one()
        everything = [
            row for table in (api_keys, users, teams, budgets, usage_records)
            for row in (await conn.execute(select(table))).all()
        ]
    assert stored_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert not any(plaintext in str(value) for row in everything for value in row)

    listed = await call(client, "GET", "/admin/keys", 200)
    got = await call(client, "GET", f"/admin/keys/{created['id']}", 200)
    for shown in (listed["data"][0], got):
        assert "key" not in shown and shown["key_prefix"] == plaintext[:12]
        assert plaintext not in str(shown)
    assert got["allowed_models"] == ["openai/*"] and got["metadata"] == {"env": "ci"}

    plain = await call(client, "POST", "/admin/keys", 201, json={"budget_period": "daily"})
    assert plain["budget"] is None and plain["user_id"] is None  # a period without an amount is ignored


async def test_keys_list_filters_update_and_revoke(client: Any, changes: list[str]) -> None:
    await call(client, "POST", "/admin/teams", 201, json={"id": "t1", "name": "T1"})
    await call(client, "POST", "/admin/users", 201, json={"id": "u1"})
    a = await call(client, "POST", "/admin/keys", 201, json={"user_id": "u1"})
    b = await call(client, "POST", "/admin/keys", 201, json={"team_id": "t1", "is_admin": True})
    assert (await error(client, "POST", "/admin/keys", 400, json={"user_id": "ghost"}))["param"] == "user_id"

    ids = lambda body: [k["id"] for k in body["data"]]  # noqa: E731
    assert ids(await call(client, "GET", "/admin/keys?user_id=u1", 200)) == [a["id"]]
    assert ids(await call(client, "GET", "/admin/keys?team_id=t1", 200)) == [b["id"]]
    assert (await error(client, "GET", "/admin/keys?include_revoked=maybe", 400))["param"] == "include_revoked"
    assert (await error(client, "GET", "/admin/keys?colour=red", 400))["param"] == "colour"

    patched = await call(client, "PATCH", f"/admin/keys/{a['id']}", 200, json={
        "name": "renamed", "allowed_models": None, "tpm": 1000, "expires_at": None, "team_id": "t1",
    })
    assert (patched["name"], patched["tpm"], patched["team_id"]) == ("renamed", 1000, "t1")
    assert patched["updated_at"] >= a["updated_at"] and changes[-1] == "keys"
    await error(client, "PATCH", f"/admin/keys/{a['id']}", 400, json={"team_id": "ghost"})
    await error(client, "PATCH", "/admin/keys/k_0000000000000000", 404, json={})
    await error(client, "GET", "/admin/keys/k_0000000000000000", 404)

    revoked = await call(client, "DELETE", f"/admin/keys/{a['id']}", 200)
    assert revoked["revoked_at"] is not None and changes[-1] == "keys"
    again = await call(client, "DELETE", f"/admin/keys/{a['id']}", 200)
    assert again["revoked_at"] == revoked["revoked_at"]
    assert ids(await call(client, "GET", "/admin/keys", 200)) == [b["id"]]
    assert set(ids(await call(client, "GET", "/admin/keys?include_revoked=true", 200))) == {a["id"], b["id"]}
    await error(client, "DELETE", "/admin/keys/k_0000000000000000", 404)


# -- budgets --------------------------------------------------------------------------------------
async def test_budgets(client: Any, changes: list[str]) -> None:
    await call(client, "POST", "/admin/teams", 201, json={"id": "t1", "name": "T1"})
    created = await call(client, "PUT", "/admin/budgets/team:t1", 201, json={"max_budget": 50, "period": "monthly"})
    assert (created["scope"], created["subject_id"], created["max_budget"]) == ("team", "t1", 50)
    assert changes[-1] == "budgets:team:t1"
    replaced = await call(client, "PUT", "/admin/budgets/team:t1", 200, json={"max_budget": 75.5, "period": "daily"})
    assert (replaced["max_budget"], replaced["period"]) == (75.5, "daily")
    await call(client, "PUT", "/admin/budgets/global", 201, json={"max_budget": 1000, "period": "total"})
    assert changes[-1] == "budgets:global"

    listed = await call(client, "GET", "/admin/budgets", 200)
    assert [b["id"] for b in listed["data"]] == ["global", "team:t1"]
    assert (await call(client, "GET", "/admin/budgets/team:t1", 200))["period"] == "daily"

    err = await error(client, "PUT", "/admin/budgets/user:ghost", 400, json={"max_budget": 1, "period": "daily"})
    assert err["code"] == "unknown_reference"
    assert (await error(client, "PUT", "/admin/budgets/org:x", 400, json={"max_budget": 1, "period": "daily"}))[
        "param"] == "budget_id"
    await error(client, "GET", "/admin/budgets/user:ghost", 404)
    await error(client, "GET", "/admin/budgets/nonsense", 404)
    await error(client, "DELETE", "/admin/teams/a%00b", 404)

    assert (await call(client, "DELETE", "/admin/budgets/team:t1", 200))["id"] == "team:t1"
    assert changes[-1] == "budgets:team:t1"
    await error(client, "DELETE", "/admin/budgets/team:t1", 404)


# -- rate limits ----------------------------------------------------------------------------------
async def test_rate_limits(client: Any, changes: list[str]) -> None:
    await call(client, "POST", "/admin/teams", 201, json={"id": "t1", "name": "T1"})
    await call(client, "POST", "/admin/users", 201, json={"id": "u1"})
    key = await call(client, "POST", "/admin/keys", 201, json={})
    empty = await call(client, "GET", "/admin/rate-limits", 200)
    assert empty["global"] == {"rpm": 0, "tpm": 100000} and empty["default_key"] == {"rpm": 60, "tpm": 0}
    assert empty["data"] == []

    for scope, subject, change in (("team", "t1", "teams"), ("user", "u1", "users"), ("key", key["id"], "keys")):
        row = await call(client, "PUT", f"/admin/rate-limits/{scope}/{subject}", 200, json={"rpm": 10, "tpm": None})
        assert row == {"scope": scope, "subject_id": subject, "rpm": 10, "tpm": None}
        assert changes[-1] == change
    listed = await call(client, "GET", "/admin/rate-limits", 200)
    assert [(r["scope"], r["subject_id"]) for r in listed["data"]] == [("team", "t1"), ("user", "u1"),
                                                                       ("key", key["id"])]
    assert (await call(client, "GET", f"/admin/keys/{key['id']}", 200))["rpm"] == 10

    await call(client, "PUT", "/admin/rate-limits/user/u1", 200, json={"rpm": None, "tpm": None})
    assert [r["scope"] for r in (await call(client, "GET", "/admin/rate-limits", 200))["data"]] == ["team", "key"]
    await error(client, "PUT", "/admin/rate-limits/user/ghost", 404, json={"rpm": 1, "tpm": 1})
    await error(client, "PUT", "/admin/rate-limits/org/t1", 404, json={"rpm": 1, "tpm": 1})
    assert (await error(client, "PUT", "/admin/rate-limits/team/t1", 400, json={"rpm": 1.5, "tpm": 1}))["param"] \
        == "rpm"


# -- usage ----------------------------------------------------------------------------------------
def _usage(n: int, at: datetime, key: str | None, model: str, cost: float, status: int = 200) -> dict[str, Any]:
    return {
        "id": f"c{n}", "request_id": f"r{n}", "created_at": at, "key_id": key, "user_id": "u1", "team_id": None,
        "provider": "openai", "model": model, "endpoint": "/v1/chat/completions", "status": status,
        "input_tokens": 10 * n, "output_tokens": n, "cost": cost,
    }


@pytest.fixture
async def usage_rows(db: Any) -> None:
    async with db.begin() as conn:
        await conn.execute(insert(usage_records), [
            _usage(1, datetime(2026, 3, 1, 10, tzinfo=UTC), "k1", "gpt-4o", 0.5),
            _usage(2, datetime(2026, 3, 1, 11, tzinfo=UTC), "k1", "gpt-4o-mini", 0.25),
            _usage(3, datetime(2026, 3, 2, 9, tzinfo=UTC), "k2", "gpt-4o", 1.0, status=500),
            _usage(4, datetime(2026, 4, 1, 0, tzinfo=UTC), "k2", "gpt-4o", 9.0),
        ])


async def test_usage_report_json(client: Any, usage_rows: None) -> None:
    report = await call(client, "GET", "/admin/usage?start=2026-03-01&end=2026-04-01&group_by=key,model", 200)
    assert report["object"] == "usage_report" and report["group_by"] == ["key", "model"]
    assert report["start"] == "2026-03-01T00:00:00.000000Z" and report["end"] == "2026-04-01T00:00:00.000000Z"
    rows = [(r["key_id"], r["model"], r["requests"], r["input_tokens"], r["cost"], r["errors"])
            for r in report["data"]]
    assert rows == [("k1", "gpt-4o", 1, 10, 0.5, 0), ("k1", "gpt-4o-mini", 1, 20, 0.25, 0),
                    ("k2", "gpt-4o", 1, 30, 1.0, 1)]
    by_day = await call(client, "GET", "/admin/usage?start=2026-03-01T00:00:00Z&end=2026-05-01&group_by=day"
                                       "&model=gpt-4o", 200)
    assert [(r["day"], r["requests"]) for r in by_day["data"]] == [("2026-03-01", 1), ("2026-03-02", 1),
                                                                   ("2026-04-01", 1)]
    default = await call(client, "GET", "/admin/usage", 200)  # the current month: none of these rows
    assert default["group_by"] == ["model"] and default["data"] == []
    assert (await error(client, "GET", "/admin/usage?group_by=colour", 400))["param"] == "group_by"
    assert (await error(client, "GET", "/admin/usage?start=yesterday", 400))["param"] == "start"
    assert (await error(client, "GET", "/admin/usage?format=xml", 400))["param"] == "format"


async def test_usage_report_csv(client: Any, usage_rows: None) -> None:
    resp = await client.get("/admin/usage?start=2026-03-01&end=2026-04-01&group_by=model&format=csv")
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="usage-20260301-20260401.csv"'
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [(r["model"], r["requests"], float(r["cost"])) for r in table] == [("gpt-4o", "2", 1.5),
                                                                             ("gpt-4o-mini", "1", 0.25)]


async def test_usage_records(client: Any, usage_rows: None) -> None:
    page = await call(client, "GET", "/admin/usage/records?start=2026-01-01&end=2027-01-01&limit=2", 200)
    assert page["object"] == "list" and (page["limit"], page["offset"]) == (2, 0)
    assert [r["id"] for r in page["data"]] == ["c4", "c3"]
    assert page["data"][0]["created_at"] == "2026-04-01T00:00:00.000000Z"
    rest = await call(client, "GET", "/admin/usage/records?start=2026-01-01&end=2027-01-01&limit=2&offset=2", 200)
    assert [r["id"] for r in rest["data"]] == ["c2", "c1"]
    only = await call(client, "GET", "/admin/usage/records?start=2026-01-01&end=2027-01-01&key=k1", 200)
    assert {r["key_id"] for r in only["data"]} == {"k1"} and len(only["data"]) == 2
    assert (await error(client, "GET", "/admin/usage/records?limit=1001", 400))["param"] == "limit"
    assert (await error(client, "GET", "/admin/usage/records?offset=-1", 400))["param"] == "offset"


async def test_openapi_document(client: Any) -> None:
    doc = await call(client, "GET", "/admin/openapi.json", 200)
    assert doc["openapi"] == "3.1.0" and set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "/admin/rate-limits/{scope}/{subject_id}" in doc["paths"]
    assert doc["paths"]["/admin/keys"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/KeyCreated"}


# -- usage over time ------------------------------------------------------------------------------
async def test_usage_timeseries(client: Any, usage_rows: None) -> None:
    series = await call(client, "GET", "/admin/usage/timeseries?start=2026-03-01&end=2026-04-01", 200)
    assert series["object"] == "usage_timeseries" and series["bucket"] == "day"  # 31 days: daily by default
    assert series["start"] == "2026-03-01T00:00:00.000000Z" and series["end"] == "2026-04-01T00:00:00.000000Z"
    assert series["points"] == [
        {"t": "2026-03-01T00:00:00.000000Z", "requests": 2, "errors": 0, "input_tokens": 30, "output_tokens": 3,
         "cost_usd": "0.750000000", "latency_ms_p50": 0.0, "latency_ms_p99": 0.0, "ttfb_ms_p50": None,
         "ttfb_ms_p99": None},
        {"t": "2026-03-02T00:00:00.000000Z", "requests": 1, "errors": 1, "input_tokens": 30, "output_tokens": 3,
         "cost_usd": "1.000000000", "latency_ms_p50": 0.0, "latency_ms_p99": 0.0, "ttfb_ms_p50": None,
         "ttfb_ms_p99": None},
    ]
    hourly = await call(client, "GET", "/admin/usage/timeseries?start=2026-03-01T00:00:00Z&end=2026-03-03", 200)
    assert hourly["bucket"] == "hour"
    assert [(p["t"], p["requests"]) for p in hourly["points"]] == [
        ("2026-03-01T10:00:00.000000Z", 1), ("2026-03-01T11:00:00.000000Z", 1), ("2026-03-02T09:00:00.000000Z", 1)]
    minutes = await call(client, "GET", "/admin/usage/timeseries?start=2026-03-01T09:00:00Z"
                                        "&end=2026-03-01T11:00:00%2B00:00", 200)
    assert minutes["bucket"] == "minute" and [p["t"] for p in minutes["points"]] == ["2026-03-01T10:00:00.000000Z"]
    only = await call(client, "GET", "/admin/usage/timeseries?start=2026-01-01&end=2027-01-01&bucket=day"
                                     "&key=k2&model=gpt-4o&provider=openai&user=u1", 200)
    assert [(p["t"], p["requests"]) for p in only["points"]] == [("2026-03-02T00:00:00.000000Z", 1),
                                                                 ("2026-04-01T00:00:00.000000Z", 1)]
    nobody = await call(client, "GET", "/admin/usage/timeseries?start=2026-01-01&end=2027-01-01&team=t9", 200)
    assert nobody["points"] == []
    default = await call(client, "GET", "/admin/usage/timeseries", 200)  # the current month: none of these rows
    assert default["bucket"] == "day" and default["points"] == []
    for query, param in [
        ("bucket=week", "bucket"), ("bucket=", "bucket"), ("start=yesterday", "start"), ("end=2026-13-01", "end"),
        ("start=2026-03-01T25:00:00Z", "start"), ("key_id=k1", "key_id"), ("model=", "model"),
    ]:
        body = await error(client, "GET", f"/admin/usage/timeseries?{query}", 400)
        assert body["type"] == "invalid_request_error" and body["param"] == param, (query, body)


async def test_usage_timeseries_through_the_gateway(make_gateway: Any, tmp_path: Any) -> None:
    from tests.support.governed import MASTER, Admin, governed_config, mock_provider  # noqa: PLC0415

    url = f"sqlite+aiosqlite:///{tmp_path / 'series.db'}"
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER},
                                 extra=governed_config(url))
    admin = Admin(gateway)
    key = await admin.key()
    chat = {"model": "mock/m", "messages": [{"role": "user", "content": "Hi."}], "max_tokens": 10}
    async with gateway.http.post("v1/chat/completions", json=chat,
                                 headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200
    series: dict[str, Any] = {"points": []}
    for _ in range(100):  # the usage writer flushes every 20 ms
        series = await admin.call("GET", "admin/usage/timeseries?bucket=hour", expect=200)
        if series["points"]:
            break
        await asyncio.sleep(0.05)
    assert series["bucket"] == "hour"
    (point,) = series["points"]
    assert point["requests"] == 1 and point["errors"] == 0 and point["input_tokens"] > 0
    assert Decimal(point["cost_usd"]) > 0 and point["latency_ms_p50"] == point["latency_ms_p99"] > 0
    assert point["t"].endswith(":00:00.000000Z")
    for headers, status, kind in [
        ({}, 401, "authentication_error"),
        ({"Authorization": "Bearer sk-not-a-key"}, 401, "authentication_error"),
        ({"Authorization": f"Bearer {key}"}, 403, "permission_error"),  # a key, but not an admin one
    ]:
        async with gateway.http.get("admin/usage/timeseries", headers=headers) as resp:
            body = await resp.json()
            assert resp.status == status and body["error"]["type"] == kind, (headers, body)
    bad = await admin.call("GET", "admin/usage/timeseries?bucket=fortnight", expect=400)
    assert bad["error"]["param"] == "bucket"
