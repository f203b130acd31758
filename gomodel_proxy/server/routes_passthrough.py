"""Pass-through: any method and path under ``/{provider}/`` forwarded to that provider's native API.

Only the gateway's own concerns run here: the master key (edge middleware), metrics and the access line
(``endpoint="passthrough"``). The client's credentials are removed and the provider injects its own; the
path is placed under the provider's base URL by ``passthrough_path`` (the host is always the configured
one). Bodies stream both ways: an upload goes to the provider as it arrives (never held whole, and not
bound by ``server.body_limit_mb``, which is the limit of the JSON routes: the provider's own limit applies),
and the answer goes to the client chunk by chunk, with its status, headers and body as the provider sent
them. A provider failing after the status line ends the answer visibly: an SSE stream with an error event,
any other body with the connection aborted, so that the client sees it incomplete.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from functools import partial

from aiohttp import web
from multidict import CIMultiDict

from gomodel_proxy.config.schema import RESERVED_NAMES
from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, NotFoundError
from gomodel_proxy.core.interfaces import PassthroughBody, PassthroughProvider, UpstreamResponse
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.httpclient import BodyStream, encode_headers
from gomodel_proxy.server.inbound import governed
from gomodel_proxy.server.middlewares import overhead_header
from gomodel_proxy.server.passthrough_path import base_path, upstream_path
from gomodel_proxy.server.relay import error_event, is_event_stream
from gomodel_proxy.server.routes_messages import anthropic_error_event
from gomodel_proxy.server.state import STATE, call_of

ENDPOINT = "passthrough"
#: Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), both ways.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade",
})
#: Client headers that carry its credentials (for the gateway), or that the provider's client sets itself.
_NOT_FORWARDED = frozenset({
    "authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie",
    "host", "content-length", "accept-encoding", "expect",
})
#: Bodies up to this size are read whole and sent in one write with the head (every ordinary API call).
_SMALL_BODY = 64 * 1024
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: The route's name pattern: one segment, never a reserved one (those routes keep their 404/405).
_PROVIDER_PATTERN = "{provider:(?!(?:" + "|".join(sorted(RESERVED_NAMES)) + ")/)[^/]+}"


def _connection_named(values: Iterable[str]) -> set[str]:
    """Header names listed in Connection headers' ``values`` (hop-by-hop for this message too)."""
    return {token.strip().lower() for value in values for token in value.split(",") if token.strip()}


def request_headers(raw: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]]) -> bytes:
    """The client's headers to send on: hop-by-hop ones, credentials and framing removed, the rest as sent."""
    listed = _connection_named(v.decode("latin-1") for n, v in raw if n.lower() == b"connection")
    kept = []
    for name, value in raw:
        lower = name.decode("latin-1").lower()
        if lower in HOP_BY_HOP or lower in _NOT_FORWARDED or lower in listed or lower.startswith("proxy-"):
            continue
        kept.append((name, value))
    try:
        return encode_headers(kept)
    except ValueError as exc:
        raise InvalidRequestError(f"A request header cannot be forwarded: {exc}.") from None


def response_headers(upstream: UpstreamResponse) -> CIMultiDict[str]:
    """The provider's headers for the client: hop-by-hop ones removed; the body's length and encoding
    too when the gateway's client decoded it (a provider that compressed despite ``identity``)."""
    source = upstream.headers
    listed = _connection_named(v for n, v in source.items() if n.lower() == "connection")
    decoded = source.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip", "deflate")
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in source.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in listed or lower.startswith("proxy-"):
            continue
        if decoded and lower in ("content-length", "content-encoding"):
            continue
        out.add(name, value)
    return out


def _body(request: web.Request) -> PassthroughBody:
    """The client's body: whole when small, else streamed from the socket as it arrives."""
    length = request.content_length
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if length is None and not chunked:
        # No body. POST/PUT/PATCH still get ``Content-Length: 0`` (some providers answer 411 without it).
        return b"" if request.method in _BODY_METHODS else None
    return BodyStream(_chunks(request), None if chunked else length)


async def _chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_any():
        yield chunk


