"""The unified OpenAI API: ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``."""

from __future__ import annotations

import time

from aiohttp import web

from gomodel_proxy.core.errors import ModelNotFoundError
from gomodel_proxy.server.inbound import read_json_object, resolve_model
from gomodel_proxy.server.relay import is_event_stream, json_response, relay_body, relay_stream
from gomodel_proxy.server.state import STATE, call_of
from gomodel_proxy.wire.anthropic_messages import anthropic_model, anthropic_model_list
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap


async def chat_completions(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "chat.completions"
    body, size = await read_json_object(request)
    provider = resolve_model(request, body, call)
    stream = body.get("stream") is True
    call.stream = stream
    strip_usage = False
    if stream and provider.injects_stream_usage:
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            # Ask for usage to account the call; the tap removes it again before the client sees it.
            body["stream_options"] = {**options, "include_usage": True} if isinstance(options, dict) \
                else {"include_usage": True}
            strip_usage = True
    in_flight = request.app[STATE].metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    try:
        call.upstream_started = time.perf_counter()
        upstream = await provider.chat_completions(body, stream=stream)
        call.upstream_answered_at = time.perf_counter()
        if stream and upstream.status == 200 and is_event_stream(upstream):
            return await relay_stream(
                request, upstream, call, ChatStreamTap(strip_usage=strip_usage), prompt_bytes=size
            )
        return await relay_body(upstream, call, provider=provider.name)
    finally:
        in_flight.dec()


async def embeddings(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "embeddings"
    body, _ = await read_json_object(request)
    provider = resolve_model(request, body, call)
    in_flight = request.app[STATE].metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    try:
        call.upstream_started = time.perf_counter()
        upstream = await provider.embeddings(body)
        call.upstream_answered_at = time.perf_counter()
        return await relay_body(upstream, call, provider=provider.name)
    finally:
        in_flight.dec()


async def list_models(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "models"
    models = request.app[STATE].registry.models()
    if "anthropic-version" in request.headers:  # an Anthropic client (its SDK always sends the header)
        return json_response(anthropic_model_list(models, request.query), call)
    return json_response({"object": "list", "data": [m.to_openai() for m in models]}, call)


async def get_model(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    call.endpoint = "models"
    model_id = request.match_info["model_id"]
    info = request.app[STATE].registry.find(model_id)
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
