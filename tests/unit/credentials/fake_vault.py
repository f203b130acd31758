"""A fake HashiCorp Vault: the parts of its documented HTTP API the vault credential store uses.

No Vault server can be installed where these tests run, so the store is tested against this, written from
Vault's API documentation:

- KV v2 read ``GET /v1/{mount}/data/{path}``: 200 ``{"data": {"data": {...}, "metadata": {...}}, ...}``;
  404 ``{"errors": []}`` for no secret; 404 with ``data.data: null`` and a ``deletion_time`` when the latest
  version is deleted;
- AppRole login ``POST /v1/auth/approle/login`` ``{"role_id", "secret_id"}`` -> ``{"auth": {"client_token",
  "lease_duration", "renewable", ...}}``; 400 ``{"errors": ["invalid role or secret ID"]}``;
- ``GET /v1/auth/token/lookup-self`` (``data.ttl``, ``data.renewable``) and ``POST /v1/auth/token/renew-self``;
- ``X-Vault-Token`` (missing, unknown, revoked or expired: 403 ``{"errors": ["permission denied"]}``) and
  ``X-Vault-Namespace`` (a token lives in the namespace it was made in; secrets and roles too).

Time is the test's ``clock`` (seconds), so that leases expire without waiting.
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class FakeToken:
    namespace: str
    #: Clock time the token stops working (None: never, like a root token).
    expires: float | None
    renewable: bool
    ttl: float | None
    revoked: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeVault:
    clock: Callable[[], float]
    tokens: dict[str, FakeToken] = field(default_factory=dict)
    #: (namespace, role_id) -> (secret_id, token ttl, renewable)
    roles: dict[tuple[str, str], tuple[str, float, bool]] = field(default_factory=dict)
    #: (namespace, "mount/data/path") -> versions (each the data, or None once deleted)
    secrets: dict[tuple[str, str], list[dict[str, Any] | None]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    #: Renewals answer this status instead (e.g. 400), when set.
    refuse_renewal: bool = False
    #: Reads answer this status with an error instead, when set (e.g. 503 while Vault is sealed).
    read_status: int | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # -- set-up -------------------------------------------------------------------------------------
    def add_token(self, token: str | None = None, *, namespace: str = "", ttl: float | None = None,
                  renewable: bool = False) -> str:
        token = token or f"hvs.{secrets.token_urlsafe(18)}"
        expires = None if ttl is None else self.clock() + ttl
        self.tokens[token] = FakeToken(namespace, expires, renewable, ttl)
        return token

    def add_approle(self, role_id: str, secret_id: str, *, namespace: str = "", ttl: float = 3600.0,
                    renewable: bool = True) -> None:
        self.roles[(namespace, role_id)] = (secret_id, ttl, renewable)

    def put_secret(self, path: str, data: dict[str, Any], *, mount: str = "secret", namespace: str = "") -> None:
        self.secrets.setdefault((namespace, f"{mount}/data/{path}"), []).append(dict(data))

    def delete_latest(self, path: str, *, mount: str = "secret", namespace: str = "") -> None:
        self.secrets[(namespace, f"{mount}/data/{path}")][-1] = None

    def revoke(self, token: str) -> None:
        self.tokens[token].revoked = True

    def issued(self) -> list[str]:
        return list(self.tokens)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/auth/approle/login", self._login)
        app.router.add_get("/v1/auth/token/lookup-self", self._lookup_self)
        app.router.add_post("/v1/auth/token/renew-self", self._renew_self)
        app.router.add_get("/v1/{mount}/data/{path:.+}", self._read)
        return app

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _answer(status: int, body: Any) -> web.Response:
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    def _denied(self) -> web.Response:
        return self._answer(403, {"errors": ["permission denied"]})

    async def _record(self, request: web.Request) -> Recorded:
        body = await request.json() if request.can_read_body else None
        rec = Recorded(request.method, request.path, dict(request.headers), body)
        self.requests.append(rec)
        return rec

    def _token(self, request: web.Request) -> tuple[str, FakeToken] | None:
        value = request.headers.get("X-Vault-Token", "")
        token = self.tokens.get(value)
        namespace = request.headers.get("X-Vault-Namespace", "").strip("/")
        if token is None or token.revoked or token.namespace != namespace:
            return None
        if token.expires is not None and self.clock() >= token.expires:
            return None
        return value, token

    def _envelope(self, **parts: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": f"req-{next(self._ids)}", "lease_id": "", "renewable": False, "lease_duration": 0,
            "data": None, "wrap_info": None, "warnings": None, "auth": None,
        }
        out.update(parts)
        return out

    # -- endpoints ----------------------------------------------------------------------------------
    async def _login(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        namespace = request.headers.get("X-Vault-Namespace", "").strip("/")
        body = rec.body if isinstance(rec.body, dict) else {}
        role = self.roles.get((namespace, str(body.get("role_id", ""))))
        if role is None or role[0] != body.get("secret_id"):
            return self._answer(400, {"errors": ["invalid role or secret ID"]})
        _, ttl, renewable = role
        token = self.add_token(namespace=namespace, ttl=ttl, renewable=renewable)
        return self._answer(200, self._envelope(auth={
            "client_token": token, "accessor": f"acc-{next(self._ids)}", "policies": ["default", "gomodel"],
            "token_policies": ["default", "gomodel"], "metadata": {"role_name": "gomodel"},
            "lease_duration": int(ttl), "renewable": renewable, "entity_id": "", "token_type": "service",
            "orphan": True,
        }))

    async def _lookup_self(self, request: web.Request) -> web.Response:
        await self._record(request)
        found = self._token(request)
        if found is None:
            return self._denied()
        _, token = found
        ttl = 0 if token.expires is None else max(0, int(token.expires - self.clock()))
        return self._answer(200, self._envelope(data={
            "ttl": ttl, "renewable": token.renewable, "policies": ["default"], "creation_ttl": token.ttl or 0,
        }))

    async def _renew_self(self, request: web.Request) -> web.Response:
        await self._record(request)
        found = self._token(request)
        if found is None:
            return self._denied()
        value, token = found
        if not token.renewable or self.refuse_renewal or token.ttl is None:
            return self._answer(400, {"errors": ["lease is not renewable"]})
        token.expires = self.clock() + token.ttl
        return self._answer(200, self._envelope(auth={
            "client_token": value, "lease_duration": int(token.ttl), "renewable": True, "policies": ["default"],
        }))

    async def _read(self, request: web.Request) -> web.Response:
        await self._record(request)
        if self.read_status is not None:
            return self._answer(self.read_status, {"errors": ["Vault is sealed"]})
        if self._token(request) is None:
            return self._denied()
        namespace = request.headers.get("X-Vault-Namespace", "").strip("/")
        key = f"{request.match_info['mount']}/data/{request.match_info['path']}"
        versions = self.secrets.get((namespace, key))
        if not versions:
            return self._answer(404, {"errors": []})
        data = versions[-1]
        metadata = {
            "created_time": "2024-05-01T10:00:00.000000Z", "custom_metadata": None, "destroyed": False,
            "deletion_time": "" if data is not None else "2024-05-02T10:00:00.000000Z", "version": len(versions),
        }
        status = 200 if data is not None else 404
        return self._answer(status, self._envelope(data={"data": data, "metadata": metadata}))
