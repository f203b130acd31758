"""Anthropic's Messages API for its clients (Claude Code, the ``anthropic`` SDK), in front of any provider.

``POST /v1/messages`` and ``POST /v1/messages/count_tokens``. A provider that speaks Messages natively
(Anthropic) gets the request as the client sent it, ``model`` aside, with the client's
``anthropic-version``/``anthropic-beta``, and its answer goes back byte for byte. Any other provider is
asked through OpenAI chat completions and its answer translated (``translators.messages_chat``).
Errors take Anthropic's shape here (the edge middleware renders the gateway's own; this module the
provider's and the mid-stream ones).
"""

from __future__ import annotations

import time
from typing import Any, cast

import orjson
from aiohttp import web

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, anthropic_error_type
from gomodel_proxy.core.interfaces import API_MESSAGES, MessagesProvider, Provider, UpstreamResponse
from gomodel_proxy.core.types import CallRecord, Usage
from gomodel_proxy.routing.executor import finished, send_with_failover
from gomodel_proxy.routing.router import Candidate
from gomodel_proxy.server.inbound import api_call, read_json_object, resolve_model
from gomodel_proxy.server.relay import answer, is_event_stream, json_response, relay_stream
from gomodel_proxy.server.state import STATE, call_of
from gomodel_proxy.translators.messages_chat import (
    ChatToMessagesStream,
    chat_to_message,
    estimate_input_tokens,
    message_to_events,
    messages_to_chat,
)
from gomodel_proxy.wire.anthropic_messages import MessagesStreamTap, anthropic_error_body, usage_from_anthropic
from gomodel_proxy.wire.openai_json import normalize_error_body

#: Client headers a native provider needs to answer as the client expects (API version, beta features).
_FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")


def anthropic_error_event(exc: GatewayError) -> bytes:
    """A failure that ends a stream, as Anthropic's ``error`` event."""
    return b"event: error\ndata: " + exc.to_anthropic_json() + b"\n\n"




def _native(provider: Provider) -> MessagesProvider | None:
    if API_MESSAGES in provider.native_apis and isinstance(provider, MessagesProvider):
        return cast(MessagesProvider, provider)
    return None


def _client_headers(request: web.Request) -> dict[str, str]:
    return {name: value for name in _FORWARDED_HEADERS if (value := request.headers.get(name))}


async def create_message(request: web.Request) -> web.StreamResponse:
    return await api_call(request, "messages", _create)


async def _create(request: web.Request, body: dict[str, Any], size: int, provider: Provider,
                  plan: list[Candidate] | None) -> web.StreamResponse:
    call = call_of(request)
    stream = body.get("stream") is True
    call.stream = stream
    stop_sequences = body.get("stop_sequences") if isinstance(body.get("stop_sequences"), list) else None
    client_headers = _client_headers(request)
    state = request.app[STATE]
    in_flight = state.metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    answered: Candidate | None = None
    try:
        if plan is None:
            native = _native(provider)
            chat_body = None if native is not None else \
                messages_to_chat(body, include_usage=provider.injects_stream_usage)
            call.upstream_started = time.perf_counter()
            if native is not None:
                upstream = await native.messages(body, stream=stream, headers=client_headers)
            else:
                assert chat_body is not None
                upstream = await provider.chat_completions(chat_body, stream=stream)
        else:
            call.upstream_started = time.perf_counter()
            natives: list[MessagesProvider | None] = [None]

            async def send(target: Candidate) -> UpstreamResponse:
                # Each target gets its own copy: natively when its provider speaks Messages, else through chat.
                natives[0] = _native(target.provider)
                attempt = {**body, "model": target.model}
                return await _attempt(target.provider, natives[0], attempt, stream, client_headers)

            answered, upstream = await send_with_failover(state.router, call, plan, send)
            provider, native = answered.provider, natives[0]
        call.upstream_answered_at = time.perf_counter()
        if stream and upstream.status == 200 and is_event_stream(upstream):
            tap = MessagesStreamTap() if native is not None else \
                ChatToMessagesStream(model=call.model, stop_sequences=stop_sequences)
            return await relay_stream(
                request, upstream, call, tap, prompt_bytes=size, render_error=anthropic_error_event
            )
        if native is not None:
            return await _relay_native_body(upstream, call, provider=provider.name)
        return await _relay_translated_body(upstream, call, provider=provider.name, stream=stream,
                                            stop_sequences=stop_sequences)
    finally:
        finished(answered)
        in_flight.dec()


