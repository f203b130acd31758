"""Who is calling: the master key, a virtual key, or a token from the configured identity provider.

Authentication runs at the HTTP edge for every route but the probes (so ``/v1/models`` and the
pass-through need a credential too); it puts the caller's ``Principal`` on the call record. The chain's
first step (``ModelAccess``) then refuses a model the caller may not use, once the body is read.

- The master key: compared in constant time; full access, the admin API included.
- A virtual key: looked up in memory by its SHA-256 (``KeyCache``), never a database round trip.
- A JWT (three dot-separated parts) when ``auth.jwt`` is configured (``JWTVerifier``).
- A dashboard session (``admin.sessions``), only under ``/admin/`` and only when no key was presented: its
  signed cookie stands for the master or the admin key it signed in with (or an identity provider's user). A
  change made with it (any method but GET, HEAD, OPTIONS) needs ``X-CSRF-Token`` equal to the session's nonce
  (else 403 ``csrf_failed``), and a read-only session may make none (403 ``read_only``) but sign out. The
  dashboard's page, its assets and its sign-ins (the key's, whose body carries the key, and SSO's: its status,
  start and callback) need no credential.
Missing or wrong credentials: 401; an expired or revoked key: 401 saying so; a model not allowed: 403.
"""

from __future__ import annotations

import hmac
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gomodel_proxy.admin import sessions
from gomodel_proxy.core.errors import AuthenticationError, PermissionDeniedError
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import ANONYMOUS, Principal

if TYPE_CHECKING:  # loaded only when configured (PyJWT with auth.jwt, SQLAlchemy with keys)
    from gomodel_proxy.middleware.jwt_verifier import JWTVerifier
    from gomodel_proxy.middleware.key_cache import KeyCache

MASTER = Principal(kind="master", is_admin=True)
#: The dashboard (``admin.dashboard``): its page and assets, and its sign-in, need no credential.
DASHBOARD = "/admin/dashboard"
DASHBOARD_SESSION = DASHBOARD + "/session"
DASHBOARD_SSO = DASHBOARD + "/sso"
DASHBOARD_SSO_LOGIN = DASHBOARD_SSO + "/login"
DASHBOARD_SSO_CALLBACK = DASHBOARD_SSO + "/callback"
_DASHBOARD_ASSETS = DASHBOARD + "/assets/"
_DASHBOARD_SSO_PATHS = frozenset({DASHBOARD_SSO, DASHBOARD_SSO_LOGIN, DASHBOARD_SSO_CALLBACK})


def dashboard_open(request: web.Request) -> bool:
    """Whether ``request`` is one the dashboard answers without a credential."""
    path = request.path
    return (path in (DASHBOARD, DASHBOARD + "/") or path.startswith(_DASHBOARD_ASSETS)
            or (path == DASHBOARD_SESSION and request.method == "POST")
            or (path in _DASHBOARD_SSO_PATHS and request.method in ("GET", "HEAD")))


