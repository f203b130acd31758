"""What every API route does first: read the JSON body once and find the provider for its model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import orjson
from aiohttp import web

from gomodel_proxy.audit.capture import Bodies
from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.interfaces import Provider, RequestContext
from gomodel_proxy.core.types import CallRecord
from gomodel_proxy.routing.router import Candidate
from gomodel_proxy.server.state import CALL, STATE

R = TypeVar("R")


async def read_json_object(request: web.Request) -> tuple[dict[str, Any], int]:
    """The request body as a JSON object (the one parse of the request), and its size."""
    raw = await request.read()
    if not raw:
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body, len(raw)


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None or model == "":
        raise InvalidRequestError("You must provide a model parameter.", param="model", code="missing_model")
    if not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string.", param="model")
    return model


def resolve_model(request: web.Request, body: dict[str, Any], call: CallRecord) -> Provider:
    """The provider for ``body['model']``; rewrites it to the provider's own id and notes both on ``call``.

    Aliases and virtual models resolve to their first target; failover is the caller's (``resolve_plan``).
    """
    model = _model_of(body)
    state = request.app[STATE]
    if state.router.active:
        first = state.router.plan(model)[0]
        provider, upstream_model = first.provider, first.model
    else:
        provider, upstream_model = state.registry.resolve(model)
    call.model_requested = model
    call.provider = provider.name
    call.model = upstream_model
    body["model"] = upstream_model
    return provider


def resolve_plan(
    request: web.Request, body: dict[str, Any], call: CallRecord
) -> tuple[Provider, list[Candidate] | None]:
    """Like ``resolve_model``, plus the targets to try in order when there is more than one.

    ``None`` (the common case: no alias, virtual model or chain for this model) means one target: the
    returned provider, with ``body`` already rewritten for it, exactly as ``resolve_model`` does.
    """
    state = request.app[STATE]
    if not state.router.active:
        return resolve_model(request, body, call), None
    model = _model_of(body)
    plan = state.router.plan(model)
    call.model_requested = model
    first = plan[0]
    call.provider = first.provider.name
    call.model = first.model
    if len(plan) == 1 and first.stats is None:
        body["model"] = first.model
        return first.provider, None
    return first.provider, plan


_MAX_OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def max_output_tokens(body: dict[str, Any] | None) -> int | None:
    """The cap the client put on the answer (chat, Responses or Messages spelling), if any."""
    if body is None:
        return None
    for name in _MAX_OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


#: The part of an API route after the body is read and the model resolved: the provider call and the relay.
Send = Callable[[web.Request, dict[str, Any], int, Provider, "list[Candidate] | None"], Awaitable[web.StreamResponse]]


async def api_call(request: web.Request, endpoint: str, send: Send) -> web.StreamResponse:
    """What every model-addressed API route does: one usage record for it (``billable``), its body read
    once, its model resolved, then ``send`` behind the request chain."""
    call = request[CALL]
    call.endpoint = endpoint
    call.billable = True
    body, size = await read_json_object(request)
    provider, plan = resolve_plan(request, body, call)
    handler = partial(send, request, body, size, provider, plan)
    limit: int = request.app[STATE].governance.audit.body_limit
    if not limit:
        return await governed(request, body, size, handler)
    # audit.include_bodies: the request's bytes as read above (aiohttp keeps them: not a copy), and the
    # answer as the client gets it; a stream's pieces are kept as they pass (the first filter added is the
    # last to see them), never delayed.
    bodies = Bodies(await request.read(), limit)
    call.audit = bodies
    if call.stream_filters is None:
        call.stream_filters = []
    call.stream_filters.append(bodies)
    result = await governed(request, body, size, handler)
    if isinstance(result, web.Response) and isinstance(result.body, bytes):
        bodies.set_response(result.body)
    return result


async def governed(
    request: web.Request, body: dict[str, Any] | None, size: int, handler: Callable[[], Awaitable[R]]
) -> R:
    """Run ``handler`` (the provider call and the relay) behind the request chain, when there is one.

    The chain's post-processing runs when ``handler`` returns, which for a stream is when it ended
    (or the client left), so limits and budgets settle on the real usage.
    """
    chain = request.app[STATE].chain
    if not chain:
        return await handler()
    ctx = RequestContext(request[CALL], body, size, max_output_tokens(body), request.headers)
    result: R = await chain.run(ctx, lambda _ctx: handler())
    return result
