"""The pooled HTTP client every remote provider uses, and its unread-response wrapper.

One ``aiohttp.ClientSession`` per provider keeps connections alive; aiohttp's own errors are turned
into the gateway's 502/504 errors here, so nothing above this module knows aiohttp's client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import aiohttp
from multidict import CIMultiDictProxy

from gomodel_proxy.core.errors import GatewayError, UpstreamConnectionError, UpstreamTimeoutError

#: Read size for streamed bodies: large enough to take a burst of SSE events in one call.
_READ_CHUNK = 65536


def make_session(*, connect_timeout_s: float, read_timeout_s: float, max_connections: int) -> aiohttp.ClientSession:
    """A keep-alive session: DNS through aiodns, no total deadline (streams may be long), read idle limit."""
    try:
        resolver: aiohttp.abc.AbstractResolver = aiohttp.AsyncResolver()
    except RuntimeError:  # pragma: no cover - aiodns missing
        resolver = aiohttp.ThreadedResolver()
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=60,
        resolver=resolver,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",), raise_for_status=False
    )


class HttpUpstreamResponse:
    """An upstream response whose body is read on demand, with errors mapped to the gateway's."""

    __slots__ = ("_response", "headers", "provider", "status")

    def __init__(self, response: aiohttp.ClientResponse, provider: str) -> None:
        self._response = response
        self.provider = provider
        self.status = response.status
        self.headers: CIMultiDictProxy[str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._response.content.iter_chunked(_READ_CHUNK):
                yield data
        except BaseException as exc:
            raise map_client_error(exc, self.provider) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except BaseException as exc:
            raise map_client_error(exc, self.provider) from exc

    def release(self) -> None:
        # close() rather than release(): a body we did not finish reading must not return its
        # connection to the pool half-read.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    provider: str,
    body: bytes | None,
    headers: Mapping[str, str],
) -> HttpUpstreamResponse:
    """Send a request and return once the response headers arrived."""
    try:
        response = await session.request(method, url, data=body, headers=headers, allow_redirects=False)
    except BaseException as exc:
        raise map_client_error(exc, provider) from exc
    return HttpUpstreamResponse(response, provider)


def map_client_error(exc: BaseException, provider: str) -> BaseException:
    """The gateway error a client should see for an aiohttp client failure; others pass unchanged."""
    if isinstance(exc, GatewayError | asyncio.CancelledError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeoutError(f"provider '{provider}' did not answer in time")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamConnectionError(f"provider '{provider}' closed the connection before the response ended")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return UpstreamConnectionError(f"provider '{provider}' could not be reached: {type(exc).__name__}")
    return exc
