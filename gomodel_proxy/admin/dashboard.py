"""The operators' dashboard: its page and assets (shipped in the package), and its sign-in.

- ``GET /admin/dashboard`` redirects to ``dashboard/`` (relative, so it works under a proxy's base path), which
  serves the shell ``index.html``; ``GET /admin/dashboard/assets/{name}`` serves the files of
  ``dashboard_static/`` (only those, read once). These need no credential: the page shows the sign-in form.
- ``POST /admin/dashboard/session`` with ``{"key": "..."}``: the key checked by the gateway's authenticator
  (the master key or an admin virtual key: role ``admin``; another valid key: 403; none: 401) starts a session
  (``admin.sessions``, a signed cookie) and answers it: role, subject, CSRF nonce, expiry. The key is never
  echoed. ``GET`` answers the current session (401 without one), ``DELETE`` ends it (the cookie cleared).

The page uses only relative URLs and no external resource; its Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gomodel_proxy.admin import sessions
from gomodel_proxy.core.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from gomodel_proxy.middleware.auth import DASHBOARD, DASHBOARD_SESSION, Authenticator
from gomodel_proxy.server.state import STATE

STATIC_DIR = Path(__file__).parent / "dashboard_static"
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[a-z]{2,4}$")
#: Longest key accepted at sign-in (virtual keys and the master key are far shorter; JWTs may be long).
_MAX_KEY = 8192
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: The page and its assets are revalidated on every load (by ETag): a new gateway's page is picked up at once.
_CACHE_CONTROL = "no-cache"


@dataclass(slots=True, frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(folder: Path = STATIC_DIR) -> dict[str, Asset]:
    """The files of ``folder`` the dashboard serves, by name (read once, at start-up: a few kilobytes)."""
    assets: dict[str, Asset] = {}
    if not folder.is_dir():
        return assets
    for path in sorted(folder.iterdir()):
        content_type = _CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None and _NAME.match(path.name):
            body = path.read_bytes()
            assets[path.name] = Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


ASSETS: web.AppKey[dict[str, Asset]] = web.AppKey("gomodel_dashboard_assets", dict)


def _serve(request: web.Request, asset: Asset) -> web.Response:
    headers = {"Cache-Control": _CACHE_CONTROL, "ETag": asset.etag, **_SECURITY_HEADERS}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={"Content-Type": asset.content_type, **headers})


async def redirect_to_shell(request: web.Request) -> web.Response:
    # Relative: under a proxy's base path (/gw/admin/dashboard) the browser stays under it.
    return web.Response(status=302, headers={"Location": "dashboard/", "Cache-Control": _CACHE_CONTROL})


async def shell(request: web.Request) -> web.Response:
    asset = request.app[ASSETS].get("index.html")
    if asset is None:
        raise web.HTTPNotFound()
    return _serve(request, asset)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    found = request.app[ASSETS].get(name) if _NAME.match(name) and name != "index.html" else None
    if found is None:
        raise web.HTTPNotFound()
    return _serve(request, found)


# -- the session -----------------------------------------------------------------------------------
def _session_response(session: sessions.Session, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(session.to_json()), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _master_key(request: web.Request) -> str:
    """The key sessions are signed with: the master key the edge authenticates with."""
    authenticator = request.app[STATE].authenticator
    master = authenticator.master_key if authenticator is not None else None
    if not master:  # the routes are registered only with a master key
        raise AuthenticationError("The dashboard needs the gateway's master key (server.master_key).")
    return master


async def sign_in(request: web.Request) -> web.Response:
    """Check the key in the body; start a session for an admin's."""
    if request.content_type != "application/json":  # no cross-site form may post it (no CORS preflight)
        raise InvalidRequestError("the body must be JSON (Content-Type: application/json): {\"key\": \"...\"}")
    try:
        data: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body must be a JSON object: {\"key\": \"...\"}") from None
    key = data.get("key") if isinstance(data, dict) else None
    if not isinstance(key, str) or not key.strip() or len(key) > _MAX_KEY:
        raise InvalidRequestError("'key' must be the gateway's master key or an admin's virtual key",
                                  param="key")
    master = _master_key(request)
    authenticator: Authenticator | None = request.app[STATE].authenticator
    assert authenticator is not None  # _master_key found it
    principal = await authenticator.authenticate_key(key.strip())
    if not principal.is_admin or principal.kind not in ("master", "key") or (
            principal.kind == "key" and not principal.key_id):
        raise PermissionDeniedError("not an admin key: the dashboard needs the master key or an admin's key",
                                    code="not_admin")
    subject = sessions.MASTER_SUBJECT if principal.kind == "master" else f"{sessions.KEY_SUBJECT}{principal.key_id}"
    session = sessions.new_session("admin", subject)
    response = _session_response(session)
    sessions.set_cookie(response, request, session, master)
    return response


async def current_session(request: web.Request) -> web.Response:
    session = request.get(sessions.SESSION)
    if session is None:  # authenticated by a key, not by the cookie: there is no session to show
        session = sessions.from_request(request, _master_key(request))
    if session is None:
        raise AuthenticationError("No dashboard session: sign in.", code="no_session")
    return _session_response(session)


async def sign_out(request: web.Request) -> web.Response:
    response = web.Response(status=204, headers={"Cache-Control": "no-store"})
    sessions.clear_cookie(response, request)
    return response


def add_routes(app: web.Application) -> None:
    """Register the dashboard's routes (with ``features.admin_api`` and a master key)."""
    app[ASSETS] = load_assets()
    app.router.add_get(DASHBOARD, redirect_to_shell)
    app.router.add_get(DASHBOARD + "/", shell)
    app.router.add_get(DASHBOARD + "/assets/{name}", asset)
    app.router.add_post(DASHBOARD_SESSION, sign_in)
    app.router.add_get(DASHBOARD_SESSION, current_session)
    app.router.add_delete(DASHBOARD_SESSION, sign_out)
