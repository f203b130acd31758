"""Dashboard SSO's protocol logic without a provider (``admin.oidc``): the flow cookie, discovery, the
authorization URL, the token request's client authentication, groups to roles, the state check, and the
ID token's validation against locally signed tokens (wrong nonce, audience, azp, issuer, times, algorithms)."""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives.asymmetric import rsa

from gomodel_proxy.admin import oidc, sessions
from gomodel_proxy.admin.oidc import Discovery, Flow, IDTokenVerifier, OIDCClient, SignInError
from gomodel_proxy.config.schema import JWTConfig, SSOConfig

MASTER = "sk-master-sso-0123456789"
ISSUER = "https://idp.example.com/realms/x"
CLIENT = "gomodel-dashboard"
NOW = 1_800_000_000.0
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _config(**overrides: Any) -> SSOConfig:
    return SSOConfig(**{"issuer": ISSUER, "client_id": CLIENT, "client_secret": "s3cret:&=",
                        "admin_groups": ["gateway-admins"], "read_only_groups": ["gateway-viewers"], **overrides})


def _discovery(**overrides: Any) -> Discovery:
    fields: dict[str, Any] = {
        "issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks", "userinfo_endpoint": f"{ISSUER}/me",
        "token_auth_methods": ("client_secret_basic", "client_secret_post"), "id_token_algorithms": ("RS256",),
    }
    return Discovery(**{**fields, **overrides})


def _flow() -> Flow:
    return oidc.new_flow("https://gw.example.com/admin/dashboard/sso/callback", now=NOW)


# -- the flow cookie ------------------------------------------------------------------------------------------
def test_the_flow_seals_and_opens() -> None:
    flow = _flow()
    token = oidc.seal_flow(flow, MASTER)
    assert oidc.open_flow(token, MASTER, now=NOW + 599) == flow
    assert oidc.open_flow(token, MASTER, now=NOW + 600) is None  # 10 minutes, then gone
    assert oidc.open_flow(token, "another-master-key", now=NOW) is None
    payload, _, mac = token.partition(".")
    assert oidc.open_flow(payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), MASTER, now=NOW) is None
    assert oidc.open_flow(None, MASTER) is None and oidc.open_flow("", MASTER) is None
    assert len(token) < 600
    # A session's signature does not open a flow, nor the other way round (keys of their own).
    session_token = sessions.sign(sessions.new_session("admin", "master", now=NOW), MASTER)
    assert oidc.open_flow(session_token, MASTER, now=NOW) is None
    assert sessions.verify(token, MASTER, now=NOW) is None


def test_flows_are_random_and_pkce_is_s256() -> None:
    a, b = _flow(), _flow()
    assert len({a.state, a.nonce, a.verifier, b.state, b.nonce, b.verifier}) == 6
    assert 43 <= len(a.verifier) <= 128
    # RFC 7636 appendix B's example.
    challenge = oidc.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    assert challenge == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


# -- discovery and the authorization URL --------------------------------------------------------------------------
def _document(**overrides: Any) -> bytes:
    doc = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth", "token_endpoint": f"{ISSUER}/token",
           "jwks_uri": f"{ISSUER}/jwks", "userinfo_endpoint": f"{ISSUER}/me", **overrides}
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_discovery_is_checked() -> None:
    found = oidc.parse_discovery(_document(), ISSUER)
    assert found.token_auth_methods == ("client_secret_basic",) and found.id_token_algorithms == ("RS256",)
    assert found.userinfo_endpoint == f"{ISSUER}/me"
    for bad in (_document(issuer=ISSUER + "/"), _document(issuer="https://evil.example.com"),
                _document(token_endpoint="http://idp.example.com/token"), _document(jwks_uri=None), b"not json",
                b"[]"):
        with pytest.raises(SignInError) as info:
            oidc.parse_discovery(bad, ISSUER)
        assert info.value.code == "failed"
    # http only on loopback, as the configuration allows.
    local = "http://127.0.0.1:9000"
    assert oidc.parse_discovery(_document(issuer=local, token_endpoint=f"{local}/token"), local)


def test_the_authorization_url_carries_the_flow() -> None:
    flow = _flow()
    url = oidc.authorization_url(_discovery(authorization_endpoint=f"{ISSUER}/auth?kc=1"),
                                 _config(scopes=["openid", "email", "groups"]), flow)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert url.startswith(f"{ISSUER}/auth?kc=1&")
    assert query == {"kc": "1", "response_type": "code", "client_id": CLIENT, "redirect_uri": flow.redirect_uri,
                     "scope": "openid email groups", "state": flow.state, "nonce": flow.nonce,
                     "code_challenge": oidc.pkce_challenge(flow.verifier), "code_challenge_method": "S256"}
    assert flow.verifier not in url


