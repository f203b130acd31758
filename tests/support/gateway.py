"""The gateway under test, started in-process: its config, its server, its state, and clients for it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from gomodel_proxy.config import Config, load_config
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.server import http1
from gomodel_proxy.server.app import create_app
from gomodel_proxy.server.state import STATE, GatewayState

#: The key the tests' providers are configured with (what the upstream must receive).
UPSTREAM_KEY = "sk-upstream-provider-key-0123456789"
#: The key clients present to the gateway (must never reach an upstream).
CLIENT_KEY = "sk-client-key-should-not-leak-9876543210"


def write_config(tmp_path: Path, providers: dict[str, dict[str, Any]], *, server: dict[str, Any] | None = None,
                 cache: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 failover: str | None = None) -> Path:
    """Write a gateway config file (JSON is YAML) under ``tmp_path`` and return its path.

    ``extra``: more top-level sections (``models``, ``features``); ``failover``: the text of a
    ``failover.yaml`` written next to it (where the gateway looks by default).
    """
    if failover is not None:
        (tmp_path / "failover.yaml").write_text(failover, encoding="utf-8")
    document = {
        **(extra or {}),
        "server": {"host": "127.0.0.1", "port": 8080, **(server or {})},
        "providers": providers,
        "cache": {"dir": str(tmp_path / "cache"), "model_fetch_timeout_s": 3, **(cache or {})},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def provider_config(base_url: str, **overrides: Any) -> dict[str, Any]:
    """An ``openai_compatible`` provider entry with the tests' upstream key and short timeouts."""
    return {
        "type": "openai_compatible", "base_url": base_url, "api_key": UPSTREAM_KEY,
        "timeout_s": 5, "connect_timeout_s": 2, **overrides,
    }


@dataclass
class Gateway:
    """A started gateway: ``url``/``v1`` to reach it, ``state`` to look inside, clients to call it."""

    server: TestServer
    app: web.Application
    config: Config
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return str(self.server.make_url("/")).rstrip("/")

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    @property
    def state(self) -> GatewayState:
        return self.app[STATE]

    # -- clients ------------------------------------------------------------------------------------
    @property
    def http(self) -> aiohttp.ClientSession:
        """A raw HTTP client with the gateway as its base URL (no default headers)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(base_url=self.url + "/")
        return self._session

    def openai(self, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
        """The official sync client; call it through ``asyncio.to_thread`` (the gateway shares this loop)."""
        # The gateway speaks plain HTTP: no TLS context, whose certificate loading costs ~50 ms per client.
        kwargs.setdefault("http_client", openai.DefaultHttpxClient(verify=False))
        client = openai.OpenAI(base_url=self.v1, api_key=api_key, max_retries=0, timeout=15.0, **kwargs)

        async def close() -> None:
            await asyncio.to_thread(client.close)

        self._closers.append(close)
        return client

    def async_openai(self, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
        kwargs.setdefault("http_client", openai.DefaultAsyncHttpxClient(verify=False))
        client = openai.AsyncOpenAI(base_url=self.v1, api_key=api_key, max_retries=0, timeout=15.0, **kwargs)
        self._closers.append(client.close)
        return client

    async def close_clients(self) -> None:
        while self._closers:
            await self._closers.pop()()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- what the gateway recorded -----------------------------------------------------------------
    @property
    def records(self) -> list[CallRecord]:
        return list(self.state.recorder.recent)

    async def record(self, request_id: str, timeout: float = 3.0) -> CallRecord:
        """The usage record of ``request_id``, waiting for it: it is written once the handler has ended."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.state.recorder.recent:
                if call.request_id == request_id:
                    return call
            if time.monotonic() > deadline:
                seen = [c.request_id for c in self.state.recorder.recent]
                raise AssertionError(f"no usage record for request {request_id!r}; recorded: {seen}")
            await asyncio.sleep(0.01)

    async def metrics_text(self) -> str:
        async with self.http.get("metrics") as resp:
            assert resp.status == 200
            return await resp.text()


class Http1TestServer(TestServer):
    """The gateway served as ``gomodel-proxy`` serves it (``server.http1.listen``): its own HTTP/1.1 protocol
    for the API routes, aiohttp's for the rest, so every test that calls the API goes through both."""

    listener: asyncio.Server | None = None

    async def start_server(self, **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await self._make_runner(handler_cancellation=True, **kwargs)
        await self.runner.setup()
        assert isinstance(self.runner, web.AppRunner)
        # Busy connections get what aiohttp's get here (pytest-aiohttp's 1 s, not the gateway's grace period).
        self.listener = await http1.listen(self.app, self.runner, "127.0.0.1", 0,
                                           shutdown_timeout=kwargs.get("shutdown_timeout", 1.0))
        self.host, self.port = "127.0.0.1", self.listener.sockets[0].getsockname()[1]
        self.scheme = "http"
        self._root = URL(f"http://127.0.0.1:{self.port}")

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        await super().close()


#: Gateways started by ``start_gateway``; the ``close_started_gateways`` fixture (conftest) closes them.
STARTED: list[Http1TestServer] = []


async def start_gateway(_aiohttp_server: Any, config_path: Path) -> Gateway:
    """Load ``config_path`` as the CLI would, serve it in-process, and wait until ``/ready``."""
    config = load_config(config_path, env={})
    app = create_app(config)
    server = Http1TestServer(app)
    await server.start_server(shutdown_timeout=1.0)
    STARTED.append(server)
    gateway = Gateway(server=server, app=app, config=config)
    try:
        await asyncio.wait_for(gateway.state.registry.ready.wait(), 10)
    except TimeoutError:
        raise AssertionError(f"gateway not ready after 10 s: {gateway.state.registry.status}") from None
    async with aiohttp.ClientSession() as session, session.get(gateway.url + "/ready") as resp:
        assert resp.status == 200, await resp.text()
    return gateway
