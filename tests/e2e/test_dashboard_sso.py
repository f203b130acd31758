"""Dashboard SSO through a whole gateway and a REAL OpenID provider (node-oidc-provider, ``tests.support.oidc``).

The client is aiohttp with a cookie jar, walking the provider's own login and consent forms as a browser
would: alice (gateway-admins) gets an admin session, bob (gateway-viewers) a read-only one, carol (no group)
is sent back with ``#sso-error=denied``; a missing or tampered state, and a replayed callback, are refused.
The provider runs with the spec's default (the groups come from userinfo) and with every claim in the ID
token; with a confidential client (basic and post) and a public one (PKCE alone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gomodel_proxy.admin.oidc import FLOW_COOKIE
from gomodel_proxy.admin.sessions import COOKIE_NAME, CSRF_HEADER
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, governed_config, mock_provider
from tests.support.oidc import CLIENT_SECRET, OIDCProvider, free_port, login, require_provider

CALLBACK = "/admin/dashboard/sso/callback"


@dataclass
class Setup:
    gateway: Gateway
    provider: OIDCProvider
    client_id: str = "gateway"

    @property
    def callback(self) -> str:
        return self.gateway.url + CALLBACK


def sso_section(issuer: str, **overrides: Any) -> dict[str, Any]:
    return {"issuer": issuer, "client_id": "gateway", "client_secret": CLIENT_SECRET, "name": "Test IdP",
            "scopes": ["openid", "profile", "email", "groups"], "admin_groups": ["gateway-admins"],
            "read_only_groups": ["gateway-viewers"], **overrides}


@pytest.fixture
async def start_sso(make_gateway: Any, tmp_path: Any) -> AsyncIterator[Callable[..., Awaitable[Setup]]]:
    """``await start_sso(**sso_overrides)``: the provider's port chosen, a gateway configured with its issuer,
    then the provider started with the gateway's callback registered."""
    require_provider()
    providers: list[OIDCProvider] = []

    async def start(groups_in_id_token: bool = False, **overrides: Any) -> Setup:
        port = free_port()
        issuer = f"http://127.0.0.1:{port}"
        db = tmp_path / f"sso-{len(providers)}.db"
        gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=governed_config(
            f"sqlite+aiosqlite:///{db}", extra={"dashboard": {"sso": sso_section(issuer, **overrides)}}))
        provider = await OIDCProvider.start(port, [gateway.url + CALLBACK], groups_in_id_token=groups_in_id_token)
        providers.append(provider)
        assert provider.issuer == issuer
        return Setup(gateway, provider, overrides.get("client_id", "gateway"))

    yield start
    for provider in providers:
        await provider.stop()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies, as a browser does (both servers are on 127.0.0.1: an unsafe jar)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        yield client


def _cookie(resp: aiohttp.ClientResponse, name: str) -> Any:
    for header in resp.headers.getall("Set-Cookie", []):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar[name]
    raise AssertionError(f"no {name} cookie in {resp.headers.getall('Set-Cookie', [])}")


