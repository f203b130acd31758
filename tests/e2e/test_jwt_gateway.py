"""JWT authentication through the gateway: an identity provider's token in place of a key.

The issuer's public key is configured as PEM text; tokens carry the user (``sub``) and the team
(``team``). The team's rate limit (set through the admin API) applies to the token's holder, and the
usage record names the user and team. A token forged with HS256 over the public key is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gomodel_proxy.storage.database import Database
from tests.support.governed import MASTER, Admin, governed_config, mock_provider, usage_rows

ISSUER = "https://id.example.test"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "sub": "alice", "team": "research", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_token_from_the_issuer_authenticates_and_carries_user_and_team(
    make_gateway: Any, tmp_path: Any, signing_key: rsa.RSAPrivateKey
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jwt.db'}"
    extra = governed_config(url, extra={"auth": {"refresh_s": 0.2, "jwt": {
        "issuer": ISSUER, "public_key": public_pem(signing_key), "algorithms": ["RS256"]}}})
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=extra)
    admin = Admin(gateway)
    await admin.call("POST", "admin/teams", {"id": "research", "name": "Research", "rpm": 2})
    client = gateway.async_openai(api_key=token(signing_key))
    await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):  # the team's rpm of 2 holds for its members' tokens
        await client.chat.completions.create(model="mock/m", messages=MESSAGES)  # type: ignore[arg-type]

    # Forged: HS256 with the public key as the HMAC secret (the classic key-confusion attack).
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "sub": "mallory", "exp": int(time.time()) + 300}).encode())
    signature = b64(hmac.new(public_pem(signing_key).encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    for bad in (f"{header}.{body}.{signature}", token(signing_key, exp=int(time.time()) - 100),
                token(signing_key, iss="https://evil.example")):
        async with gateway.http.post("v1/chat/completions", json={"model": "mock/m", "messages": MESSAGES},
                                     headers={"Authorization": f"Bearer {bad}"}) as resp:
            assert resp.status == 401
            assert bad not in await resp.text()

    db = Database(url)
    await db.connect(migrate=False)
    try:
        rows = await usage_rows(db, expect=3)
    finally:
        await db.close()
    assert sorted(r["status"] for r in rows) == [200, 200, 429]
    assert {(r["user_id"], r["team_id"], r["key_id"]) for r in rows} == {("alice", "research", None)}
