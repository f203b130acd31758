"""The operators' dashboard: its page and assets (shipped in the package), and its sign-in.

- ``GET /admin/dashboard`` redirects to ``dashboard/`` (relative, so it works under a proxy's base path), which
  serves the shell ``index.html``; ``GET /admin/dashboard/assets/{name}`` serves the files of
  ``dashboard_static/`` (only those, read once). These need no credential: the page shows the sign-in form.
- ``POST /admin/dashboard/session`` with ``{"key": "..."}``: the key checked by the gateway's authenticator
  (the master key or an admin virtual key: role ``admin``; another valid key: 403; none: 401) starts a session
  (``admin.sessions``, a signed cookie) and answers it: role, subject, CSRF nonce, expiry. The key is never
  echoed. ``GET`` answers the current session (401 without one), ``DELETE`` ends it (the cookie cleared).
- With ``dashboard.sso``: ``GET /admin/dashboard/sso`` tells the page whether to offer "Sign in with <name>";
  ``GET .../sso/login`` starts the OpenID Connect sign-in (``admin.oidc``: a 302 to the provider, the flow in
  a sealed cookie), ``GET .../sso/callback`` completes it into a session and sends the browser back to the
  page (``../``), or to ``../#sso-error=<denied|state|failed>``.
- Failed sign-ins are counted per client address (``admin.signin_limit``): too many, and the key sign-in and
  ``sso/login`` answer 429 with ``Retry-After`` (``code: too_many_sign_ins``) for a while.

The page uses only relative URLs and no external resource; its Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from gomodel_proxy.admin import sessions
from gomodel_proxy.admin.signin_limit import SignInLimiter, client_key
from gomodel_proxy.config.schema import SSOConfig
from gomodel_proxy.core.errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from gomodel_proxy.middleware.auth import (
    DASHBOARD,
    DASHBOARD_SESSION,
    DASHBOARD_SSO,
    DASHBOARD_SSO_CALLBACK,
    DASHBOARD_SSO_LOGIN,
    Authenticator,
)
from gomodel_proxy.server.state import CALL, STATE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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
    _check_limit(request)
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
    try:
        principal = await authenticator.authenticate_key(key.strip())
        if not principal.is_admin or principal.kind not in ("master", "key") or (
                principal.kind == "key" and not principal.key_id):
            raise PermissionDeniedError("not an admin key: the dashboard needs the master key or an admin's key",
                                        code="not_admin")
    except (AuthenticationError, PermissionDeniedError):
        request.app[SIGNIN_LIMIT].failed(client_key(request.remote))
        raise
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


# -- sign-in limits ------------------------------------------------------------------------------------
SIGNIN_LIMIT: web.AppKey[SignInLimiter] = web.AppKey("gomodel_dashboard_signin_limit", SignInLimiter)


class TooManySignIns(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    code = "too_many_sign_ins"


def _check_limit(request: web.Request) -> None:
    """429 (with ``Retry-After``) when the client's address has failed to sign in too often lately."""
    wait = request.app[SIGNIN_LIMIT].retry_after(client_key(request.remote))
    if wait:
        raise TooManySignIns(f"Too many failed sign-ins from this address; try again in {wait} s.",
                             headers={"Retry-After": str(wait)})


# -- SSO (OpenID Connect) ------------------------------------------------------------------------------
OIDC: web.AppKey[Any] = web.AppKey("gomodel_dashboard_oidc", object)
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


def _sso_config(request: web.Request) -> SSOConfig | None:
    return request.app[STATE].config.dashboard.sso


async def _oidc_client(request: web.Request, config: SSOConfig) -> Any:
    """The relying party of the running ``dashboard.sso`` (made again when a reload changed it)."""
    from gomodel_proxy.admin import oidc  # noqa: PLC0415 - PyJWT and the provider's client only when configured

    holder: dict[str, oidc.OIDCClient] = request.app[OIDC]
    client = holder.get("client")
    if client is None or client.config != config:
        if client is not None:
            await client.close()
        client = holder["client"] = oidc.OIDCClient(config)
    return client


def _redirect_uri(request: web.Request, config: SSOConfig) -> str:
    """``dashboard.sso.redirect_url``, else the callback's URL as the browser sees it: this request's Host, and
    the scheme and base path a proxy announces (``X-Forwarded-Proto``/``-Prefix``, as for the session
    cookie). A forged header cannot send the code elsewhere: the provider only redirects to registered URIs."""
    if config.redirect_url:
        return config.redirect_url
    host = request.host
    if not _HOST.match(host):
        raise InvalidRequestError("the request's Host header is not a host name; set dashboard.sso.redirect_url")
    scheme = "https" if sessions.is_secure(request) else "http"
    return f"{scheme}://{host}{sessions.cookie_path(request)}{DASHBOARD_SSO_CALLBACK[len(sessions.COOKIE_PATH):]}"


def _back_to_page(error: str | None = None) -> web.Response:
    """A 302 to the page: ``../`` from ``sso/login`` and ``sso/callback`` alike (relative: base paths work)."""
    location = "../" if error is None else f"../#sso-error={error}"
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store",
                                             "Referrer-Policy": "no-referrer"})


