"""Configuration hot reload: SIGHUP, ``gomodel-proxy reload`` and ``POST /admin/reload``.

A reload reads the configuration again (the main file, the failover file, the guardrails file) with the
same strict loader as start-up, compares it with what is running, builds every new piece it needs, and
only then swaps references, in one step without an ``await`` (so between two requests):

- live: ``models`` (aliases, virtual models) and the failover file (a new ``Router``); the guardrails
  (a new ``GuardrailSet`` in a new ``Guardrails`` step); ``rate_limits`` (a new ``RateLimit`` step); the
  response cache's TTLs (``cache.responses.ttl_s``, ``ttl_by_model``, ``ttl_by_key``); ``server.log_level``;
  the providers' keys when a credentials manager (``state.credentials``) is there to reload them.
- everything else (the server's address and workers, providers added, removed or changed, database and
  Redis URLs, feature switches, ...) needs a restart: it is logged as such and otherwise ignored, while
  the rest is applied. The running configuration (``state.config``) is the old one with the live parts
  replaced, so a key that needs a restart is reported again by the next reload until it is restarted.

A request already under way keeps the router and chain it started with (``governed`` reads the chain
once). A file with a problem refuses the whole reload: the problems (``file:line:col``) are logged and
answered, ``gomodel_config_reloads_total{result="refused"}`` is counted, and nothing changes.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from gomodel_proxy.config.loader import ConfigError, load_config
from gomodel_proxy.config.schema import Config
from gomodel_proxy.limits.redis_limiter import RedisRateLimiter
from gomodel_proxy.limits.token_bucket import MemoryRateLimiter
from gomodel_proxy.middleware.auth import ModelAccess
from gomodel_proxy.middleware.chain import Chain
from gomodel_proxy.middleware.ratelimit import RateLimit
from gomodel_proxy.routing.router import Router
from gomodel_proxy.server.state import STATE, GatewayState

_MISSING: Any = object()
#: Mappings whose entries are compared one by one (so that a change names the provider or alias).
_BY_ENTRY = frozenset({"providers", "models", "pricing.models"})
_CACHE_TTL = frozenset({"cache.responses.ttl_s", "cache.responses.ttl_by_model", "cache.responses.ttl_by_key"})
_PROVIDER_KEY = re.compile(r"^providers\.[^.]+\.(api_key|api_keys)$")
#: A live part applies only under the feature switches it was started with: when one of these changed,
#: the part's changes need the restart that the switch needs.
_GATES: dict[str, tuple[str, ...]] = {
    "failover": ("features.failover",),
    "guardrails": ("features.middleware", "features.guardrails"),
    "rate_limits": ("features.middleware", "features.rate_limiting"),
    "cache_ttl": ("features.middleware", "cache.responses.enabled"),
}


# -- what changed ---------------------------------------------------------------------------------
def flatten(config: Config) -> dict[str, Any]:
    """Every setting of ``config`` by dotted key (the YAML's names), the loaded files' content included."""
    out: dict[str, Any] = {}
    _walk(config, "", out)
    return out


def _walk(obj: Any, path: str, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name == "source":  # where it came from, not what it says
                continue
            name = f.metadata.get("key", f.name)
            _walk(getattr(obj, f.name), f"{path}.{name}" if path else name, out)
        return
    if path in _BY_ENTRY and isinstance(obj, Mapping):
        for key, value in obj.items():
            _walk(value, f"{path}.{key}", out)
        return
    out[path] = obj


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose values differ (a provider added or removed is one key, ``providers.<name>``).

    Only names: a secret's value never appears.
    """
    before, after = flatten(old), flatten(new)
    out: list[str] = []
    for key in [*before, *(k for k in after if k not in before)]:
        if before.get(key, _MISSING) == after.get(key, _MISSING):
            continue
        parts = key.split(".")
        named = key
        if parts[0] == "providers" and len(parts) > 2 and (parts[1] in old.providers) != (parts[1] in new.providers):
            named = f"providers.{parts[1]}"
        if named not in out:
            out.append(named)
    return out


def live_part(key: str, *, credentials: bool = False) -> str | None:
    """The part of the running gateway a changed ``key`` is applied to, or ``None``: it needs a restart."""
    if key == "models" or key.startswith("models."):
        return "aliases"
    if key in ("failover", "failover_file") or key.startswith("failover."):
        return "failover"
    if key.startswith("guardrails."):
        return "guardrails"
    if key.startswith("rate_limits."):
        return "rate_limits"
    if key in _CACHE_TTL:
        return "cache_ttl"
    if key == "server.log_level":
        return "log_level"
    if credentials and _PROVIDER_KEY.match(key):
        return "credentials"
    return None


def classify(changed: Iterable[str], *, credentials: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """``changed`` split into the live parts (part -> its keys) and the keys that need a restart."""
    changed = list(changed)
    parts: dict[str, list[str]] = {}
    restart: list[str] = []
    for key in changed:
        part = live_part(key, credentials=credentials)
        if part is None:
            restart.append(key)
        else:
            parts.setdefault(part, []).append(key)
    for part, gates in _GATES.items():
        if part in parts and any(gate in changed for gate in gates):
            restart.extend(parts.pop(part))
    return parts, restart


# -- the result -----------------------------------------------------------------------------------
@dataclass(slots=True)
class ReloadResult:
    #: ``applied`` (something changed live), ``unchanged`` (nothing to apply) or ``refused`` (a problem).
    status: str
    trigger: str
    #: The keys applied live.
    changed: list[str] = field(default_factory=list)
    #: The keys that changed but need a restart (ignored until then).
    needs_restart: list[str] = field(default_factory=list)
    #: Why it was refused, each with its file:line:col.
    problems: list[str] = field(default_factory=list)
    #: The credentials manager's reload: ``reloaded``, ``failed: <why>``; ``None`` when there is none.
    credentials: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status, "trigger": self.trigger, "changed": self.changed,
            "needs_restart": self.needs_restart, "problems": self.problems,
        }
        if self.credentials is not None:
            out["credentials"] = self.credentials
        return out


# -- building and swapping ------------------------------------------------------------------------
def merged_config(old: Config, new: Config, parts: Mapping[str, list[str]]) -> Config:
    """The running configuration with the live ``parts`` taken from ``new``; the rest stays ``old``."""
    changes: dict[str, Any] = {}
    if "aliases" in parts:
        changes["models"] = new.models
    if "failover" in parts:
        changes["failover"], changes["failover_file"] = new.failover, new.failover_file
    if "guardrails" in parts:
        changes["guardrails"] = new.guardrails
    if "rate_limits" in parts:
        changes["rate_limits"] = new.rate_limits
    if "cache_ttl" in parts:
        r = new.cache.responses
        responses = dataclasses.replace(old.cache.responses, ttl_s=r.ttl_s, ttl_by_model=r.ttl_by_model,
                                        ttl_by_key=r.ttl_by_key)
        changes["cache"] = dataclasses.replace(old.cache, responses=responses)
    if "log_level" in parts:
        changes["server"] = dataclasses.replace(old.server, log_level=new.server.log_level)
    if "credentials" in parts:
        providers = dict(old.providers)
        for key in parts["credentials"]:
            name = key.split(".")[1]
            providers[name] = dataclasses.replace(providers[name], api_key=new.providers[name].api_key,
                                                  api_keys=new.providers[name].api_keys)
        changes["providers"] = providers
    merged = dataclasses.replace(old, **changes)
    merged.source = old.source
    return merged


def _index(steps: list[Any], kind: type) -> int | None:
    return next((i for i, step in enumerate(steps) if isinstance(step, kind)), None)


def prepare(state: GatewayState, merged: Config, parts: Mapping[str, list[str]], *,
            admin: Any = None) -> Callable[[], None]:
    """Build every new piece for ``parts`` (raising on a problem, with nothing changed), and return the
    function that swaps them in: synchronous, so no request sees half of it. ``admin``: the admin API's
    context, whose copy of the rate limits follows them."""
    gov = state.governance
    features = state.config.features  # the switches it runs with (a change needs a restart)
    steps: list[Any] = list(state.chain.middlewares)
    chain_changed = False
    router = state.router
    if "aliases" in parts or "failover" in parts:
        router = Router(merged, state.registry, state.metrics, state.logger)
    guardrails: Any = _MISSING
    if "guardrails" in parts and features.middleware and features.guardrails:
        from gomodel_proxy.middleware.cache import ResponseCache  # noqa: PLC0415 - as at start-up: when used
        from gomodel_proxy.middleware.guardrails import Guardrails  # noqa: PLC0415

        guardrails = _build_guardrails(state, merged) if merged.guardrails.specs else None
        at = _index(steps, Guardrails)
        if guardrails:
            if at is not None:
                step = copy.copy(steps[at])  # the same step but for its guardrails (in-flight requests keep theirs)
                step.guardrails = guardrails
                steps[at] = step
            else:
                step = Guardrails(guardrails, metrics=state.metrics, audit=gov.audit, logger=state.logger)
                cache_at = _index(steps, ResponseCache)  # as built at start-up: guardrails before the cache
                steps.insert(len(steps) if cache_at is None else cache_at, step)
        elif at is not None:
            del steps[at]
        chain_changed = True
    limiter = None
    if "rate_limits" in parts and features.middleware and features.rate_limiting:
        limits = merged.rate_limits
        at = _index(steps, RateLimit)
        if at is not None:
            rate_limit = copy.copy(steps[at])
            rate_limit.config = limits
            steps[at] = rate_limit
            chain_changed = True
        elif any((limits.default_key.rpm, limits.default_key.tpm, limits.global_.rpm, limits.global_.tpm)):
            limiter = gov.limiter
            if limiter is None:
                limiter = RedisRateLimiter(gov.guard) if gov.guard is not None else MemoryRateLimiter()
            access = _index(steps, ModelAccess)  # as built at start-up: after the model check
            steps.insert(0 if access is None else access + 1, RateLimit(limiter, limits, gov.keys))
            chain_changed = True
    cache = gov.cache if "cache_ttl" in parts else None

    def apply() -> None:
        state.config = merged
        state.router = router
        if chain_changed:
            chain = Chain(steps)
            state.chain = gov.chain = chain
        if guardrails is not _MISSING:
            gov.guardrails = guardrails
        if limiter is not None:
            gov.limiter = limiter
        if cache is not None:
            cache.config = merged.cache.responses
        if admin is not None and "rate_limits" in parts:
            admin.rate_limits = merged.rate_limits  # what GET /admin/rate-limits shows
        if "log_level" in parts:
            set_log_level(merged.server.log_level, _loggers(state))
            if hasattr(state.recorder, "access_log"):
                state.recorder.access_log = merged.server.log_level in ("debug", "info")

    return apply


def _build_guardrails(state: GatewayState, config: Config) -> Any:
    from gomodel_proxy.server.governance import _guardrails  # noqa: PLC0415 - the start-up builder itself

    missing = [
        f"{config.source}: guardrails.{spec.name}.config.provider: '{spec.config.get('provider')}' is not "
        "running on this gateway; adding a provider needs a restart"
        for spec in config.guardrails.specs
        if spec.enabled and spec.kind == "content-filter" and spec.config.get("provider")
        and spec.config.get("provider") not in state.providers
    ]
    if missing:
        raise ConfigError(missing)
    return _guardrails(config, state.providers, state.governance.keys, state.logger)


def admin_context(app: web.Application) -> Any:
    """The admin API's context when it is registered (it shows the configured rate limits)."""
    module = sys.modules.get("gomodel_proxy.admin.routes")
    return None if module is None else app.get(module.ADMIN)


def _loggers(state: GatewayState) -> list[Any]:
    found = [state.logger]
    for provider in state.providers.values():
        client = getattr(provider, "llm_client", None)
        found += [getattr(client, "logger", None), getattr(getattr(client, "keyring", None), "logger", None)]
    return [lg for lg in found if lg is not None]


def set_log_level(level: str, loggers: Iterable[Any] = ()) -> None:
    """Filter below ``level`` from now on, keeping the output format and stream as configured.

    Loggers cache their filtering on first use; those given are made to read the configuration again.
    """
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())))
    for logger in loggers:
        attrs = getattr(logger, "__dict__", None)
        if isinstance(attrs, dict):
            attrs.pop("bind", None)  # structlog's lazy proxy caches its bound logger there


