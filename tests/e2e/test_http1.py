"""The gateway's own HTTP/1.1 server (``server.http1``) on raw connections, read back with h11.

Keep-alive, pipelining, the hand-over of other routes to aiohttp on the same connection, body limits,
malformed requests, HTTP/1.0 and ``Connection: close``: what an SDK never shows, checked byte by byte with
an independent HTTP implementation (h11) as the client.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import pytest

from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

NONSTREAM = "openai/chat-completions/nonstream-text-gpt4o-mini"
STREAM = "openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini"


def chat(model: str = "up/m", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **extra}).encode()


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: gw", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str, *headers: str) -> bytes:
    return ("\r\n".join([f"GET {path} HTTP/1.1", "Host: gw", *headers]) + "\r\n\r\n").encode()


class Client:
    """One raw TCP connection; answers parsed by h11 as a client would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, gateway: Gateway) -> Client:
        port = int(gateway.url.rsplit(":", 1)[1])
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self, timeout: float = 5.0) -> tuple[h11.Response, bytes]:
        """The next whole answer. h11 is told of the request it answers, as its state machine needs."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        if self.h11.our_state is h11.IDLE:
            self.h11.send(h11.Request(method="POST", target="/", headers=[("Host", "gw"), ("Content-Length", "0")]))
            self.h11.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        async with asyncio.timeout(timeout):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.reader.read(65536))
                    continue
                if isinstance(event, h11.Response):
                    head = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert head is not None
                    return head, body
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("closed before a whole answer")

    async def closed(self, timeout: float = 5.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for k, v in response.headers if k == name.lower()), None)


@pytest.fixture
async def client(gateway: Gateway, mock_upstream: MockUpstream) -> Any:
    mock_upstream.replay("m", NONSTREAM)
    mock_upstream.replay("s", STREAM)
    c = await Client.open(gateway)
    yield c
    await c.close()


async def test_keep_alive_then_other_routes_on_the_same_connection(client: Client) -> None:
    """API requests served here, then a GET handed to aiohttp with its bytes, then an API request again
    (now aiohttp's connection): every answer whole and in order."""
    for _ in range(2):
        client.send(post("/v1/chat/completions", chat()))
        head, body = await client.answer()
        assert head.status_code == 200
        assert json.loads(body)["object"] == "chat.completion"
        assert header(head, b"content-length") == str(len(body)).encode()
        assert header(head, b"x-gomodel-provider") == b"up"
        assert header(head, b"date")
    client.send(get("/v1/models"))
    head, body = await client.answer()
    assert head.status_code == 200 and json.loads(body)["object"] == "list"
    client.send(post("/v1/chat/completions", chat()))
    head, body = await client.answer()
    assert head.status_code == 200 and json.loads(body)["object"] == "chat.completion"


async def test_first_request_elsewhere_hands_the_connection_over(client: Client) -> None:
    client.send(get("/health"))
    head, _ = await client.answer()
    assert head.status_code == 200
    client.send(post("/v1/chat/completions", chat()))
    head, body = await client.answer()
    assert head.status_code == 200 and b"chat.completion" in body


async def test_a_request_split_byte_by_byte(client: Client) -> None:
    for byte in post("/v1/chat/completions", chat()):
        client.send(bytes([byte]))
    head, body = await client.answer()
    assert head.status_code == 200 and b"chat.completion" in body
    for byte in get("/v1/models"):  # a hand-over whose request came in many packets
        client.send(bytes([byte]))
        await asyncio.sleep(0)
    head, body = await client.answer()
    assert head.status_code == 200 and b'"list"' in body


async def test_pipelined_api_requests_answered_in_order(client: Client) -> None:
    client.send(post("/v1/chat/completions", chat("up/s", stream=True)) + post("/v1/chat/completions", chat()))
    head, body = await client.answer()
    assert head.status_code == 200 and header(head, b"transfer-encoding") == b"chunked"
    assert body.rstrip().endswith(b"data: [DONE]")
    head, body = await client.answer()
    assert head.status_code == 200 and json.loads(body)["object"] == "chat.completion"


async def test_pipelined_other_route_is_refused_with_a_reason(client: Client) -> None:
    client.send(post("/v1/chat/completions", chat()) + get("/v1/models"))
    head, body = await client.answer()
    assert head.status_code == 200 and json.loads(body)["object"] == "chat.completion"
    head, body = await client.answer()
    assert head.status_code == 400
    assert json.loads(body)["error"]["code"] == "pipelining_not_supported"
    assert header(head, b"connection") == b"close"
    assert await client.closed()


async def test_streamed_answer_is_chunked_and_whole(client: Client) -> None:
    client.send(post("/v1/chat/completions", chat("up/s", stream=True)))
    head, body = await client.answer()
    assert head.status_code == 200
    assert header(head, b"content-type") == b"text/event-stream; charset=utf-8" or \
        (header(head, b"content-type") or b"").startswith(b"text/event-stream")
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]" and len(events) > 3


