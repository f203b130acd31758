"""Dashboard sign-in through an OpenID Connect provider: the authorization-code flow with PKCE (S256).

``start`` begins a sign-in: a fresh ``Flow`` (state, nonce, PKCE verifier, the redirect URI) and the provider's
authorization URL; ``dashboard`` keeps the flow in a sealed cookie (``seal_flow``) for the 10 minutes the user
has to sign in. ``finish`` completes it from the callback's query: the state (constant time) against the
flow's, the code exchanged with the verifier at the token endpoint, the ID token validated, the groups read,
a role chosen. Any failure is a ``SignInError`` whose ``code`` the page shows (``denied``, ``state``,
``failed``) and whose ``reason`` is logged: never a token, a code or a secret.

The ID token is validated as OpenID Connect Core 3.1.3.7 has it: signature by a key of the provider's JWKS
(``middleware.jwt_verifier``'s key handling: kid lookup, bounded re-fetch) with an asymmetric algorithm the
provider announces (never ``none`` nor HMAC), ``iss`` the configured issuer, ``aud`` containing the client id,
``azp`` the client id when present (required with several audiences), ``exp`` and ``iat`` (one minute of
leeway), ``nonce`` the flow's. The discovery document must name the configured issuer (OpenID Connect
Discovery 4.3), and its endpoints must be https (http on loopback only, as the issuer).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import orjson

from gomodel_proxy.admin import sessions
from gomodel_proxy.config.schema import JWTConfig, SSOConfig
from gomodel_proxy.core.errors import AuthenticationError
from gomodel_proxy.middleware.jwt_verifier import (
    ASYMMETRIC_ALGORITHMS,
    MAX_TOKEN_CHARS,
    JWTVerifier,
    claim,
    read_capped,
    unverified_header,
)

ErrorCode = Literal["denied", "state", "failed"]
#: How long a user has between clicking "Sign in with ..." and coming back.
FLOW_TTL_S = 600
FLOW_COOKIE = "gomodel_sso_flow"
_FLOW_CONTEXT = b"gomodel-proxy dashboard sso flow v1"
_FLOW_VERSION = 1
#: The discovery document is read again after this long (providers rarely change endpoints; keys rotate
#: through the JWKS, which ``JWTVerifier`` re-fetches on an unknown kid).
DISCOVERY_TTL_S = 3600.0
#: A failed discovery is not retried more often than this: a dead provider is not hammered by every click.
_DISCOVERY_RETRY_S = 10.0
#: Largest document read from the provider (discovery, token answer, JWKS, userinfo).
_MAX_BODY = 1 << 20
#: Leeway on ``exp``/``iat`` for the clocks of the gateway and the provider.
_LEEWAY_S = 60.0
#: Longest ``sub`` accepted (OpenID Connect Core: at most 255 ASCII characters).
_MAX_SUB = 255
#: States of completed (or attempted) sign-ins, remembered until their flow would expire: a replayed callback
#: is refused here too (the provider also refuses a code used twice). Bounded: the oldest forgotten first.
_MAX_USED_STATES = 10_000
_LOOPBACK = ("localhost", "127.", "::1", "[::1]")


class SignInError(Exception):
    """A sign-in that cannot complete: ``code`` is what the page is told, ``reason`` what is logged."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code: ErrorCode = code
        self.reason = reason


# -- the flow ----------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Flow:
    """One sign-in in progress: what the callback must match, and the PKCE verifier the code needs."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    expires_at: int


def new_flow(redirect_uri: str, *, now: float | None = None) -> Flow:
    moment = int(time.time() if now is None else now)
    # 32 random bytes each: a 43-character verifier (RFC 7636 asks for 43 to 128 characters).
    return Flow(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(32),
                redirect_uri=redirect_uri, expires_at=moment + FLOW_TTL_S)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636's S256: base64url(sha256(verifier)), without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def seal_flow(flow: Flow, master_key: str) -> str:
    """The flow cookie's value: signed under a key of its own (not a session's), derived from the master key."""
    return sessions.seal({"v": _FLOW_VERSION, "s": flow.state, "n": flow.nonce, "p": flow.verifier,
                          "r": flow.redirect_uri, "e": flow.expires_at}, master_key, _FLOW_CONTEXT)


def open_flow(token: str | None, master_key: str, *, now: float | None = None) -> Flow | None:
    """The flow sealed in ``token`` when intact and not expired; ``None`` otherwise."""
    data = sessions.unseal(token, master_key, _FLOW_CONTEXT)
    if data is None or data.get("v") != _FLOW_VERSION:
        return None
    state, nonce, verifier, redirect, expires = (data.get(k) for k in ("s", "n", "p", "r", "e"))
    if not all(isinstance(v, str) and v for v in (state, nonce, verifier, redirect)) or type(expires) is not int:
        return None
    if (time.time() if now is None else now) >= expires:
        return None
    return Flow(state=str(state), nonce=str(nonce), verifier=str(verifier), redirect_uri=str(redirect),
                expires_at=expires)


# -- the provider's metadata ------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Discovery:
    """What the sign-in needs of ``<issuer>/.well-known/openid-configuration``."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    token_auth_methods: tuple[str, ...]
    id_token_algorithms: tuple[str, ...]


