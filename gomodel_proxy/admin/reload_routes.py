"""``POST /admin/reload``: reload the configuration (as SIGHUP does) and answer with what happened.

Registered on every gateway (it needs no database, unlike the rest of the admin API); only the master key
(or a token with the admin claim) may use it. 200 with what changed live and what needs a restart, or 422
with the problems (``file:line:col``) when the files were refused and the running configuration kept.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gomodel_proxy.core.errors import PermissionDeniedError
from gomodel_proxy.server.reload import RELOADER
from gomodel_proxy.server.state import CALL


async def reload_config(request: web.Request) -> web.Response:
    if not request[CALL].principal.is_admin:
        raise PermissionDeniedError(
            "reloading the configuration needs the master key (server.master_key) or an admin token"
        )
    result = await request.app[RELOADER].reload("POST /admin/reload")
    body = result.as_json()
    status = 200
    if result.status == "refused":
        status = 422
        body["error"] = {
            "message": f"the configuration was refused ({len(result.problems)} problem(s)); the running "
                       "configuration is kept: " + "; ".join(result.problems)[:2000],
            "type": "invalid_request_error", "param": None, "code": "config_invalid",
        }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/reload", reload_config)
