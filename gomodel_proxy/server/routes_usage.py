"""``GET /v1/usage``: a key holder's own usage, limits and budgets (the admin API sees everyone's).

The caller sees what its credential stands for: a virtual key its key's records, a JWT user its
user's, the master key (or an open gateway) the whole gateway's. Query: ``start``/``end`` (RFC 3339 or
``YYYY-MM-DD``; default: this calendar month) and ``group_by`` (``model`` by default; any of key,
user, team, model, provider, day).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from gomodel_proxy.billing.periods import period_bounds
from gomodel_proxy.core.errors import InvalidRequestError, ServiceUnavailableError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.middleware.budget import Budget
from gomodel_proxy.middleware.ratelimit import RateLimit
from gomodel_proxy.server.relay import json_response
from gomodel_proxy.server.state import STATE, call_of


def parse_time(value: str, name: str) -> datetime:
    """RFC 3339 (``Z`` or an offset; naive means UTC) or a bare date, as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z), got {value!r}.",
            param=name,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _filters(principal: Principal) -> dict[str, str]:
    if principal.key_id:
        return {"key": principal.key_id}
    if principal.user_id:
        return {"user": principal.user_id}
    if principal.team_id:
        return {"team": principal.team_id}
    return {}


def _money(value: Decimal) -> float:
    return float(round(value, 9))


async def own_usage(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "usage"
    state = request.app[STATE]
    gov = state.governance
    if gov.db is None:
        if gov.usage_later:
            raise ServiceUnavailableError("The usage store is still opening; retry in a moment.",
                                          code="usage_store_opening", headers={"Retry-After": "1"})
        raise ServiceUnavailableError(
            "Usage is not recorded on this gateway (features.usage_tracking is off).", code="usage_not_tracked"
        )
    from gomodel_proxy.billing import export  # noqa: PLC0415 - with the database, loaded after start-up
    now = datetime.now(UTC)
    query = request.query
    start = parse_time(query["start"], "start") if "start" in query else period_bounds("monthly", now)[0]
    end = parse_time(query["end"], "end") if "end" in query else now
    if end <= start:
        raise InvalidRequestError("'end' must be after 'start'.", param="end")
    group_by = [g for g in query.get("group_by", "model").split(",") if g]
    principal = call.principal
    try:
        rows = await export.usage_report(gov.db, start=start, end=end, group_by=group_by,
                                         filters=_filters(principal))
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="group_by") from None
    body: dict[str, Any] = {
        "object": "usage",
        "subject": {"kind": principal.kind, "key_id": principal.key_id, "user_id": principal.user_id,
                    "team_id": principal.team_id},
        "start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z"),
        "group_by": group_by, "data": rows, "rate_limits": [], "budgets": [],
    }
    for step in state.chain.middlewares:
        if isinstance(step, RateLimit):
            body["rate_limits"] = [{"name": lim.name, "rpm": lim.rpm or None, "tpm": lim.tpm or None}
                                   for lim in step.limits_for(principal)]
        elif isinstance(step, Budget):
            for budget in step.budgets_for(principal):
                spent, reserved = await step.ledger.status(budget)
                body["budgets"].append({
                    "id": budget.id, "max_budget": _money(budget.max_usd), "period": budget.period,
                    "spent": _money(spent), "reserved": _money(reserved),
                    "remaining": _money(max(Decimal(0), budget.max_usd - spent - reserved)),
                })
    return json_response(body, call)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/usage", own_usage)
