"""TLS with SNI and certificate checks against a local HTTPS server, and name resolution."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import pytest
import trustme
from aiohttp import web

from gomodel_proxy.core.errors import UpstreamConnectionError
from gomodel_proxy.httpclient import HttpClient, default_ssl_context
from gomodel_proxy.httpclient.resolver import Resolver


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, sni_seen: list[str | None]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(ctx)

    def on_sni(sock: Any, name: str | None, _: Any) -> None:
        sni_seen.append(name)

    ctx.sni_callback = on_sni
    return ctx


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=b"over tls:" + await request.read())


async def test_https_with_sni_and_keepalive(ca: trustme.CA, app_server: Any, make_client: Any) -> None:
    sni: list[str | None] = []
    server = await app_server({("POST", "/v1/h"): hello}, ssl_context=server_context(ca, sni))
    client: HttpClient = make_client(server.url(scheme="https", host="localhost"), ssl_context=client_context(ca))
    for i in range(3):
        resp = await client.request("POST", "/h", b"", b"%d" % i)
        assert await resp.read() == b"over tls:%d" % i
        resp.release()
    assert sni == ["localhost"]  # one handshake, with the server's name
    assert server.connections == 1


async def test_https_streamed_body(ca: trustme.CA, app_server: Any, make_client: Any) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(50):
            await response.write(b"%03d" % i * 20000)
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/s"): stream}, ssl_context=server_context(ca, []))
    client = make_client(server.url(scheme="https", host="localhost"), ssl_context=client_context(ca))
    resp = await client.request("GET", "/s")
    data = b"".join([c async for c in resp.chunks()])
    resp.release()
    assert data == b"".join(b"%03d" % i * 20000 for i in range(50))


async def test_untrusted_certificate_is_unreachable(ca: trustme.CA, app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/h"): hello}, ssl_context=server_context(ca, []))
    client = make_client(server.url(scheme="https", host="localhost"), name="tls-up")  # system trust store
    with pytest.raises(UpstreamConnectionError) as caught:
        await client.request("GET", "/h")
    assert caught.value.message == "provider 'tls-up' could not be reached: SSLCertVerificationError"


async def test_certificate_for_another_name_is_refused(app_server: Any, make_client: Any) -> None:
    other = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("api.example.com").configure_cert(ctx)
    server = await app_server({("GET", "/v1/h"): hello}, ssl_context=ctx)
    client = make_client(server.url(scheme="https", host="localhost"), ssl_context=client_context(other))
    with pytest.raises(UpstreamConnectionError, match="SSLCertVerificationError"):
        await client.request("GET", "/h")


async def test_https_default_port_and_shared_default_context() -> None:
    client = HttpClient("https://api.example.com/v1")
    assert client.origin.port == 443 and client.origin.tls
    assert default_ssl_context() is default_ssl_context()
    assert default_ssl_context().check_hostname and default_ssl_context().verify_mode == ssl.CERT_REQUIRED
    await client.close()


async def test_localhost_base_url(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/h"): hello})
    client = make_client(server.url(host="localhost"))
    resp = await client.request("GET", "/h")
    assert await resp.read() == b"over tls:"
    resp.release()


async def test_resolver_literals_and_localhost() -> None:
    resolver = Resolver()
    assert await resolver.resolve("127.0.0.1") == [("127.0.0.1", socket.AF_INET)]
    assert await resolver.resolve("::1") == [("::1", socket.AF_INET6)]
    assert (await resolver.resolve("localhost"))[0] == ("127.0.0.1", socket.AF_INET)
    assert resolver._backend is None  # none of these asked DNS
    await resolver.close()


async def test_resolver_asks_aiodns_and_caches(monkeypatch: Any) -> None:
    resolver = Resolver(ttl_s=60)
    # aiodns (c-ares) answers "localhost" from the hosts file: a real lookup without a network.
    found = await resolver._lookup("localhost")
    assert ("127.0.0.1", socket.AF_INET) in found or ("::1", socket.AF_INET6) in found
    assert found[0][1] == socket.AF_INET or all(f == socket.AF_INET6 for _, f in found)

    calls: list[str] = []

    async def counted(self: Resolver, host: str) -> list[tuple[str, socket.AddressFamily]]:
        calls.append(host)
        self._cache[host] = (1e18, [("10.9.8.7", socket.AF_INET)])
        return [("10.9.8.7", socket.AF_INET)]

    monkeypatch.setattr(Resolver, "_lookup", counted)
    results = await asyncio.gather(*(resolver.resolve("api.example.test") for _ in range(5)))
    assert results == [[("10.9.8.7", socket.AF_INET)]] * 5
    assert await resolver.resolve("api.example.test") == [("10.9.8.7", socket.AF_INET)]
    assert calls == ["api.example.test"]  # one query for a burst, then the cache
    await resolver.close()
