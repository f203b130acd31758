"""The keep-alive connections to one origin: idle ones reused last-in first-out, a fair cap on the total.

LIFO keeps the few connections that steady traffic needs warm and lets the surplus of a burst age out
(closed after ``keepalive_s`` idle by one sweep timer per pool, not one per connection). With
``max_connections`` set, requests beyond it wait in arrival order; a returned connection (or a freed slot)
goes straight to the first of them, so a newcomer can never overtake a waiter.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from contextlib import suppress

from gomodel_proxy.core.errors import UpstreamConnectionError
from gomodel_proxy.httpclient.connection import Connection
from gomodel_proxy.httpclient.errors import connect_timeout, unreachable
from gomodel_proxy.httpclient.origin import Origin
from gomodel_proxy.httpclient.resolver import Resolver


class Pool:
    def __init__(
        self,
        origin: Origin,
        *,
        label: str,
        resolver: Resolver,
        ssl_context: ssl.SSLContext | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        keepalive_s: float,
    ) -> None:
        self._origin = origin
        self._label = label
        self._resolver = resolver
        self._ssl = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._limit = max_connections
        self._keepalive_s = keepalive_s
        self._idle: deque[Connection] = deque()
        #: Requests waiting for a connection; resolved with one (reuse it) or None (a slot is yours).
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        #: Connections open or opening (the slots in use).
        self._open = 0
        self._all: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def take_idle(self) -> Connection | None:
        """The most recently used idle connection, if any (waiters exist only while none is idle)."""
        return self._idle.pop() if self._idle else None

    async def acquire(self, *, fresh: bool = False) -> Connection:
        """A connection to send on: an idle one (unless ``fresh``), a new one, or one handed over in turn."""
        if self._closed:
            raise UpstreamConnectionError(f"provider '{self._label}' client is closed")
        if self._idle:
            if not fresh:
                return self._idle.pop()
            if self._limit and self._open >= self._limit:
                self._idle.popleft().abort()  # make room: a fresh connection must not wait behind idle ones
        if self._waiters or (self._limit and self._open >= self._limit):
            handed = await self._wait_turn()
            if handed is not None:
                return handed
        else:
            self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_next()
            raise

    async def _wait_turn(self) -> Connection | None:
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                with suppress(ValueError):  # a hand-over loop may have popped it already
                    self._waiters.remove(waiter)
            elif waiter.exception() is None:
                # Served and cancelled in the same turn: pass what we were given on.
                handed = waiter.result()
                if handed is None:
                    self._open -= 1
                    self._wake_next()
                else:
                    self.put_back(handed)
            raise

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        origin = self._origin

        def factory() -> Connection:
            return Connection(loop, self, self._label, self._read_timeout_s)

        try:
            async with asyncio.timeout(self._connect_timeout_s):
                addresses = await self._resolver.resolve(origin.host)
                error: OSError | None = None
                for address, family in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            factory, address, origin.port, family=family, ssl=self._ssl,
                            server_hostname=origin.host if self._ssl is not None else None,
                        )
                    except ssl.SSLError:
                        raise  # the next address would show the same certificate
                    except OSError as exc:
                        error = error or exc  # the first failure says most (the next address is a fallback)
                        continue
                    break
                else:
                    raise error or OSError("no address to connect to")
        except TimeoutError:
            raise connect_timeout(self._label) from None
        except OSError as exc:
            raise unreachable(self._label, exc) from exc
        if self._closed:
            conn.abort()
            raise UpstreamConnectionError(f"provider '{self._label}' client is closed")
        conn.counted = True
        self._all.add(conn)
        return conn

    def put_back(self, conn: Connection) -> None:
        if self._closed or conn.closed:
            conn.abort()
            return
        conn.reused = True
        conn.body.clear()
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle_since = conn.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_at(conn.idle_since + self._keepalive_s, self._sweep)

    def discard(self, conn: Connection) -> None:
        if not conn.counted:
            return
        conn.counted = False
        self._open -= 1
        self._all.discard(conn)
        with suppress(ValueError):
            self._idle.remove(conn)
        self._wake_next()

    def _wake_next(self) -> None:
        """A slot came free: reserve it for the first live waiter."""
        waiters = self._waiters
        while waiters and not (self._limit and self._open >= self._limit):
            waiter = waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle for ``keepalive_s``: the oldest are at the left of the LIFO."""
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        now = loop.time()
        while idle and idle[0].idle_since + self._keepalive_s <= now:
            idle.popleft().abort()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self._keepalive_s, self._sweep)

    def close(self) -> None:
        """Abort every connection, idle or busy, and fail the waiters."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(UpstreamConnectionError(f"provider '{self._label}' client is closed"))
