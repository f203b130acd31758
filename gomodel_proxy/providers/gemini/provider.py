"""Gemini behind the OpenAI API: chat and embeddings translated both ways, streams through a state machine.

The key goes in the ``x-goog-api-key`` header, never in a URL (URLs end up in logs and error messages).
Streams use ``streamGenerateContent?alt=sse``: server-sent events, one whole response per event. Without
``alt=sse`` Gemini streams one JSON array instead, which no SSE reader can take apart as it arrives.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import quote

import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.interfaces import PassthroughBody, UpstreamResponse
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.llmclient import AuthScheme, LLMClient
from gomodel_proxy.providers.http import HttpUpstreamResponse, make_llm_client, read_model_page
from gomodel_proxy.providers.translated import ReadyBody, TranslatedStream
from gomodel_proxy.translators.gemini_chat import (
    GeminiToChatStream,
    chat_request_to_gemini,
    embeddings_request_to_gemini,
    gemini_embeddings_to_openai,
    gemini_error_to_openai,
    gemini_model_path,
    gemini_response_to_chat,
)

_JSON_BODY = b"Content-Type: application/json\r\n"
_KEY_HEADER = "x-goog-api-key"
#: Provider headers worth passing on with a translated error (the relay picks the ones a client may see).
_KEPT_ERROR_HEADERS = ("retry-after", "retry-after-ms")
#: Model list pages: Gemini's largest page, and a bound on how many are followed.
_PAGE_SIZE = 1000
_MAX_PAGES = 50


class GeminiProvider:
    """One Gemini API account (``type: gemini``); it speaks none of the client APIs natively."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.kind = config.type
        # Gemini reports usage in every stream event; asking for the usage chunk costs nothing upstream.
        self.injects_stream_usage = True
        self.native_apis: frozenset[str] = frozenset()
        self._config = config
        fixed: list[tuple[str, str]] = [("Accept", "application/json"), *config.headers.items()]
        #: Every request goes through it: a key of the keyring (``x-goog-api-key``), retries, circuit breakers.
        self._client = make_llm_client(name, config, headers=fixed, auth=AuthScheme(_KEY_HEADER))

    @property
    def llm_client(self) -> LLMClient:
        return self._client

    async def _request(self, method: bytes, path: str, body: dict[str, Any] | None) -> HttpUpstreamResponse:
        """Every request to Gemini goes out here."""
        if body is None:
            return await self._client.request(method, path.encode("ascii"))
        return await self._client.request(method, path.encode("ascii"), _JSON_BODY, orjson.dumps(body))

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        model = str(body.get("model") or "")
        request = chat_request_to_gemini(body)
        method = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
        upstream = await self._request(b"POST", "/" + quote(gemini_model_path(model)) + method, request)
        if upstream.status != 200:
            return await self._error(upstream)
        if stream:
            options = body.get("stream_options")
            translator = GeminiToChatStream(
                model=model,
                include_usage=isinstance(options, dict) and options.get("include_usage") is True,
                created=int(time.time()),
                fallback_id=os.urandom(12).hex(),
            )
            return TranslatedStream(upstream, translator, "text/event-stream")
        payload = await self._read_json(upstream)
        answer = gemini_response_to_chat(payload, model=model, created=int(time.time()),
                                         fallback_id=os.urandom(12).hex())
        return ReadyBody(200, orjson.dumps(answer), {"Content-Type": "application/json"})

    async def embeddings(self, body: dict[str, Any]) -> UpstreamResponse:
        model = str(body.get("model") or "")
        request = embeddings_request_to_gemini(body, model)
        upstream = await self._request(b"POST", "/" + quote(gemini_model_path(model)) + ":batchEmbedContents",
                                       request)
        if upstream.status != 200:
            return await self._error(upstream)
        payload = await self._read_json(upstream)
        try:
            answer = gemini_embeddings_to_openai(payload, body, model=model)
        except ValueError:
            raise self._unreadable() from None
        return ReadyBody(200, orjson.dumps(answer), {"Content-Type": "application/json"})

    async def list_models(self) -> list[ModelInfo]:
        if self._config.models:
            return [ModelInfo(id=m, provider=self.name, owned_by="google") for m in self._config.models]
        models: list[ModelInfo] = []
        token = ""
        for _ in range(_MAX_PAGES):
            path = f"/models?pageSize={_PAGE_SIZE}" + (f"&pageToken={quote(token, safe='')}" if token else "")
            page = await read_model_page(await self._request(b"GET", path, None), self.name, "models")
            for item in page.get("models", []):
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str) and name:
                    models.append(ModelInfo(id=name.removeprefix("models/"), provider=self.name, owned_by="google"))
            token = page.get("nextPageToken") or ""
            if not isinstance(token, str) or not token:
                break
        return models

    async def _read_json(self, upstream: HttpUpstreamResponse) -> dict[str, Any]:
        try:
            raw = await upstream.read()
        finally:
            upstream.release()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            raise self._unreadable()
        return payload

    async def _error(self, upstream: HttpUpstreamResponse) -> ReadyBody:
        """Gemini's error answer in OpenAI's shape, with the status a client of OpenAI's API expects."""
        try:
            raw = await upstream.read()
        finally:
            upstream.release()
        status, body, headers = gemini_error_to_openai(upstream.status, raw)
        for name in _KEPT_ERROR_HEADERS:
            value = upstream.headers.get(name)
            if value is not None:
                headers.setdefault(name, value)
        return ReadyBody(status, orjson.dumps(body), {"Content-Type": "application/json", **headers})

    def _unreadable(self) -> GatewayError:
        return GatewayError(f"provider '{self.name}' answered with a body the gateway cannot read",
                            status=502, error_type="upstream_error", code="bad_upstream_response")

    async def close(self) -> None:
        await self._client.close()

    # -- pass-through (/{provider}/*): the client's request as it came, this provider's key added ------------
    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def passthrough(self, method: bytes, path: bytes, headers: bytes, body: PassthroughBody
                          ) -> HttpUpstreamResponse:
        return await self._client.request(method, path, headers, body)  # the llmclient adds the key
