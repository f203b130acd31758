"""An answer whose head has arrived and whose body is read on demand, streamed or whole.

It satisfies :class:`gomodel_proxy.core.interfaces.UpstreamResponse`. The body lives in its connection's
buffer until read; ``release()`` gives the connection back to the pool when the answer arrived whole and
may be followed by another, and aborts it otherwise (a half-read answer never returns to the pool).
"""

from __future__ import annotations

import asyncio
import zlib

from multidict import CIMultiDict

from gomodel_proxy.httpclient.connection import Connection
from gomodel_proxy.httpclient.errors import undecodable_body


class _Decoder:
    """gzip or deflate despite our ``Accept-Encoding: identity``: some servers compress anyway."""

    __slots__ = ("_label", "_zlib")

    def __init__(self, label: str) -> None:
        self._label = label
        self._zlib: zlib._Decompress | None = None

    def decode(self, data: bytes, *, deflate: bool) -> bytes:
        if self._zlib is None:
            # "deflate" is zlib-wrapped by the spec and raw in some servers; gzip and zlib by auto-detection.
            raw = deflate and bool(data) and (data[0] & 0x0F) != 8
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS | 32)
        try:
            return self._zlib.decompress(data)
        except zlib.error:
            raise undecodable_body(self._label) from None

    def flush(self) -> bytes:
        if self._zlib is None:
            return b""
        try:
            return self._zlib.flush()
        except zlib.error:
            raise undecodable_body(self._label) from None


class Response:
    __slots__ = ("_conn", "_decoder", "_deflate", "_headers", "_raw_headers", "_released", "label", "status")

    def __init__(self, conn: Connection, label: str) -> None:
        self._conn = conn
        self.label = label
        self.status = conn.status
        self._raw_headers = conn.raw_headers
        self._headers: CIMultiDict[str] | None = None
        self._decoder: _Decoder | bool | None = False  # False: not looked at yet
        self._deflate = False
        self._released = False

    @property
    def headers(self) -> CIMultiDict[str]:
        """Case-insensitive, as received (also when the body is decoded from gzip or deflate)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(
                [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self._raw_headers]
            )
        return headers

    def chunks(self) -> _BodyIterator:
        """The body as it arrives: each item is every byte buffered since the last one."""
        self._check()
        return _BodyIterator(self)

    async def read(self) -> bytes:
        """The whole body."""
        self._check()
        conn = self._conn
        parts: list[bytes] = []
        try:
            while True:
                if conn.body:
                    parts.append(conn.take())
                if conn.complete:
                    break
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
        except asyncio.CancelledError:
            if not self._released:
                conn.abort()
            raise
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        decoder = self._decoder_for()
        if decoder is not None:
            data = decoder.decode(data, deflate=self._deflate) + decoder.flush()
        return data

    def release(self) -> None:
        """Done with the answer (idempotent): the connection goes back to the pool or is closed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if conn.reusable():
            conn.owner.put_back(conn)
        else:
            conn.abort()

    @property
    def released(self) -> bool:
        return self._released

    def _check(self) -> None:
        if self._released:
            raise RuntimeError("the response was released; its body can no longer be read")

    def _decoder_for(self) -> _Decoder | None:
        decoder = self._decoder
        if decoder is False:
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            if encoding in ("gzip", "x-gzip", "deflate"):
                self._deflate = encoding == "deflate"
                decoder = _Decoder(self.label)
            else:
                decoder = None
            self._decoder = decoder
        assert decoder is not True
        return decoder


class _BodyIterator:
    """``async for`` over the body without an async generator (no finalizer hooks per request)."""

    __slots__ = ("_conn", "_decoder", "_finished", "_response")

    def __init__(self, response: Response) -> None:
        self._response = response
        self._conn = response._conn
        self._decoder = response._decoder_for()
        self._finished = False

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        response = self._response
        decoder = self._decoder
        try:
            while True:
                if response._released:
                    raise RuntimeError("the response was released; its body can no longer be read")
                if conn.body:
                    data = conn.take()
                    if decoder is not None:
                        data = decoder.decode(data, deflate=response._deflate)
                        if not data:
                            continue
                    return data
                if conn.complete:
                    if decoder is not None and not self._finished:
                        self._finished = True
                        tail = decoder.flush()
                        if tail:
                            return tail
                    raise StopAsyncIteration
                if conn.exc is not None:
                    raise conn.exc
                await conn.wait()
        except asyncio.CancelledError:
            if not response._released:
                conn.abort()
            raise
