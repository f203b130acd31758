"""Tokens from an identity provider (``Authorization: Bearer <jwt>``) verified into a ``Principal``.

Only the configured asymmetric algorithms are accepted, decided from the token's header before any key
is touched: ``none`` and HMAC never (an HS256 token "signed" with the RSA public key as the secret is
the classic key-confusion attack). Keys come from a static PEM or the issuer's JWKS, chosen by ``kid``;
an unknown ``kid`` re-fetches the JWKS (at most once per 10 s, one fetch in flight at a time). Verified
tokens are cached by their SHA-256 digest until they expire, so a repeated token costs a dict lookup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gomodel_proxy.config.loader import ConfigError
from gomodel_proxy.config.schema import JWTConfig
from gomodel_proxy.core.errors import AuthenticationError
from gomodel_proxy.core.types import Principal

Fetch = Callable[[str], Awaitable[bytes]]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: The only algorithms ever accepted, whatever the configuration says: asymmetric signatures.
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
#: The curve each ECDSA algorithm is defined on (a key on another curve does not fit it).
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
#: Unknown ``kid``s re-fetch the JWKS at most this often: a flood of made-up kids cannot hammer the issuer.
_MIN_REFETCH_S = 10.0
_FETCH_TIMEOUT_S = 5.0
_MAX_JWKS_BYTES = 1 << 20
MAX_TOKEN_CHARS = 16 * 1024
_CACHE_SIZE = 10_000
#: RSA keys shorter than this are refused (forgeable in practice).
_MIN_RSA_BITS = 2048
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_ALG = re.compile(r"[A-Za-z0-9]{1,16}")


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a JWT's shape (three dot-separated parts, a JSON header): picks the verifier
    without parsing; virtual keys (``sk-...``) never look like one."""
    if not token.startswith("eyJ") or token.count(".") != 2:
        return False
    return _B64URL.fullmatch(token[: token.index(".")]) is not None


@dataclass(slots=True, frozen=True)
class _Key:
    """One verification key, with the algorithm its JWK declares (``None``: any that fits its type)."""

    key: PublicKey
    kid: str | None = None
    alg: str | None = None

    def fits(self, alg: str) -> bool:
        """Whether this key may verify ``alg``: RSA for RS*/PS*, EC on the algorithm's curve for ES*."""
        if self.alg is not None and self.alg != alg:
            return False
        if alg.startswith(("RS", "PS")):
            return isinstance(self.key, rsa.RSAPublicKey)
        return isinstance(self.key, ec.EllipticCurvePublicKey) and self.key.curve.name == _EC_CURVES.get(alg)


