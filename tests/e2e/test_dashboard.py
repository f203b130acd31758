"""The operators' dashboard through a whole gateway (master key, admin API, SQLite): its page and assets
without a credential, sign-in with the master key or an admin key, the session cookie on the admin API
(CSRF on changes, read-only sessions), sign-out, and what the cookie does not open (``/v1``)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gomodel_proxy.admin import sessions
from gomodel_proxy.admin.dashboard import STATIC_DIR
from gomodel_proxy.admin.sessions import COOKIE_NAME
from tests.support.gateway import Gateway
from tests.support.governed import MASTER, Admin, sqlite_gateway

SESSION = "admin/dashboard/session"


@pytest.fixture
async def gateway(make_gateway: Any, tmp_path: Any) -> Gateway:
    return await sqlite_gateway(make_gateway, tmp_path / "dashboard.db")


@pytest.fixture
async def browser(gateway: Gateway) -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies (as a browser does); the gateway is on 127.0.0.1, so an unsafe jar."""
    async with aiohttp.ClientSession(base_url=gateway.url + "/", cookie_jar=aiohttp.CookieJar(unsafe=True)) as c:
        yield c


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    text = await resp.text()
    assert resp.status == status, f"{resp.method} {resp.url}: {resp.status} {text}"
    return await resp.json(content_type=None) if text else None


def _set_cookie(resp: aiohttp.ClientResponse) -> str:
    headers = resp.headers.getall("Set-Cookie", [])
    assert len(headers) == 1, headers
    return headers[0]


def _cookie_value(header: str) -> str:
    jar: SimpleCookie = SimpleCookie()
    jar.load(header)
    return jar[COOKIE_NAME].value


async def sign_in(client: aiohttp.ClientSession, key: str, status: int = 200, **kw: Any) -> Any:
    async with client.post(SESSION, json={"key": key}, **kw) as resp:
        body = await _json(resp, status)
        text = await resp.text()
        assert key not in text and all(key not in h for h in resp.headers.getall("Set-Cookie", []))
        return body, resp.headers.getall("Set-Cookie", [])