async def start_login(setup: Setup, browser: aiohttp.ClientSession) -> str:
    """``GET sso/login``: checks the redirect and the flow cookie; answers the authorization URL."""
    async with browser.get(setup.gateway.url + "/admin/dashboard/sso/login", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
        flow = _cookie(resp, FLOW_COOKIE)
        assert resp.headers["Cache-Control"] == "no-store"
    assert flow["httponly"] and flow["samesite"] == "Lax" and flow["path"] == CALLBACK and flow["max-age"] == "600"
    assert not flow["secure"]  # plain http here; over https (or X-Forwarded-Proto: https) it is Secure
    url = URL(location)
    assert str(url.with_query(None)) == setup.provider.issuer + "/auth"
    query = url.query
    assert query["response_type"] == "code" and query["client_id"] == setup.client_id
    assert query["redirect_uri"] == setup.callback and query["scope"] == "openid profile email groups"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43 and len(query["nonce"]) >= 43 and query["state"] != query["nonce"]
    return location


async def callback(setup: Setup, browser: aiohttp.ClientSession, url: str | URL) -> aiohttp.ClientResponse:
    async with browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp


async def sign_in_as(setup: Setup, browser: aiohttp.ClientSession, user: str) -> aiohttp.ClientResponse:
    """The whole flow for ``user``: the gateway's answer to the callback (a 302)."""
    redirect = await login(browser, await start_login(setup, browser), user)
    target = URL(redirect.headers["Location"])
    assert str(target.with_query(None)) == setup.callback, target
    return await callback(setup, browser, target)


async def session_of(setup: Setup, browser: aiohttp.ClientSession) -> Any:
    async with browser.get(setup.gateway.url + "/admin/dashboard/session") as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


# -- the flow ------------------------------------------------------------------------------------------------
async def test_the_page_is_told_sso_is_on(start_sso: Any) -> None:
    import fastjsonschema  # noqa: PLC0415

    from gomodel_proxy.admin.openapi import DOCUMENT, SCHEMAS  # noqa: PLC0415

    setup = await start_sso()
    async with setup.gateway.http.get("admin/dashboard/sso") as resp:  # no credential needed
        body = await resp.json()
        assert resp.status == 200 and body == {"enabled": True, "name": "Test IdP", "login_url": "sso/login"}
    fastjsonschema.compile(SCHEMAS["DashboardSSO"])(body)
    for path in ("/admin/dashboard/sso", "/admin/dashboard/sso/login", "/admin/dashboard/sso/callback"):
        assert DOCUMENT["paths"][path]["get"]["security"] == []


def count_userinfo(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from gomodel_proxy.admin.oidc import OIDCClient  # noqa: PLC0415

    calls: list[str] = []
    original = OIDCClient._userinfo

    async def counted(self: OIDCClient, url: str, access_token: str, sub: str) -> dict[str, Any]:
        calls.append(sub)
        return await original(self, url, access_token, sub)

    monkeypatch.setattr(OIDCClient, "_userinfo", counted)
    return calls


async def test_alice_signs_in_as_an_admin(start_sso: Any, browser: aiohttp.ClientSession,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    userinfo = count_userinfo(monkeypatch)
    setup = await start_sso()
    resp = await sign_in_as(setup, browser, "alice")
    assert userinfo == ["alice"]  # the spec's default: scope claims from userinfo, not the ID token
    assert resp.headers["Location"] == "../"  # the page, relative to the callback
    session_cookie = _cookie(resp, COOKIE_NAME)
    assert session_cookie["httponly"] and session_cookie["samesite"] == "Strict" and session_cookie["path"] == "/admin"
    assert len(session_cookie.value) < 1024
    flow = _cookie(resp, FLOW_COOKIE)
    assert flow.value == "" and flow["max-age"] == "0"  # the flow is over
    session = await session_of(setup, browser)
    assert session["role"] == "admin" and session["subject"] == "sso:alice"
    import fastjsonschema  # noqa: PLC0415

    from gomodel_proxy.admin.openapi import SCHEMAS  # noqa: PLC0415

    fastjsonschema.compile(SCHEMAS["DashboardSession"])(session)
    assert session["name"] == "Alice" and session["email"] == "alice@example.com"
    headers = {CSRF_HEADER: session["csrf"]}
    async with browser.post(setup.gateway.url + "/admin/keys", json={"name": "from-sso"}, headers=headers) as r:
        assert r.status == 201, await r.text()
    async with browser.post(setup.gateway.url + "/admin/keys", json={"name": "no-csrf"}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_failed"
    # The session opens /admin only: not the API.
    async with browser.get(setup.gateway.url + "/v1/models") as r:
        assert r.status == 401


async def test_bob_signs_in_read_only(start_sso: Any, browser: aiohttp.ClientSession) -> None:
    setup = await start_sso()
    await sign_in_as(setup, browser, "bob")
    session = await session_of(setup, browser)
    assert session["role"] == "read_only" and session["subject"] == "sso:bob"
    async with browser.get(setup.gateway.url + "/admin/keys") as r:
        assert r.status == 200, await r.text()
    headers = {CSRF_HEADER: session["csrf"]}
    async with browser.post(setup.gateway.url + "/admin/keys", json={"name": "x"}, headers=headers) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "read_only"


async def test_carol_is_in_no_group_and_is_refused(start_sso: Any, browser: aiohttp.ClientSession) -> None:
    setup = await start_sso()
    resp = await sign_in_as(setup, browser, "carol")
    assert resp.headers["Location"] == "../#sso-error=denied"
    assert COOKIE_NAME not in {c.key for c in browser.cookie_jar}
    async with browser.get(setup.gateway.url + "/admin/dashboard/session") as r:
        assert r.status == 401


@pytest.mark.parametrize("client", ["gateway-post", "gateway-public"])
async def test_groups_in_the_id_token_and_other_client_authentications(start_sso: Any, browser: aiohttp.ClientSession,
                                                                       client: str, monkeypatch: pytest.MonkeyPatch
                                                                       ) -> None:
    """Groups straight from the ID token (no userinfo call); client_secret_post, and a public client (PKCE)."""
    userinfo = count_userinfo(monkeypatch)
    secret = CLIENT_SECRET if client == "gateway-post" else ""
    setup = await start_sso(groups_in_id_token=True, client_id=client, client_secret=secret)
    resp = await sign_in_as(setup, browser, "alice")
    assert resp.headers["Location"] == "../" and userinfo == []
    assert (await session_of(setup, browser))["role"] == "admin"


# -- refusals --------------------------------------------------------------------------------------------------
async def test_a_tampered_or_missing_state_is_refused(start_sso: Any, browser: aiohttp.ClientSession) -> None:
    setup = await start_sso()
    redirect = await login(browser, await start_login(setup, browser), "alice")
    target = URL(redirect.headers["Location"])
    tampered = target.update_query(state=target.query["state"][:-2] + "xx")
    resp = await callback(setup, browser, tampered)
    assert resp.headers["Location"] == "../#sso-error=state"
    assert COOKIE_NAME not in {c.key for c in browser.cookie_jar}
    # The flow was cleared with the refusal: the genuine callback now has no flow to match.
    resp = await callback(setup, browser, target)
    assert resp.headers["Location"] == "../#sso-error=state"

    # No flow cookie at all (a callback the browser never started): refused the same way.
    redirect = await login(browser, await start_login(setup, browser), "alice")
    browser.cookie_jar.clear(lambda cookie: cookie.key == FLOW_COOKIE)
    resp = await callback(setup, browser, redirect.headers["Location"])
    assert resp.headers["Location"] == "../#sso-error=state"
    # And with no query at all.
    resp = await callback(setup, browser, setup.callback)
    assert resp.headers["Location"] == "../#sso-error=state"


async def test_a_replayed_callback_is_refused(start_sso: Any, browser: aiohttp.ClientSession,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    setup = await start_sso()
    redirect = await login(browser, await start_login(setup, browser), "alice")
    target = URL(redirect.headers["Location"])
    flow_value = next(c.value for c in browser.cookie_jar if c.key == FLOW_COOKIE)
    resp = await callback(setup, browser, target)
    assert resp.headers["Location"] == "../"

    # The attacker replays the callback with the flow cookie it captured: this instance remembers the state...
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as attacker:
        attacker.cookie_jar.update_cookies({FLOW_COOKIE: flow_value}, URL(setup.callback))
        resp = await callback(setup, attacker, target)
        assert resp.headers["Location"] == "../#sso-error=state"
        assert COOKIE_NAME not in {c.key for c in attacker.cookie_jar}

        # ...and another instance (which does not) meets the provider's refusal of a code used twice.
        from gomodel_proxy.admin.dashboard import OIDC  # noqa: PLC0415

        setup.gateway.app[OIDC]["client"]._used.clear()
        attacker.cookie_jar.update_cookies({FLOW_COOKIE: flow_value}, URL(setup.callback))
        resp = await callback(setup, attacker, target)
        assert resp.headers["Location"] == "../#sso-error=failed"
        assert COOKIE_NAME not in {c.key for c in attacker.cookie_jar}
    logged = capsys.readouterr()
    assert "dashboard sso sign-in failed" in logged.out + logged.err and "invalid_grant" in logged.out + logged.err
    for secret in (target.query["code"], target.query["state"], flow_value, CLIENT_SECRET):
        assert secret not in logged.out + logged.err  # no code, state, cookie or secret in the logs


async def test_a_provider_that_is_down_fails_cleanly(make_gateway: Any, tmp_path: Any,
                                                     browser: aiohttp.ClientSession) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER}, extra=governed_config(
        f"sqlite+aiosqlite:///{tmp_path / 'down.db'}", extra={"dashboard": {"sso": sso_section(issuer)}}))
    async with browser.get(gateway.url + "/admin/dashboard/sso/login", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "../#sso-error=failed"
        assert FLOW_COOKIE not in resp.headers.get("Set-Cookie", "")


async def test_without_sso_the_page_is_told_so(make_gateway: Any, tmp_path: Any) -> None:
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER},
                                 extra=governed_config(f"sqlite+aiosqlite:///{tmp_path / 'off.db'}"))
    async with gateway.http.get("admin/dashboard/sso") as resp:
        assert resp.status == 200
        assert await resp.json() == {"enabled": False, "name": None, "login_url": "sso/login"}
    for path in ("admin/dashboard/sso/login", "admin/dashboard/sso/callback?code=x&state=y"):
        async with gateway.http.get(path, allow_redirects=False) as resp:
            assert resp.status == 404, path


# -- sign-in limits ---------------------------------------------------------------------------------------------
async def test_failed_key_sign_ins_are_limited(make_gateway: Any, tmp_path: Any,
                                               browser: aiohttp.ClientSession) -> None:
    gateway = await make_gateway(providers=mock_provider(), server={"master_key": MASTER},
                                 extra=governed_config(f"sqlite+aiosqlite:///{tmp_path / 'limit.db'}"))
    url = gateway.url + "/admin/dashboard/session"
    for _ in range(5):  # successes do not count
        async with browser.post(url, json={"key": MASTER}) as resp:
            assert resp.status == 200
    for i in range(10):
        async with browser.post(url, json={"key": f"sk-wrong-{i}"}) as resp:
            assert resp.status == 401, i
    async with browser.post(url, json={"key": "sk-wrong-11"}) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["error"]["code"] == "too_many_sign_ins"
        assert body["error"]["type"] == "rate_limit_error"
        assert 1 <= int(resp.headers["Retry-After"]) <= 300
    async with browser.post(url, json={"key": MASTER}) as resp:  # the right key too: the address waits
        assert resp.status == 429
    async with browser.get(gateway.url + "/admin/dashboard/sso/login", allow_redirects=False) as resp:
        assert resp.status in (404, 429)  # no SSO configured here: 404 before the limit


async def test_sso_sign_ins_are_limited_too(start_sso: Any, browser: aiohttp.ClientSession) -> None:
    setup = await start_sso()
    for _ in range(11):  # completed sign-ins do not count
        resp = await sign_in_as(setup, browser, "alice")
        assert resp.headers["Location"] == "../"
    login_url = setup.gateway.url + "/admin/dashboard/sso/login"
    for _ in range(10):  # started and never completed: they do
        async with browser.get(login_url, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith(setup.provider.issuer)
    async with browser.get(login_url, allow_redirects=False) as resp:
        body = await resp.json()
        assert resp.status == 429 and body["error"]["code"] == "too_many_sign_ins"
        assert int(resp.headers["Retry-After"]) >= 1 and "Set-Cookie" not in resp.headers
    async with browser.post(setup.gateway.url + "/admin/dashboard/session", json={"key": MASTER}) as resp:
        assert resp.status == 429  # one count per address, whichever way in
