"""Builds the aiohttp application from a validated configuration."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from gomodel_proxy.admin.sessions import SAFE_METHODS, SESSION
from gomodel_proxy.config.provider_defaults import PROVIDER_DEFAULTS
from gomodel_proxy.config.schema import Config
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.llmclient import LLMClient
from gomodel_proxy.llmclient.metrics import ResilienceCollector
from gomodel_proxy.observability.governance_metrics import GovernanceCollector
from gomodel_proxy.observability.logging import get_logger
from gomodel_proxy.observability.metrics import InFlightStreams, Metrics
from gomodel_proxy.observability.recorder import RequestRecorder
from gomodel_proxy.providers.registry import build_provider
from gomodel_proxy.routing.model_registry import ModelRegistry
from gomodel_proxy.routing.router import Router
from gomodel_proxy.server import reload as config_reload
from gomodel_proxy.server import (
    routes_messages,
    routes_ops,
    routes_passthrough,
    routes_responses,
    routes_usage,
    routes_v1,
)
from gomodel_proxy.server.governance import build_governance
from gomodel_proxy.server.middlewares import edge_middleware
from gomodel_proxy.server.state import CALL, STATE, GatewayState


def build_providers(config: Config, logger: Any) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, pc in config.providers.items():
        # With a credential store other than the environment the keys are loaded at start-up (credentials).
        if config.credentials.source == "env" and PROVIDER_DEFAULTS[pc.type].needs_key and not (
            pc.api_key or pc.api_keys
        ):
            logger.warning(
                "provider skipped: no API key", provider=name,
                fix=f"set providers.{name}.api_key in {config.source} (or its environment variable)",
            )
            continue
        providers[name] = build_provider(name, pc)
    return providers


def admin_authorized(request: web.Request) -> bool:
    """Whether the caller may use this admin route: an admin, or a read-only dashboard session reading.

    Every admin route asks this first, so it also names the call for the audit trail, the live log and the
    metrics: ``admin <METHOD> <route>`` (the route's template, ``/admin/keys/{key_id}``: a bounded set).
    """
    call = request[CALL]
    call.endpoint = f"admin {request.method} {request.match_info.route.resource.canonical}" \
        if request.match_info.route.resource is not None else "admin"
    if call.principal.is_admin:
        return True
    session = request.get(SESSION)
    return session is not None and session.read_only and request.method in SAFE_METHODS


def create_app(config: Config) -> web.Application:
    logger = get_logger("gomodel_proxy")
    metrics = Metrics()
    providers = build_providers(config, logger)
    metrics.add_collector(ResilienceCollector(
        c for c in (getattr(p, "llm_client", None) for p in providers.values()) if isinstance(c, LLMClient)
    ))
    registry = ModelRegistry(
        providers,
        cache_file=Path(config.cache.dir) / "models.json",
        refresh_s=config.cache.model_refresh_s,
        fetch_timeout_s=config.cache.model_fetch_timeout_s,
        metrics=metrics,
        logger=logger,
    )
    governance = build_governance(config, providers, logger, metrics)
    metrics.add_collector(GovernanceCollector(governance))
    middlewares: list[Middleware] = [edge_middleware]
    app = web.Application(
        middlewares=middlewares,
        client_max_size=int(config.server.body_limit_mb * 1024 * 1024),
    )
    recorder = RequestRecorder(metrics, logger, access_log=config.server.log_level in ("debug", "info"))
    if governance.writer is not None or governance.usage_later:
        recorder.usage_sink = governance.record_usage
    if governance.audit.sink is not None:
        recorder.audit_sink = governance.audit.log_request
    app[STATE] = GatewayState(
        config=config, providers=providers, registry=registry, metrics=metrics, recorder=recorder,
        logger=logger, router=Router(config, registry, metrics, logger),
        governance=governance, chain=governance.chain, authenticator=governance.authenticator,
    )
    metrics.add_collector(InFlightStreams(app[STATE].streams))
    from gomodel_proxy.credentials.manager import CredentialManager  # noqa: PLC0415

    app[STATE].credentials = CredentialManager.build(config, providers, logger, current=lambda: app[STATE].config)
    if config.features.admin_api:
        from gomodel_proxy.admin import credentials_routes  # noqa: PLC0415 - POST /admin/credentials/reload

        credentials_routes.add_routes(app, authorize=admin_authorized)
        if config.server.master_key:
            from gomodel_proxy.admin import state_routes  # noqa: PLC0415 - providers, config, live requests

            state_routes.add_routes(app, authorize=admin_authorized)
        if config.server.master_key and governance.authenticator is not None:
            from gomodel_proxy.admin import dashboard  # noqa: PLC0415 - the operators' pages and sign-in

            dashboard.add_routes(app)
    routes_v1.add_routes(app)
    routes_usage.add_routes(app)
    if config.features.admin_api and governance.db is not None:
        # Imported only when on: compiling its request schemas is start-up time an off switch should not pay.
        from gomodel_proxy.admin import routes as admin_routes  # noqa: PLC0415

        admin_routes.add_routes(app, admin_routes.AdminContext(
            db=governance.db, on_change=governance.on_admin_change, rate_limits=config.rate_limits,
            authorize=admin_authorized,
        ))
    if config.features.admin_api and (governance.db is not None or governance.audit.sink is not None):
        from gomodel_proxy.admin import audit_routes  # noqa: PLC0415

        audit_routes.add_routes(app, governance.audit.sink, authorize=admin_authorized)
    routes_responses.add_routes(app)
    routes_messages.add_routes(app)
    routes_ops.add_routes(app)
    config_reload.install(app)  # SIGHUP (server.runner) and POST /admin/reload
    from gomodel_proxy.admin import reload_routes  # noqa: PLC0415 - small; beside the admin API

    reload_routes.add_routes(app)
    routes_passthrough.add_routes(app)  # last: /{provider}/* never shadows a route above
    app.on_startup.append(_start)
    app.on_startup.append(_start_telemetry)
    app.on_shutdown.append(_begin_shutdown)
    app.on_shutdown.append(_drain_http1)
    app.on_cleanup.append(_stop)
    app.on_cleanup.append(_stop_telemetry)
    return app


async def _start(app: web.Application) -> None:
    state = app[STATE]
    if not state.config.server.master_key:
        state.logger.warning(
            "no master key set: the gateway is open to anyone who can reach it",
            fix="set server.master_key or GOMODEL_MASTER_KEY",
        )
    if not state.providers:
        state.logger.warning(
            "no providers configured", fix=f"add one under 'providers' in {state.config.source} "
            "or set OPENAI_API_KEY (GROQ_API_KEY, XAI_API_KEY, OPENROUTER_API_KEY)",
        )
    if state.credentials is not None:
        await state.credentials.start()  # providers' keys before anything sends (model lists included)
    await state.governance.start()
    await state.registry.start()


async def _begin_shutdown(app: web.Application) -> None:
    """Streams get the grace period to finish; then each is ended with an error event, not cut silently."""
    state = app[STATE]
    state.shutting_down = True

    def end_streams() -> None:
        for task in list(state.streams):
            task.cancel("gateway shutdown")

    asyncio.get_running_loop().call_later(state.config.server.shutdown_grace_s, end_streams)


async def _drain_http1(app: web.Application) -> None:
    """The API routes' connections (``server.http1``) finish as aiohttp's own do: within the grace period,
    plus the second in which the streams cut at its end get their last event out."""
    http1 = app[STATE].http1
    if http1 is not None:
        timeout = http1.shutdown_timeout
        await http1.shutdown(app[STATE].config.server.shutdown_grace_s + 1.0 if timeout is None else timeout)


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    await state.registry.stop()
    if state.credentials is not None:
        await state.credentials.close()
    await state.governance.close()
    for provider in state.providers.values():
        await provider.close()


#: How long the gateway's stop waits for the last spans to be exported.
_TRACE_FLUSH_S = 5.0


async def _start_telemetry(app: web.Application) -> None:
    """Tracing and DogStatsD, when configured. Their modules (and the OpenTelemetry SDK) are imported only
    then, off the loop: a gateway without them pays nothing for them, at start-up or per request."""
    state = app[STATE]
    observability = state.config.observability
    recorder = state.recorder
    if observability.tracing.enabled:
        module = await asyncio.to_thread(importlib.import_module, "gomodel_proxy.observability.tracing")
        recorder.tracer = module.Tracing.from_config(state.config)
        tracing = observability.tracing
        state.logger.info("tracing on", exporter=tracing.exporter, endpoint=tracing.endpoint,
                          sample_ratio=tracing.sample_ratio)
    if observability.dogstatsd.enabled:
        from gomodel_proxy.observability.dogstatsd import DogStatsD  # noqa: PLC0415 - only when on

        dogstatsd = observability.dogstatsd
        try:
            recorder.dogstatsd = await asyncio.to_thread(DogStatsD, dogstatsd)  # resolves the Agent's host
        except OSError as exc:
            state.logger.error("dogstatsd off: its host cannot be resolved", host=dogstatsd.host, error=str(exc))


async def _stop_telemetry(app: web.Application) -> None:
    """Send what is still queued: the last spans (blocking, so off the loop) and DogStatsD lines."""
    recorder = app[STATE].recorder
    tracer, recorder.tracer = recorder.tracer, None
    if tracer is not None:
        try:  # a collector that is down is retried by the exporter: not for longer than this
            await asyncio.wait_for(asyncio.to_thread(tracer.shutdown), _TRACE_FLUSH_S)
        except TimeoutError:
            app[STATE].logger.warning("tracing: spans still queued at shutdown were not exported",
                                      timeout_s=_TRACE_FLUSH_S)
    dogstatsd, recorder.dogstatsd = recorder.dogstatsd, None
    if dogstatsd is not None:
        dogstatsd.close()
