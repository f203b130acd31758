"""Shared fixtures: the mock upstream, the in-process gateway in front of it, and clients for it.

``gateway`` is a gateway with one ``openai_compatible`` provider named ``up`` pointing at
``mock_upstream``; ``make_gateway`` builds others (more providers, a master key, a small body limit).
Models are reached as ``up/<model>``; the mock answers according to the scenario registered for
``<model>`` (see ``support.mock_upstream``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import STARTED, Gateway, provider_config, start_gateway, write_config
from tests.support.mock_upstream import MockUpstream
from tests.support.services import db, db_factory, pg, redis_key_prefix, redis_url  # noqa: F401 - fixtures

MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def mock_upstream() -> AsyncIterator[MockUpstream]:
    mock = await MockUpstream().start()
    yield mock
    await mock.close()


@pytest.fixture
async def make_mock_upstream() -> AsyncIterator[Callable[..., Awaitable[MockUpstream]]]:
    """Start further mock upstreams: ``await make_mock_upstream(model_ids=[...])``."""
    started: list[MockUpstream] = []

    async def make(**kwargs: Any) -> MockUpstream:
        mock = await MockUpstream(**kwargs).start()
        started.append(mock)
        return mock

    yield make
    for mock in started:
        await mock.close()


@pytest.fixture(autouse=True)
async def close_started_gateways() -> AsyncIterator[None]:
    """Close the gateways a test started with ``start_gateway`` (as pytest-aiohttp closes its servers)."""
    yield
    while STARTED:
        await STARTED.pop().close()


@pytest.fixture
async def make_gateway(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[MakeGateway]:
    """Start a gateway: ``await make_gateway(providers={...}, server={...})``; defaults to ``up`` -> the mock.

    ``providers`` maps names to provider entries (see ``support.gateway.provider_config``); ``upstream``
    (a ``MockUpstream``) with ``provider_overrides`` builds the single ``up`` provider instead.
    """
    gateways: list[Gateway] = []

    async def make(
        *,
        upstream: MockUpstream | None = None,
        providers: dict[str, dict[str, Any]] | None = None,
        server: dict[str, Any] | None = None,
        cache: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        failover: str | None = None,
        **provider_overrides: Any,
    ) -> Gateway:
        if providers is None:
            if upstream is None:
                raise TypeError("make_gateway needs upstream= or providers=")
            providers = {"up": provider_config(upstream.base_url, **provider_overrides)}
        folder = tmp_path / f"gateway-{len(gateways)}"
        folder.mkdir()
        gateway = await start_gateway(aiohttp_server, write_config(
            folder, providers, server=server, cache=cache, extra=extra, failover=failover
        ))
        gateways.append(gateway)
        return gateway

    yield make
    for gateway in reversed(gateways):
        await gateway.close_clients()
        # Here, not at the end of the test: fixtures set up before this one (an OTLP receiver, a mock
        # provider) are still there while the gateway shuts down and flushes to them.
        await gateway.server.close()
        if gateway.server in STARTED:
            STARTED.remove(gateway.server)


@pytest.fixture
async def gateway(make_gateway: MakeGateway, mock_upstream: MockUpstream) -> Gateway:
    return await make_gateway(upstream=mock_upstream)