def _endpoint_ok(url: Any) -> bool:
    if not isinstance(url, str):
        return False
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    return bool(host) and (parts.scheme == "https" or (parts.scheme == "http" and host.startswith(_LOOPBACK)))


def parse_discovery(body: bytes, issuer: str) -> Discovery:
    """The discovery document ``body``, checked: it names ``issuer`` and its endpoints are https URLs."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SignInError("failed", "discovery: not JSON") from None
    if not isinstance(data, dict):
        raise SignInError("failed", "discovery: not a JSON object")
    if data.get("issuer") != issuer:
        raise SignInError("failed", "discovery: its issuer is not dashboard.sso.issuer (check the exact URL, "
                          "trailing slash included)")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not _endpoint_ok(data.get(key)):
            raise SignInError("failed", f"discovery: {key} missing or not an https URL")
    userinfo = data.get("userinfo_endpoint")
    methods = data.get("token_endpoint_auth_methods_supported")
    algorithms = data.get("id_token_signing_alg_values_supported")
    return Discovery(
        issuer=issuer,
        authorization_endpoint=data["authorization_endpoint"],
        token_endpoint=data["token_endpoint"],
        jwks_uri=data["jwks_uri"],
        userinfo_endpoint=userinfo if _endpoint_ok(userinfo) else None,
        # Discovery's defaults when the provider lists none (OpenID Connect Discovery 3).
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)) if isinstance(methods, list)
        else ("client_secret_basic",),
        id_token_algorithms=tuple(a for a in algorithms if isinstance(a, str)) if isinstance(algorithms, list)
        else ("RS256",),
    )


def authorization_url(discovery: Discovery, config: SSOConfig, flow: Flow) -> str:
    """Where the browser goes to sign in: the authorization endpoint with the code flow's parameters."""
    query = urllib.parse.urlencode({
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": flow.redirect_uri,
        "scope": " ".join(config.scopes),
        "state": flow.state,
        "nonce": flow.nonce,
        "code_challenge": pkce_challenge(flow.verifier),
        "code_challenge_method": "S256",
    }, quote_via=urllib.parse.quote)
    endpoint = discovery.authorization_endpoint
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"


def token_auth_method(config: SSOConfig, discovery: Discovery) -> str:
    """How the client authenticates at the token endpoint: no secret, ``none`` (PKCE alone); otherwise
    ``client_secret_basic`` if the provider takes it, else ``client_secret_post``."""
    if not config.client_secret:
        return "none"
    for method in ("client_secret_basic", "client_secret_post"):
        if method in discovery.token_auth_methods:
            return method
    raise SignInError("failed", "the provider takes neither client_secret_basic nor client_secret_post "
                      f"(it lists {', '.join(discovery.token_auth_methods)[:200]})")


def token_request(config: SSOConfig, discovery: Discovery, flow: Flow, code: str) -> tuple[dict[str, str],
                                                                                          dict[str, str]]:
    """The token request's form and headers: the code, its verifier and redirect URI, and the client's
    credentials as ``token_auth_method`` decides (RFC 6749 2.3.1: basic's parts are form-encoded first)."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": flow.redirect_uri,
            "code_verifier": flow.verifier}
    headers = {"Accept": "application/json"}
    method = token_auth_method(config, discovery)
    if method == "client_secret_basic":
        user = urllib.parse.quote_plus(config.client_id)
        password = urllib.parse.quote_plus(config.client_secret)
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    else:
        form["client_id"] = config.client_id
        if method == "client_secret_post":
            form["client_secret"] = config.client_secret
    return form, headers


# -- claims to a role ------------------------------------------------------------------------------------
def groups_of(claims: Mapping[str, Any], path: str) -> list[str] | None:
    """The user's groups: a list of names or one name; ``None`` when the claim is absent."""
    value = claim(claims, path)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [g for g in value if isinstance(g, str)]
    return []