def _flow_cookie(response: web.StreamResponse, request: web.Request, redirect_uri: str, value: str,
                 max_age: int) -> None:
    """The flow cookie: HttpOnly, SameSite=Lax (the provider's redirect back is a cross-site navigation: a
    Strict cookie would not come with it), only on the callback's path, Secure over HTTPS."""
    from gomodel_proxy.admin.oidc import FLOW_COOKIE  # noqa: PLC0415

    parts = urllib.parse.urlsplit(redirect_uri)
    response.set_cookie(
        FLOW_COOKIE, value, path=parts.path or "/", httponly=True, samesite="Lax",
        secure=sessions.is_secure(request) or parts.scheme == "https", max_age=max_age,
        expires="Thu, 01 Jan 1970 00:00:00 GMT" if max_age == 0 else None,
    )


async def sso_info(request: web.Request) -> web.Response:
    """Whether the page offers "Sign in with <name>", and where the link goes (relative to the page)."""
    config = _sso_config(request)
    body = {"enabled": config is not None, "name": config.name if config is not None else None,
            "login_url": "sso/login"}
    return web.Response(body=orjson.dumps(body), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def sso_login(request: web.Request) -> web.Response:
    """Start a sign-in: a new flow in its cookie, and a 302 to the provider's authorization endpoint."""
    from gomodel_proxy.admin import oidc  # noqa: PLC0415

    config = _sso_config(request)
    if config is None:
        raise NotFoundError("SSO is not configured (dashboard.sso).")
    _check_limit(request)
    master = _master_key(request)
    redirect_uri = _redirect_uri(request, config)
    client: oidc.OIDCClient = await _oidc_client(request, config)
    try:
        flow, url = await client.start(redirect_uri)
    except oidc.SignInError as exc:
        request.app[STATE].logger.warning("dashboard sso sign-in failed", stage="login", error=exc.code,
                                          reason=exc.reason)
        return _back_to_page(exc.code)
    # Counted until the sign-in completes: flows started and never finished are failures.
    request.app[SIGNIN_LIMIT].failed(client_key(request.remote))
    response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store",
                                                 "Referrer-Policy": "no-referrer"})
    _flow_cookie(response, request, redirect_uri, oidc.seal_flow(flow, master), oidc.FLOW_TTL_S)
    return response


async def sso_callback(request: web.Request) -> web.Response:
    """Complete a sign-in: the session cookie and the page, or the page with ``#sso-error=<code>``."""
    from gomodel_proxy.admin import oidc  # noqa: PLC0415

    config = _sso_config(request)
    if config is None:
        raise NotFoundError("SSO is not configured (dashboard.sso).")
    master = _master_key(request)
    logger = request.app[STATE].logger
    flow = oidc.open_flow(request.cookies.get(oidc.FLOW_COOKIE), master)
    client: oidc.OIDCClient = await _oidc_client(request, config)
    try:
        signed_in = await client.finish(flow, request.query)
    except oidc.SignInError as exc:
        logger.warning("dashboard sso sign-in failed", stage="callback", error=exc.code, reason=exc.reason)
        if exc.code == "state":
            request.app[SIGNIN_LIMIT].failed(client_key(request.remote))
        response = _back_to_page(exc.code)
        # Cleared even when it did not open (tampered): it is of no use any more. (No usable Host: there was no
        # cookie of ours for it either.)
        with contextlib.suppress(InvalidRequestError):
            callback_url = flow.redirect_uri if flow is not None else _redirect_uri(request, config)
            _flow_cookie(response, request, callback_url, "", 0)
        return response
    assert flow is not None  # finish checked it
    request.app[SIGNIN_LIMIT].forgive(client_key(request.remote))
    session = sessions.new_session(signed_in.role, sessions.SSO_SUBJECT + signed_in.subject,
                                   name=signed_in.name, email=signed_in.email)
    logger.info("dashboard sso sign-in", subject=session.subject[:80], role=session.role)
    response = _back_to_page()
    _flow_cookie(response, request, flow.redirect_uri, "", 0)
    sessions.set_cookie(response, request, session, master)
    return response


async def _close_oidc(app: web.Application) -> None:
    client = app[OIDC].get("client")
    if client is not None:
        await client.close()


def _named(handler: Handler) -> Handler:
    """``handler`` with its call named ``dashboard`` (the audit trail says what it was; the live log leaves the
    dashboard's own calls out unless asked)."""

    async def named(request: web.Request) -> web.StreamResponse:
        request[CALL].endpoint = "dashboard"
        return await handler(request)

    named.__name__ = named.__qualname__ = handler.__name__
    named.__doc__ = handler.__doc__
    return named


def add_routes(app: web.Application) -> None:
    """Register the dashboard's routes (with ``features.admin_api`` and a master key)."""
    app[ASSETS] = load_assets()
    app[SIGNIN_LIMIT] = SignInLimiter()
    app[OIDC] = {}
    app.on_cleanup.append(_close_oidc)
    add = app.router.add_route
    add("GET", DASHBOARD_SSO, _named(sso_info))
    # No HEAD: a HEAD must not start (nor complete) a sign-in.
    add("GET", DASHBOARD_SSO_LOGIN, _named(sso_login))
    add("GET", DASHBOARD_SSO_CALLBACK, _named(sso_callback))
    for path, handler in ((DASHBOARD, redirect_to_shell), (DASHBOARD + "/", shell),
                          (DASHBOARD + "/assets/{name}", asset), (DASHBOARD_SESSION, current_session)):
        app.router.add_get(path, _named(handler))
    add("POST", DASHBOARD_SESSION, _named(sign_in))
    add("DELETE", DASHBOARD_SESSION, _named(sign_out))
