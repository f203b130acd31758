"""OpenAI's Responses API in front of every provider: ``POST /v1/responses``, ``GET``/``DELETE /v1/responses/{id}``.

A provider with the Responses API (OpenAI, Azure, xAI) gets the request as the client sent it, ``model``
aside, and its answer goes back byte for byte; the gateway remembers which provider owns the response id
so that ``GET``/``DELETE`` reach it. Any other provider is asked through chat completions and its answer
converted (``translators.responses_chat``); the gateway then stores the response itself (unless the
client sent ``store: false``), so that ``GET`` and ``previous_response_id`` work there too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from aiohttp import web

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, NotFoundError
from gomodel_proxy.core.interfaces import API_RESPONSES, Provider, ResponsesProvider, UpstreamResponse
from gomodel_proxy.core.types import CallRecord, Usage
from gomodel_proxy.routing.executor import finished, send_with_failover
from gomodel_proxy.routing.router import Candidate
from gomodel_proxy.server.inbound import api_call
from gomodel_proxy.server.relay import answer, is_event_stream, json_response, relay_body, relay_stream
from gomodel_proxy.server.state import STATE, call_of
from gomodel_proxy.storage.responses import ResponseStore, SQLiteResponseStore, StoredResponse
from gomodel_proxy.translators.responses_chat import (
    ChatToResponsesStream,
    ResponseContext,
    chat_to_events,
    chat_to_response,
    input_items,
    responses_to_chat,
)
from gomodel_proxy.wire.openai_json import normalize_error_body
from gomodel_proxy.wire.openai_responses_stream import ResponsesStreamTap

#: The file of the default store, under the configured cache directory.
STORE_FILE = "responses.sqlite3"


@dataclass(slots=True)
class ResponsesState:
    """The store, and the writes to it still under way (a client may ask for a response the moment
    its stream ended: its lookup waits for the write rather than missing it)."""

    store: ResponseStore
    logger: Any
    pending: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def save_soon(self, record: StoredResponse) -> None:
        task = asyncio.ensure_future(self.save(record))
        self.pending[record.id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self.pending.get(record.id) is finished:
                del self.pending[record.id]

        task.add_done_callback(done)

    async def save(self, record: StoredResponse) -> None:
        """Store ``record``; a failing store is logged, never a failed answer (the answer exists)."""
        try:
            await self.store.put(record)
        except Exception:
            self.logger.exception("storing a response failed", response_id=record.id, provider=record.provider)

    async def lookup(self, response_id: str) -> StoredResponse | None:
        task = self.pending.get(response_id)
        if task is not None:
            await asyncio.shield(task)
        return await self.store.get(response_id)


RESPONSES: web.AppKey[ResponsesState] = web.AppKey("gomodel_responses", ResponsesState)


class _Storing:
    """The stream translator the relay sees: ``inner`` itself, plus a record stored the moment ``poll``
    has one (before the bytes that end the stream leave, so a follow-up request finds it)."""

    __slots__ = ("_done", "_inner", "_poll", "_state")

    def __init__(self, inner: ChatToResponsesStream | ResponsesStreamTap, state: ResponsesState | None,
                 poll: Callable[[], StoredResponse | None]) -> None:
        self._inner = inner
        self._state = state
        self._poll = poll
        self._done = state is None

    def _check(self) -> None:
        if not self._done:
            record = self._poll()
            if record is not None:
                self._done = True
                assert self._state is not None
                self._state.save_soon(record)

    def feed(self, data: bytes) -> bytes:
        out = self._inner.feed(data)
        self._check()
        return out

    def finish(self) -> bytes:
        out = self._inner.finish()
        self._check()
        return out

    def render_error(self, exc: GatewayError) -> bytes:
        """A failure the relay ends the stream with, as Responses events."""
        out = self._inner.fail(exc.message, code=exc.code, error_type=exc.error_type)
        self._check()
        return out

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def error(self) -> dict[str, Any] | None:
        return self._inner.error

    @property
    def complete(self) -> bool:
        return self._inner.complete

    @property
    def content_events(self) -> int:
        return self._inner.content_events


def new_response_id() -> str:
    return "resp_" + os.urandom(24).hex()




def _native(provider: Provider) -> ResponsesProvider | None:
    if API_RESPONSES in provider.native_apis and isinstance(provider, ResponsesProvider):
        return cast(ResponsesProvider, provider)
    return None


async def create_response(request: web.Request) -> web.StreamResponse:
    return await api_call(request, "responses", _create)


async def _create(request: web.Request, body: dict[str, Any], size: int, provider: Provider,
                  plan: list[Candidate] | None) -> web.StreamResponse:
    call = call_of(request)
    stream = body.get("stream") is True
    call.stream = stream
    state = request.app[RESPONSES]
    previous = await _previous(state, body, provider)
    if plan is not None and "previous_response_id" in body and (previous is None or previous.native):
        # A conversation stored at the provider continues there only: no other target can answer it.
        plan = [c for c in plan if c.provider is provider]
    native = _native(provider) if previous is None or previous.native else None
    history = await state.store.history(previous.id) if previous is not None and not previous.native else None
    in_flight = request.app[STATE].metrics.in_flight_child(call.endpoint)
    in_flight.inc()
    answered: Candidate | None = None
    try:
        if plan is None:
            chat_body = None if native is not None else \
                responses_to_chat(body, history, include_usage=provider.injects_stream_usage)
            call.upstream_started = time.perf_counter()
            if native is not None:
                upstream = await native.responses(body, stream=stream)
            else:
                assert chat_body is not None
                upstream = await provider.chat_completions(chat_body, stream=stream)
        else:
            call.upstream_started = time.perf_counter()
            natives: list[ResponsesProvider | None] = [None]
            converted_only = previous is not None and not previous.native

            async def send(target: Candidate) -> UpstreamResponse:
                # Each target gets its own copy: natively when its provider has the Responses API (and the
                # conversation, if any, is not the gateway's), else through chat.
                natives[0] = None if converted_only else _native(target.provider)
                attempt = {**body, "model": target.model}
                if natives[0] is not None:
                    return await natives[0].responses(attempt, stream=stream)
                chat_body = responses_to_chat(attempt, history, include_usage=target.provider.injects_stream_usage)
                return await target.provider.chat_completions(chat_body, stream=stream)

            answered, upstream = await send_with_failover(request.app[STATE].router, call, plan, send)
            native = natives[0]
        call.upstream_answered_at = time.perf_counter()
        if native is not None:
            return await _relay_native(request, upstream, body, call, size=size, state=state)
        return await _relay_converted(request, upstream, body, call, size=size, state=state, history=history)
    finally:
        finished(answered)
        in_flight.dec()


async def _previous(state: ResponsesState, body: dict[str, Any], provider: Provider) -> StoredResponse | None:
    """The stored response ``previous_response_id`` names; a native one only for its own provider."""
    previous_id = body.get("previous_response_id")
    if previous_id is None:
        return None
    if not isinstance(previous_id, str) or not previous_id:
        raise InvalidRequestError("'previous_response_id' must be a response id.", param="previous_response_id")
    record = await state.lookup(previous_id)
    if record is None:
        if _native(provider) is not None:
            return None  # perhaps made at the provider without the gateway: the provider will say
        raise InvalidRequestError(
            f"Previous response with id '{previous_id}' not found.", param="previous_response_id",
            code="previous_response_not_found",
        )
    if record.native and record.provider != provider.name:
        raise InvalidRequestError(
            f"Previous response with id '{previous_id}' is stored by provider '{record.provider}', not by "
            f"'{provider.name}': continue it with a model of '{record.provider}', or send the conversation "
            "as input.", param="previous_response_id", code="previous_response_not_found",
        )
    return record


async def _relay_native(request: web.Request, upstream: UpstreamResponse, body: dict[str, Any], call: CallRecord,
                        *, size: int, state: ResponsesState) -> web.StreamResponse:
    """A Responses provider's answer, byte for byte; its response id remembered as that provider's."""
    stream = call.stream
    remember = body.get("store") is not False
    if stream and upstream.status == 200 and is_event_stream(upstream):
        tap = ResponsesStreamTap()

        def owner() -> StoredResponse | None:
            rid = tap.response_id
            return StoredResponse(id=rid, provider=call.provider, model=call.model) if rid else None

        storing = _Storing(tap, state if remember else None, owner)
        return await relay_stream(request, upstream, call, storing, prompt_bytes=size,
                                       render_error=storing.render_error)
    response = await relay_body(upstream, call, provider=call.provider)
    if remember and upstream.status == 200 and isinstance(response.body, bytes):
        rid = _id_of(response.body)
        if rid is not None:
            await state.save(StoredResponse(id=rid, provider=call.provider, model=call.model))
    return response


def _id_of(raw: bytes) -> str | None:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    rid = parsed.get("id") if isinstance(parsed, dict) else None
    return rid if isinstance(rid, str) and rid else None


async def _relay_converted(request: web.Request, upstream: UpstreamResponse, body: dict[str, Any],
                           call: CallRecord, *, size: int, state: ResponsesState,
                           history: list[dict[str, Any]] | None) -> web.StreamResponse:
    """A chat answer converted to a Responses one, stored by the gateway (unless ``store: false``)."""
    stream = call.stream
    conversation = [*(history or []), *input_items(body)]
    ctx = ResponseContext(response_id=new_response_id(), created_at=int(time.time()), model=call.model, request=body)
    store = state if body.get("store") is not False else None

    def record(response: dict[str, Any]) -> StoredResponse:
        output = response.get("output") or []
        return StoredResponse(id=ctx.response_id, provider=call.provider, model=call.model, response=response,
                              items=[*conversation, *output])

    if stream and upstream.status == 200 and is_event_stream(upstream):
        translator = ChatToResponsesStream(ctx)
        storing = _Storing(translator, store,
                           lambda: record(translator.response) if translator.response is not None else None)
        return await relay_stream(request, upstream, call, storing, prompt_bytes=size,
                                       render_error=storing.render_error)
    try:
        raw = await upstream.read()
    finally:
        upstream.release()
    call.upstream_answered_at = time.perf_counter()
    status = upstream.status
    if status >= 400:
        call.outcome = "upstream_error"
        return answer(upstream, call, status, normalize_error_body(raw, status, call.provider))
    try:
        chat = orjson.loads(raw)
    except orjson.JSONDecodeError:
        chat = None
    if not isinstance(chat, dict):
        call.outcome = "upstream_error"
        raise GatewayError(f"provider '{call.provider}' answered with a body that is not a chat completion",
                           status=502, error_type="upstream_error")
    call.usage = Usage.from_openai(chat.get("usage"))
    try:
        if stream:
            events, response = chat_to_events(chat, ctx)
        else:
            response = chat_to_response(chat, ctx)
    except GatewayError:
        call.outcome = "upstream_error"
        raise
    if store is not None:
        await store.save(record(response))
    if stream:
        return answer(upstream, call, 200, events, "text/event-stream")
    return answer(upstream, call, 200, orjson.dumps(response))




async def _stored(request: web.Request, call: CallRecord) -> tuple[str, StoredResponse, ResponsesProvider | None]:
    """The response the path names, and its provider when the provider stores it (native)."""
    call.endpoint = "responses"
    response_id = request.match_info["response_id"]
    record = await request.app[RESPONSES].lookup(response_id)
    if record is None:
        raise NotFoundError(f"Response with id '{response_id}' not found.")
    call.provider, call.model = record.provider, record.model
    if not record.native:
        return response_id, record, None
    provider = request.app[STATE].providers.get(record.provider)
    native = _native(provider) if provider is not None else None
    if native is None:
        raise NotFoundError(
            f"Response with id '{response_id}' is stored by provider '{record.provider}', which is not "
            "configured (or has no Responses API) any more."
        )
    return response_id, record, native


async def get_response(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    response_id, record, native = await _stored(request, call)
    if native is None:
        return json_response(record.response, call)
    call.upstream_started = time.perf_counter()
    upstream = await native.get_response(response_id)
    call.upstream_answered_at = time.perf_counter()
    return await relay_body(upstream, call, provider=record.provider, usage_in_body=False)


async def delete_response(request: web.Request) -> web.StreamResponse:
    call = call_of(request)
    response_id, record, native = await _stored(request, call)
    store = request.app[RESPONSES].store
    if native is None:
        await store.delete(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True}, call)
    call.upstream_started = time.perf_counter()
    upstream = await native.delete_response(response_id)
    call.upstream_answered_at = time.perf_counter()
    answer = await relay_body(upstream, call, provider=record.provider, usage_in_body=False)
    if upstream.status < 300 or upstream.status == 404:
        await store.delete(response_id)  # gone at the provider: forget its owner too
    return answer


def add_routes(app: web.Application) -> None:
    """The routes, and the store (opened on first use, closed with the app) under the cache directory."""
    gateway = app[STATE]
    store = SQLiteResponseStore(Path(gateway.config.cache.dir) / STORE_FILE)
    app[RESPONSES] = ResponsesState(store=store, logger=gateway.logger)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.on_cleanup.append(_close_store)


async def _close_store(app: web.Application) -> None:
    state = app[RESPONSES]
    if state.pending:
        await asyncio.gather(*state.pending.values(), return_exceptions=True)
    await state.store.close()
