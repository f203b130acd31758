"""Dashboard sessions (``admin.sessions``): the signed cookie, its attributes, and the edge's cookie rules
(``Authenticator`` without a key: CSRF on changes, read-only sessions, only under ``/admin/``)."""

from __future__ import annotations

import base64
import hmac
import time
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gomodel_proxy.admin import sessions
from gomodel_proxy.admin.sessions import COOKIE_NAME, Session, new_session, sign, verify
from gomodel_proxy.core.errors import AuthenticationError, PermissionDeniedError
from gomodel_proxy.core.types import ANONYMOUS
from gomodel_proxy.middleware.auth import Authenticator, dashboard_open

MASTER = "sk-master-dashboard-0123456789"
NOW = 1_800_000_000


def _session(role: sessions.Role = "admin", subject: str = "master", **kw: Any) -> Session:
    return new_session(role, subject, now=NOW, **kw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    part = token.partition(".")[0]
    data: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return data


# -- sign / verify ---------------------------------------------------------------------------------
def test_round_trip() -> None:
    session = _session(subject="k_123")
    token = sign(session, MASTER)
    assert verify(token, MASTER, now=NOW + 10) == session
    assert session.expires_at - session.issued_at == 12 * 3600
    assert len(session.csrf) >= 32 and session.csrf != _session().csrf  # random per session
    assert MASTER not in token and "k_123" not in token  # the payload is encoded (not a secret: just compact)
    assert _payload(token) == {"v": 1, "r": "admin", "s": "k_123", "i": NOW, "e": NOW + 12 * 3600,
                               "c": session.csrf}
    assert len(token) < 250


def test_read_only_round_trip_and_principal() -> None:
    ro = verify(sign(_session("read_only", "viewer"), MASTER), MASTER, now=NOW)
    assert ro is not None and ro.read_only and ro.role == "read_only"
    assert not ro.principal().is_admin and ro.principal().user_id == "viewer" and ro.key_id is None
    admin = _session()
    assert admin.principal().kind == "master" and admin.principal().is_admin
    keyed = _session(subject="key:k_1")
    assert keyed.key_id == "k_1" and keyed.principal().kind == "key" and keyed.principal().key_id == "k_1"
    with pytest.raises(ValueError):
        new_session("root", "x")  # type: ignore[arg-type]


def test_tampered_payload_or_signature_is_not_a_session() -> None:
    session = _session("read_only", "viewer")
    token = sign(session, MASTER)
    payload, _, mac = token.partition(".")
    data = _payload(token)
    forged = _b64(orjson.dumps({**data, "r": "admin"}))
    assert verify(f"{forged}.{mac}", MASTER, now=NOW) is None  # role raised, old mac
    assert verify(f"{payload}.{mac[:-2]}AA", MASTER, now=NOW) is None
    assert verify(f"{payload}.{mac[::-1]}", MASTER, now=NOW) is None
    assert verify(f"{payload}x.{mac}", MASTER, now=NOW) is None
    assert verify(f"{payload}.", MASTER, now=NOW) is None
    assert verify(f".{mac}", MASTER, now=NOW) is None


def test_wrong_master_key_is_not_a_session() -> None:
    token = sign(_session(), MASTER)
    assert verify(token, MASTER + "x", now=NOW) is None
    assert verify(token, "another", now=NOW) is None
    # The cookie is signed with a key derived from the master key, not with the master key itself.
    payload = token.partition(".")[0]
    raw = hmac.new(MASTER.encode(), payload.encode(), "sha256").digest()
    assert token.partition(".")[2] != _b64(raw)


def test_expired_or_issued_in_the_future_is_not_a_session() -> None:
    session = _session(ttl_s=60)
    token = sign(session, MASTER)
    assert verify(token, MASTER, now=NOW + 59) == session
    assert verify(token, MASTER, now=NOW + 60) is None
    assert verify(token, MASTER, now=NOW + 10 ** 6) is None
    assert verify(token, MASTER, now=NOW - 3600) is None  # issued an hour from "now": not ours
    fresh = new_session("admin", "master")
    assert verify(sign(fresh, MASTER), MASTER) == fresh  # the real clock
    old = new_session("admin", "master", now=time.time() - 13 * 3600)
    assert verify(sign(old, MASTER), MASTER) is None


def test_malformed_is_not_a_session() -> None:
    key = sessions.signing_key(MASTER)

    def signed(payload: bytes) -> str:
        part = _b64(payload)
        return f"{part}.{_b64(hmac.new(key, part.encode(), 'sha256').digest())}"

    good = {"v": 1, "r": "admin", "s": "master", "i": NOW, "e": NOW + 100, "c": "nonce"}
    assert verify(signed(orjson.dumps(good)), MASTER, now=NOW) is not None
    bad_payloads = [
        b"not json", b"[]", b"null", orjson.dumps({**good, "v": 2}), orjson.dumps({**good, "r": "root"}),
        orjson.dumps({**good, "s": ""}), orjson.dumps({**good, "s": 5}), orjson.dumps({**good, "c": ""}),
        orjson.dumps({**good, "i": True}), orjson.dumps({**good, "e": float(NOW + 100)}),
        orjson.dumps({k: v for k, v in good.items() if k != "e"}), b"\xff\xfe",
    ]
    for payload in bad_payloads:
        assert verify(signed(payload), MASTER, now=NOW) is None, payload
    for token in (None, "", ".", "a.b.c", "abc", "é.é", "a" * 5000 + ".b", "a b.c", "YQ==.YQ"):
        assert verify(token, MASTER, now=NOW) is None, token


def test_the_mac_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = sign(_session(), MASTER)
    assert verify(token, MASTER, now=NOW) is not None
    assert len(calls) == 1 and calls[0][0] == token.partition(".")[2].encode()
    assert verify(token[:-1] + ("A" if token[-1] != "A" else "B"), MASTER, now=NOW) is None
    assert len(calls) == 2


# -- CSRF and the cookie -----------------------------------------------------------------------------
def test_csrf_needed_on_changes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    session = _session()
    for method in ("GET", "HEAD", "OPTIONS"):
        assert sessions.csrf_ok(make_mocked_request(method, "/admin/keys"), session)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert not sessions.csrf_ok(make_mocked_request(method, "/admin/keys"), session)
        assert not sessions.csrf_ok(make_mocked_request(method, "/admin/keys", {"X-CSRF-Token": "nope"}), session)
        assert not sessions.csrf_ok(
            make_mocked_request(method, "/admin/keys", {"X-CSRF-Token": session.csrf + "x"}), session)
        assert sessions.csrf_ok(make_mocked_request(method, "/admin/keys", {"X-CSRF-Token": session.csrf}), session)
    calls: list[Any] = []
    real = hmac.compare_digest
    def spy(a: Any, b: Any) -> bool:
        calls.append(a)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    sessions.csrf_ok(make_mocked_request("POST", "/admin/keys", {"X-CSRF-Token": "é"}), session)
    assert calls  # constant time


def _cookie(headers: dict[str, str] | None = None, **kw: Any) -> Any:
    request = make_mocked_request("POST", "/admin/dashboard/session", headers or {}, **kw)
    response = web.Response()
    session = new_session("admin", "master")
    sessions.set_cookie(response, request, session, MASTER)
    morsel = response.cookies[COOKIE_NAME]
    assert verify(morsel.value, MASTER) == session
    return morsel


def test_cookie_attributes() -> None:
    morsel = _cookie()
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict" and morsel["path"] == "/admin"
    assert not morsel["secure"]
    assert 12 * 3600 - 5 <= int(morsel["max-age"]) <= 12 * 3600
    header = morsel.OutputString()
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/admin" in header
    assert "Secure" not in header


def test_cookie_secure_only_over_https() -> None:
    assert _cookie({"X-Forwarded-Proto": "https"})["secure"] is True
    assert _cookie({"X-Forwarded-Proto": "HTTPS, http"})["secure"] is True
    assert not _cookie({"X-Forwarded-Proto": "http"})["secure"]
    assert _cookie(sslcontext=object())["secure"] is True  # TLS straight to the gateway (request.secure)


def test_cookie_path_under_a_proxy_prefix() -> None:
    assert _cookie({"X-Forwarded-Prefix": "/gw"})["path"] == "/gw/admin"
    assert _cookie({"X-Forwarded-Prefix": "/a/b/"})["path"] == "/a/b/admin"
    for bad in ("gw", "/gw;Path=/", "/g w", "//", "/gw/../x"):
        assert _cookie({"X-Forwarded-Prefix": bad})["path"] == "/admin", bad


def test_clear_cookie() -> None:
    request = make_mocked_request("DELETE", "/admin/dashboard/session", {"X-Forwarded-Proto": "https"})
    response = web.Response()
    sessions.clear_cookie(response, request)
    morsel = response.cookies[COOKIE_NAME]
    assert morsel.value == "" and morsel["max-age"] == "0" and morsel["path"] == "/admin" and morsel["secure"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict"


def test_to_json_never_carries_the_key() -> None:
    session = _session(subject="k_1")
    body = session.to_json()
    assert set(body) == {"role", "subject", "csrf", "issued_at", "expires_at"}
    assert body["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + 12 * 3600))


# -- the edge: a cookie instead of a key ------------------------------------------------------------
def _request(method: str, path: str, token: str | None = None, **headers: str) -> web.Request:
    if token is not None:
        headers["Cookie"] = f"{COOKIE_NAME}={token}"
    return make_mocked_request(method, path, headers)


async def test_the_edge_accepts_the_cookie_under_admin_only() -> None:
    authn = Authenticator(MASTER)
    session = new_session("admin", "master")
    token = sign(session, MASTER)
    principal = await authn.authenticate(_request("GET", "/admin/keys", token))
    assert principal.is_admin and principal.kind == "master"
    request = _request("GET", "/admin/usage/timeseries", token)
    await authn.authenticate(request)
    assert request[sessions.SESSION] == session
    for path in ("/v1/chat/completions", "/v1/models", "/mock/v1/chat", "/adminx"):
        with pytest.raises(AuthenticationError):
            await authn.authenticate(_request("GET", path, token))
    with pytest.raises(AuthenticationError):
        await authn.authenticate(_request("GET", "/admin/keys", sign(session, "other-master")))
    with pytest.raises(AuthenticationError):
        await authn.authenticate(_request("GET", "/admin/keys"))
    with pytest.raises(AuthenticationError):  # no master key: no sessions
        await Authenticator(None).authenticate(_request("GET", "/admin/keys", token))


async def test_a_key_wins_over_the_cookie() -> None:
    authn = Authenticator(MASTER)
    token = sign(new_session("admin", "master"), MASTER)
    with pytest.raises(AuthenticationError):  # a wrong key is refused, whatever the cookie says
        await authn.authenticate(_request("POST", "/admin/keys", token, Authorization="Bearer wrong"))
    request = _request("POST", "/admin/keys", token, Authorization=f"Bearer {MASTER}")
    assert (await authn.authenticate(request)).is_admin  # no CSRF header needed with a key
    assert sessions.SESSION not in request


async def test_the_edge_checks_csrf_on_changes() -> None:
    authn = Authenticator(MASTER)
    session = new_session("admin", "master")
    token = sign(session, MASTER)
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        with pytest.raises(PermissionDeniedError) as caught:
            await authn.authenticate(_request("POST", "/admin/keys", token, **headers))
        assert caught.value.code == "csrf_failed" and caught.value.status == 403
    ok = await authn.authenticate(_request("POST", "/admin/keys", token, **{"X-CSRF-Token": session.csrf}))
    assert ok.is_admin


async def test_a_read_only_session_reads_only() -> None:
    authn = Authenticator(MASTER)
    session = new_session("read_only", "viewer")
    token = sign(session, MASTER)
    principal = await authn.authenticate(_request("GET", "/admin/keys", token))
    assert not principal.is_admin
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        with pytest.raises(PermissionDeniedError) as caught:
            await authn.authenticate(_request(method, "/admin/keys", token, **{"X-CSRF-Token": session.csrf}))
        assert caught.value.code == "read_only"
    # ... but may sign out (with its CSRF token).
    await authn.authenticate(_request("DELETE", "/admin/dashboard/session", token, **{"X-CSRF-Token": session.csrf}))
    with pytest.raises(PermissionDeniedError):
        await authn.authenticate(_request("DELETE", "/admin/dashboard/session", token))


async def test_the_dashboard_page_and_sign_in_need_no_credential() -> None:
    authn = Authenticator(MASTER)
    for method, path in (("GET", "/admin/dashboard"), ("GET", "/admin/dashboard/"),
                         ("GET", "/admin/dashboard/assets/app.js"), ("HEAD", "/admin/dashboard/assets/app.css"),
                         ("POST", "/admin/dashboard/session"), ("GET", "/admin/dashboard/sso"),
                         ("GET", "/admin/dashboard/sso/login"), ("GET", "/admin/dashboard/sso/callback")):
        request = _request(method, path)
        assert dashboard_open(request)
        assert await authn.authenticate(request) is ANONYMOUS
    for method, path in (("GET", "/admin/dashboard/session"), ("DELETE", "/admin/dashboard/session"),
                         ("GET", "/admin/dashboardx"), ("GET", "/admin/keys"), ("POST", "/admin/dashboard/sso/login"),
                         ("POST", "/admin/dashboard/sso/callback"), ("GET", "/admin/dashboard/sso/other")):
        assert not dashboard_open(_request(method, path))
        with pytest.raises(AuthenticationError):
            await authn.authenticate(_request(method, path))


# -- sessions of an identity provider's users ----------------------------------------------------------------------
def test_name_and_email_round_trip_and_older_cookies_still_verify() -> None:
    session = _session("read_only", "sso:bob", name="Bob", email="bob@example.com")
    token = sign(session, MASTER)
    assert _payload(token)["n"] == "Bob" and _payload(token)["m"] == "bob@example.com"
    assert verify(token, MASTER, now=NOW) == session
    assert session.to_json()["name"] == "Bob" and session.to_json()["email"] == "bob@example.com"
    principal = session.principal()
    assert principal.kind == "jwt" and principal.user_id == "sso:bob" and not principal.is_admin
    # A cookie written before these fields existed (no "n", no "m") is still a session.
    old = _session(subject="key:k_9")
    assert "n" not in _payload(sign(old, MASTER)) and verify(sign(old, MASTER), MASTER, now=NOW) == old
    assert set(old.to_json()) == {"role", "subject", "csrf", "issued_at", "expires_at"}
    # Not strings: not a session (signed correctly all the same).
    forged = sessions.seal({**_payload(token), "n": 5}, MASTER, b"gomodel-proxy dashboard session v1")
    assert verify(forged, MASTER, now=NOW) is None
