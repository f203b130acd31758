"""The admin API (``/admin/*``): teams, users, virtual keys, budgets, rate limits and usage.

Registered on the gateway's own application (``add_routes``), so the edge middleware renders every
``GatewayError`` raised here as OpenAI error JSON. Each route first asks ``AdminContext.authorize``
whether the caller may use it, validates its body and query against the OpenAPI document's component
schemas (``openapi.SCHEMAS``, compiled once), and after a successful change awaits
``AdminContext.on_change`` so the gateway refreshes its caches at once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, cast

import fastjsonschema
from aiohttp import web

from gomodel_proxy.admin import openapi
from gomodel_proxy.billing import export, timeseries
from gomodel_proxy.config.schema import RateLimitsConfig
from gomodel_proxy.core.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from gomodel_proxy.storage import repository as repo
from gomodel_proxy.storage.database import Database

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class AdminContext:
    """What the admin routes need from the gateway."""

    db: Database
    #: Awaited after every change: "keys", "users", "teams" or "budgets:<budget id>".
    on_change: Callable[[str], Awaitable[None]]
    #: The configured global and default-key limits, shown by ``GET /admin/rate-limits``.
    rate_limits: RateLimitsConfig
    #: Whether the request's caller may use the admin API.
    authorize: Callable[[web.Request], bool]


ADMIN: web.AppKey[AdminContext] = web.AppKey("gomodel_admin", AdminContext)

@functools.cache
def _validator(name: str) -> Callable[[Any], Any]:
    """The validator of a request body or query schema, compiled on first use (the schemas hold no
    ``$ref``); compiling all of them at import would add tens of milliseconds to every start."""
    return fastjsonschema.compile(openapi.SCHEMAS[name])

_ID = re.compile(openapi.ID_PATTERN)
_BUDGET_ID = re.compile(openapi.BUDGET_ID_PATTERN)


# -- validation -----------------------------------------------------------------------------------
def _validate(schema: str, data: Any) -> dict[str, Any]:
    """``data`` checked against the component ``schema``: 400 naming the offending field otherwise."""
    try:
        out = _validator(schema)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        param: str | None = (exc.name or "data").removeprefix("data").lstrip(".") or None
        message = exc.message
        if exc.rule == "additionalProperties" and isinstance(data, dict):
            known = openapi.SCHEMAS[schema]["properties"]
            unknown = sorted(k for k in data if k not in known)
            if unknown:
                param = unknown[0]
                message = f"unknown field '{param}'"
        elif message.startswith("data"):
            message = (param or "body") + message[4:]
        raise InvalidRequestError(message, param=param) from None
    result: dict[str, Any] = out
    for name in ("rpm", "tpm"):  # JSON's 5.0 is an integer to JSON Schema, not to the database
        if isinstance(result.get(name), float):
            result[name] = int(result[name])
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _body(request: web.Request, schema: str) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidRequestError("the body must be a JSON object") from None
    return _validate(schema, data)


def _query(request: web.Request, schema: str) -> dict[str, Any]:
    """The query string as the component ``schema`` types it (integers and booleans converted)."""
    props = openapi.SCHEMAS[schema]["properties"]
    data: dict[str, Any] = {}
    for name in request.query:
        value: Any = request.query[name]
        kind = props.get(name, {}).get("type")
        if kind == "integer" and re.fullmatch(r"-?\d{1,18}", value):
            value = int(value)
        elif kind == "boolean" and value.lower() in ("true", "false", "1", "0"):
            value = value.lower() in ("true", "1")
        data[name] = value
    return _validate(schema, data)


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def parse_time(value: str, param: str, *, allow_date: bool = False) -> datetime:
    """An RFC 3339 date-time (or, with ``allow_date``, YYYY-MM-DD: midnight UTC) as an aware UTC datetime.

    A leap second becomes :59; a time beyond what ``datetime`` holds once in UTC is clamped to its range.
    """
    m = _RFC3339.fullmatch(value)
    try:
        if m is None:
            d = _DATE.fullmatch(value) if allow_date else None
            if d is None:
                raise ValueError(value)
            return datetime(int(d[1]), int(d[2]), int(d[3]), tzinfo=UTC)
        tz = UTC
        if m[8] is None:
            sign = 1 if m[9] == "+" else -1
            tz = timezone(sign * timedelta(hours=int(m[10]), minutes=int(m[11])))
        micro = int((m[7] or "0")[:6].ljust(6, "0"))
        moment = datetime(
            int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), min(int(m[6]), 59), micro, tzinfo=tz
        )
    except ValueError:
        expected = "an RFC 3339 date-time or YYYY-MM-DD" if allow_date else "an RFC 3339 date-time"
        raise InvalidRequestError(f"{param} must be {expected}", param=param) from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.max if moment.year > 1 else datetime.min).replace(tzinfo=UTC)


def format_time(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# -- rendering ------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, default=_plain), content_type="application/json")


def _list(items: list[dict[str, Any]]) -> web.Response:
    return _json({"object": "list", "data": items})


def team_json(row: repo.TeamRow) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "rpm": row.rpm, "tpm": row.tpm, "metadata": dict(row.metadata),
        "created_at": format_time(row.created_at), "updated_at": format_time(row.updated_at),
    }


def user_json(row: repo.UserRow) -> dict[str, Any]:
    return {
        "id": row.id, "email": row.email, "name": row.name, "team_id": row.team_id, "is_admin": row.is_admin,
        "rpm": row.rpm, "tpm": row.tpm, "metadata": dict(row.metadata),
        "created_at": format_time(row.created_at), "updated_at": format_time(row.updated_at),
    }


def key_json(row: repo.KeyRow) -> dict[str, Any]:
    """A key's record: its prefix, never its hash (nor, of course, the key)."""
    return {
        "id": row.id, "key_prefix": row.key_prefix, "name": row.name, "user_id": row.user_id,
        "team_id": row.team_id, "is_admin": row.is_admin,
        "allowed_models": None if row.allowed_models is None else list(row.allowed_models),
        "rpm": row.rpm, "tpm": row.tpm, "expires_at": format_time(row.expires_at),
        "revoked_at": format_time(row.revoked_at), "metadata": dict(row.metadata),
        "created_at": format_time(row.created_at), "updated_at": format_time(row.updated_at),
    }


