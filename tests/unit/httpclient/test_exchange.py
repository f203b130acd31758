"""Requests and answers: framing (length, chunked, until EOF), streaming as bytes arrive, headers, gzip."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

import pytest
from aiohttp import web

from gomodel_proxy.core.errors import UpstreamConnectionError
from gomodel_proxy.core.interfaces import UpstreamResponse
from gomodel_proxy.httpclient import HttpClient, Response, encode_headers

from .conftest import read_request


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({
        "method": request.method, "path": request.path_qs, "body_len": len(body), "body": body.decode(),
        "headers": {k: v for k, v in request.headers.items()},
    }, headers={"X-Trace": "abc", "x-ratelimit-remaining": "7"})


async def test_content_length_body_and_request_head(app_server: Any, make_client: Any) -> None:
    server = await app_server({("POST", "/v1/echo"): echo})
    client: HttpClient = make_client(server.url("/v1/"), headers=[("Accept", "application/json"), ("X-Fixed", "f")])
    resp = await client.request(b"POST", b"/echo?q=1", [(b"X-Per-Request", b"p")], b'{"a":1}')
    assert resp.status == 200
    assert resp.headers["x-trace"] == "abc" and resp.headers["X-RateLimit-Remaining"] == "7"
    assert resp.headers["Content-Type"].startswith("application/json")
    seen = await_json(await resp.read())
    resp.release()
    assert seen["method"] == "POST" and seen["path"] == "/v1/echo?q=1"
    assert seen["body"] == '{"a":1}' and seen["body_len"] == 7
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["accept-encoding"] == "identity"
    assert headers["content-length"] == "7"
    assert headers["x-fixed"] == "f" and headers["x-per-request"] == "p" and headers["accept"] == "application/json"


async def test_get_sends_no_content_length_and_bytes_headers(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/echo"): echo})
    client = make_client(server.url())
    resp = await client.request("GET", "/echo", b"X-Pre: encoded\r\n")
    seen = await_json(await resp.read())
    resp.release()
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert "content-length" not in headers and headers["x-pre"] == "encoded"
    assert seen["method"] == "GET" and seen["body_len"] == 0


async def test_empty_body_post_sends_content_length_zero(app_server: Any, make_client: Any) -> None:
    server = await app_server({("POST", "/v1/echo"): echo})
    client = make_client(server.url())
    resp = await client.request("POST", "/echo", b"", b"")
    seen = await_json(await resp.read())
    resp.release()
    assert {k.lower(): v for k, v in seen["headers"].items()}["content-length"] == "0"


async def test_chunked_body_is_decoded(app_server: Any, make_client: Any) -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"x" * 70000, b"data: [DONE]\n\n"]

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(0.005)
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/s"): chunked})
    client = make_client(server.url())
    resp = await client.request("GET", "/s")
    assert resp.headers["Transfer-Encoding"] == "chunked"
    got = [chunk async for chunk in resp.chunks()]
    resp.release()
    assert b"".join(got) == b"".join(pieces)
    assert len(got) >= 3  # delivered as they came, not whole at the end
    # read() of a chunked body.
    resp = await client.request("GET", "/s")
    assert await resp.read() == b"".join(pieces)
    resp.release()
    assert server.connections == 1


async def test_chunks_arrive_before_the_answer_ends(app_server: Any, make_client: Any) -> None:
    """Each piece reaches the reader while the server still holds the rest back."""
    go_on = asyncio.Event()

    async def gated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.wait_for(go_on.wait(), 5)
        await response.write(b"second")
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/g"): gated})
    client = make_client(server.url())
    resp = await client.request("GET", "/g")
    chunks = resp.chunks()
    assert await asyncio.wait_for(chunks.__anext__(), 2) == b"first"
    go_on.set()
    assert [c async for c in chunks] == [b"second"]
    resp.release()
    assert client.pool.idle_connections == 1


async def test_body_until_eof_and_informational_answers(raw_server: Any, make_client: Any) -> None:
    """An HTTP/1.0-style body that ends with the connection, after a 103 Early Hints."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"the end")
        await writer.drain()
        writer.close()

    server = await raw_server(handler)
    client = make_client(server.url())
    resp = await client.request("GET", "/x")
    assert resp.status == 200 and "Link" not in resp.headers and resp.headers["Content-Type"] == "text/plain"
    assert await resp.read() == b"until the end"
    resp.release()
    assert client.pool.open_connections == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