def test_client_authentication_follows_the_provider() -> None:
    flow, config = _flow(), _config()
    form, headers = oidc.token_request(config, _discovery(), flow, "the-code")
    assert form == {"grant_type": "authorization_code", "code": "the-code", "redirect_uri": flow.redirect_uri,
                    "code_verifier": flow.verifier}
    user, _, password = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode().partition(":")
    assert (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)) == (CLIENT, "s3cret:&=")
    assert password == "s3cret%3A%26%3D"  # RFC 6749 2.3.1: form-encoded before base64

    form, headers = oidc.token_request(config, _discovery(token_auth_methods=("client_secret_post",)), flow, "c")
    assert form["client_id"] == CLIENT and form["client_secret"] == "s3cret:&=" and "Authorization" not in headers

    form, headers = oidc.token_request(_config(client_secret=""), _discovery(), flow, "c")
    assert form["client_id"] == CLIENT and "client_secret" not in form and "Authorization" not in headers

    with pytest.raises(SignInError):
        oidc.token_request(config, _discovery(token_auth_methods=("private_key_jwt",)), flow, "c")


# -- groups to roles --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("claims", "path", "role"), [
    ({"groups": ["gateway-admins", "x"]}, "groups", "admin"),
    ({"groups": ["gateway-viewers", "gateway-admins"]}, "groups", "admin"),  # admin wins
    ({"groups": ["gateway-viewers"]}, "groups", "read_only"),
    ({"groups": "gateway-viewers"}, "groups", "read_only"),  # one name, not a list
    ({"groups": ["other"]}, "groups", None),
    ({"groups": []}, "groups", None),
    ({"groups": {"gateway-admins": True}}, "groups", None),  # not names
    ({}, "groups", None),
    ({"realm_access": {"roles": ["gateway-admins"]}}, "realm_access.roles", "admin"),
    ({"https://example.com/groups": ["gateway-viewers"]}, "https://example.com/groups", "read_only"),
])
def test_groups_map_to_roles(claims: dict[str, Any], path: str, role: str | None) -> None:
    assert oidc.role_for(oidc.groups_of(claims, path) or [], _config()) == role


def test_an_absent_claim_is_not_an_empty_one() -> None:
    assert oidc.groups_of({}, "groups") is None and oidc.groups_of({"groups": []}, "groups") == []


# -- the state ----------------------------------------------------------------------------------------------------
def test_the_state_must_match_once() -> None:
    client = OIDCClient(_config(), clock=lambda: NOW)
    flow = _flow()
    for query in ({}, {"state": ""}, {"state": flow.state[:-1]}, {"state": flow.state + "x"}):
        with pytest.raises(SignInError) as info:
            client.check_state(flow, query)
        assert info.value.code == "state"
    with pytest.raises(SignInError) as info:
        client.check_state(None, {"state": flow.state})
    assert info.value.code == "state"
    assert client.check_state(flow, {"state": flow.state}) == flow
    with pytest.raises(SignInError) as info:  # replayed
        client.check_state(flow, {"state": flow.state})
    assert info.value.code == "state" and "replayed" in info.value.reason


def test_remembered_states_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oidc, "_MAX_USED_STATES", 50)
    clock = [NOW]
    client = OIDCClient(_config(), clock=lambda: clock[0])
    for _ in range(200):
        flow = _flow()
        client.check_state(flow, {"state": flow.state})
    assert len(client._used) == 50
    clock[0] = NOW + oidc.FLOW_TTL_S + 1  # every flow has expired: forgotten at the next check
    flow = oidc.new_flow("https://gw.example.com/cb", now=clock[0])
    client.check_state(flow, {"state": flow.state})
    assert len(client._used) == 1


async def test_the_provider_refusing_is_denied_and_its_errors_failed() -> None:
    client = OIDCClient(_config(), clock=lambda: NOW)
    for error, code in (("access_denied", "denied"), ("server_error", "failed"), ("<script>", "failed")):
        flow = _flow()
        with pytest.raises(SignInError) as info:
            await client.finish(flow, {"state": flow.state, "error": error})
        assert info.value.code == code
        assert "<script>" not in info.value.reason
    flow = _flow()
    with pytest.raises(SignInError) as info:
        await client.finish(flow, {"state": flow.state})  # no code
    assert info.value.code == "failed"
    await client.close()


# -- the ID token -----------------------------------------------------------------------------------------------
def _jwks() -> bytes:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()


def _verifier() -> IDTokenVerifier:
    async def fetch(url: str) -> bytes:
        assert url == f"{ISSUER}/jwks"
        return _jwks()

    return IDTokenVerifier(JWTConfig(issuer=ISSUER, audience=CLIENT, jwks_url=f"{ISSUER}/jwks", algorithms=["RS256"],
                                     leeway_s=60), fetch=fetch, clock=lambda: NOW)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "alice", "iat": int(NOW), "exp": int(NOW) + 300,
              "nonce": "the-nonce", "groups": ["gateway-admins"], **overrides}
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any], *, key: Any = KEY, alg: str = "RS256", kid: str | None = "k1") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None)


