"""A TCP forwarder the tests stop and restart to make a service (PostgreSQL, Redis) go down and come back.

    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()            # listens on 127.0.0.1:<free port> (proxy.port)
    ...                            # clients connect to proxy.port
    await proxy.stop()             # refuses new connections and cuts the live ones: "the server is down"
    await proxy.start()            # the same port again: "the server is back"
    proxy.pause()                  # connections stay open but nothing passes: "the server hangs"
    proxy.resume()
    await proxy.close()            # (same as stop; also ``async with TcpProxy(...) as proxy``)

Cutting the live connections matters: a stopped listener alone leaves pooled connections working, so a
client would never notice the outage.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards every connection made to ``127.0.0.1:port`` to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        #: Connections accepted since the proxy was made (all starts together).
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> TcpProxy:
        """Listen (on a free port the first time, on the same port after a ``stop()``)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and abort every live connection, both sides (the peers see a reset)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    close = stop

    def pause(self) -> None:
        """Hold every byte (both ways, new connections too) until ``resume()``: a server that hangs."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            self._writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream, self._flowing), _pipe(up_reader, writer, self._flowing))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            if task is not None:
                self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
    """Copy until end of stream, then pass the end on (half-close), as a plain TCP hop would."""
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
    except OSError:
        writer.transport.abort()
