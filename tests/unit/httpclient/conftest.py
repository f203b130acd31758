"""Servers for the httpclient tests: real aiohttp apps and raw asyncio servers on 127.0.0.1 ports.

Every test here runs twice, on asyncio's own loop and on uvloop (what the gateway runs on): their
transports differ in ways a protocol-level client can feel (memoryview writes, pause_reading on TLS).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop
from aiohttp import web

from gomodel_proxy.httpclient import HttpClient


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class AppServer:
    """An aiohttp app on a loopback port that counts the TCP connections it accepted."""

    def __init__(self, **runner_kwargs: Any) -> None:
        self.app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._count])
        self.transports: list[Any] = []
        self.requests: list[web.Request] = []
        self._runner_kwargs = {"access_log": None, "handler_cancellation": True, "shutdown_timeout": 0.2,
                               **runner_kwargs}
        self._runner: web.AppRunner | None = None
        self.port = 0

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not any(t is request.transport for t in self.transports):
            self.transports.append(request.transport)
        self.requests.append(request)
        response: web.StreamResponse = await handler(request)
        return response

    @property
    def connections(self) -> int:
        return len(self.transports)

    def route(self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.app.router.add_route(method, path, handler)

    async def start(self, ssl_context: Any = None, host: str = "127.0.0.1") -> AppServer:
        self._runner = web.AppRunner(self.app, **self._runner_kwargs)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0, ssl_context=ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    def url(self, path: str = "/v1", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A bare asyncio server whose handler writes exactly the bytes a test wants (faults included)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def start(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/v1") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length framed) from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[..., Awaitable[AppServer]]]:
    servers: list[AppServer] = []

    async def make(routes: dict[tuple[str, str], Any], *, ssl_context: Any = None, **kwargs: Any) -> AppServer:
        server = AppServer(**kwargs)
        for (method, path), handler in routes.items():
            server.route(method, path, handler)
        servers.append(await server.start(ssl_context=ssl_context))
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def make(handler: Handler) -> RawServer:
        server = await RawServer(handler).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., HttpClient]]:
    clients: list[HttpClient] = []

    def make(base_url: str, **kwargs: Any) -> HttpClient:
        kwargs.setdefault("name", "test-up")
        kwargs.setdefault("connect_timeout_s", 2.0)
        kwargs.setdefault("read_timeout_s", 5.0)
        client = HttpClient(base_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