def role_for(groups: list[str], config: SSOConfig) -> sessions.Role | None:
    """Any admin group: ``admin``; else any read-only group: ``read_only``; else ``None`` (refused)."""
    held = set(groups)
    if held & set(config.admin_groups):
        return "admin"
    if held & set(config.read_only_groups):
        return "read_only"
    return None


@dataclass(slots=True, frozen=True)
class SignedIn:
    """Who completed a sign-in, and the role their groups give."""

    subject: str
    role: sessions.Role
    name: str | None
    email: str | None


# -- the ID token ---------------------------------------------------------------------------------------------
class IDTokenVerifier(JWTVerifier):
    """``JWTVerifier``'s key handling (JWKS by kid, bounded re-fetch, algorithm/key fit) for ID tokens, whose
    claims are checked as OpenID Connect Core 3.1.3.7 asks rather than mapped to a principal."""

    async def id_token_claims(self, token: str, nonce: str) -> dict[str, Any]:
        """The claims of ``token`` once valid for this client and this flow's ``nonce``; ``SignInError``
        (``failed``) with the reason otherwise."""
        try:
            return await self._validate(token, nonce)
        except AuthenticationError as exc:
            raise SignInError("failed", f"ID token: {exc.message}") from None

    async def _validate(self, token: str, nonce: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthenticationError("invalid token: malformed")
        header = unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthenticationError("invalid token: algorithm not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("invalid token: malformed kid")
        key = await self._key_for(kid, alg)
        claims = self._decode(token, key, alg)  # signature, iss, aud
        if "iat" not in claims:
            raise AuthenticationError("invalid token: missing claim iat")
        self._check_times(claims, self._clock())
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        azp = claims.get("azp")
        if (len(audiences) > 1 or azp is not None) and azp != self.config.audience:
            raise AuthenticationError("invalid token: azp is not this client")
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), nonce.encode()):
            raise AuthenticationError("invalid token: nonce does not match this sign-in")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub.encode()) > _MAX_SUB:
            raise AuthenticationError("invalid token: sub missing or longer than 255 bytes")
        return claims