@pytest.mark.parametrize("mode", ["read", "chunks"])
async def test_compressed_answer_is_decoded(app_server: Any, make_client: Any, encoding: str, mode: str) -> None:
    plain = b'{"choices": [' + b'{"text": "hello world"},' * 2000 + b"{}]}"
    if encoding == "gzip":
        packed = gzip.compress(plain)
    elif encoding == "deflate":
        packed = zlib.compress(plain)
    else:
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        packed = c.compress(plain) + c.flush()
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Accept-Encoding", ""))
        response = web.StreamResponse(headers={
            "Content-Encoding": "deflate" if encoding == "raw-deflate" else encoding,
            "Content-Type": "application/json",
        })
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(packed), 100):
            await response.write(packed[i : i + 100])
        await response.write_eof()
        return response

    server = await app_server({("GET", "/v1/z"): handler})
    client = make_client(server.url())
    resp = await client.request("GET", "/z")
    data = await resp.read() if mode == "read" else b"".join([c async for c in resp.chunks()])
    resp.release()
    assert data == plain
    assert seen == ["identity"]


async def test_corrupt_gzip_is_an_upstream_error(app_server: Any, make_client: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b\x08\x00garbage-not-gzip", headers={"Content-Encoding": "gzip"})

    server = await app_server({("GET", "/v1/z"): handler})
    client = make_client(server.url())
    resp = await client.request("GET", "/z")
    with pytest.raises(UpstreamConnectionError, match="test-up"):
        await resp.read()
    resp.release()


async def test_response_is_an_upstream_response(app_server: Any, make_client: Any) -> None:
    server = await app_server({("GET", "/v1/echo"): echo})
    resp = await make_client(server.url()).request("GET", "/echo")
    upstream: UpstreamResponse = resp  # the gateway's contract, checked by mypy
    assert isinstance(resp, Response) and upstream.status == 200
    resp.release()
    resp.release()  # idempotent
    with pytest.raises(RuntimeError):
        await resp.read()


def test_header_encoding_refuses_line_breaks() -> None:
    assert encode_headers([("A", "b"), (b"C", b"d")]) == b"A: b\r\nC: d\r\n"
    for bad in [("X", "a\r\nInjected: 1"), ("X\n", "a"), ("X: Y", "a"), ("", "a")]:
        with pytest.raises(ValueError) as caught:
            encode_headers([bad])
        assert "Injected" not in str(caught.value)
    with pytest.raises(ValueError):
        HttpClient("http://h/v1", headers=[("Authorization", "Bearer sk-1\r\nX: y")])


@pytest.mark.parametrize(
    ("url", "host", "port", "prefix", "host_header"),
    [
        ("http://example.com/v1/", "example.com", 80, b"/v1", b"example.com"),
        ("https://api.example.com", "api.example.com", 443, b"", b"api.example.com"),
        ("https://api.example.com:8443/openai/v1", "api.example.com", 8443, b"/openai/v1", b"api.example.com:8443"),
        ("http://[::1]:8000/v1", "::1", 8000, b"/v1", b"[::1]:8000"),
    ],
)
def test_base_url_parsing(url: str, host: str, port: int, prefix: bytes, host_header: bytes) -> None:
    origin = HttpClient(url).origin
    assert (origin.host, origin.port, origin.base_path, origin.host_header) == (host, port, prefix, host_header)


@pytest.mark.parametrize("url", ["ftp://h/v1", "http:///v1", "http://h:99999/v1", "http://h/v1?x=1"])
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        HttpClient(url)


def await_json(raw: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(raw)
    return parsed
