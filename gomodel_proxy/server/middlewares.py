"""The HTTP edge: request ids, errors in the client's shape, the master key. Each one small."""

from __future__ import annotations

import asyncio
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from gomodel_proxy.core.context import CURRENT_CALL
from gomodel_proxy.core.errors import (
    GatewayError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from gomodel_proxy.core.ids import random_id
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.server.state import CALL, STATE

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
#: Routes that are not requests for the gateway's service: no access line, no request metrics.
_QUIET_PATHS = frozenset({"/health", "/healthz", "/live", "/ready", "/metrics"})
#: Routes open without a credential, so probes and scrapers need no secret.
OPEN_PATHS = _QUIET_PATHS


def overhead_header(call: CallRecord) -> str:
    return f"{call.overhead_s * 1000:.3f}"


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tags the request, renders every failure as OpenAI error JSON, and records the request."""
    incoming = request.headers.get("X-Request-ID")
    request_id = incoming if incoming and _REQUEST_ID.match(incoming) else random_id()
    call = CallRecord(request_id=request_id, endpoint="other")
    request[CALL] = call
    CURRENT_CALL.set(call)  # this request's task (and what it awaits) sees its record
    tracer = request.app[STATE].recorder.tracer
    if tracer is not None and request.path not in _QUIET_PATHS:  # tracing on: continue the client's trace
        call.trace = tracer.begin(request.headers)
    response: web.StreamResponse | None = None
    try:
        try:
            # Authentication is part of the edge rather than a middleware of its own: one middleware
            # layer less per request, and its 401 is rendered here like every other error.
            authenticator = request.app[STATE].authenticator
            if authenticator is not None and request.path not in OPEN_PATHS:
                call.principal = await authenticator.authenticate(request)
            response = await handler(request)
        except web.HTTPException as exc:
            raise _from_http_exception(request, exc) from None
        call.status = response.status
    except GatewayError as exc:
        call.status = exc.status
        call.outcome = "error" if call.outcome == "ok" else call.outcome
        call.error_code = exc.code or ""
        if exc.status == 429:  # the gateway's own rate limits and budgets refuse with 429
            request.app[STATE].metrics.refusal(exc)
        response = error_response(exc, call, anthropic=speaks_anthropic(request))
    except asyncio.CancelledError:
        if request.app[STATE].shutting_down:
            call.status, call.outcome = 503, "cut_at_shutdown"
        else:
            call.status = 499
            call.outcome = "client_disconnected" if call.outcome == "ok" else call.outcome
        raise
    except Exception:
        state = request.app[STATE]
        state.logger.exception("unhandled error", request_id=request_id, path=request.path)
        call.status, call.outcome = 500, "error"
        response = error_response(
            GatewayError("internal error in the gateway; see its logs"), call, anthropic=speaks_anthropic(request)
        )
    finally:
        call.finished = time.perf_counter()
        if request.path not in _QUIET_PATHS:
            request.app[STATE].recorder.record(call)
    if not response.prepared:
        response.headers["X-Request-ID"] = request_id
        if "X-GoModel-Overhead-Ms" not in response.headers:  # operational routes: all of it is overhead
            response.headers["X-GoModel-Overhead-Ms"] = overhead_header(call)
    return response


def speaks_anthropic(request: web.Request) -> bool:
    """Whether the client speaks Anthropic's API: its errors then take Anthropic's shape.

    That is ``/v1/messages``, and the pass-through of an Anthropic provider (``/{name}/...``), where the
    client is an Anthropic SDK too. Only asked on the error path.
    """
    path = request.path
    if path.startswith(ANTHROPIC_PATH_PREFIX):
        return True
    provider = request.app[STATE].providers.get(path[1:].partition("/")[0])
    return provider is not None and provider.kind == "anthropic"


#: Routes of Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).
ANTHROPIC_PATH_PREFIX = "/v1/messages"


def error_response(exc: GatewayError, call: CallRecord, *, anthropic: bool = False) -> web.Response:
    if not call.first_byte_at:
        call.first_byte_at = time.perf_counter()
    headers = {"X-Request-ID": call.request_id, "X-GoModel-Overhead-Ms": overhead_header(call)}
    if call.headers:  # the gateway's own x-ratelimit-* of an admitted request
        headers.update(call.headers)
    headers.update(exc.headers)
    if call.provider:  # which target answered last (after failover: the last one tried)
        headers["X-GoModel-Provider"] = call.provider
        headers["X-GoModel-Model"] = call.model
    body = exc.to_anthropic_json() if anthropic else exc.to_json()
    return web.Response(status=exc.status, body=body, content_type="application/json", headers=headers)


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = request.app[STATE].config.server.body_limit_mb
        return PayloadTooLargeError(f"The request body is larger than the gateway accepts ({limit:g} MiB).")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowedError(
            f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}.",
            headers={"Allow": allowed},
        )
    if isinstance(exc, web.HTTPNotFound):
        return NotFoundError(
            f"No route for {request.method} {request.path}. The gateway serves the OpenAI API under /v1 "
            "(e.g. POST /v1/chat/completions, GET /v1/models)."
        )
    return GatewayError(exc.text or exc.reason, status=exc.status)