async def _small_body(request: web.Request, body: PassthroughBody) -> PassthroughBody:
    if isinstance(body, BodyStream) and body.length is not None and body.length <= _SMALL_BODY:
        try:
            return await request.content.readexactly(body.length) if body.length else b""
        except asyncio.IncompleteReadError:
            raise InvalidRequestError("The request body ended before its Content-Length.") from None
    return body


async def passthrough(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = ENDPOINT
    state = request.app[STATE]
    name = request.match_info["provider"]
    provider = state.providers.get(name)
    if provider is None:
        configured = ", ".join(sorted(state.providers)) or "none"
        raise NotFoundError(
            f"No provider named '{name}'. Pass-through routes are /{{provider}}/<path on the provider>; "
            f"the configured providers are: {configured}.", code="provider_not_found",
        )
    call.provider = name
    if not isinstance(provider, PassthroughProvider):
        raise InvalidRequestError(
            f"Provider '{name}' (type {provider.kind}) has no native HTTP API to pass requests through to; "
            "use the /v1 routes for it.", code="passthrough_not_supported",
        )
    raw_path = request.rel_url.raw_path
    parts = raw_path.split("/", 2)
    tail = "/" + parts[2] if len(parts) == 3 else ""
    path = upstream_path(base_path(provider.base_url), tail, request.rel_url.raw_query_string)
    headers = request_headers(request.raw_headers)
    body = await _small_body(request, _body(request))
    call.billable = True
    size = len(body) if isinstance(body, bytes) else (request.content_length or 0)
    send = partial(_send, request, provider, path, headers, body, anthropic=provider.kind == "anthropic")
    return await governed(request, None, size, send)


async def _send(request: web.Request, provider: PassthroughProvider, path: bytes, headers: bytes,
                body: PassthroughBody, *, anthropic: bool) -> web.StreamResponse:
    call = call_of(request)
    state = request.app[STATE]
    in_flight = state.metrics.in_flight_child(ENDPOINT)
    in_flight.inc()
    try:
        call.upstream_started = time.perf_counter()
        upstream = await provider.passthrough(request.method.encode("ascii"), path, headers, body)
        call.upstream_answered_at = time.perf_counter()
        return await relay(request, upstream, call, anthropic=anthropic)
    finally:
        in_flight.dec()


async def relay(request: web.Request, upstream: UpstreamResponse, call: CallRecord, *, anthropic: bool
                ) -> web.StreamResponse:
    """The provider's answer to the client as it arrives: status, headers and body as sent."""
    state = request.app[STATE]
    sse = is_event_stream(upstream)
    call.stream = sse
    if upstream.status >= 400:
        call.outcome = "upstream_error"
    headers = response_headers(upstream)
    headers["X-Request-ID"] = call.request_id
    response = web.StreamResponse(status=upstream.status, headers=headers)
    task = asyncio.current_task()
    if task is not None:
        state.streams.add(task)  # ended with the others when the shutdown grace period is over
    try:
        call.first_byte_at = time.perf_counter()
        response.headers["X-GoModel-Overhead-Ms"] = overhead_header(call)
        await response.prepare(request)
        async for chunk in upstream.chunks():
            await response.write(chunk)
        await response.write_eof()
    except GatewayError as exc:
        # The status line is gone: the failure must not look like an end.
        call.outcome = "upstream_error"
        if sse:
            with contextlib.suppress(ConnectionResetError):
                await response.write(anthropic_error_event(exc) if anthropic else error_event(exc))
                await response.write_eof()
        else:
            response.force_close()
            if request.transport is not None:
                request.transport.abort()
    except ConnectionResetError:
        call.outcome, call.status = "client_disconnected", 499
    finally:
        if task is not None:
            state.streams.discard(task)
        upstream.release()
    return response


def add_routes(app: web.Application) -> None:
    """Registered after every other route: a reserved name or an API path is never a provider's name."""
    # The tail takes every character, line breaks included, so that a path with one is refused with a reason.
    app.router.add_route("*", "/" + _PROVIDER_PATTERN + "/{tail:(?s:.*)}", passthrough)
