"""The unified OpenAI API: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gomodel_proxy.core.errors import ModelNotFoundError
from gomodel_proxy.core.interfaces import Provider, UpstreamResponse
from gomodel_proxy.middleware.auth import model_allowed
from gomodel_proxy.routing.executor import finished, send_with_failover
from gomodel_proxy.routing.router import Candidate
from gomodel_proxy.server.inbound import api_call
from gomodel_proxy.server.relay import is_event_stream, json_response, relay_body, relay_stream
from gomodel_proxy.server.state import STATE, call_of
from gomodel_proxy.wire.anthropic_messages import anthropic_model, anthropic_model_list
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap


def _ask_usage(body: dict[str, Any], provider: Provider, stream: bool) -> bool:
    """Ask a streaming provider for usage to account the call; True when the tap must remove it again."""
    if not (stream and provider.injects_stream_usage):
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) \
        else {"include_usage": True}
    return True


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await api_call(request, "chat.completions", _chat)


async def _chat(request: web.Request, body: dict[str, Any], size: int, provider: Provider,
                plan: list[Candidate] | None) -> web.StreamResponse:
    call = call_of(request)
    stream = body.get("stream") is True
    call.stream = stream
    state = request.app[STATE]
    in_flight = state.metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    answered: Candidate | None = None
    try:
        call.upstream_started = time.perf_counter()
        if plan is None:
            strip_usage = _ask_usage(body, provider, stream)
            upstream = await provider.chat_completions(body, stream=stream)
        else:
            strip = [False]

            async def send(target: Candidate) -> UpstreamResponse:
                attempt = {**body, "model": target.model}  # each target gets its own copy
                strip[0] = _ask_usage(attempt, target.provider, stream)
                return await target.provider.chat_completions(attempt, stream=stream)

            answered, upstream = await send_with_failover(state.router, call, plan, send)
            provider, strip_usage = answered.provider, strip[0]
        call.upstream_answered_at = time.perf_counter()
        if stream and upstream.status == 200 and is_event_stream(upstream):
            return await relay_stream(
                request, upstream, call, ChatStreamTap(strip_usage=strip_usage), prompt_bytes=size
            )
        return await relay_body(upstream, call, provider=provider.name)
    finally:
        finished(answered)
        in_flight.dec()


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await api_call(request, "embeddings", _embeddings)


async def _embeddings(request: web.Request, body: dict[str, Any], _size: int, provider: Provider,
                      plan: list[Candidate] | None) -> web.StreamResponse:
    call = call_of(request)
    state = request.app[STATE]
    in_flight = state.metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    answered: Candidate | None = None
    try:
        call.upstream_started = time.perf_counter()
        if plan is None:
            upstream = await provider.embeddings(body)
        else:
            async def send(target: Candidate) -> UpstreamResponse:
                return await target.provider.embeddings({**body, "model": target.model})

            answered, upstream = await send_with_failover(state.router, call, plan, send)
            provider = answered.provider
        call.upstream_answered_at = time.perf_counter()
        return await relay_body(upstream, call, provider=provider.name)
    finally:
        finished(answered)
        in_flight.dec()


async def list_models(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "models"
    state = request.app[STATE]
    models = state.registry.models()
    principal = call.principal
    if principal.allowed_models is not None:  # a key sees the models it may use
        models = [m for m in models if model_allowed(principal, m.qualified_id, m.provider, m.id)]
    if "anthropic-version" in request.headers:  # an Anthropic client (its SDK always sends the header)
        return json_response(anthropic_model_list(models, request.query), call)
    data = [m.to_openai() for m in models]
    if state.router.active:
        listed = state.router.listed()  # aliases and virtual models, owned_by "gomodel-proxy"
        if principal.allowed_models is not None:
            listed = [m for m in listed if model_allowed(principal, m["id"], "", "")]
        data += listed
    return json_response({"object": "list", "data": data}, call)


async def get_model(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "models"
    model_id = request.match_info["model_id"]
    state = request.app[STATE]
    info = state.registry.find(model_id)
    if info is None and state.router.active and "anthropic-version" not in request.headers:
        named = [m for m in state.router.listed() if m["id"] == model_id]
        if named:
            return json_response(named[0], call)
    if info is None:
        raise ModelNotFoundError(
            f"The model '{model_id}' does not exist. List the available models with GET /v1/models.",
            param="model",
        )
    return json_response(anthropic_model(info) if "anthropic-version" in request.headers else info.to_openai(), call)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id:.+}", get_model)