async def test_a_valid_id_token() -> None:
    claims = await _verifier().id_token_claims(_token(_claims()), "the-nonce")
    assert claims["sub"] == "alice" and claims["groups"] == ["gateway-admins"]
    # Several audiences with this client as azp; azp alone equal to the client.
    assert await _verifier().id_token_claims(_token(_claims(aud=[CLIENT, "api"], azp=CLIENT)), "the-nonce")
    assert await _verifier().id_token_claims(_token(_claims(azp=CLIENT)), "the-nonce")


@pytest.mark.parametrize(("claims", "reason"), [
    (_claims(nonce="another-nonce"), "nonce"),
    (_claims(nonce=None), "nonce"),
    (_claims(aud="another-client"), "audience"),
    (_claims(aud=None), "aud"),
    (_claims(aud=[CLIENT, "api"]), "azp"),  # several audiences need azp
    (_claims(aud=[CLIENT, "api"], azp="api"), "azp"),
    (_claims(azp="another-client"), "azp"),
    (_claims(iss="https://evil.example.com"), "issuer"),
    (_claims(exp=int(NOW) - 61), "expired"),
    (_claims(exp=None), "exp"),
    (_claims(iat=int(NOW) + 120), "future"),
    (_claims(iat=None), "iat"),
    (_claims(sub=None), "sub"),
    (_claims(sub=""), "sub"),
    (_claims(sub="x" * 256), "sub"),
])
async def test_an_invalid_id_token_is_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(SignInError) as info:
        await _verifier().id_token_claims(_token(claims), "the-nonce")
    assert info.value.code == "failed" and reason in info.value.reason, info.value.reason


async def test_signatures_and_algorithms() -> None:
    verifier = _verifier()
    for token in (
        _token(_claims(), key=OTHER_KEY),  # not the provider's key
        _token(_claims(), kid="unknown"),
        jwt.encode(_claims(), "secret-as-hmac-key-0123456789abcdef0123", algorithm="HS256", headers={"kid": "k1"}),
        jwt.encode(_claims(), None, algorithm="none"),
        _token(_claims())[:-4] + "AAAA",
        "not.a.token",
    ):
        with pytest.raises(SignInError) as info:
            await verifier.id_token_claims(token, "the-nonce")
        assert info.value.code == "failed"


# -- redirect URI and the flow cookie's attributes -------------------------------------------------------------------
def test_the_redirect_uri_and_the_page() -> None:
    from gomodel_proxy.admin import dashboard  # noqa: PLC0415

    request = make_mocked_request("GET", "/admin/dashboard/sso/login", headers={"Host": "gw.example.com:8443"})
    assert dashboard._redirect_uri(request, _config()) == "http://gw.example.com:8443/admin/dashboard/sso/callback"
    behind = make_mocked_request("GET", "/admin/dashboard/sso/login", headers={
        "Host": "gw.example.com", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/gw"})
    assert dashboard._redirect_uri(behind, _config()) == "https://gw.example.com/gw/admin/dashboard/sso/callback"
    configured = "https://sso.example.com/gw/admin/dashboard/sso/callback"
    assert dashboard._redirect_uri(behind, _config(redirect_url=configured)) == configured
    bad = make_mocked_request("GET", "/admin/dashboard/sso/login", headers={"Host": "evil.com/path?x="})
    with pytest.raises(Exception, match="Host"):
        dashboard._redirect_uri(bad, _config())

    response = dashboard._back_to_page("denied")
    assert response.status == 302 and response.headers["Location"] == "../#sso-error=denied"
    dashboard._flow_cookie(response, behind, "https://gw.example.com/gw/admin/dashboard/sso/callback", "v", 600)
    cookie = response.cookies[oidc.FLOW_COOKIE]
    assert cookie["path"] == "/gw/admin/dashboard/sso/callback" and cookie["samesite"] == "Lax"
    assert cookie["httponly"] and cookie["secure"] and cookie["max-age"] == "600"


def test_sessions_of_sso_users_keep_the_cookie_small() -> None:
    session = sessions.new_session("read_only", sessions.SSO_SUBJECT + "x" * 255, now=NOW, name="é" * 500,
                                   email="a" * 1000 + "@example.com")
    assert session.name is not None and len(session.name.encode()) <= sessions.MAX_PROFILE_BYTES
    assert session.email is not None and len(session.email.encode()) <= sessions.MAX_PROFILE_BYTES
    token = sessions.sign(session, MASTER)
    assert len(token) < 2048  # well under a browser's 4 KB, and under verify()'s own bound
    assert sessions.verify(token, MASTER, now=NOW) == session
    principal = session.principal()
    assert principal.kind == "jwt" and principal.user_id == session.subject and not principal.is_admin
    assert session.to_json()["name"] == session.name and "name" not in sessions.new_session("admin", "master").to_json()


def test_time_is_real_by_default() -> None:
    flow = oidc.new_flow("https://gw.example.com/cb")
    assert abs(flow.expires_at - (time.time() + oidc.FLOW_TTL_S)) < 5