async def test_chunked_request_body(client: Client) -> None:
    body = chat()
    data = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, body[:10]) + b"%x\r\n%s\r\n" % (len(body) - 10, body[10:]) + b"0\r\n\r\n")
    client.send(data)
    head, out = await client.answer()
    assert head.status_code == 200 and b"chat.completion" in out


async def test_http10_and_connection_close(gateway: Gateway, client: Client) -> None:
    client.send(post("/v1/chat/completions", chat(), "Connection: close"))
    head, body = await client.answer()
    assert b"chat.completion" in body
    assert head.status_code == 200 and header(head, b"connection") == b"close"
    assert await client.closed()
    old = await Client.open(gateway)
    try:
        old.writer.write(post("/v1/chat/completions", chat(), version="1.0"))
        raw = await asyncio.wait_for(old.reader.read(), 5)  # HTTP/1.0 without keep-alive: read to the close
        head_raw, _, rest = raw.partition(b"\r\n\r\n")
        assert head_raw.startswith(b"HTTP/1.0 200 OK")
        assert b"chat.completion" in rest
    finally:
        await old.close()


async def test_malformed_request_gets_a_400_and_the_connection_closes(client: Client) -> None:
    client.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: nope\r\n\r\n")
    head, body = await client.answer()
    assert head.status_code == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert await client.closed()


async def test_expect_continue_goes_to_aiohttp(client: Client) -> None:
    body = chat()
    client.send(post("/v1/chat/completions", b"", "Expect: 100-continue").replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(body)))
    raw = await asyncio.wait_for(client.reader.readuntil(b"\r\n\r\n"), 5)
    assert raw.startswith(b"HTTP/1.1 100 Continue")
    client.send(body)
    head, out = await client.answer()
    assert head.status_code == 200 and b"chat.completion" in out


@pytest.mark.parametrize(("path", "shape"), [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")])
async def test_body_over_the_limit(make_gateway: Any, mock_upstream: MockUpstream, path: str, shape: str) -> None:
    gateway = await make_gateway(upstream=mock_upstream, server={"body_limit_mb": 0.001})  # 1,048 bytes
    big = chat(padding="x" * 2000)
    for chunked in (False, True):
        c = await Client.open(gateway)
        try:
            if chunked:  # no Content-Length: the limit is met while the body arrives
                c.send(f"POST {path} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                       + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
            else:
                c.send(post(path, big))
            head, body = await c.answer()
            assert head.status_code == 413
            error = json.loads(body)
            if shape == "anthropic":
                assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
            else:
                assert error["error"]["code"] in ("payload_too_large", "request_too_large", None)
                assert "MiB" in error["error"]["message"]
            assert await c.closed()
        finally:
            await c.close()


async def test_idle_and_busy_connections_at_shutdown(make_gateway: Any, mock_upstream: MockUpstream) -> None:
    """Closing the server closes an idle keep-alive connection at once and lets a request in flight finish."""
    mock_upstream.replay("slow", NONSTREAM, delay_before_headers=0.3)
    gateway = await make_gateway(upstream=mock_upstream)
    idle, busy = await Client.open(gateway), await Client.open(gateway)
    try:
        idle.send(post("/v1/chat/completions", chat("up/slow")))
        assert (await idle.answer())[0].status_code == 200
        busy.send(post("/v1/chat/completions", chat("up/slow")))
        await asyncio.sleep(0.1)  # in flight
        closing = asyncio.create_task(gateway.server.close())
        head, body = await busy.answer()
        assert head.status_code == 200 and b"chat.completion" in body
        assert await idle.closed()
        await closing
    finally:
        await idle.close()
        await busy.close()
