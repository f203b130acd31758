"""A pipelining Redis connection for the limiters' scripts: RESP out, hiredis in.

The limiters send nothing but EVALSHA (and SCRIPT LOAD when Redis lost a script), many at once. Through
redis-py's pipeline each command costs about 30 µs of client CPU (per-command objects, encoders,
response callbacks, a timeout per reply); written as one buffer and parsed by hiredis from the
socket's chunks it costs about 6. ``parse_redis_url`` reads the URL as redis-py does (``redis://``,
``rediss://`` for TLS, ``unix://``, user, password, database in the path or ``?db=``) without importing
redis-py, which alone would add a tenth of a second and 20 MB to the gateway's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

#: Bytes read from the socket at a time.
_READ = 256 * 1024


def encode(args: Sequence[bytes | str | int]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_redis_url(url: str) -> dict[str, Any]:
    """``host``, ``port``, ``path`` (unix socket), ``username``, ``password``, ``db``, ``tls`` of a Redis URL;
    ``ValueError`` naming the part that is wrong (never the password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("Redis URL must specify one of the following schemes (redis://, rediss://, unix://)")
    out: dict[str, Any] = {"tls": parts.scheme == "rediss"}
    if parts.username:
        out["username"] = unquote(parts.username)
    if parts.password:
        out["password"] = unquote(parts.password)
    db: str | None = parse_qs(parts.query).get("db", [None])[-1]
    if parts.scheme == "unix":
        out["path"] = unquote(parts.path)
    else:
        if parts.hostname:
            out["host"] = unquote(parts.hostname)
        try:
            port = parts.port
        except ValueError:
            raise ValueError("Port could not be cast to integer value") from None
        if port is not None:
            out["port"] = port
        path = parts.path.strip("/")
        if path and db is None:
            db = unquote(path)
    if db:
        try:
            out["db"] = int(db)
        except ValueError:
            raise ValueError("Database could not be cast to integer value") from None
    return out


class RespError(Exception):
    """Redis answered a command with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RespConnection:
    """One connection to Redis; ``roundtrip`` sends commands together and returns their replies in order.

    Replies are bytes, ints, lists or ``None``; an error reply is returned as a ``RespError`` in its place
    (one failing command does not fail the others). Not for concurrent use: the caller serializes.
    """

    def __init__(self, url: str, timeout_s: float) -> None:
        self.params = parse_redis_url(url)
        self._tls: bool = self.params["tls"]
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = hiredis.Reader(replyError=RespError)

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        params = self.params
        async with asyncio.timeout(self.timeout_s):
            if "path" in params:
                self._reader, self._writer = await asyncio.open_unix_connection(params["path"])
            else:
                tls = ssl.create_default_context() if self._tls else None
                self._reader, self._writer = await asyncio.open_connection(
                    params.get("host", "localhost"), params.get("port", 6379), ssl=tls
                )
        self._parser = hiredis.Reader(replyError=RespError)
        hello: list[Sequence[bytes | str | int]] = []
        if params.get("password"):
            user = params.get("username")
            hello.append(("AUTH", user, params["password"]) if user else ("AUTH", params["password"]))
        if params.get("db"):
            hello.append(("SELECT", params["db"]))
        if hello:
            for reply in await self.roundtrip(hello):
                if isinstance(reply, RespError):
                    self.close()
                    raise ConnectionError(f"redis refused the connection's set-up: {reply}")

    async def roundtrip(self, commands: Sequence[Sequence[bytes | str | int]]) -> list[Any]:
        """Write ``commands`` at once; wait (up to the timeout) for as many replies."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise ConnectionError("not connected to redis")
        writer.write(b"".join(encode(c) for c in commands))
        replies: list[Any] = []
        parser = self._parser
        try:
            async with asyncio.timeout(self.timeout_s):
                while len(replies) < len(commands):
                    reply = parser.gets()
                    if reply is False:
                        data = await reader.read(_READ)
                        if not data:
                            raise ConnectionError("redis closed the connection")
                        parser.feed(data)
                        continue
                    replies.append(reply)
        except BaseException:
            self.close()  # replies may be left half read: never reuse this connection
            raise
        return replies

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()


class RespPipeline:
    """One connection shared by many coroutines: what they ask while a round trip is out is written
    together in the next, and each reply goes back to its caller. Reconnects on the next call after a
    failure; a failure fails the calls of its round trip (``ConnectionError``, ``TimeoutError``)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.connection = RespConnection(url, timeout_s)
        self.timeout_s = timeout_s
        self._queue: list[tuple[Sequence[bytes | str | int], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        """The reply to one command (a ``RespError`` reply is returned, not raised)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send())
        async with asyncio.timeout(self.timeout_s * 2):  # queued behind a round trip, then its own
            return await future

    async def _send(self) -> None:
        connection = self.connection
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                if not connection.connected:
                    await connection.connect()
                replies = await connection.roundtrip([command for command, _ in batch])
            except (OSError, TimeoutError) as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, TimeoutError) else ConnectionError(str(exc)))
                continue
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    future.set_result(reply)

    async def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None and not sender.done():
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        self.connection.close()
