"""Moving a provider's answer to the client: streams chunk by chunk as they arrive, bodies whole.

The client's request is never held up by anything but the provider: no response is buffered whole
before the first byte goes out, and a client that goes away stops the provider's request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from gomodel_proxy.core.errors import (
    GatewayError,
    GuardrailBlockedError,
    ServiceUnavailableError,
    UpstreamConnectionError,
)
from gomodel_proxy.core.interfaces import StreamFilter, StreamTap, UpstreamResponse
from gomodel_proxy.core.types import CallRecord, Usage
from gomodel_proxy.server.middlewares import overhead_header
from gomodel_proxy.server.state import STATE
from gomodel_proxy.wire.openai_json import extract_usage, normalize_error_body

#: Provider response headers that help a client and reveal nothing of the gateway's credentials.
_PASSED_HEADERS = ("retry-after", "retry-after-ms")
_PASSED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
_SHUTDOWN = ServiceUnavailableError(
    "The gateway is shutting down and its grace period ended before this stream did; retry the request.",
    code="shutting_down",
)


def passed_headers(upstream: UpstreamResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in upstream.headers.items():
        lower = name.lower()
        if lower in _PASSED_HEADERS or lower.startswith(_PASSED_PREFIXES):
            out[name] = value
    return out


def is_event_stream(upstream: UpstreamResponse) -> bool:
    return upstream.headers.get("Content-Type", "").startswith("text/event-stream")


async def relay_body(
    upstream: UpstreamResponse, call: CallRecord, *, provider: str, usage_in_body: bool = True
) -> web.Response:
    """Read a (small) JSON answer whole and pass it on; errors in OpenAI's shape, usage observed."""
    try:
        raw = await upstream.read()
    finally:
        upstream.release()
    call.upstream_answered_at = time.perf_counter()
    status = upstream.status
    if status >= 400:
        raw = normalize_error_body(raw, status, provider)
        call.outcome = "upstream_error"
        content_type = "application/json"
    else:
        if usage_in_body:
            call.usage = extract_usage(raw)
        content_type = upstream.headers.get("Content-Type", "application/json")
    return answer(upstream, call, status, raw, content_type)


def answer(upstream: UpstreamResponse, call: CallRecord, status: int, body: bytes,
           content_type: str = "application/json") -> web.Response:
    """A whole answer to the client: the provider's helpful headers, the gateway's own, and ``body``."""
    call.first_byte_at = time.perf_counter()
    headers = passed_headers(upstream)
    headers["Content-Type"] = content_type
    headers["X-Request-ID"] = call.request_id
    headers["X-GoModel-Overhead-Ms"] = overhead_header(call)
    if call.provider:
        headers["X-GoModel-Provider"] = call.provider
        headers["X-GoModel-Model"] = call.model
    if call.headers:
        headers.update(call.headers)
    return web.Response(status=status, body=body, headers=headers)


async def relay_stream(
    request: web.Request,
    upstream: UpstreamResponse,
    call: CallRecord,
    tap: StreamTap,
    *,
    prompt_bytes: int,
    render_error: Callable[[GatewayError], bytes] | None = None,
) -> web.StreamResponse:
    """Pipe an SSE answer to the client as it arrives; read usage on the way; end errors as errors.

    ``tap`` is what the bytes pass through (ChatStreamTap, or a translator to another API); the errors
    the relay itself ends a stream with are written by ``render_error`` (default: OpenAI's shape). A
    translator that ends a truncated stream with its own error event sets ``error``, so none is added.
    """
    render = render_error or error_event
    headers = passed_headers(upstream)
    headers.update({
        "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        "X-Request-ID": call.request_id,
    })
    if call.provider:
        headers["X-GoModel-Provider"] = call.provider
        headers["X-GoModel-Model"] = call.model
    if call.headers:
        headers.update(call.headers)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    state = request.app[STATE]
    task = asyncio.current_task()
    if task is not None:
        state.streams.add(task)
    try:
        call.first_byte_at = time.perf_counter()
        response.headers["X-GoModel-Overhead-Ms"] = overhead_header(call)
        await response.prepare(request)
        filters = call.stream_filters
        if filters:
            await _relay_filtered(response, upstream, tap, filters[::-1])
        else:
            async for chunk in upstream.chunks():
                out = tap.feed(chunk)
                if out:
                    await response.write(out)
            rest = tap.finish()
            if rest:
                await response.write(rest)
        if tap.error is not None:
            call.outcome = "upstream_error"
        elif not tap.complete:
            call.outcome = "upstream_error"
            await response.write(render(UpstreamConnectionError(
                f"provider '{call.provider}' ended the stream before it was complete", code="stream_truncated"
            )))
        await response.write_eof()
    except GatewayError as exc:
        # The status line is gone; the failure becomes the stream's last event, never a fake end.
        call.outcome = "guardrail_blocked" if isinstance(exc, GuardrailBlockedError) else "upstream_error"
        await _write_quietly(response, render(exc))
    except ConnectionResetError:
        call.outcome, call.status = "client_disconnected", 499
    except asyncio.CancelledError:
        if state.shutting_down:
            # The grace period is over: say so, so that the client does not take the cut for an end.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(response.write(render(_SHUTDOWN)), 0.1)
        raise
    finally:
        if task is not None:
            state.streams.discard(task)
        upstream.release()
        if tap.error is not None:
            # The provider's error event failed the call; a client that hangs up on it does not change why.
            call.outcome = "upstream_error"
        call.usage = tap.usage or _estimate(tap, prompt_bytes)
    return response


async def _relay_filtered(response: web.StreamResponse, upstream: UpstreamResponse, tap: StreamTap,
                          filters: list[StreamFilter]) -> None:
    """The relay loop with the chain's stream filters after the tap, nearest the provider first."""
    async for chunk in upstream.chunks():
        out = tap.feed(chunk)
        for f in filters:
            if not out:
                break
            out = await f.feed(out)
        if out:
            await response.write(out)
    rest = tap.finish()
    for f in filters:
        rest = (await f.feed(rest) if rest else b"") + await f.finish()
    if rest:
        await response.write(rest)


def error_event(exc: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
        await response.write_eof()
    except ConnectionResetError:
        pass


def _estimate(tap: StreamTap, prompt_bytes: int) -> Usage:
    """Usage when the provider's figures never came (the stream was cut): one token per content
    event (providers emit about one token per chunk) and about four bytes per prompt token."""
    return Usage(input_tokens=max(1, prompt_bytes // 4), output_tokens=tap.content_events, estimated=True)


def json_response(payload: Any, call: CallRecord, status: int = 200) -> web.Response:
    call.first_byte_at = time.perf_counter()
    return web.Response(
        status=status,
        body=orjson.dumps(payload),
        content_type="application/json",
        headers={"X-GoModel-Overhead-Ms": overhead_header(call)},
    )