def budget_json(row: repo.BudgetRow) -> dict[str, Any]:
    return {
        "id": row.id, "scope": row.scope, "subject_id": row.subject_id, "max_budget": row.max_budget,
        "period": row.period, "created_at": format_time(row.created_at), "updated_at": format_time(row.updated_at),
    }


def spend_json(row: repo.BudgetRow, spend: tuple[Decimal, Decimal] | None) -> dict[str, str | None]:
    """``used`` (spent in the current period), ``reserved`` (held by calls in flight) and ``remaining`` as
    decimal strings; all ``null`` when ``spend`` is ``None`` (the gateway keeps no budget ledger)."""
    if spend is None:
        return {"used": None, "reserved": None, "remaining": None}
    spent, reserved = spend
    left = max(Decimal(0), Decimal(str(row.max_budget)) - spent - reserved)
    return {"used": _decimal(spent), "reserved": _decimal(reserved), "remaining": _decimal(left)}


def _decimal(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return "0" if text in ("0", "-0") else text


async def budget_spend(request: web.Request, rows: list[repo.BudgetRow]) -> list[tuple[Decimal, Decimal] | None]:
    """What each budget has spent and holds in reserve in its current period, from the gateway's budget
    ledger (the one the budget step charges); ``None`` for each when the gateway keeps none (budgets off)."""
    from gomodel_proxy.billing.ledger import BudgetLimit  # noqa: PLC0415
    from gomodel_proxy.billing.periods import Period  # noqa: PLC0415
    from gomodel_proxy.server.state import STATE  # noqa: PLC0415 - the server imports this module

    state = request.app.get(STATE)
    ledger = getattr(getattr(state, "governance", None), "ledger", None)
    if ledger is None:
        return [None] * len(rows)
    limits = [BudgetLimit(r.id, Decimal(str(r.max_budget)), cast("Period", r.period)) for r in rows]
    found = await asyncio.gather(*(ledger.status(b) for b in limits), return_exceptions=True)
    # A ledger that cannot answer now (Redis down) leaves the figures out; the budgets are still listed.
    return [None if isinstance(f, BaseException) else f for f in found]


def _ctx(request: web.Request) -> AdminContext:
    return request.app[ADMIN]


def _path_id(request: web.Request, name: str, what: str) -> str:
    """A path id; one no record can have is a 404 without asking the database."""
    value = request.match_info[name]
    if not _ID.fullmatch(value):
        raise NotFoundError(f"no {what} '{value[:80]}'")
    return value


# -- teams ----------------------------------------------------------------------------------------
async def list_teams(request: web.Request) -> web.Response:
    return _list([team_json(t) for t in await repo.list_teams(_ctx(request).db)])


async def create_team(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, "TeamCreate")
    row = await repo.create_team(ctx.db, **body)
    await ctx.on_change("teams")
    return _json(team_json(row), status=201)


async def get_team(request: web.Request) -> web.Response:
    return _json(team_json(await repo.get_team(_ctx(request).db, _path_id(request, "team_id", "team"))))


async def update_team(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    team_id = _path_id(request, "team_id", "team")
    body = await _body(request, "TeamUpdate")
    row = await repo.update_team(ctx.db, team_id, body)
    await ctx.on_change("teams")
    return _json(team_json(row))


async def delete_team(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    row = await repo.delete_team(ctx.db, _path_id(request, "team_id", "team"))
    await ctx.on_change("teams")
    await ctx.on_change(f"budgets:team:{row.id}")
    return _json(team_json(row))


# -- users ----------------------------------------------------------------------------------------
async def list_users(request: web.Request) -> web.Response:
    return _list([user_json(u) for u in await repo.list_users(_ctx(request).db)])


async def create_user(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await _body(request, "UserCreate")
    row = await repo.create_user(ctx.db, **body)
    await ctx.on_change("users")
    return _json(user_json(row), status=201)


async def get_user(request: web.Request) -> web.Response:
    return _json(user_json(await repo.get_user(_ctx(request).db, _path_id(request, "user_id", "user"))))


async def update_user(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    user_id = _path_id(request, "user_id", "user")
    body = await _body(request, "UserUpdate")
    row = await repo.update_user(ctx.db, user_id, body)
    await ctx.on_change("users")
    return _json(user_json(row))


async def delete_user(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    row = await repo.delete_user(ctx.db, _path_id(request, "user_id", "user"))
    await ctx.on_change("users")
    await ctx.on_change(f"budgets:user:{row.id}")
    return _json(user_json(row))


# -- keys -----------------------------------------------------------------------------------------
def _key_times(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("expires_at") is not None:
        body["expires_at"] = parse_time(body["expires_at"], "expires_at")
    return body


async def list_keys(request: web.Request) -> web.Response:
    query = _query(request, "KeyListQuery")
    rows = await repo.list_keys(
        _ctx(request).db,
        user_id=query.get("user_id"),
        team_id=query.get("team_id"),
        include_revoked=bool(query.get("include_revoked", False)),
    )
    return _list([key_json(k) for k in rows])


async def create_key(request: web.Request) -> web.Response:
    """201 with the plaintext key: the only time it is shown (only its hash is stored)."""
    ctx = _ctx(request)
    body = _key_times(await _body(request, "KeyCreate"))
    max_budget = body.pop("max_budget", None)
    period = body.pop("budget_period", None) or "monthly"
    row, plaintext = await repo.create_key(ctx.db, **body)
    await ctx.on_change("keys")
    budget = None
    if max_budget is not None:
        budget, _ = await repo.put_budget(ctx.db, f"key:{row.id}", max_budget=float(max_budget), period=period)
        await ctx.on_change(f"budgets:{budget.id}")
    out = key_json(row)
    out["key"] = plaintext
    out["budget"] = None if budget is None else budget_json(budget)
    return _json(out, status=201)


async def get_key(request: web.Request) -> web.Response:
    return _json(key_json(await repo.get_key(_ctx(request).db, _path_id(request, "key_id", "key"))))


async def update_key(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    key_id = _path_id(request, "key_id", "key")
    body = _key_times(await _body(request, "KeyUpdate"))
    row = await repo.update_key(ctx.db, key_id, body)
    await ctx.on_change("keys")
    return _json(key_json(row))


async def revoke_key(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    row = await repo.revoke_key(ctx.db, _path_id(request, "key_id", "key"))
    await ctx.on_change("keys")
    return _json(key_json(row))


# -- budgets --------------------------------------------------------------------------------------
def _budget_id(request: web.Request, *, creating: bool = False) -> str:
    """The path's budget id: malformed, it is a 404 (or, when creating one, a 400)."""
    budget_id = request.match_info["budget_id"]
    if not _BUDGET_ID.fullmatch(budget_id):
        if creating:
            raise InvalidRequestError(
                f"budget id '{budget_id[:80]}' is not 'key:<id>', 'user:<id>', 'team:<id>' or 'global'",
                param="budget_id",
            )
        raise NotFoundError(f"no budget '{budget_id[:80]}'")
    return budget_id


async def list_budgets(request: web.Request) -> web.Response:
    rows = await repo.list_budgets(_ctx(request).db)
    spends = await budget_spend(request, rows)
    return _list([{**budget_json(b), **spend_json(b, s)} for b, s in zip(rows, spends, strict=True)])


async def get_budget(request: web.Request) -> web.Response:
    row = await repo.get_budget(_ctx(request).db, _budget_id(request))
    spend = (await budget_spend(request, [row]))[0]
    return _json({**budget_json(row), **spend_json(row, spend)})


async def put_budget(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    budget_id = _budget_id(request, creating=True)
    body = await _body(request, "BudgetPut")
    row, created = await repo.put_budget(
        ctx.db, budget_id, max_budget=float(body["max_budget"]), period=body["period"]
    )
    await ctx.on_change(f"budgets:{row.id}")
    return _json(budget_json(row), status=201 if created else 200)


async def delete_budget(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    row = await repo.delete_budget(ctx.db, _budget_id(request))
    await ctx.on_change(f"budgets:{row.id}")
    return _json(budget_json(row))


# -- rate limits ----------------------------------------------------------------------------------
async def list_rate_limits(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    limits = ctx.rate_limits
    rows = await repo.list_rate_limits(ctx.db)
    return _json({
        "object": "rate_limits",
        "global": {"rpm": limits.global_.rpm, "tpm": limits.global_.tpm},
        "default_key": {"rpm": limits.default_key.rpm, "tpm": limits.default_key.tpm},
        "data": [{"scope": r.scope, "subject_id": r.subject_id, "rpm": r.rpm, "tpm": r.tpm} for r in rows],
    })


_SCOPE_CHANGE = {"key": "keys", "user": "users", "team": "teams"}


async def put_rate_limit(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    scope = request.match_info["scope"]
    if scope not in _SCOPE_CHANGE:
        raise NotFoundError(f"no rate-limit scope '{scope[:80]}' (key, user or team)")
    subject = _path_id(request, "subject_id", scope)
    body = await _body(request, "RateLimitPut")
    row = await repo.set_rate_limit(ctx.db, scope, subject, rpm=body["rpm"], tpm=body["tpm"])
    await ctx.on_change(_SCOPE_CHANGE[scope])
    return _json({"scope": row.scope, "subject_id": row.subject_id, "rpm": row.rpm, "tpm": row.tpm})


# -- usage ----------------------------------------------------------------------------------------
_FILTER_NAMES = ("key", "user", "team", "model", "provider")


def _period(query: Mapping[str, Any], now: datetime | None = None) -> tuple[datetime, datetime]:
    """``start``/``end`` from the query; each defaults to its end of the current calendar month (UTC)."""
    now = now or datetime.now(UTC)
    month = datetime(now.year, now.month, 1, tzinfo=UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    start = parse_time(query["start"], "start", allow_date=True) if "start" in query else month
    end = parse_time(query["end"], "end", allow_date=True) if "end" in query else next_month
    return start, end


def _filters(query: Mapping[str, Any]) -> dict[str, str]:
    return {name: query[name] for name in _FILTER_NAMES if name in query}


async def usage_report(request: web.Request) -> web.Response:
    """Grouped usage as JSON, or CSV (``format=csv``) for a spreadsheet."""
    query = _query(request, "UsageQuery")
    start, end = _period(query)
    raw = query.get("group_by", "model")
    group_by = list(dict.fromkeys(g for g in raw.split(",") if g))
    try:
        rows = await export.usage_report(
            _ctx(request).db, start=start, end=end, group_by=group_by, filters=_filters(query)
        )
        columns = export.report_columns(group_by)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="group_by") from None
    if query.get("format") == "csv":
        name = f"usage-{start:%Y%m%d}-{end:%Y%m%d}.csv"
        return web.Response(
            text=export.to_csv(rows, columns), content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return _json({
        "object": "usage_report", "start": format_time(start), "end": format_time(end), "group_by": group_by,
        "data": rows,
    })


async def usage_records(request: web.Request) -> web.Response:
    query = _query(request, "UsageRecordsQuery")
    start, end = _period(query)
    limit, offset = int(query.get("limit", 100)), int(query.get("offset", 0))
    rows = await export.usage_records(
        _ctx(request).db, start=start, end=end, filters=_filters(query), limit=limit, offset=offset
    )
    return _json({"object": "list", "data": [_plain(r) for r in rows], "limit": limit, "offset": offset})


async def usage_timeseries(request: web.Request) -> web.Response:
    """Usage per minute, hour or day (aggregated in the database), for a chart."""
    query = _query(request, "UsageTimeseriesQuery")
    start, end = _period(query)
    bucket: timeseries.Bucket = query.get("bucket") or timeseries.default_bucket(start, end)
    points = await timeseries.usage_timeseries(_ctx(request).db, start=start, end=end, bucket=bucket,
                                               filters=_filters(query))
    for point in points:
        point["t"] = format_time(point["t"])
        point["cost_usd"] = format(point["cost_usd"], "f")  # a decimal string: money stays exact in JSON
    return _json({
        "object": "usage_timeseries", "start": format_time(start), "end": format_time(end), "bucket": bucket,
        "points": points,
    })


async def openapi_document(request: web.Request) -> web.Response:
    return _json(openapi.DOCUMENT)


# -- registration ---------------------------------------------------------------------------------
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/admin/teams", list_teams),
    ("POST", "/admin/teams", create_team),
    ("GET", "/admin/teams/{team_id}", get_team),
    ("PATCH", "/admin/teams/{team_id}", update_team),
    ("DELETE", "/admin/teams/{team_id}", delete_team),
    ("GET", "/admin/users", list_users),
    ("POST", "/admin/users", create_user),
    ("GET", "/admin/users/{user_id}", get_user),
    ("PATCH", "/admin/users/{user_id}", update_user),
    ("DELETE", "/admin/users/{user_id}", delete_user),
    ("GET", "/admin/keys", list_keys),
    ("POST", "/admin/keys", create_key),
    ("GET", "/admin/keys/{key_id}", get_key),
    ("PATCH", "/admin/keys/{key_id}", update_key),
    ("DELETE", "/admin/keys/{key_id}", revoke_key),
    ("GET", "/admin/budgets", list_budgets),
    ("GET", "/admin/budgets/{budget_id}", get_budget),
    ("PUT", "/admin/budgets/{budget_id}", put_budget),
    ("DELETE", "/admin/budgets/{budget_id}", delete_budget),
    ("GET", "/admin/rate-limits", list_rate_limits),
    ("PUT", "/admin/rate-limits/{scope}/{subject_id}", put_rate_limit),
    ("GET", "/admin/usage", usage_report),
    ("GET", "/admin/usage/records", usage_records),
    ("GET", "/admin/usage/timeseries", usage_timeseries),
    ("GET", "/admin/openapi.json", openapi_document),
)


def _guarded(handler: Handler) -> Handler:
    """``handler`` behind the admin check: 403 for a caller ``authorize`` refuses."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not request.app[ADMIN].authorize(request):
            raise PermissionDeniedError("this key may not use the admin API")
        return await handler(request)

    guarded.__name__ = guarded.__qualname__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


def add_routes(app: web.Application, ctx: AdminContext) -> None:
    """Register every ``/admin/*`` route on ``app`` (the gateway's own application, not a sub-app)."""
    app[ADMIN] = ctx
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, _guarded(handler))
