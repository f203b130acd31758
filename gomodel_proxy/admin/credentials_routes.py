"""``POST /admin/credentials/reload``: read providers' keys from the credential store again, now.

Answers each provider's key fingerprints (first 8 hex digits of a key's SHA-256; never a key), their
count, and what changed; a provider whose read failed keeps its keys and carries the ``error``. The next
request uses the reloaded keys. Needs an admin caller (the master key, or an admin's key), as every
``/admin/*`` route; registered when ``features.admin_api`` is on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from gomodel_proxy.core.errors import GatewayError, PermissionDeniedError

if TYPE_CHECKING:
    from gomodel_proxy.credentials.manager import CredentialManager

PATH = "/admin/credentials/reload"
Authorize = Callable[[web.Request], bool]


def _default_authorize(request: web.Request) -> bool:
    from gomodel_proxy.server.state import CALL  # noqa: PLC0415 - the server imports this module

    return request[CALL].principal.is_admin


def _default_manager(request: web.Request) -> CredentialManager | None:
    from gomodel_proxy.server.state import STATE  # noqa: PLC0415

    manager: CredentialManager | None = getattr(request.app[STATE], "credentials", None)
    return manager


def make_handler(manager: CredentialManager | None = None, authorize: Authorize | None = None
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
    allow = authorize or _default_authorize

    async def reload_credentials(request: web.Request) -> web.Response:
        if not allow(request):
            raise PermissionDeniedError("this key may not use the admin API")
        target = manager if manager is not None else _default_manager(request)
        if target is None:
            raise GatewayError("credential reloading is not set up on this gateway", status=503,
                               error_type="server_error", code="credentials_unavailable")
        reports = await target.reload()
        body = {
            "object": "credentials_reload",
            "source": target.source,
            "ok": not any(r.error for r in reports),
            "providers": [r.as_dict() for r in reports],
        }
        return web.Response(text=json.dumps(body), content_type="application/json")

    return reload_credentials


def add_routes(app: web.Application, manager: CredentialManager | None = None,
               authorize: Authorize | None = None) -> None:
    """Register ``POST /admin/credentials/reload`` (``manager``: else the gateway's ``state.credentials``)."""
    app.router.add_post(PATH, make_handler(manager, authorize))
