"""Who is calling: the master key, a virtual key, or a token from the configured identity provider.

Authentication runs at the HTTP edge for every route but the probes (so ``/v1/models`` and the
pass-through need a credential too); it puts the caller's ``Principal`` on the call record. The chain's
first step (``ModelAccess``) then refuses a model the caller may not use, once the body is read.

- The master key: compared in constant time; full access, the admin API included.
- A virtual key: looked up in memory by its SHA-256 (``KeyCache``), never a database round trip.
- A JWT (three dot-separated parts) when ``auth.jwt`` is configured (``JWTVerifier``).
Missing or wrong credentials: 401; an expired or revoked key: 401 saying so; a model not allowed: 403.
"""

from __future__ import annotations

import hmac
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gomodel_proxy.core.errors import AuthenticationError, PermissionDeniedError
from gomodel_proxy.core.interfaces import Handler, RequestContext
from gomodel_proxy.core.types import Principal

if TYPE_CHECKING:  # loaded only when configured (PyJWT with auth.jwt, SQLAlchemy with keys)
    from gomodel_proxy.middleware.jwt_verifier import JWTVerifier
    from gomodel_proxy.middleware.key_cache import KeyCache

MASTER = Principal(kind="master", is_admin=True)


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
        self.keys = keys
        self.jwt = jwt

    async def authenticate(self, request: web.Request) -> Principal:
        presented = presented_key(request)
        if presented is None:
            raise AuthenticationError(
                "Missing API key: send the gateway key as 'Authorization: Bearer <key>' or 'x-api-key'."
            )
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
            if self.keys.revoked(presented):
                raise AuthenticationError("This API key has been revoked; ask the gateway's admin for a new one.",
                                          code="revoked_api_key")
        if self.jwt is not None and self.jwt.looks_like(presented):
            return await self.jwt.verify(presented)
        raise AuthenticationError("Invalid API key for this gateway.")


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