class JWTVerifier:
    """Verifies bearer JWTs against ``config`` and maps their claims to a ``Principal(kind="jwt")``.

    ``fetch(url) -> body`` reads the JWKS (default: an aiohttp GET with a 5 s timeout); ``clock`` is the
    wall clock the ``exp``/``nbf``/``iat`` claims, the cache and the re-fetch limit are measured against.
    """

    #: Whether a presented credential is shaped like a token (a virtual key never is).
    looks_like = staticmethod(looks_like_jwt)

    def __init__(
        self,
        config: JWTConfig,
        *,
        fetch: Fetch | None = None,
        logger: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.logger = logger
        self._fetch = fetch or self._http_get
        self._clock = clock
        self._algorithms = frozenset(config.algorithms) & ASYMMETRIC_ALGORITHMS
        self._leeway = float(config.leeway_s)
        self._session: aiohttp.ClientSession | None = None
        #: Keys by kid, and the keys without one (a static PEM, or JWKs that name no kid).
        self._by_kid: dict[str, _Key] = {}
        self._unnamed: list[_Key] = []
        self._static_loaded = False
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._inflight: asyncio.Task[bool] | None = None
        self._refresher: asyncio.Task[None] | None = None
        #: sha256(token) -> (principal, time until which it holds): LRU, oldest first.
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        #: How many JWKS fetches were attempted (for metrics and tests).
        self.fetches = 0

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the static key (a bad one is a configuration error) or fetch the JWKS once; a failed
        fetch is logged, not fatal: it is retried when a token needs a key."""
        if self.config.public_key:
            await self._load_static()
            return
        if self.config.jwks_url:
            await self._refresh(wait=True)
            if self._refresher is None:
                self._refresher = asyncio.create_task(self._refresh_loop(), name="jwks-refresh")

    async def close(self) -> None:
        """Stop the background refresh and any fetch in flight, and close the HTTP session."""
        for task in (self._refresher, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._refresher = self._inflight = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- verification ---------------------------------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        """The principal ``token`` stands for; ``AuthenticationError`` (401) with the reason otherwise.

        Messages never include the token (it is a credential) nor header values it chose, beyond a
        well-formed algorithm name.
        """
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthenticationError("invalid token: malformed")
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        now = self._clock()
        if hit is not None:
            if now <= hit[1]:
                self._cache.move_to_end(digest)
                return hit[0]
            del self._cache[digest]

        header = unverified_header(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            shown = alg if isinstance(alg, str) and _SAFE_ALG.fullmatch(alg) else "(invalid)"
            raise AuthenticationError(f"invalid token: algorithm {shown} not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthenticationError("invalid token: malformed kid")

        key = await self._key_for(kid, alg)
        claims = self._decode(token, key, alg)
        exp = self._check_times(claims, self._clock())
        principal = self._principal(claims)
        self._cache[digest] = (principal, exp + self._leeway)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str, key: _Key, alg: str) -> dict[str, Any]:
        """Check the signature, ``iss`` and ``aud`` (times are checked against our own clock after)."""
        audience = self.config.audience or None
        require = ["exp", "iss"] + (["aud"] if audience else [])
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.config.issuer,
                audience=audience,
                options={
                    "require": require,
                    "verify_aud": audience is not None,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise AuthenticationError("invalid token: bad signature") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("invalid token: wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthenticationError("invalid token: wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthenticationError(f"invalid token: missing claim {exc.claim}") from None
        except jwt.DecodeError:
            raise AuthenticationError("invalid token: malformed") from None
        except jwt.PyJWTError:
            raise AuthenticationError("invalid token: claims rejected") from None

    def _check_times(self, claims: dict[str, Any], now: float) -> float:
        """Check ``exp`` (required), ``nbf`` and ``iat`` with the configured leeway; returns ``exp``."""
        leeway = self._leeway
        exp: Any = claims.get("exp")
        if not _is_number(exp):
            raise AuthenticationError("invalid token: exp is not a number")
        if now > exp + leeway:
            raise AuthenticationError("invalid token: token expired")
        for name in ("nbf", "iat"):
            value: Any = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise AuthenticationError(f"invalid token: {name} is not a number")
            if value > now + leeway:
                reason = "token not yet valid" if name == "nbf" else "token issued in the future"
                raise AuthenticationError(f"invalid token: {reason}")
        return float(exp)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        """Map the configured claims: user (required), team (a string, or a list's first), admin flag."""
        config = self.config
        user = claim(claims, config.user_claim)
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if not isinstance(user, str) or not user:
            raise AuthenticationError(f"invalid token: no {config.user_claim} claim naming the user")
        team = claim(claims, config.team_claim) if config.team_claim else None
        if isinstance(team, list):
            team = team[0] if team else None
        team_id = team if isinstance(team, str) and team else None
        is_admin = False
        if config.admin_claim:
            flag = claim(claims, config.admin_claim)
            is_admin = flag is True or (isinstance(flag, list) and "admin" in flag)
        return Principal(kind="jwt", user_id=user, team_id=team_id, is_admin=is_admin)

    # -- keys -----------------------------------------------------------------------------------------
    async def _key_for(self, kid: str | None, alg: str) -> _Key:
        """The key for the token's ``kid`` (or the only key fitting ``alg`` when it names none),
        re-fetching the JWKS once when the kid is unknown."""
        if self.config.public_key:
            if not self._static_loaded:
                await self._load_static()
            key = self._unnamed[0]
        else:
            if self._clock() - self._fetched_at >= self.config.jwks_refresh_s:
                # Stale (the background refresh is late or failed): wait only if there is nothing to use.
                await self._refresh(wait=not (self._by_kid or self._unnamed))
            found = self._lookup(kid, alg)
            if found is None:
                await self._refresh(wait=True)
                found = self._lookup(kid, alg)
            if found is None:
                raise AuthenticationError("invalid token: unknown signing key")
            key = found
        if not key.fits(alg):
            raise AuthenticationError(f"invalid token: signing key does not fit algorithm {alg}")
        return key

    def _lookup(self, kid: str | None, alg: str) -> _Key | None:
        if kid is not None:
            return self._by_kid.get(kid)
        fitting = [k for k in (*self._by_kid.values(), *self._unnamed) if k.fits(alg)]
        return fitting[0] if len(fitting) == 1 else None

    async def _load_static(self) -> None:
        """Parse ``public_key``: PEM text, or a path to a PEM file (read off the loop)."""
        text = self.config.public_key.strip()
        try:
            data = text.encode() if text.startswith("-----BEGIN") else await asyncio.to_thread(Path(text).read_bytes)
        except OSError as exc:
            raise ConfigError([f"auth.jwt.public_key: cannot read the PEM file: {exc.strerror}"]) from None
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                key: Any = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = load_pem_public_key(data)
        except ValueError:
            raise ConfigError(["auth.jwt.public_key: not a PEM public key or certificate"]) from None
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ConfigError(["auth.jwt.public_key: only RSA and EC keys are supported"])
        static = _Key(key)
        if not any(static.fits(alg) for alg in self._algorithms):
            raise ConfigError(["auth.jwt.public_key: the key fits none of auth.jwt.algorithms"])
        self._unnamed = [static]
        self._static_loaded = True

    async def _refresh(self, *, wait: bool) -> None:
        """Fetch the JWKS unless a fetch is in flight (join it) or one started under 10 s ago (skip)."""
        task = self._inflight
        if task is None:
            now = self._clock()
            if 0 <= now - self._attempted_at < _MIN_REFETCH_S:
                return
            self._attempted_at = now
            task = self._inflight = asyncio.create_task(self._fetch_jwks(), name="jwks-fetch")
            task.add_done_callback(self._fetch_done)
        if wait:
            # Shielded: a client that goes away does not cancel the fetch other requests are waiting on.
            await asyncio.shield(task)

    def _fetch_done(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.jwks_refresh_s)
            await self._refresh(wait=True)

    async def _fetch_jwks(self) -> bool:
        """Fetch and install the JWKS; on any failure keep the keys there are and log (never raises)."""
        self.fetches += 1
        url = self.config.jwks_url
        try:
            body = await self._fetch(url)
            by_kid, unnamed = self._parse_jwks(body)
        except Exception as exc:
            if self.logger is not None:
                self.logger.warning("jwks fetch failed", url=url, error=f"{type(exc).__name__}: {exc}",
                                    keys_kept=len(self._by_kid) + len(self._unnamed))
            return False
        if self._by_kid.keys() - by_kid.keys() or len(unnamed) < len(self._unnamed):
            # A key was withdrawn (rotated out, maybe compromised): tokens it signed must not stay cached.
            self._cache.clear()
        self._by_kid, self._unnamed = by_kid, unnamed
        self._fetched_at = self._clock()
        return True

    def _parse_jwks(self, body: bytes) -> tuple[dict[str, _Key], list[_Key]]:
        """The usable signing keys of a JWKS document; keys of other types or uses are skipped."""
        document = orjson.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        by_kid: dict[str, _Key] = {}
        unnamed: list[_Key] = []
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
                continue
            if entry.get("use", "sig") != "sig":
                continue
            declared = entry.get("alg")
            if declared is not None and declared not in ASYMMETRIC_ALGORITHMS:
                continue
            try:
                key = jwt.PyJWK(entry).key
            except jwt.PyJWTError:
                continue
            if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                continue  # a private key published by mistake, or an unexpected type
            if isinstance(key, rsa.RSAPublicKey) and key.key_size < _MIN_RSA_BITS:
                continue
            kid = entry.get("kid")
            item = _Key(key, kid if isinstance(kid, str) else None, declared)
            if item.kid is None:
                unnamed.append(item)
            else:
                by_kid[item.kid] = item
        if not by_kid and not unnamed:
            raise ValueError("the JWKS holds no usable RSA or EC signing key")
        return by_kid, unnamed

    async def _http_get(self, url: str) -> bytes:
        """The default fetch: a GET on a session of our own, the body capped at 1 MiB."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_S))
        async with self._session.get(url, headers={"Accept": "application/json"}) as response:
            response.raise_for_status()
            return await read_capped(response, _MAX_JWKS_BYTES)


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """``response``'s body, read as it comes and refused (``ValueError``) past ``limit`` bytes: an issuer's
    documents are small, and a huge answer must not fill the gateway's memory."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > limit:
            raise ValueError(f"answer larger than {limit} bytes")
    return bytes(body)


def unverified_header(token: str) -> dict[str, Any]:
    """The token's header, parsed only to pick the algorithm and key (``jwt.decode`` checks it again);
    done here rather than by ``jwt.get_unverified_header``, which costs as much as the signature check."""
    head, dot, _ = token.partition(".")
    if not dot or _B64URL.fullmatch(head) is None:
        raise AuthenticationError("invalid token: malformed")
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except ValueError:  # binascii.Error and orjson.JSONDecodeError both are
        raise AuthenticationError("invalid token: malformed") from None
    if not isinstance(header, dict):
        raise AuthenticationError("invalid token: malformed")
    return header


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named ``path``: the literal key first (namespaced claims are URLs with dots), else a
    dotted path into nested objects (``realm_access.roles``)."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
