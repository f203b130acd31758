"""Anthropic (``type: anthropic``): ``/v1/messages`` forwarded as it is, OpenAI chat translated both ways."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError, InvalidRequestError
from gomodel_proxy.core.interfaces import API_MESSAGES, PassthroughBody, UpstreamResponse
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.httpclient import encode_headers
from gomodel_proxy.llmclient import AuthScheme, LLMClient
from gomodel_proxy.providers.http import HttpUpstreamResponse, make_llm_client, read_model_page
from gomodel_proxy.providers.translated import ReadyBody, TranslatedStream
from gomodel_proxy.translators.anthropic_chat import (
    AnthropicToChatStream,
    anthropic_response_to_chat,
    chat_request_to_anthropic,
    error_body_to_openai,
)

#: The ``anthropic-version`` sent when neither the client nor the config names one.
DEFAULT_API_VERSION = "2023-06-01"
#: Client headers passed on to Anthropic on the native routes (the client's key never is).
PASSED_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
#: Upstream headers that describe the upstream body, not the translated one in their place.
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})
#: Pages of ``GET /v1/models`` read at most (1000 models each).
_MAX_MODEL_PAGES = 20

_MESSAGES_PATH = b"/messages"
_COUNT_TOKENS_PATH = b"/messages/count_tokens"
_JSON_BODY = b"Content-Type: application/json\r\n"


class AnthropicProvider:
    """Talks to ``base_url`` (``https://api.anthropic.com/v1``) with ``x-api-key``; never the client's key.

    Streamed chat always comes back with usage (Anthropic reports it unasked), so the gateway may
    always "ask" for it: ``injects_stream_usage`` is True and the relay strips the usage chunk again
    when the client did not ask, exactly as for an OpenAI provider.
    """

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.kind = config.type
        self.injects_stream_usage = True
        self.native_apis = frozenset({API_MESSAGES})
        self._config = config
        self._version = config.api_version or DEFAULT_API_VERSION
        fixed: list[tuple[str, str]] = [("Accept", "application/json"), *config.headers.items()]
        self._default_version = encode_headers([("anthropic-version", self._version)])
        #: Every request goes through it: a key of the keyring (``x-api-key``), retries, circuit breakers.
        self._client = make_llm_client(name, config, headers=fixed, auth=AuthScheme("x-api-key"))

    @property
    def llm_client(self) -> LLMClient:
        return self._client

    async def _send(self, method: bytes, path: bytes, headers: bytes, body: PassthroughBody) -> HttpUpstreamResponse:
        """The one place that talks HTTP (the llmclient adds the key, retries, breakers)."""
        return await self._client.request(method, path, headers, body)

    def _native_headers(self, client_headers: Mapping[str, str]) -> bytes:
        """``anthropic-version`` (the client's, else the configured one) and the client's ``anthropic-beta``."""
        lowered = {k.lower(): v for k, v in client_headers.items()}
        wanted = [(name, lowered[name]) for name in PASSED_CLIENT_HEADERS if lowered.get(name)]
        if not any(name == "anthropic-version" for name, _ in wanted):
            wanted.insert(0, ("anthropic-version", self._version))
        try:
            return _JSON_BODY + encode_headers(wanted)
        except ValueError:
            raise InvalidRequestError("The anthropic-version / anthropic-beta header holds a line break.") from None

    # -- Anthropic's own API, forwarded byte for byte -----------------------------------------------------
    async def messages(
        self, body: dict[str, Any], *, stream: bool, headers: Mapping[str, str]
    ) -> HttpUpstreamResponse:
        return await self._send(b"POST", _MESSAGES_PATH, self._native_headers(headers), orjson.dumps(body))

    async def count_tokens(self, body: dict[str, Any], *, headers: Mapping[str, str]) -> HttpUpstreamResponse:
        return await self._send(b"POST", _COUNT_TOKENS_PATH, self._native_headers(headers), orjson.dumps(body))

    # -- OpenAI's API, translated ---------------------------------------------------------------------------
    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> UpstreamResponse:
        request = chat_request_to_anthropic(body, default_max_tokens=self._config.default_max_tokens)
        upstream = await self._send(
            b"POST", _MESSAGES_PATH, _JSON_BODY + self._default_version, orjson.dumps(request)
        )
        if upstream.status >= 400:
            return await self._translated_error(upstream)
        content_type = upstream.headers.get("Content-Type", "")
        if stream and content_type.startswith("text/event-stream"):
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return TranslatedStream(upstream, AnthropicToChatStream(include_usage=include_usage), "text/event-stream")
        try:
            raw = await upstream.read()
        finally:
            upstream.release()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict) or message.get("type") != "message":
            raise GatewayError(
                f"provider '{self.name}' answered in a shape that is not an Anthropic message",
                status=502, error_type="upstream_error", code="invalid_upstream_response",
            )
        return ReadyBody(200, orjson.dumps(anthropic_response_to_chat(message)), _json_headers(upstream))

    async def _translated_error(self, upstream: HttpUpstreamResponse) -> ReadyBody:
        """Anthropic's error in OpenAI's shape, its status (529 included) and headers (``retry-after``) kept."""
        try:
            raw = await upstream.read()
        finally:
            upstream.release()
        return ReadyBody(upstream.status, error_body_to_openai(raw, upstream.status), _json_headers(upstream))

    async def embeddings(self, body: dict[str, Any]) -> UpstreamResponse:
        raise InvalidRequestError(
            f"Provider '{self.name}' is Anthropic, which has no embeddings API; "
            "use a model of a provider that offers embeddings.",
            param="model", code="embeddings_not_supported",
        )

    async def list_models(self) -> list[ModelInfo]:
        if self._config.models:
            return [ModelInfo(id=m, provider=self.name, owned_by="anthropic") for m in self._config.models]
        models: list[ModelInfo] = []
        after = ""
        for _ in range(_MAX_MODEL_PAGES):
            page = await self._models_page(after)
            for item in page["data"]:
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    models.append(ModelInfo(
                        id=item["id"], provider=self.name, owned_by="anthropic",
                        created=_timestamp(item.get("created_at")),
                    ))
            last = page.get("last_id")
            if page.get("has_more") is not True or not isinstance(last, str) or not last:
                break
            after = last
        return models

    async def _models_page(self, after: str) -> dict[str, Any]:
        path = b"/models?limit=1000" + (b"&after_id=" + quote(after, safe="").encode() if after else b"")
        response = await self._send(b"GET", path, self._default_version, None)
        page = await read_model_page(response, self.name, "data")
        if not isinstance(page.get("data"), list):
            raise GatewayError(f"provider '{self.name}' answered its model list in an unknown shape")
        return page

    async def close(self) -> None:
        await self._client.close()

    # -- pass-through (/{provider}/*): the client's request as it came, this provider's key added ------------
    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def passthrough(self, method: bytes, path: bytes, headers: bytes, body: PassthroughBody
                          ) -> HttpUpstreamResponse:
        if b"\nanthropic-version:" not in b"\n" + headers.lower():
            headers += self._default_version  # Anthropic requires one; the client sent none
        return await self._send(method, path, headers, body)


def _json_headers(upstream: HttpUpstreamResponse) -> dict[str, str]:
    """The upstream's headers (the relay picks those a client may see) for a translated JSON body."""
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _BODY_HEADERS}
    headers["Content-Type"] = "application/json"
    return headers


def _timestamp(value: Any) -> int:
    """Anthropic's RFC 3339 ``created_at`` as Unix seconds (0 when absent or unreadable)."""
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0