async def _attempt(provider: Provider, native: MessagesProvider | None, body: dict[str, Any], stream: bool,
                   client_headers: dict[str, str]) -> UpstreamResponse:
    """One provider's answer to ``body`` (its ``model`` already the provider's): native, or through chat."""
    if native is not None:
        return await native.messages(body, stream=stream, headers=client_headers)
    chat_body = messages_to_chat(body, include_usage=provider.injects_stream_usage)
    return await provider.chat_completions(chat_body, stream=stream)


async def count_tokens(request: web.Request) -> web.StreamResponse:
    """Native providers count; for the others an estimate (no tokenizer is shipped): ~4 characters per
    token, ``MEDIA_TOKENS`` per image, said so in the ``X-GoModel-Token-Estimate`` header."""
    call = call_of(request)
    call.endpoint = "messages.count_tokens"
    body, _ = await read_json_object(request)
    provider = resolve_model(request, body, call)
    native = _native(provider)
    if native is not None:
        call.upstream_started = time.perf_counter()
        upstream = await native.count_tokens(body, headers=_client_headers(request))
        call.upstream_answered_at = time.perf_counter()
        return await _relay_native_body(upstream, call, provider=provider.name, usage_in_body=False)
    if not isinstance(body.get("messages"), list):
        raise InvalidRequestError("'messages' must be an array of messages.", param="messages")
    response = json_response({"input_tokens": estimate_input_tokens(body)}, call)
    response.headers["X-GoModel-Token-Estimate"] = "chars/4"
    return response


async def _read(upstream: UpstreamResponse, call: CallRecord) -> bytes:
    try:
        raw = await upstream.read()
    finally:
        upstream.release()
    call.upstream_answered_at = time.perf_counter()
    return raw




async def _relay_native_body(
    upstream: UpstreamResponse, call: CallRecord, *, provider: str, usage_in_body: bool = True
) -> web.Response:
    """A native answer byte for byte (errors rebuilt only when not already in Anthropic's shape)."""
    raw = await _read(upstream, call)
    status = upstream.status
    if status >= 400:
        call.outcome = "upstream_error"
        return answer(upstream, call, status, anthropic_error_body(raw, status, provider))
    if usage_in_body:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        call.usage = usage_from_anthropic(parsed.get("usage")) if isinstance(parsed, dict) else None
    return answer(upstream, call, status, raw, upstream.headers.get("Content-Type", "application/json"))


async def _relay_translated_body(
    upstream: UpstreamResponse, call: CallRecord, *, provider: str, stream: bool, stop_sequences: list[str] | None
) -> web.Response:
    """A whole chat answer (or error) as Anthropic's; as SSE events when the client asked for a stream."""
    raw = await _read(upstream, call)
    status = upstream.status
    if status >= 400:
        call.outcome = "upstream_error"
        error = orjson.loads(normalize_error_body(raw, status, provider))["error"]
        payload = {"type": "error", "error": {"type": anthropic_error_type(status), "message": error["message"]}}
        return answer(upstream, call, status, orjson.dumps(payload))
    try:
        chat = orjson.loads(raw)
    except orjson.JSONDecodeError:
        chat = None
    if not isinstance(chat, dict) or not isinstance(chat.get("choices"), list):
        call.outcome = "upstream_error"
        raise GatewayError(f"provider '{provider}' answered with a body that is not a chat completion",
                           status=502, error_type="upstream_error")
    call.usage = Usage.from_openai(chat.get("usage"))
    message = chat_to_message(chat, model=call.model, stop_sequences=stop_sequences)
    if stream:
        return answer(upstream, call, status, message_to_events(message), "text/event-stream")
    return answer(upstream, call, status, orjson.dumps(message))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/messages", create_message)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
