"""What the handlers share, stored on the aiohttp application under typed keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gomodel_proxy.config.schema import Config
from gomodel_proxy.core.interfaces import Provider
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.middleware.auth import Authenticator
from gomodel_proxy.middleware.chain import Chain
from gomodel_proxy.observability.metrics import Metrics
from gomodel_proxy.observability.recorder import RequestRecorder
from gomodel_proxy.routing.model_registry import ModelRegistry
from gomodel_proxy.routing.router import Router


@dataclass(slots=True)
class GatewayState:
    config: Config
    providers: dict[str, Provider]
    registry: ModelRegistry
    metrics: Metrics
    recorder: RequestRecorder
    logger: Any
    #: Aliases, virtual models and failover chains (``router.active`` is False when none is configured).
    router: Router
    #: Keys, limits, budgets, usage (``server.governance.Governance``).
    governance: Any
    #: The request chain (empty, and skipped, when no middleware is on).
    chain: Chain
    #: Who may call (master key, virtual keys, JWT); ``None``: no authentication configured.
    authenticator: Authenticator | None = None
    #: Set when shutdown begins: requests cut after the grace period are told so, and logged as such.
    shutting_down: bool = False
    #: Tasks relaying a stream now; those still running when the grace period ends are cancelled.
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Providers' keys from ``credentials.source`` (``credentials.manager.CredentialManager``); a SIGHUP
    #: handler reloads them with ``await state.credentials.reload()``.
    credentials: Any = None
    #: The gateway's own HTTP/1.1 server for the API routes (``server.http1.Http1Server``), once listening;
    #: shutdown waits for its connections as aiohttp waits for its own.
    http1: Any = None


STATE: web.AppKey[GatewayState] = web.AppKey("gomodel_state", GatewayState)
#: The record of the request being answered, put on the request by the edge middleware.
CALL: web.RequestKey[CallRecord] = web.RequestKey("gomodel_call", CallRecord)


def call_of(request: web.Request) -> CallRecord:
    return request[CALL]
