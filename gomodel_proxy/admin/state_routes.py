"""What the gateway is doing now, for the operators' dashboard: no database needed, nothing changed.

- ``GET /admin/providers``: each configured provider (configuration order), its circuit breaker, its keys
  by fingerprint (first 8 hex digits of a key's SHA-256; never a key, never a header) with their state, and
  how many models the registry knows for it.
- ``GET /admin/config``: the running configuration as JSON with every secret masked (:func:`mask_config`).
- ``GET /admin/requests/live``: server-sent events of requests as they finish (``observability.live``):
  the latest ``backlog`` records first, then each new one; ``: keep-alive`` every 15 s.

Admin only (``authorize``: an admin, or a read-only dashboard session, which may read all three). Registered
by the gateway when ``features.admin_api`` is on and a master key is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from aiohttp import web

from gomodel_proxy.config.provider_defaults import PROVIDER_DEFAULTS
from gomodel_proxy.config.schema import Config, KeyConfig, ProviderConfig
from gomodel_proxy.core.errors import InvalidRequestError, PermissionDeniedError
from gomodel_proxy.llmclient.breaker import OPEN, STATE_NAMES, CircuitBreaker
from gomodel_proxy.llmclient.client import LLMClient
from gomodel_proxy.llmclient.keyring import KEY_ACTIVE, KEY_RATE_LIMITED, KEY_STATE_NAMES, Key, fingerprint
from gomodel_proxy.observability import live
from gomodel_proxy.observability.logging import scrub_rendered
from gomodel_proxy.server.state import STATE, GatewayState

Authorize = Callable[[web.Request], bool]
LIVE: web.AppKey[live.LiveFeed] = web.AppKey("gomodel_live_feed", live.LiveFeed)
MASK = "***"


# -- times --------------------------------------------------------------------------------------------------
_rfc3339 = live.rfc3339


def _wall(deadline: float, now: float) -> str | None:
    """A monotonic ``deadline`` (read against ``now`` on the same clock) as an RFC 3339 time; ``None`` if past."""
    return _rfc3339(time.time() + deadline - now) if deadline > now else None


# -- GET /admin/providers -----------------------------------------------------------------------------------
def _breaker_json(breaker: CircuitBreaker, now: float) -> dict[str, Any]:
    is_open = breaker.state == OPEN
    return {
        "state": STATE_NAMES[breaker.state],
        "enabled": breaker.enabled,
        "failures": breaker.streak,  # failures in a row (within the window)
        "failure_threshold": breaker.threshold,
        "opened_at": _rfc3339(time.time() - (now - breaker.opened_at)) if is_open else None,
        "retry_at": _wall(breaker.opened_at + breaker.cooldown_s, now) if is_open else None,
        "transitions": dict(breaker.transitions),
    }


_NO_BREAKER = {"state": "closed", "enabled": False, "failures": 0, "failure_threshold": None, "opened_at": None,
               "retry_at": None, "transitions": {"closed": 0, "half_open": 0, "open": 0}}


def _key_json(key: Key, now: float) -> dict[str, Any]:
    state = key.state(now)
    name = KEY_STATE_NAMES[state]
    until: str | None = None  # revoked: until a restart
    if key.rest_until > now and not key.revoked:  # resting after a 429
        until = _wall(key.rest_until, now)
    elif state == KEY_RATE_LIMITED:  # its own rpm/tpm budget is spent: until a token is back
        wait = max(b.wait(now) for b in (key.rpm, key.tpm) if b is not None)
        until = _wall(now + wait, now)
    if state == KEY_ACTIVE and key.breaker.state == OPEN:
        name = "circuit_open"
        until = _wall(key.breaker.opened_at + key.breaker.cooldown_s, now)
    return {
        "fingerprint": key.fingerprint,
        "state": name,
        "cooldown_until": until,
        "requests": key.requests,
        "failures": dict(sorted(key.failures.items())),
        "weight": key.weight,
        "rpm": int(key.rpm.capacity) if key.rpm is not None else None,
        "tpm": int(key.tpm.capacity) if key.tpm is not None else None,
        "breaker": _breaker_json(key.breaker, now) if key.breaker.enabled else None,
    }


def _safe_url(url: str) -> str:
    """``url`` without user information and without a query (where a key could ride: ``?key=...``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return ""


def provider_states(state: GatewayState) -> list[dict[str, Any]]:
    counts: dict[str, int] = {}
    for model in state.registry.models():
        counts[model.provider] = counts.get(model.provider, 0) + 1
    status = state.registry.status
    out = []
    for name, pc in state.config.providers.items():
        provider = state.providers.get(name)
        client = getattr(provider, "llm_client", None) if provider is not None else None
        base_url = getattr(provider, "base_url", None) or pc.base_url or PROVIDER_DEFAULTS[pc.type].base_url
        entry: dict[str, Any] = {
            "name": name,
            "type": pc.type,
            "base_url": _safe_url(base_url) if isinstance(base_url, str) else "",
            # Skipped at start-up (no key with credentials from the environment): not serving.
            "available": provider is not None,
        }
        if isinstance(client, LLMClient):
            now = client.clock()
            entry["breaker"] = _breaker_json(client.breaker, now)
            key_now = client.keyring.clock()
            entry["keys"] = [_key_json(k, key_now) for k in client.keyring.keys if not k.keyless]
            entry["retries"] = dict(sorted(client.retries.items()))
            entry["fast_failures"] = client.fast_failures
        else:
            entry["breaker"] = dict(_NO_BREAKER)
            entry["keys"] = []
            entry["retries"] = {}
            entry["fast_failures"] = 0
        entry["models"] = counts.get(name, 0) if provider is not None and status.get(name) != "pending" else None
        entry["models_status"] = status.get(name)
        out.append(entry)
    return out


# -- GET /admin/config --------------------------------------------------------------------------------------
#: A field or mapping key named so holds a secret (``client_secret``, ``api_key``, ``x-api-key``,
#: ``password``, ``token``, ``authorization``, ``credential``, ``cookie``, ``private_key``, ``dsn``...).
_SECRET_NAME = re.compile(
    r"key|secret|passw|passphrase|token|credential|authori[sz]ation|cookie|private|signature|dsn|bearer|session",
    re.IGNORECASE,
)
#: Names the rule above would catch whose values are settings, not secrets (only strings are masked by name:
#: numbers and booleans such as ``max_tokens`` or ``ttl_by_key``'s values never are).
_NOT_SECRET_NAMES = frozenset({"key_prefix", "key_strategy"})
#: A URL's password (``scheme://user:password@host``) and secrets in its query.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]*@")
_URL_USER_ONLY = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^:/@\s]+@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[a-z0-9_\-]*(?:key|secret|token|passw|signature|sig|auth|credential|code)[a-z0-9_\-]*)=)[^&#\s\"']*"
)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and name.lower() not in _NOT_SECRET_NAMES


