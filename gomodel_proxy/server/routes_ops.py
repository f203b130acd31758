"""Operational routes: liveness, readiness and Prometheus metrics (open without the master key)."""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gomodel_proxy.server.state import STATE

_OK = orjson.dumps({"status": "ok"})


async def health(_: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    registry = request.app[STATE].registry
    is_ready = registry.ready.is_set()
    body = {"status": "ready" if is_ready else "starting", "providers": dict(registry.status)}
    return web.Response(status=200 if is_ready else 503, body=orjson.dumps(body), content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[STATE].metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    for path in ("/health", "/healthz", "/live"):
        app.router.add_get(path, health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
