"""``credentials.source: vault``: providers' keys in HashiCorp Vault's KV version 2 secrets engine.

One secret per provider, read with ``GET {url}/v1/{mount}/data/{path}/{provider}``; its data's ``api_key``
and/or ``api_keys`` (a list, or a comma-separated string) are the provider's keys. A provider without a
secret (404), or whose latest version is deleted, has no key there.

Authentication: ``credentials.vault.token``, or an AppRole (``role_id`` + ``secret_id``, logged in with
``POST /v1/auth/approle/login``). ``X-Vault-Token`` carries the token, ``X-Vault-Namespace`` the namespace
(Vault Enterprise) when one is set. The token's lease is watched: a renewable token is renewed
(``POST /v1/auth/token/renew-self``) when less than a third of its lease is left; an AppRole whose renewal
fails, whose token has expired or is refused (403) logs in again and the read is retried once. A static
token that is refused is an error naming the fix.

Spoken to over Vault's documented HTTP API with aiohttp (``hvac`` is synchronous: it would block the event
loop). No Vault server could be installed where this was written: it is tested against a fake of that API
(``tests/unit/credentials/fake_vault.py``: KV v2 reads, AppRole login, token lookup/renewal, namespaces,
403 and 404 as Vault answers them), not against a real Vault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from gomodel_proxy.config.schema import VaultConfig
from gomodel_proxy.credentials.interface import CredentialError, key_list


class VaultStore:
    source = "vault"

    def __init__(self, config: VaultConfig, *, clock: Callable[[], float] = time.monotonic, logger: Any = None) -> None:
        if not config.token and not (config.role_id and config.secret_id):
            raise CredentialError(
                "credentials.vault: set token, or role_id and secret_id (an AppRole), for credentials.source: vault"
            )
        self.config = config
        self.base = config.url.rstrip("/")
        self.clock = clock
        self.logger = logger
        self.approle = not config.token
        self._session: aiohttp.ClientSession | None = None
        self._token = config.token
        #: Monotonic time the token's lease ends (``inf``: no lease known, e.g. a root token).
        self._expires = float("inf")
        #: Monotonic time to renew at (two thirds into the lease).
        self._renew_at = float("inf")
        self._renewable = False
        self._lock = asyncio.Lock()
        self.logins = 0
        self.renewals = 0

    def describe(self) -> str:
        ns = f" (namespace {self.config.namespace})" if self.config.namespace else ""
        return f"Vault {self.base}{ns} at {self.config.mount}/data/{self.config.path.strip('/')}/<provider>"

    # -- life cycle -------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        if self.approle:
            await self._login()
        else:
            await self._lookup_self()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- reading ----------------------------------------------------------------------------------------
    async def get_provider_keys(self, provider: str) -> list[str]:
        path = f"/v1/{self.config.mount.strip('/')}/data/{self.config.path.strip('/')}/{quote(provider, safe='')}"
        await self._fresh_token()
        status, body = await self._call("GET", path, token=self._token)
        if status == 403 and self.approle:
            await self._login()  # expired or revoked before its lease said: a new token, one retry
            status, body = await self._call("GET", path, token=self._token)
        if status == 404:
            return []
        if status == 403:
            raise CredentialError(
                f"{self.describe()}: the token was refused reading '{provider}' (403: {_errors(body)}); it expired "
                "or its policy lacks read on that path: fix the policy, renew credentials.vault.token, or use an "
                "AppRole"
            )
        if status != 200:
            raise CredentialError(f"{self.describe()}: reading '{provider}' answered HTTP {status} ({_errors(body)})")
        data = body.get("data") if isinstance(body, dict) else None
        secret = data.get("data") if isinstance(data, dict) else None
        if secret is None:  # the latest version is deleted
            return []
        if not isinstance(secret, dict):
            raise CredentialError(f"{self.describe()}: the secret of '{provider}' is not a KV v2 secret (no data map)")
        where = f"vault secret {self.config.mount}/{self.config.path.strip('/')}/{provider}"
        keys = key_list(secret.get("api_key"), f"{where}: api_key")
        keys += key_list(secret.get("api_keys"), f"{where}: api_keys")
        return list(dict.fromkeys(keys))

    # -- tokens -----------------------------------------------------------------------------------------
    async def _fresh_token(self) -> None:
        """Renew or replace the token when its lease is (nearly) over."""
        now = self.clock()
        if now < self._renew_at:
            return
        async with self._lock:
            now = self.clock()
            if now < self._renew_at:
                return
            if self._renewable and now < self._expires and await self._renew():
                return
            if self.approle:
                await self._login()
            elif now >= self._expires:
                raise CredentialError(
                    f"{self.describe()}: credentials.vault.token expired and cannot be renewed; set a new token, or "
                    "use an AppRole (role_id, secret_id) so that the gateway logs in again by itself"
                )

    async def _login(self) -> None:
        status, body = await self._call(
            "POST", "/v1/auth/approle/login", json={"role_id": self.config.role_id, "secret_id": self.config.secret_id}
        )
        auth = body.get("auth") if isinstance(body, dict) else None
        if status != 200 or not isinstance(auth, dict) or not auth.get("client_token"):
            raise CredentialError(
                f"{self.describe()}: AppRole login failed (HTTP {status}: {_errors(body)}); check "
                "credentials.vault.role_id and secret_id (a secret_id may have expired or reached its use limit)"
            )
        self._token = str(auth["client_token"])
        self.logins += 1
        self._lease(auth.get("lease_duration"), bool(auth.get("renewable")))

    async def _renew(self) -> bool:
        status, body = await self._call("POST", "/v1/auth/token/renew-self", token=self._token, json={})
        auth = body.get("auth") if isinstance(body, dict) else None
        if status != 200 or not isinstance(auth, dict):
            if self.logger is not None:
                self.logger.info("vault token renewal refused; logging in again" if self.approle else
                                 "vault token renewal refused", status=status)
            self._renewable = False
            return False
        self._token = str(auth.get("client_token") or self._token)
        self.renewals += 1
        self._lease(auth.get("lease_duration"), bool(auth.get("renewable")))
        return True

    async def _lookup_self(self) -> None:
        """A static token: check it is accepted, and learn its lease (none for a root token)."""
        status, body = await self._call("GET", "/v1/auth/token/lookup-self", token=self._token)
        if status == 403:
            raise CredentialError(
                f"{self.describe()}: credentials.vault.token is refused (403: {_errors(body)}); it is invalid or "
                "expired: set a valid token"
            )
        data = body.get("data") if isinstance(body, dict) else None
        if status == 200 and isinstance(data, dict):
            self._lease(data.get("ttl"), bool(data.get("renewable")))

    def _lease(self, seconds: Any, renewable: bool) -> None:
        now = self.clock()
        if isinstance(seconds, (int, float)) and seconds > 0:
            self._expires = now + seconds
            self._renew_at = now + seconds * 2 / 3
        else:
            self._expires = self._renew_at = float("inf")
        self._renewable = renewable

    # -- HTTP -------------------------------------------------------------------------------------------
    async def _call(self, method: str, path: str, *, token: str = "", json: Any = None) -> tuple[int, Any]:
        if self._session is None:
            raise CredentialError("the vault credential store is not open; call open() first")
        headers: dict[str, str] = {}
        if token:
            headers["X-Vault-Token"] = token
        if self.config.namespace:
            headers["X-Vault-Namespace"] = self.config.namespace
        try:
            async with self._session.request(method, self.base + path, headers=headers, json=json) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialError(
                f"{self.describe()}: {method} {path} failed: {type(exc).__name__} {str(exc)[:200]}; check "
                "credentials.vault.url and that Vault is reachable"
            ) from None


def _errors(body: Any) -> str:
    """Vault's ``errors`` list (messages, never secrets), for an error message."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        return "; ".join(str(e)[:200] for e in errors[:3])
    return "no detail"