def _mask_text(text: str) -> str:
    """A string that is no secret by its name, cleaned of what looks like one: URL passwords (and users:
    a token is often passed as the user, ``https://<token>@host``), secret query parameters, bearer tokens
    and providers' key formats."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\1" + MASK + "@", text)
        text = _URL_USER_ONLY.sub(r"\1" + MASK + "@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1" + MASK, text)
    return scrub_rendered(None, "", text).replace("[REDACTED]", MASK)


def _masked(value: Any) -> Any:
    """A secret: strings become ``***`` ("" stays "": unset), containers are masked through, numbers and
    booleans (limits, weights) stay."""
    if isinstance(value, str):
        return MASK if value else ""
    if isinstance(value, Mapping):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_masked(v) for v in value]
    if _is_record(value):
        return {f.metadata.get("key", f.name): _masked(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return MASK


def _provider_key(entry: str | KeyConfig) -> Any:
    """A provider's key shown as its fingerprint (what metrics and logs name it by)."""
    if isinstance(entry, KeyConfig):
        return {"key": f"fp:{fingerprint(entry.key)}" if entry.key else "", "weight": entry.weight,
                "rpm": entry.rpm, "tpm": entry.tpm}
    return f"fp:{fingerprint(entry)}" if isinstance(entry, str) and entry else _masked(entry)


def _walk(obj: Any) -> Any:
    if _is_record(obj):
        out: dict[str, Any] = {}
        provider = isinstance(obj, ProviderConfig)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            name = f.metadata.get("key", f.name)  # the YAML key (``global`` for ``global_``)
            if provider and f.name == "api_key":
                out[name] = _provider_key(value)
            elif provider and f.name == "api_keys":
                out[name] = [_provider_key(v) for v in value]
            elif f.metadata.get("mask") == "url" and isinstance(value, str) and not _secret_name(f.name):
                out[name] = _mask_text(value)  # a service URL: where it points stays readable
            elif f.metadata.get("secret"):
                out[name] = _masked(value)
            else:
                out[name] = _field(f.name, value)
        return out
    if isinstance(obj, Mapping):  # dicts, and the read-only mappings of the guardrails' settings
        return {str(k): _field(str(k), v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_walk(v) for v in obj]
    if isinstance(obj, re.Pattern):  # a regex guardrail's compiled pattern: shown as written
        return _mask_text(obj.pattern)
    if isinstance(obj, str):
        return _mask_text(obj)
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, (Decimal, PurePath)):
        return str(obj)
    return _mask_text(repr(obj))