# -- the page ----------------------------------------------------------------------------------------
async def test_the_shell_and_assets_need_no_credential(gateway: Gateway) -> None:
    http = gateway.http
    async with http.get("admin/dashboard", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "dashboard/"  # relative: base paths work
    async with http.get("admin/dashboard") as resp:
        assert resp.status == 200 and str(resp.url).endswith("/admin/dashboard/")
    async with http.get("admin/dashboard/") as resp:
        html = await resp.text()
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["ETag"]
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        etag = resp.headers["ETag"]
    assert '<label for="key">' in html and 'aria-live' in html
    # Only relative URLs, nothing external.
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(not u.startswith(("/", "http:", "https:", "//")) for u in urls), urls
    async with http.get("admin/dashboard/", headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
    js = ""
    for name in sorted(p.name for p in STATIC_DIR.iterdir() if p.suffix in (".js", ".css")):
        content_type = "text/css; charset=utf-8" if name.endswith(".css") else "text/javascript; charset=utf-8"
        async with http.get(f"admin/dashboard/assets/{name}") as resp:
            body = await resp.text()
            assert resp.status == 200 and resp.headers["Content-Type"] == content_type, name
            assert resp.headers["Cache-Control"] == "no-cache"
            assert "http://" not in body.replace("http://www.w3.org/2000/svg", "") and "https://" not in body
            assert "innerHTML" not in body and "insertAdjacentHTML" not in body, name  # text nodes only
        if name.endswith(".js"):
            js += body
    assert '"../usage/timeseries"' in js and 'credentials: "same-origin"' in js and "X-CSRF-Token" in js


@pytest.mark.parametrize("path", [
    "admin/dashboard/assets/nope.js", "admin/dashboard/assets/index.html", "admin/dashboard/assets/..%2Fsessions.py",
    "admin/dashboard/assets/%2E%2E%2F%2E%2E%2Fdashboard.py", "admin/dashboard/assets/.app.js",
    "admin/dashboard/assets/", "admin/dashboard/assets/app.js%00.css",
])
async def test_assets_refuse_what_is_not_theirs(gateway: Gateway, path: str) -> None:
    async with gateway.http.get(path) as resp:
        assert resp.status in (401, 404), (path, resp.status)
        body = await resp.text()
        assert "import" not in body and "def " not in body


async def test_traversal_is_refused(gateway: Gateway) -> None:
    # The raw path, as a client that does not normalise it sends it.
    for raw in ("/admin/dashboard/assets/../../x", "/admin/dashboard/assets/../sessions.py",
                "/admin/dashboard/assets/..%2F..%2Fdashboard.py"):
        url = URL(gateway.url + raw, encoded=True)
        async with aiohttp.ClientSession() as c, c.get(url) as resp:
            body = await resp.text()
            assert resp.status in (401, 404), (raw, resp.status)
            assert "def " not in body


# -- signing in ----------------------------------------------------------------------------------------
async def test_sign_in_with_the_master_key(gateway: Gateway, browser: aiohttp.ClientSession) -> None:
    body, cookies = await sign_in(browser, MASTER)
    assert body["role"] == "admin" and body["subject"] == "master" and len(body["csrf"]) >= 32
    assert datetime.fromisoformat(body["expires_at"]) - datetime.now(UTC) > timedelta(hours=11, minutes=59)
    header = cookies[0]
    assert header.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in header and "SameSite=Strict" in header
    assert "Path=/admin" in header and "Secure" not in header
    assert sessions.verify(_cookie_value(header), MASTER) is not None
    # The cookie answers the session back.
    async with browser.get(SESSION) as resp:
        assert await _json(resp, 200) == body
        assert resp.headers["Cache-Control"] == "no-store"


async def test_sign_in_over_https_behind_a_proxy_sets_secure(gateway: Gateway) -> None:
    _, cookies = await sign_in(gateway.http, MASTER, headers={"X-Forwarded-Proto": "https",
                                                              "X-Forwarded-Prefix": "/gw"})
    assert "Secure" in cookies[0] and "Path=/gw/admin" in cookies[0]


async def test_sign_in_with_an_admin_key_and_refusals(gateway: Gateway) -> None:
    admin = Admin(gateway)
    created = await admin.call("POST", "admin/keys", {"name": "ops", "is_admin": True}, expect=201)
    body, cookies = await sign_in(gateway.http, created["key"])
    assert body["role"] == "admin" and body["subject"] == f"key:{created['id']}"
    assert sessions.verify(_cookie_value(cookies[0]), MASTER) is not None

    plain = await admin.key()
    body, cookies = await sign_in(gateway.http, plain, 403)
    assert body["error"]["type"] == "permission_error" and "not an admin key" in body["error"]["message"]
    assert cookies == []

    for wrong in ("sk-gm-wrong", MASTER + "x", created["key"][:-1]):
        body, cookies = await sign_in(gateway.http, wrong, 401)
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "authentication_error" and cookies == []

    payloads: list[Any] = [{}, {"key": ""}, {"key": 5}, []]
    for payload in payloads:
        async with gateway.http.post(SESSION, json=payload) as resp:
            assert (await _json(resp, 400))["error"]["type"] == "invalid_request_error"
    async with gateway.http.post(SESSION, data=f'{{"key": "{MASTER}"}}',
                                 headers={"Content-Type": "text/plain"}) as resp:  # a cross-site form's post
        body = await _json(resp, 400)
        assert MASTER not in str(body) and "Set-Cookie" not in resp.headers


async def test_a_session_ends_with_its_key(gateway: Gateway, browser: aiohttp.ClientSession) -> None:
    admin = Admin(gateway)
    created = await admin.call("POST", "admin/keys", {"name": "ops", "is_admin": True}, expect=201)
    await sign_in(browser, created["key"])
    async with browser.get("admin/keys") as resp:
        await _json(resp, 200)
    await admin.call("PATCH", f"admin/keys/{created['id']}", {"is_admin": False})
    async with browser.get("admin/keys") as resp:  # no longer an admin's key: the session is none
        assert (await _json(resp, 401))["error"]["type"] == "authentication_error"
    again = await admin.call("POST", "admin/keys", {"name": "ops2", "is_admin": True}, expect=201)
    await sign_in(browser, again["key"])
    async with browser.get("admin/teams") as resp:
        await _json(resp, 200)
    await admin.call("DELETE", f"admin/keys/{again['id']}")  # revoked
    async with browser.get("admin/teams") as resp:
        await _json(resp, 401)


async def test_a_revoked_admin_key_cannot_sign_in(gateway: Gateway) -> None:
    admin = Admin(gateway)
    created = await admin.call("POST", "admin/keys", {"name": "ops", "is_admin": True}, expect=201)
    await admin.call("DELETE", f"admin/keys/{created['id']}")
    body, _ = await sign_in(gateway.http, created["key"], 401)
    assert body["error"]["code"] == "revoked_api_key"


# -- the cookie on the admin API -------------------------------------------------------------------------
async def test_the_cookie_reads_and_changes_with_csrf(gateway: Gateway, browser: aiohttp.ClientSession) -> None:
    body, _ = await sign_in(browser, MASTER)
    csrf = body["csrf"]
    async with browser.get("admin/keys") as resp:
        assert (await _json(resp, 200))["object"] == "list"
    start = (datetime.now(UTC) - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    async with browser.get("admin/usage/timeseries", params={"start": start, "end": end, "bucket": "hour"}) as resp:
        assert (await _json(resp, 200))["object"] == "usage_timeseries"

    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]}):
        async with browser.post("admin/keys", json={"name": "x"}, headers=headers) as resp:
            error = (await _json(resp, 403))["error"]
            assert error["code"] == "csrf_failed" and error["type"] == "permission_error"
    async with browser.get("admin/keys") as resp:
        assert (await _json(resp, 200))["data"] == []  # nothing was made
    async with browser.post("admin/keys", json={"name": "x"}, headers={"X-CSRF-Token": csrf}) as resp:
        created = await _json(resp, 201)
        assert created["key"]  # shown once, at creation, as the admin API does
    async with browser.get("admin/keys") as resp:
        listed = await resp.text()
        assert created["key"] not in listed


