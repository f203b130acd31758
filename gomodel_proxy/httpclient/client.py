"""The client a provider holds: one origin, prebuilt request heads, a keep-alive pool, gateway errors.

Everything that is the same for every request (the request line's tail, Host, the provider's fixed
headers) is encoded once here; a request adds its method, path, its own header lines and Content-Length,
and goes out in one write together with its body.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence

from gomodel_proxy.httpclient.connection import WRITE_SLICE, Connection
from gomodel_proxy.httpclient.errors import StaleConnectionError, closed_before_answer
from gomodel_proxy.httpclient.origin import Origin
from gomodel_proxy.httpclient.pool import Pool
from gomodel_proxy.httpclient.resolver import Resolver
from gomodel_proxy.httpclient.response import Response

HeaderItems = Iterable[tuple[str | bytes, str | bytes]]


class BodyStream:
    """A request body sent as it arrives (an upload passed through): ``chunks`` and, when known, ``length``.

    With a length it goes out with that Content-Length (and must be exactly that long); without, chunked.
    """

    __slots__ = ("chunks", "length")

    def __init__(self, chunks: AsyncIterable[bytes], length: int | None = None) -> None:
        self.chunks = chunks
        self.length = length

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks.__aiter__()


#: What ``request()`` sends: nothing (no Content-Length), bytes, or a stream (``BodyStream`` or any async
#: iterable of bytes, the latter chunked).
RequestBody = bytes | AsyncIterable[bytes] | None


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The system's trust store with hostname checks; built once (loading it takes milliseconds)."""
    return ssl.create_default_context()


def encode_headers(headers: HeaderItems) -> bytes:
    """``Name: value\\r\\n`` lines; refuses line breaks, which would let a value smuggle a header in."""
    out = []
    for name, value in headers:
        raw_name = name.encode("ascii") if isinstance(name, str) else name
        raw_value = value.encode("utf-8") if isinstance(value, str) else value
        if not raw_name or any(c in raw_name for c in b"\r\n\0: \t") or any(c in raw_value for c in b"\r\n\0"):
            raise ValueError(f"header {raw_name[:40]!r} has a character a header cannot carry")
        out.append(raw_name + b": " + raw_value + b"\r\n")
    return b"".join(out)


class HttpClient:
    """HTTP/1.1 keep-alive client for one base URL (``http(s)://host[:port][/prefix]``).

    ``name`` is the provider's name that error messages show. Failures are the gateway's errors:
    ``UpstreamConnectionError`` (refused, DNS, TLS, connection lost) and ``UpstreamTimeoutError``
    (``connect_timeout_s`` to connect; ``read_timeout_s`` without a byte while an answer is awaited).
    """

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "upstream",
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 600.0,
        max_connections: int = 0,
        keepalive_s: float = 60.0,
        headers: HeaderItems = (),
        ssl_context: ssl.SSLContext | None = None,
        dns_ttl_s: float = 60.0,
    ) -> None:
        self.origin = origin = Origin.parse(base_url)
        self.name = name
        fixed = [(b"Host", origin.host_header), (b"Accept-Encoding", b"identity"), *headers]
        #: What follows the path on the request line, then the fixed header lines.
        self._tail = b" HTTP/1.1\r\n" + encode_headers(fixed)
        self._prefix = origin.base_path
        if origin.tls and ssl_context is None:
            ssl_context = default_ssl_context()
        self._resolver = Resolver(ttl_s=dns_ttl_s)
        self._pool = Pool(
            origin, label=name, resolver=self._resolver, ssl_context=ssl_context if origin.tls else None,
            connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            max_connections=max_connections, keepalive_s=keepalive_s,
        )

    @property
    def pool(self) -> Pool:
        return self._pool

    async def request(
        self,
        method: bytes | str,
        path: bytes | str,
        headers: Sequence[tuple[bytes, bytes]] | bytes = b"",
        body: RequestBody = None,
        auth: bytes = b"",
    ) -> Response:
        """Send ``method`` to the base URL's prefix + ``path`` and return once the answer's head arrived.

        ``headers`` are this request's own (pre-encoded ``Name: value\\r\\n`` lines, or pairs); ``auth``
        more pre-encoded lines (the key's header, joined in the same buffer: no extra copy); ``body``
        ``None`` sends no Content-Length (GET); an async iterable of bytes is streamed as it yields (an
        upload passed through), with a ``BodyStream``'s length as Content-Length or else chunked, never held
        whole. A reused connection that the server had closed is retried once on a new one (a stream only
        if none of it was sent); a cancelled caller aborts the connection at once. A HEAD answer has no
        body, whatever its head says.
        """
        if isinstance(method, str):
            method = method.encode("ascii")
        if isinstance(path, str):
            path = path.encode("ascii")
        if not isinstance(headers, bytes):
            headers = encode_headers(headers)
        large: bytes | None = None
        stream: BodyStream | None = None
        if body is None:
            data = b"".join((method, b" ", self._prefix, path, self._tail, headers, auth, b"\r\n"))
        elif not isinstance(body, bytes):
            stream = body if isinstance(body, BodyStream) else BodyStream(body)
            framing = (b"Transfer-Encoding: chunked\r\n\r\n" if stream.length is None
                       else b"Content-Length: %d\r\n\r\n" % stream.length)
            data = b"".join((method, b" ", self._prefix, path, self._tail, headers, auth, framing))
        else:
            length = b"Content-Length: %d\r\n\r\n" % len(body)
            if len(body) <= WRITE_SLICE:
                data = b"".join((method, b" ", self._prefix, path, self._tail, headers, auth, length, body))
            else:
                data = b"".join((method, b" ", self._prefix, path, self._tail, headers, auth, length))
                large = body
        no_body = method == b"HEAD"
        pool = self._pool
        conn = pool.take_idle() or await pool.acquire()
        try:
            await conn.exchange(data, large, stream, no_body=no_body)
        except StaleConnectionError:
            # The server closed the idle keep-alive as we sent: nothing of ours was answered. Once more.
            conn = await pool.acquire(fresh=True)
            await self._exchange_once(conn, data, large, stream, no_body)
        except BaseException:
            conn.abort()
            raise
        return Response(conn, self.name)

    async def _exchange_once(
        self, conn: Connection, data: bytes, large: bytes | None, stream: BodyStream | None, no_body: bool
    ) -> None:
        try:
            await conn.exchange(data, large, stream, no_body=no_body)
        except StaleConnectionError:
            conn.abort()
            raise closed_before_answer(self.name) from None
        except BaseException:
            conn.abort()
            raise

    async def close(self) -> None:
        self._pool.close()
        await self._resolver.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
