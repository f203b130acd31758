"""Dashboard sessions: a signed cookie, no server-side store (so every instance accepts it).

The cookie's value is ``<payload>.<mac>``, both base64url without padding: the payload is the compact JSON
(orjson) of ``{"v": 1, "r": role, "s": subject, "i": issued at, "e": expires at, "c": csrf nonce}`` (epoch
seconds; a session signed in through the identity provider adds ``"n"``, the user's name, and ``"m"``, the
email, each at most ``MAX_PROFILE_BYTES``) and the mac its HMAC-SHA256 under a key derived from the master key
(``HMAC(master_key, "gomodel-proxy dashboard session v1")``): every instance with the same master key accepts
the cookie, and rotating the master key ends every session. ``seal``/``unseal`` sign other short-lived
values the same way under a key of their own (``admin.oidc``'s sign-in flow cookie). The mac is compared in
constant time; a tampered, expired or malformed cookie is simply not a session (``verify`` answers ``None``).

The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/admin`` (behind a proxy that sends
``X-Forwarded-Prefix``, that prefix + ``/admin``) and ``Secure`` when the request came over HTTPS
(``request.secure`` or ``X-Forwarded-Proto: https``). A change (any method but GET, HEAD, OPTIONS) made with
the cookie must carry ``X-CSRF-Token`` equal to the session's nonce (``csrf_ok``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp import web

from gomodel_proxy.core.types import Principal

Role = Literal["admin", "read_only"]
ROLES: tuple[Role, ...] = ("admin", "read_only")
COOKIE_NAME = "gomodel_session"
COOKIE_PATH = "/admin"
CSRF_HEADER = "X-CSRF-Token"
#: How long a session lasts.
DEFAULT_TTL_S = 12 * 3600
#: Methods that change nothing: no CSRF token needed, and allowed to read-only sessions.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The subject of a session signed in with the master key.
MASTER_SUBJECT = "master"
#: The subject of a session signed in with a virtual key: this prefix and the key's id.
KEY_SUBJECT = "key:"
#: The subject of a session signed in through the identity provider (``dashboard.sso``): this prefix and its ``sub``.
SSO_SUBJECT = "sso:"
#: The longest name or email kept in a session (UTF-8 bytes; longer ones are cut): the cookie stays small.
MAX_PROFILE_BYTES = 200
_CONTEXT = b"gomodel-proxy dashboard session v1"
_VERSION = 1
#: Longer than any cookie this module writes: anything longer is refused before decoding.
_MAX_TOKEN = 2048
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~-]+)+/?$")


@dataclass(slots=True, frozen=True)
class Session:
    """A signed-in dashboard user."""

    role: Role
    #: Who signed in: ``master``, or the virtual key's id (never the key).
    subject: str
    #: Epoch seconds.
    issued_at: int
    expires_at: int
    #: The nonce a change must send back as ``X-CSRF-Token``.
    csrf: str
    #: The identity provider's user's name and email, when it gave them (sessions signed in with a key: none).
    name: str | None = None
    email: str | None = None

    @property
    def read_only(self) -> bool:
        return self.role != "admin"

    def to_json(self) -> dict[str, Any]:
        """What ``/admin/dashboard/session`` answers (the nonce included: the page needs it)."""
        out: dict[str, Any] = {
            "role": self.role, "subject": self.subject, "csrf": self.csrf,
            "issued_at": _rfc3339(self.issued_at), "expires_at": _rfc3339(self.expires_at),
        }
        if self.name is not None:
            out["name"] = self.name
        if self.email is not None:
            out["email"] = self.email
        return out

    @property
    def key_id(self) -> str | None:
        """The virtual key the session signed in with (subject ``key:<id>``), if it did."""
        return self.subject[len(KEY_SUBJECT):] if self.subject.startswith(KEY_SUBJECT) else None

    def principal(self) -> Principal:
        """Who the session is to the gateway: the master, the key it signed in with, or (any other subject:
        an identity provider's user) a user; admin only when its role is. (A read-only session's reads are
        allowed by the admin routes' ``authorize``, not by ``is_admin``.)"""
        admin = self.role == "admin"
        if self.subject == MASTER_SUBJECT:
            return Principal(kind="master", is_admin=admin)
        if self.key_id is not None:
            return Principal(kind="key", key_id=self.key_id, is_admin=admin)
        return Principal(kind="jwt", user_id=self.subject, is_admin=admin)


#: The session of a request authenticated by its cookie (set by the authenticator).
SESSION: web.RequestKey[Session] = web.RequestKey("gomodel_session", Session)


def new_session(role: Role, subject: str, *, now: float | None = None, ttl_s: int = DEFAULT_TTL_S,
                name: str | None = None, email: str | None = None) -> Session:
    """A fresh session with a random CSRF nonce (``name``/``email`` cut to ``MAX_PROFILE_BYTES``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    issued = int(time.time() if now is None else now)
    return Session(role=role, subject=subject, issued_at=issued, expires_at=issued + ttl_s,
                   csrf=secrets.token_urlsafe(24), name=_profile(name), email=_profile(email))


def _profile(value: str | None) -> str | None:
    """``value`` cut to ``MAX_PROFILE_BYTES`` of UTF-8 (at a character boundary); ``None`` when empty."""
    if not value:
        return None
    return value.encode("utf-8")[:MAX_PROFILE_BYTES].decode("utf-8", "ignore") or None


def signing_key(master_key: str, context: bytes = _CONTEXT) -> bytes:
    """The key sessions (or, with another ``context``, other sealed values) are signed with, derived from the
    master key (never the master key itself)."""
    return hmac.new(master_key.encode(), context, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def sign(session: Session, master_key: str) -> str:
    """The cookie value of ``session``."""
    fields: dict[str, Any] = {
        "v": _VERSION, "r": session.role, "s": session.subject, "i": session.issued_at,
        "e": session.expires_at, "c": session.csrf,
    }
    if session.name is not None:
        fields["n"] = session.name
    if session.email is not None:
        fields["m"] = session.email
    return seal(fields, master_key, _CONTEXT)


def seal(fields: dict[str, Any], master_key: str, context: bytes) -> str:
    """``<payload>.<mac>``: ``fields`` as compact JSON, signed under the key of ``context``."""
    payload = _b64(orjson.dumps(fields))
    return f"{payload}.{_mac(signing_key(master_key, context), payload)}"


def unseal(token: str | None, master_key: str, context: bytes) -> dict[str, Any] | None:
    """The fields ``seal`` signed under ``context``, when ``token`` is intact (mac compared in constant time)."""
    if not token or len(token) > _MAX_TOKEN or token.count(".") != 1:
        return None
    payload, _, mac = token.partition(".")
    if not _B64.match(payload) or not _B64.match(mac):
        return None
    if not hmac.compare_digest(mac.encode("ascii"), _mac(signing_key(master_key, context), payload).encode("ascii")):
        return None
    try:
        data = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None


def verify(token: str | None, master_key: str, *, now: float | None = None) -> Session | None:
    """The session in ``token`` when it is intact (its mac, compared in constant time) and not expired."""
    data = unseal(token, master_key, _CONTEXT)
    if data is None or data.get("v") != _VERSION:
        return None
    role, subject, csrf = data.get("r"), data.get("s"), data.get("c")
    if role not in ROLES or not isinstance(subject, str) or not subject or not isinstance(csrf, str) or not csrf:
        return None
    issued, expires = data.get("i"), data.get("e")
    if type(issued) is not int or type(expires) is not int:  # not bool, not float
        return None
    moment = time.time() if now is None else now
    if not issued <= moment + 60 or moment >= expires:  # a minute of clock skew between instances
        return None
    name, email = data.get("n"), data.get("m")
    if not (name is None or isinstance(name, str)) or not (email is None or isinstance(email, str)):
        return None
    return Session(role=role, subject=subject, issued_at=issued, expires_at=expires, csrf=csrf, name=name,
                   email=email)


def from_request(request: web.Request, master_key: str) -> Session | None:
    """The session of ``request``'s cookie, if any and valid."""
    return verify(request.cookies.get(COOKIE_NAME), master_key)


def csrf_ok(request: web.Request, session: Session) -> bool:
    """Whether ``request`` may go ahead: a safe method, or ``X-CSRF-Token`` equal to the nonce (constant time)."""
    if request.method in SAFE_METHODS:
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    return hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode("ascii"))


# -- the cookie ------------------------------------------------------------------------------------
def is_secure(request: web.Request) -> bool:
    """Whether the browser reached the gateway over HTTPS (directly, or through a proxy that says so)."""
    if request.secure:
        return True
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def cookie_path(request: web.Request) -> str:
    """``/admin``, under the proxy's ``X-Forwarded-Prefix`` when it sends a well-formed one."""
    prefix = request.headers.get("X-Forwarded-Prefix", "").strip()
    if prefix and _PREFIX.match(prefix) and not {".", ".."} & set(prefix.split("/")):
        return prefix.rstrip("/") + COOKIE_PATH
    return COOKIE_PATH


def set_cookie(response: web.StreamResponse, request: web.Request, session: Session, master_key: str) -> None:
    response.set_cookie(
        COOKIE_NAME, sign(session, master_key), path=cookie_path(request), httponly=True, samesite="Strict",
        secure=is_secure(request), max_age=max(0, session.expires_at - int(time.time())),
    )


def clear_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.set_cookie(
        COOKIE_NAME, "", path=cookie_path(request), httponly=True, samesite="Strict", secure=is_secure(request),
        max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT",
    )


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