# -- the client ---------------------------------------------------------------------------------------------
class OIDCClient:
    """The gateway as an OpenID Connect relying party for ``config`` (one per configuration)."""

    def __init__(self, config: SSOConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._discovery: Discovery | None = None
        self._discovered_at = -DISCOVERY_TTL_S
        self._failed_at = -_DISCOVERY_RETRY_S
        self._lock = asyncio.Lock()
        self._verifier: IDTokenVerifier | None = None
        #: state -> when its flow expires, oldest first.
        self._used: OrderedDict[str, float] = OrderedDict()

    async def close(self) -> None:
        if self._verifier is not None:
            await self._verifier.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        return self._session

    async def _get(self, url: str) -> bytes:
        async with self._http().get(url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            return await read_capped(response, _MAX_BODY)

    # -- discovery ----------------------------------------------------------------------------------------
    async def discovery(self) -> Discovery:
        """The provider's metadata, fetched once an hour (one fetch at a time)."""
        async with self._lock:
            now = self._clock()
            if self._discovery is not None and now - self._discovered_at < DISCOVERY_TTL_S:
                return self._discovery
            if self._discovery is None and now - self._failed_at < _DISCOVERY_RETRY_S:
                raise SignInError("failed", "discovery: failed moments ago; not retried yet")
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                found = parse_discovery(await self._get(url), self.config.issuer)
            except SignInError:
                self._failed_at = now
                if self._discovery is not None:  # keep using the last good one
                    return self._discovery
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self._failed_at = now
                if self._discovery is not None:
                    return self._discovery
                raise SignInError("failed", f"discovery: {type(exc).__name__}: {str(exc)[:200]}") from None
            if self._verifier is None or self._verifier.config.jwks_url != found.jwks_uri or (
                    set(self._verifier.config.algorithms) != _id_token_algorithms(found)):
                if self._verifier is not None:
                    await self._verifier.close()
                self._verifier = IDTokenVerifier(JWTConfig(
                    issuer=self.config.issuer, audience=self.config.client_id, jwks_url=found.jwks_uri,
                    algorithms=sorted(_id_token_algorithms(found)),  # type: ignore[arg-type]
                    leeway_s=_LEEWAY_S, jwks_refresh_s=DISCOVERY_TTL_S,
                ), fetch=self._get, clock=self._clock)
            self._discovery, self._discovered_at = found, now
            return found

    # -- the flow -------------------------------------------------------------------------------------------
    async def start(self, redirect_uri: str) -> tuple[Flow, str]:
        """A new flow and the authorization URL to send the browser to."""
        discovery = await self.discovery()
        token_auth_method(self.config, discovery)  # a client the provider cannot authenticate fails here, early
        flow = new_flow(redirect_uri, now=self._clock())
        return flow, authorization_url(discovery, self.config, flow)

    def check_state(self, flow: Flow | None, query: Mapping[str, str]) -> Flow:
        """The flow the callback's ``state`` belongs to (constant-time comparison), not used before."""
        sent = query.get("state", "")
        if flow is None:
            raise SignInError("state", "no sign-in in progress (flow cookie missing, tampered or expired)")
        if not sent or not hmac.compare_digest(sent.encode("utf-8", "replace"), flow.state.encode()):
            raise SignInError("state", "state does not match the sign-in in progress")
        now = self._clock()
        while self._used and next(iter(self._used.values())) <= now:
            self._used.popitem(last=False)
        if flow.state in self._used:
            raise SignInError("state", "this sign-in was completed already (a replayed callback)")
        self._used[flow.state] = flow.expires_at
        while len(self._used) > _MAX_USED_STATES:
            self._used.popitem(last=False)
        return flow

    async def finish(self, flow: Flow | None, query: Mapping[str, str]) -> SignedIn:
        """Complete the sign-in the callback's ``query`` answers (see the module's docstring)."""
        flow = self.check_state(flow, query)
        error = query.get("error")
        if error:
            shown = error[:64] if error.replace("_", "").isalnum() else "(invalid)"
            if error == "access_denied":
                raise SignInError("denied", "the provider answered access_denied")
            raise SignInError("failed", f"the provider answered error={shown}")
        code = query.get("code", "")
        if not code or len(code) > 4096:
            raise SignInError("failed", "the callback has no code")
        discovery = await self.discovery()
        tokens = await self._exchange(discovery, flow, code)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInError("failed", "token endpoint: no id_token in the answer (is 'openid' among the scopes?)")
        assert self._verifier is not None  # made with the discovery
        claims = await self._verifier.id_token_claims(id_token, flow.nonce)
        groups = groups_of(claims, self.config.groups_claim)
        access_token = tokens.get("access_token")
        if groups is None and discovery.userinfo_endpoint and isinstance(access_token, str):
            info = await self._userinfo(discovery.userinfo_endpoint, access_token, claims["sub"])
            groups = groups_of(info, self.config.groups_claim)
            claims = {**info, **claims}
        role = role_for(groups or [], self.config)
        if role is None:
            raise SignInError("denied", f"user {claims['sub'][:64]!r} is in none of admin_groups and "
                              f"read_only_groups (claim {self.config.groups_claim!r}: "
                              f"{'absent' if groups is None else f'{len(groups)} groups'})")
        name = claims.get("name") or claims.get("preferred_username")
        email = claims.get("email")
        return SignedIn(subject=claims["sub"], role=role, name=name if isinstance(name, str) else None,
                        email=email if isinstance(email, str) else None)

    async def _exchange(self, discovery: Discovery, flow: Flow, code: str) -> dict[str, Any]:
        form, headers = token_request(self.config, discovery, flow, code)
        try:
            async with self._http().post(discovery.token_endpoint, data=form, headers=headers) as response:
                body = await read_capped(response, _MAX_BODY)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError("failed", f"token endpoint: {type(exc).__name__}") from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else None
            shown = error[:64] if isinstance(error, str) and error.replace("_", "").isalnum() else "-"
            raise SignInError("failed", f"token endpoint answered {status} (error={shown})")
        return data

    async def _userinfo(self, url: str, access_token: str, sub: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            async with self._http().get(url, headers=headers) as response:
                body = await read_capped(response, _MAX_BODY)
                status, content_type = response.status, response.content_type
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SignInError("failed", f"userinfo: {type(exc).__name__}") from None
        if status != 200 or content_type != "application/json":
            raise SignInError("failed", f"userinfo answered {status} {content_type[:64]}")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SignInError("failed", "userinfo: not JSON") from None
        # OpenID Connect Core 5.3.4: the answer is about the ID token's user, or it must not be used.
        if not isinstance(data, dict) or data.get("sub") != sub:
            raise SignInError("failed", "userinfo: its sub is not the ID token's")
        return data


def _id_token_algorithms(discovery: Discovery) -> set[str]:
    """The asymmetric algorithms the provider signs ID tokens with (RS256 when it lists none usable)."""
    return (set(discovery.id_token_algorithms) & ASYMMETRIC_ALGORITHMS) or {"RS256"}
