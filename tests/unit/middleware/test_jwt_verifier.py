"""JWT verification against a JWKS served in-process, a static PEM, and the usual forgeries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from gomodel_proxy.config.loader import ConfigError
from gomodel_proxy.config.schema import JWTConfig
from gomodel_proxy.core.errors import AuthenticationError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.middleware.jwt_verifier import JWTVerifier, looks_like_jwt

ISSUER = "https://idp.example.com/"
AUDIENCE = "gomodel"
T0 = 1_800_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Keys:
    rsa: RSAPrivateKey
    rsa2: RSAPrivateKey
    ec: EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa2=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
    )


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data["use"] = "sig"
    return data


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(clock: Clock, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "team": "red",
        "iat": int(clock.now), "exp": int(clock.now) + 300,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sign(key: Any, payload: dict[str, Any], alg: str = "RS256", kid: str | None = "rsa-1") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class JWKSServer:
    url: str = ""
    document: dict[str, Any] = field(default_factory=dict)
    hits: int = 0
    status: int = 200


@pytest.fixture
async def jwks(keys: Keys) -> AsyncIterator[JWKSServer]:
    server = JWKSServer(document={"keys": [jwk(keys.rsa, "rsa-1"), jwk(keys.ec, "ec-1")]})

    async def handler(request: web.Request) -> web.Response:
        server.hits += 1
        return web.json_response(server.document, status=server.status)

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    yield server
    await runner.cleanup()


MakeVerifier = Callable[..., Awaitable[JWTVerifier]]


@pytest.fixture
async def make_verifier(jwks: JWKSServer) -> AsyncIterator[MakeVerifier]:
    made: list[JWTVerifier] = []

    async def make(clock: Clock, *, start: bool = True, **overrides: Any) -> JWTVerifier:
        logger = overrides.pop("logger", None)
        settings: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_url": jwks.url}
        settings.update(overrides)
        verifier = JWTVerifier(JWTConfig(**settings), clock=clock, logger=logger)
        made.append(verifier)
        if start:
            await verifier.start()
        return verifier

    yield make
    for verifier in made:
        await verifier.close()


async def refused(verifier: JWTVerifier, token: str) -> str:
    """The reason ``token`` is refused (asserting it is a 401 that does not echo the token)."""
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(token)
    assert caught.value.status == 401
    assert token not in caught.value.message
    return caught.value.message


# -- shape ----------------------------------------------------------------------------------------------


def test_looks_like_jwt(keys: Keys) -> None:
    token = sign(keys.rsa, {"sub": "a"})
    assert looks_like_jwt(token)
    assert not looks_like_jwt("sk-gm-0123456789abcdef")
    assert not looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.only-one-dot")
    assert not looks_like_jwt("abc.def.ghi")
    assert not looks_like_jwt("eyJ!!.def.ghi")


# -- valid tokens ---------------------------------------------------------------------------------------


async def test_rs256_from_jwks_maps_user_team_admin(keys: Keys, jwks: JWKSServer, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, user_claim="realm.user", team_claim="groups", admin_claim="realm.roles")
    token = sign(keys.rsa, claims(clock, realm={"user": "u-42", "roles": ["reader", "admin"]}, groups=["blue", "x"]))
    principal = await verifier.verify(token)
    assert principal == Principal(kind="jwt", user_id="u-42", team_id="blue", is_admin=True)
    assert jwks.hits == 1


async def test_es256_from_jwks(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, admin_claim="is_admin")
    token = sign(keys.ec, claims(clock, is_admin="yes"), alg="ES256", kid="ec-1")
    assert await verifier.verify(token) == Principal(kind="jwt", user_id="alice", team_id="red", is_admin=False)
    admin = sign(keys.ec, claims(clock, is_admin=True), alg="ES256", kid="ec-1")
    assert (await verifier.verify(admin)).is_admin is True


async def test_namespaced_claim_with_dots_is_read_literally(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, team_claim="https://example.com/team")
    token = sign(keys.rsa, claims(clock, **{"https://example.com/team": "green"}))
    assert (await verifier.verify(token)).team_id == "green"


async def test_token_without_kid_uses_the_only_key_of_its_type(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock)
    assert (await verifier.verify(sign(keys.rsa, claims(clock), kid=None))).user_id == "alice"
    assert (await verifier.verify(sign(keys.ec, claims(clock), alg="ES256", kid=None))).user_id == "alice"


async def test_leeway_accepts_a_token_just_expired(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, leeway_s=30)
    token = sign(keys.rsa, claims(clock, exp=int(clock.now) - 10, nbf=int(clock.now) + 10))
    assert (await verifier.verify(token)).user_id == "alice"


# -- refusals -------------------------------------------------------------------------------------------


def _forge_hs256(public_pem: bytes, payload: dict[str, Any], kid: str | None = "rsa-1") -> str:
    """The key-confusion attack: HS256 with the issuer's *public* key PEM as the HMAC secret."""
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["sub"] = "mallory"
    return f"{head}.{b64(json.dumps(payload).encode())}.{sig}"