def presented_key(request: web.Request) -> str | None:
    """The credential of ``Authorization: Bearer`` or ``x-api-key`` (Anthropic's SDKs send the latter)."""
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class Authenticator:
    """Turns a presented credential into a ``Principal`` or a 401."""

    def __init__(self, master_key: str | None, keys: KeyCache | None = None,
                 jwt: JWTVerifier | None = None) -> None:
        self._master = master_key.encode() if master_key else None
        self._master_key = master_key or None  # signs and verifies dashboard sessions
        self.keys = keys
        self.jwt = jwt

    @property
    def master_key(self) -> str | None:
        """The master key: what dashboard sessions are signed with (``admin.sessions``)."""
        return self._master_key

    async def authenticate(self, request: web.Request) -> Principal:
        presented = presented_key(request)
        if presented is None:
            return self._without_key(request)
        # The master key and virtual keys are answered here, from memory, without another coroutine.
        principal = self._known_key(presented)
        return principal if principal is not None else await self._other_key(presented)

    async def authenticate_key(self, presented: str) -> Principal:
        """The principal of the key (or token) ``presented``; 401 when it is none of the gateway's."""
        principal = self._known_key(presented)
        return principal if principal is not None else await self._other_key(presented)

    def _known_key(self, presented: str) -> Principal | None:
        """The master key or a live virtual key (401 when it has expired); ``None`` for anything else."""
        if self._master is not None and hmac.compare_digest(presented.encode(), self._master):
            return MASTER
        if self.keys is not None:
            found = self.keys.lookup(presented)
            if found is not None:
                row, principal = found
                if self.keys.expired(row):
                    raise AuthenticationError("This API key has expired; ask the gateway's admin for a new one.",
                                              code="expired_api_key")
                return principal
        return None

    async def _other_key(self, presented: str) -> Principal:
        """Not the master key nor a live virtual key: a revoked one (401 saying so), a JWT, or a 401."""
        if self.keys is not None and self.keys.revoked(presented):
            raise AuthenticationError("This API key has been revoked; ask the gateway's admin for a new one.",
                                      code="revoked_api_key")
        if self.jwt is not None and self.jwt.looks_like(presented):
            return await self.jwt.verify(presented)
        raise AuthenticationError("Invalid API key for this gateway.")

    def _without_key(self, request: web.Request) -> Principal:
        """No key presented: the dashboard's open routes, or a session cookie under ``/admin/``, or a 401."""
        path = request.path
        if self._master_key is not None and path.startswith("/admin/"):
            if dashboard_open(request):
                return ANONYMOUS
            session = sessions.verify(request.cookies.get(sessions.COOKIE_NAME), self._master_key)
            if session is not None and not self._session_key_live(session):
                session = None  # signed in with a key since revoked, expired or no longer an admin's
            if session is not None:
                if not sessions.csrf_ok(request, session):
                    raise PermissionDeniedError(
                        f"This change needs the '{sessions.CSRF_HEADER}' header of the dashboard session.",
                        code="csrf_failed",
                    )
                if (session.read_only and request.method not in sessions.SAFE_METHODS
                        and path != DASHBOARD_SESSION):
                    raise PermissionDeniedError("This dashboard session is read-only: it may not change anything.",
                                                code="read_only")
                request[sessions.SESSION] = session
                return session.principal()
        raise AuthenticationError(
            "Missing API key: send the gateway key as 'Authorization: Bearer <key>' or 'x-api-key'."
        )


    def _session_key_live(self, session: sessions.Session) -> bool:
        """A session stands only as long as what it signed in with: the master key (checked by the
        signature), or a virtual key still live, unexpired and an admin's (the key cache, in memory)."""
        key_id = session.key_id
        if key_id is None:
            return True
        principal = self.keys.live_principal(key_id) if self.keys is not None else None
        return principal is not None and (principal.is_admin or session.read_only)


def model_allowed(principal: Principal, requested: str, provider: str, model: str) -> bool:
    """Whether ``principal`` may use the model it asked for (by its name or ``provider/model``)."""
    allowed = principal.allowed_models
    if allowed is None:
        return True
    qualified = f"{provider}/{model}" if provider else model
    return any(fnmatchcase(requested, p) or fnmatchcase(qualified, p) for p in allowed)


class ModelAccess:
    """The chain's Auth step: a key limited to some models gets 403 for any other."""

    async def process(self, ctx: RequestContext, call_next: Handler) -> Any:
        call = ctx.call
        principal = call.principal
        if principal.allowed_models is not None and ctx.body is None:
            raise PermissionDeniedError(
                "This API key is limited to some models, so it may not use the pass-through routes "
                "(their model is not checked); use the /v1 routes.", code="model_not_allowed",
            )
        if principal.allowed_models is not None and not model_allowed(
            principal, call.model_requested, call.provider, call.model
        ):
            raise PermissionDeniedError(
                f"This API key may not use the model '{call.model_requested}'. "
                f"Allowed: {', '.join(principal.allowed_models) or 'none'}.",
                code="model_not_allowed", param="model",
            )
        return await call_next(ctx)