def _field(name: str, value: Any) -> Any:
    """A value under ``name``: a secret-looking name masks its strings (not a section: ``credentials`` is
    a section whose ``source`` and ``file`` are no secrets, though its ``master_secret`` is)."""
    if _secret_name(name) and not _is_record(value) and _holds_text(value):
        return _masked(value)
    return _walk(value)


def _is_record(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _holds_text(value: Any) -> bool:
    if isinstance(value, str):
        return True
    if isinstance(value, Mapping):
        return any(_holds_text(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_text(v) for v in value)
    return _is_record(value)


def mask_config(config: Config) -> dict[str, Any]:
    """``config`` as plain JSON data with every secret masked.

    Three rules, each enough on its own: fields the schema marks ``secret`` (their strings become ``***``;
    providers' keys ``fp:<fingerprint>``); any field or mapping key whose name says secret (``*key*``,
    ``*secret*``, ``*password*``, ``*token*``, ``*credential*``, ``authorization``...; a field added later,
    such as ``dashboard.sso.client_secret``, is covered without a change here); and every other string is
    cleaned of URL passwords, secret query parameters, bearer tokens and key-shaped words.
    """
    body: dict[str, Any] = _walk(config)
    body.pop("source", None)
    return body


# -- the routes ---------------------------------------------------------------------------------------------
class StateRoutes:
    def __init__(self, authorize: Authorize) -> None:
        self.authorize = authorize

    def _check(self, request: web.Request) -> GatewayState:
        if not self.authorize(request):
            raise PermissionDeniedError("this key may not use the admin API")
        return request.app[STATE]

    async def providers(self, request: web.Request) -> web.Response:
        state = self._check(request)
        body = {"object": "list", "data": provider_states(state)}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def config(self, request: web.Request) -> web.Response:
        state = self._check(request)
        source = state.config.source
        body = {"object": "config", "source": None if not source or source.startswith("<") else source,
                "config": mask_config(state.config)}
        return web.Response(body=orjson.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def live_requests(self, request: web.Request) -> web.StreamResponse:
        state = self._check(request)
        backlog = _backlog(request)
        admin = _flag(request, "admin")
        feed = request.app[LIVE]
        # Subscribed and the backlog read in one step (no await between): no record is missed or doubled.
        sub = feed.subscribe(admin=admin)
        first = feed.backlog(state.recorder.recent, backlog, admin=admin)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on as it comes
        })
        try:
            await response.prepare(request)
            if first:
                await response.write(b"".join(first))
            while not sub.closed:
                if not sub.queue and not sub.dropped:
                    try:
                        async with asyncio.timeout(live.KEEPALIVE_S):
                            await sub.wake.wait()
                    except TimeoutError:
                        await response.write(live.KEEPALIVE)
                        continue
                events = sub.take()
                if events:
                    await response.write(b"".join(events))
            await response.write_eof()
        except ConnectionError:  # the listener went away while an event was written
            pass
        finally:
            feed.unsubscribe(sub)
        return response


def _backlog(request: web.Request) -> int:
    raw = request.query.get("backlog")
    if raw is None:
        return live.DEFAULT_BACKLOG
    if not re.fullmatch(r"\d{1,6}", raw) or int(raw) > live.MAX_BACKLOG:
        raise InvalidRequestError(f"backlog must be an integer from 0 to {live.MAX_BACKLOG}", param="backlog")
    return int(raw)


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequestError(f"{name} must be true or false", param=name)
    return raw in ("true", "1")


def add_routes(app: web.Application, *, authorize: Authorize) -> None:
    """Register ``GET /admin/providers``, ``/admin/config`` and ``/admin/requests/live`` on the gateway's app."""
    routes = StateRoutes(authorize)
    recorder = app[STATE].recorder

    def attach(hook: Callable[[Any], None] | None) -> None:
        recorder.live = hook

    feed = live.LiveFeed(attach)
    app[LIVE] = feed

    async def end_live(_: web.Application) -> None:
        feed.close()  # listeners' streams end now, not at the end of the shutdown's grace period

    app.on_shutdown.append(end_live)
    app.router.add_get("/admin/providers", routes.providers)
    app.router.add_get("/admin/config", routes.config)
    app.router.add_get("/admin/requests/live", routes.live_requests)