REFUSALS: dict[str, tuple[Callable[[Keys, Clock], str], str]] = {
    "expired": (lambda k, c: sign(k.rsa, claims(c, exp=int(c.now) - 120)), "token expired"),
    "not yet valid": (lambda k, c: sign(k.rsa, claims(c, nbf=int(c.now) + 120)), "not yet valid"),
    "issued in the future": (lambda k, c: sign(k.rsa, claims(c, iat=int(c.now) + 120)), "issued in the future"),
    "wrong issuer": (lambda k, c: sign(k.rsa, claims(c, iss="https://evil.example.com/")), "wrong issuer"),
    "wrong audience": (lambda k, c: sign(k.rsa, claims(c, aud=["other"])), "wrong audience"),
    "no audience": (lambda k, c: sign(k.rsa, claims(c, aud=None)), "missing claim aud"),
    "missing exp": (lambda k, c: sign(k.rsa, claims(c, exp=None)), "missing claim exp"),
    "non-numeric exp": (lambda k, c: sign(k.rsa, claims(c, exp="tomorrow")), "exp is not a number"),
    "no user": (lambda k, c: sign(k.rsa, claims(c, sub=None)), "no sub claim"),
    "tampered": (lambda k, c: _tamper(sign(k.rsa, claims(c))), "bad signature"),
    "signed by another key": (lambda k, c: sign(k.rsa2, claims(c)), "bad signature"),
    "alg none": (lambda k, c: jwt.encode(claims(c), "", algorithm="none"), "algorithm none not accepted"),
    "hs256 key confusion": (lambda k, c: _forge_hs256(pem(k.rsa), claims(c)), "algorithm HS256 not accepted"),
    "alg not configured": (lambda k, c: sign(k.rsa, claims(c), alg="RS384"), "algorithm RS384 not accepted"),
    "garbage": (lambda k, c: "eyJnot.a.jwt", "malformed"),
    "not even dots": (lambda k, c: "hello", "malformed"),
    "kid of the wrong key type": (lambda k, c: sign(k.rsa, claims(c), kid="ec-1"), "does not fit algorithm RS256"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused(case: str, keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock)
    build, reason = REFUSALS[case]
    message = await refused(verifier, build(keys, clock))
    assert reason in message


async def test_hs256_confusion_is_refused_before_any_key_is_touched(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    forged = _forge_hs256(pem(keys.rsa), claims(clock))
    # The forgery is a genuine HMAC over the public PEM: a verifier trusting the header would accept it.
    assert jwt.api_jws.PyJWS().decode_complete(forged, options={"verify_signature": False})["header"]["alg"] == "HS256"
    for verifier in (
        await make_verifier(clock, start=False),
        await make_verifier(clock, start=False, jwks_url="", public_key=pem(keys.rsa).decode()),
    ):
        assert "algorithm HS256 not accepted" in await refused(verifier, forged)
        assert verifier.fetches == 0


# -- key rotation and re-fetch limits -------------------------------------------------------------------


async def test_rotation_new_kid_verifies_after_one_refetch(keys: Keys, jwks: JWKSServer,
                                                          make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock)
    old = sign(keys.rsa, claims(clock))
    assert (await verifier.verify(old)).user_id == "alice"
    jwks.document = {"keys": [jwk(keys.rsa2, "rsa-2")]}
    clock.now += 11
    new = sign(keys.rsa2, claims(clock, sub="bob"), kid="rsa-2")
    assert (await verifier.verify(new)).user_id == "bob"
    assert jwks.hits == 2
    # rsa-1 was withdrawn: its token, though cached, is no longer accepted.
    assert "unknown signing key" in await refused(verifier, old)
    assert jwks.hits == 2  # within 10 s of the last fetch: no further one


async def test_unknown_kid_flood_fetches_at_most_once_per_10s(keys: Keys, jwks: JWKSServer,
                                                             make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock)
    assert jwks.hits == 1
    flood = [sign(keys.rsa, claims(clock), kid=f"made-up-{i}") for i in range(50)]

    async def attempt(token: str) -> str:
        return await refused(verifier, token)

    # Inside the 10 s after the start-up fetch: none.
    reasons = await asyncio.gather(*(attempt(t) for t in flood))
    assert all("unknown signing key" in r for r in reasons)
    assert jwks.hits == 1
    # After it: the concurrent verifications share one fetch.
    clock.now += 10.5
    await asyncio.gather(*(attempt(t) for t in flood))
    assert jwks.hits == 2
    clock.now += 5
    await asyncio.gather(*(attempt(t) for t in flood))
    assert jwks.hits == 2
    clock.now += 6
    await attempt(flood[0])
    assert jwks.hits == 3


async def test_failed_start_fetch_is_not_fatal(keys: Keys, jwks: JWKSServer, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    warnings: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def warning(self, event: str, **fields: Any) -> None:
            warnings.append((event, fields))

    jwks.status = 503
    verifier = await make_verifier(clock, logger=Logger())
    assert [event for event, _ in warnings] == ["jwks fetch failed"]
    assert "503" in warnings[0][1]["error"]
    token = sign(keys.rsa, claims(clock))
    assert "unknown signing key" in await refused(verifier, token)  # still inside the 10 s
    jwks.status = 200
    clock.now += 11
    assert (await verifier.verify(token)).user_id == "alice"


async def test_stale_jwks_is_refreshed_in_the_background(keys: Keys, jwks: JWKSServer,
                                                         make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, jwks_refresh_s=0.05)
    assert jwks.hits == 1
    clock.now += 11
    await asyncio.sleep(0.15)  # the refresh loop woke up at least twice; the 10 s limit allows one fetch
    assert jwks.hits == 2
    clock.now += 11
    # A verify that finds the keys stale starts a refresh without waiting for it.
    assert (await verifier.verify(sign(keys.rsa, claims(clock)))).user_id == "alice"
    await asyncio.sleep(0.01)
    assert jwks.hits == 3


# -- static keys ----------------------------------------------------------------------------------------


async def test_static_pem_text(keys: Keys, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, jwks_url="", public_key=pem(keys.rsa).decode())
    # The issuer's kid is irrelevant with a single static key.
    assert (await verifier.verify(sign(keys.rsa, claims(clock), kid="whatever"))).user_id == "alice"
    assert "bad signature" in await refused(verifier, sign(keys.rsa2, claims(clock)))
    assert "does not fit algorithm ES256" in await refused(verifier, sign(keys.ec, claims(clock), alg="ES256"))
    assert verifier.fetches == 0


async def test_static_pem_file(keys: Keys, tmp_path: Path, make_verifier: MakeVerifier) -> None:
    clock = Clock()
    path = tmp_path / "idp.pem"
    path.write_bytes(pem(keys.ec))
    verifier = await make_verifier(clock, jwks_url="", public_key=str(path))
    assert (await verifier.verify(sign(keys.ec, claims(clock), alg="ES256", kid=None))).user_id == "alice"


async def test_static_key_that_cannot_be_used_is_a_config_error(tmp_path: Path, make_verifier: MakeVerifier) -> None:
    with pytest.raises(ConfigError, match="cannot read the PEM file"):
        await make_verifier(Clock(), jwks_url="", public_key=str(tmp_path / "missing.pem"))
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        await make_verifier(Clock(), jwks_url="", public_key=str(tmp_path / "bad.pem"))


# -- cache ----------------------------------------------------------------------------------------------


async def test_repeated_token_is_served_from_the_cache_until_it_expires(
    keys: Keys, make_verifier: MakeVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    verifier = await make_verifier(clock, leeway_s=0)
    decoded = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal decoded
        decoded += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)  # the module the verifier calls through
    token = sign(keys.rsa, claims(clock, exp=int(clock.now) + 60))
    first = await verifier.verify(token)
    second = await verifier.verify(token)
    assert second is first
    assert decoded == 1
    clock.now += 61
    assert "token expired" in await refused(verifier, token)
    assert decoded == 2
