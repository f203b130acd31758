"""``GET /admin/audit``: the audit trail read back from its store (``file`` or ``postgres``).

Filters: ``start``/``end`` (RFC 3339 or YYYY-MM-DD; start inclusive, end exclusive), ``key_id``, ``model``
(asked for or answered), ``status``, ``kind`` and ``request_id``; newest first, ``limit`` per page (at
most 1000), and ``cursor`` (the previous page's ``next_cursor``) for the next one: pages neither overlap
nor skip entries written meanwhile. A gateway whose audit store cannot be read back (``noop``, or a sink
read elsewhere: MongoDB, Elasticsearch, Datadog) answers 404 saying so.

Admin only, like every ``/admin`` route (``authorize``); the query is validated against the OpenAPI
document's ``AuditQuery`` schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
from aiohttp import web

from gomodel_proxy.admin import openapi
from gomodel_proxy.admin.routes import parse_time
from gomodel_proxy.audit.query import AuditQuery, QueryableSink, decode_cursor, encode_cursor
from gomodel_proxy.core.errors import InvalidRequestError, NotFoundError, PermissionDeniedError

_VALIDATE = fastjsonschema.compile(openapi.SCHEMAS["AuditQuery"])
_INTEGER = re.compile(r"-?\d{1,18}")


class AuditRoutes:
    def __init__(self, sink: Any, authorize: Callable[[web.Request], bool]) -> None:
        self.sink: QueryableSink | None = sink if callable(getattr(sink, "query", None)) else None
        self.backend = getattr(sink, "name", "noop") if sink is not None else "noop"
        self.authorize = authorize

    async def list_entries(self, request: web.Request) -> web.Response:
        if not self.authorize(request):
            raise PermissionDeniedError("this key may not use the admin API")
        q = _parse(request)
        if self.sink is None:
            raise NotFoundError(f"the audit trail cannot be read back here (audit.backend: {self.backend}); "
                                "GET /admin/audit reads the 'file' and 'postgres' stores")
        found = await self.sink.query(q)
        page = found[:q.limit]
        more = len(found) > q.limit
        body = {"object": "list", "data": page, "limit": q.limit, "has_more": more,
                "next_cursor": encode_cursor(page[-1]) if more and page else None}
        return web.Response(body=orjson.dumps(body), content_type="application/json")


def _parse(request: web.Request) -> AuditQuery:
    props = openapi.SCHEMAS["AuditQuery"]["properties"]
    data: dict[str, Any] = {}
    for name in request.query:
        value: Any = request.query[name]
        if props.get(name, {}).get("type") == "integer" and _INTEGER.fullmatch(value):
            value = int(value)
        data[name] = value
    try:
        data = _VALIDATE(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        param = (exc.name or "data").removeprefix("data").lstrip(".") or None
        if exc.rule == "additionalProperties":
            unknown = sorted(k for k in data if k not in props)
            param = unknown[0] if unknown else param
            raise InvalidRequestError(f"unknown query parameter '{param}'", param=param) from None
        message = exc.message
        if message.startswith("data"):
            message = (param or "query") + message[4:]
        raise InvalidRequestError(message, param=param) from None
    start = parse_time(data["start"], "start", allow_date=True).timestamp() if "start" in data else None
    end = parse_time(data["end"], "end", allow_date=True).timestamp() if "end" in data else None
    after = None
    if "cursor" in data:
        try:
            after = decode_cursor(data["cursor"])
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="cursor") from None
    return AuditQuery(start=start, end=end, key_id=data.get("key_id"), model=data.get("model"),
                      status=data.get("status"), kind=data.get("kind"), request_id=data.get("request_id"),
                      limit=data.get("limit", 100), after=after)


def add_routes(app: web.Application, sink: Any, *, authorize: Callable[[web.Request], bool]) -> None:
    """Register ``GET /admin/audit`` reading ``sink`` (the audit logger's; ``None``: audit is off)."""
    routes = AuditRoutes(sink, authorize)
    app.router.add_get("/admin/audit", routes.list_entries)