async def test_a_read_only_session_reads_but_changes_nothing(gateway: Gateway) -> None:
    session = sessions.new_session("read_only", "viewer")
    cookie = {"Cookie": f"{COOKIE_NAME}={sessions.sign(session, MASTER)}"}
    http = gateway.http
    for path in ("admin/keys", "admin/teams", "admin/usage/timeseries", "admin/rate-limits", SESSION):
        async with http.get(path, headers=cookie) as resp:
            await _json(resp, 200)
    for method, path, payload in (("POST", "admin/keys", {"name": "x"}), ("POST", "admin/teams", {"name": "t"}),
                                  ("PUT", "admin/budgets/global", {"max_budget": 1, "period": "daily"}),
                                  ("POST", "admin/reload", None), ("POST", "admin/credentials/reload", None)):
        async with http.request(method, path, json=payload, headers={**cookie, "X-CSRF-Token": session.csrf}) as resp:
            assert (await _json(resp, 403))["error"]["code"] == "read_only", (method, path)
    async with http.get("admin/keys", headers={"Authorization": f"Bearer {MASTER}"}) as resp:
        assert (await _json(resp, 200))["data"] == []
    async with http.delete(SESSION, headers={**cookie, "X-CSRF-Token": session.csrf}) as resp:
        assert resp.status == 204  # it may sign out


async def test_sign_out_clears_the_cookie(gateway: Gateway, browser: aiohttp.ClientSession) -> None:
    body, _ = await sign_in(browser, MASTER)
    async with browser.delete(SESSION) as resp:
        assert (await _json(resp, 403))["error"]["code"] == "csrf_failed"
    async with browser.delete(SESSION, headers={"X-CSRF-Token": body["csrf"]}) as resp:
        assert resp.status == 204
        header = _set_cookie(resp)
        assert header.startswith(f'{COOKIE_NAME}=""') or header.startswith(f"{COOKIE_NAME}=;")
        assert "Max-Age=0" in header and "Path=/admin" in header
    async with browser.get(SESSION) as resp:
        await _json(resp, 401)
    async with browser.get("admin/keys") as resp:
        await _json(resp, 401)


async def test_bad_cookies_are_no_session(gateway: Gateway) -> None:
    http = gateway.http
    good = sessions.sign(sessions.new_session("admin", "master"), MASTER)
    expired = sessions.sign(sessions.new_session("admin", "master", now=1_700_000_000), MASTER)
    for token in ("garbage", good[:-2], sessions.sign(sessions.new_session("admin", "master"), "other"), expired):
        async with http.get("admin/keys", headers={"Cookie": f"{COOKIE_NAME}={token}"}) as resp:
            error = (await _json(resp, 401))["error"]
            assert error["type"] == "authentication_error"
        async with http.get(SESSION, headers={"Cookie": f"{COOKIE_NAME}={token}"}) as resp:
            await _json(resp, 401)


async def test_the_cookie_does_not_open_v1(gateway: Gateway) -> None:
    token = sessions.sign(sessions.new_session("admin", "master"), MASTER)
    http = gateway.http
    cookie = {"Cookie": f"{COOKIE_NAME}={token}"}
    chat = {"model": "mock/m", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post("v1/chat/completions", json=chat, headers=cookie) as resp:
        assert (await _json(resp, 401))["error"]["type"] == "authentication_error"
    async with http.get("v1/models", headers=cookie) as resp:
        await _json(resp, 401)
    async with http.post("v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {MASTER}"}) as resp:
        await _json(resp, 200)  # the key, as before


async def test_api_keys_work_as_before_on_the_session_route(gateway: Gateway) -> None:
    http = gateway.http
    async with http.get(SESSION, headers={"Authorization": f"Bearer {MASTER}"}) as resp:
        assert (await _json(resp, 401))["error"]["code"] == "no_session"  # a key is not a session
    async with http.get(SESSION) as resp:
        await _json(resp, 401)


async def test_the_session_routes_match_the_openapi_document(gateway: Gateway,
                                                             browser: aiohttp.ClientSession) -> None:
    import fastjsonschema  # noqa: PLC0415

    from gomodel_proxy.admin.openapi import DOCUMENT, SCHEMAS  # noqa: PLC0415

    item = DOCUMENT["paths"]["/admin/dashboard/session"]
    assert set(item) == {"get", "post", "delete"} and item["post"]["security"] == []
    assert not any(p.startswith("/admin/dashboard/assets") or p.rstrip("/") == "/admin/dashboard"
                   for p in DOCUMENT["paths"])  # the page and its assets are not API
    check = fastjsonschema.compile(SCHEMAS["DashboardSession"])
    fastjsonschema.compile(SCHEMAS["DashboardSignIn"])({"key": MASTER})
    body, _ = await sign_in(browser, MASTER)
    check(body)
    async with browser.get(SESSION) as resp:
        check(await _json(resp, 200))
    async with gateway.http.get("admin/openapi.json", headers={"Authorization": f"Bearer {MASTER}"}) as resp:
        assert "/admin/dashboard/session" in (await _json(resp, 200))["paths"]