# -- the reloader ---------------------------------------------------------------------------------
class Reloader:
    """Reloads ``app``'s configuration from the file it was started with; one reload at a time."""

    def __init__(self, app: web.Application, *, env: Mapping[str, str] | None = None) -> None:
        self.app = app
        #: The environment ``${VAR}`` and ``GOMODEL__*`` are read from (``None``: the process's).
        self.env = env
        self.last: ReloadResult | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ReloadResult]] = set()

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    @property
    def path(self) -> str | None:
        source = self.state.config.source
        return None if source == "<defaults>" else source

    def on_signal(self) -> None:
        """SIGHUP: reload in the background (the loop's signal handler must not block)."""
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, trigger: str = "api") -> ReloadResult:
        """Reload now and say what happened; never raises for a bad file (it is refused)."""
        task = asyncio.get_running_loop().create_task(self._reload(trigger))
        # A client that leaves (POST /admin/reload) must not cancel a reload halfway through.
        return await asyncio.shield(task)

    async def _reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            result = await self._reload_config(trigger)
            result.credentials = await self._reload_credentials()
            self.last = result
            self._report(result)
            return result

    async def _reload_config(self, trigger: str) -> ReloadResult:
        state = self.state
        try:
            new = await asyncio.to_thread(load_config, self.path, dict(os.environ) if self.env is None else self.env)
        except ConfigError as exc:
            return ReloadResult("refused", trigger, problems=list(exc.problems))
        except Exception as exc:  # a bug, not a bad file: still nothing changes
            return ReloadResult("refused", trigger, problems=[f"{self.path}: {type(exc).__name__}: {exc}"[:500]])
        changed = changed_keys(state.config, new)
        has_credentials = callable(getattr(getattr(state, "credentials", None), "reload", None))
        parts, restart = classify(changed, credentials=has_credentials)
        if not parts:
            return ReloadResult("unchanged", trigger, needs_restart=restart)
        try:
            apply = prepare(state, merged_config(state.config, new, parts), parts, admin=admin_context(self.app))
        except ConfigError as exc:
            return ReloadResult("refused", trigger, problems=list(exc.problems))
        except Exception as exc:
            return ReloadResult("refused", trigger, problems=[f"{self.path}: {type(exc).__name__}: {exc}"[:500]])
        apply()
        live = [key for keys in parts.values() for key in keys]
        return ReloadResult("applied", trigger, changed=live, needs_restart=restart)

    async def _reload_credentials(self) -> str | None:
        """The providers' keys, from the credentials manager when the gateway has one."""
        reload = getattr(getattr(self.state, "credentials", None), "reload", None)
        if not callable(reload):
            return None
        try:
            await reload()
        except Exception as exc:
            self.state.logger.error("credentials reload failed", error=f"{type(exc).__name__}: {exc}"[:300])
            return f"failed: {type(exc).__name__}: {exc}"[:300]
        return "reloaded"

    def _report(self, result: ReloadResult) -> None:
        state = self.state
        state.metrics.config_reloads.labels(result.status).inc()
        log = state.logger
        if result.status == "refused":
            log.error("config reload refused; the running configuration is kept", trigger=result.trigger,
                      problems=result.problems)
            return
        if result.status == "applied":
            log.info("config reloaded", trigger=result.trigger, changed=result.changed)
        else:
            log.info("config reload: nothing to apply", trigger=result.trigger)
        if result.needs_restart:
            log.warning(f"needs a restart: {', '.join(result.needs_restart)}", trigger=result.trigger,
                        keys=result.needs_restart)


RELOADER: web.AppKey[Reloader] = web.AppKey("gomodel_reloader", Reloader)


def install(app: web.Application, *, env: Mapping[str, str] | None = None) -> Reloader:
    """Give ``app`` its reloader (``app[RELOADER]``); the runner connects SIGHUP to ``on_signal``."""
    reloader = Reloader(app, env=env)
    app[RELOADER] = reloader
    return reloader
