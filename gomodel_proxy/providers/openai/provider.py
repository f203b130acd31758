"""A provider that speaks OpenAI's API: requests are forwarded as they are, answers come back raw."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.interfaces import API_CHAT, API_RESPONSES, PassthroughBody
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.llmclient import BEARER, LLMClient
from gomodel_proxy.providers.http import HttpUpstreamResponse, make_llm_client, read_model_page

_JSON_BODY = b"Content-Type: application/json\r\n"
_CHAT_PATH = b"/chat/completions"
_EMBEDDINGS_PATH = b"/embeddings"
_MODELS_PATH = b"/models"
_RESPONSES_PATH = b"/responses"
#: Provider types whose API has OpenAI's Responses endpoints (forwarded byte for byte).
_RESPONSES_TYPES = frozenset({"openai", "azure", "xai"})


class OpenAICompatibleProvider:
    """Forwards to ``base_url`` with the provider's own key; the client's credentials never leave."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.kind = config.type
        self.injects_stream_usage = config.stream_usage
        self.native_apis = frozenset({API_CHAT, API_RESPONSES} if config.type in _RESPONSES_TYPES else {API_CHAT})
        self._config = config
        fixed: list[tuple[str, str]] = [("Accept", "application/json"), *config.headers.items()]
        #: Every request goes through it: a key of the keyring, retries, circuit breakers (``llmclient``).
        self._client = make_llm_client(name, config, headers=fixed, auth=self.auth_scheme)

    #: How the key travels (Azure: ``api-key``).
    auth_scheme = BEARER

    @property
    def llm_client(self) -> LLMClient:
        return self._client

    async def _post(self, path: bytes, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await self._client.request(b"POST", path, _JSON_BODY, orjson.dumps(body))

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post(_CHAT_PATH, body)

    async def embeddings(self, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await self._post(_EMBEDDINGS_PATH, body)

    async def responses(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post(_RESPONSES_PATH, body)

    async def get_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"GET", _RESPONSES_PATH + b"/" + quote(response_id, safe="").encode())

    async def delete_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"DELETE", _RESPONSES_PATH + b"/" + quote(response_id, safe="").encode())

    async def list_models(self) -> list[ModelInfo]:
        if self._config.models:
            return [ModelInfo(id=m, provider=self.name) for m in self._config.models]
        page = await read_model_page(await self._client.request(b"GET", _MODELS_PATH), self.name, "data")
        data = page.get("data")
        if not isinstance(data, list):
            raise GatewayError(f"provider '{self.name}' answered its model list in an unknown shape")
        models = []
        for item in data:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                created = item.get("created")
                models.append(
                    ModelInfo(
                        id=item["id"], provider=self.name,
                        owned_by=str(item.get("owned_by") or self.name),
                        created=created if isinstance(created, int) else 0,
                    )
                )
        return models

    async def close(self) -> None:
        await self._client.close()

    # -- pass-through (/{provider}/*): the client's request as it came, this provider's key added ------------
    @property
    def base_url(self) -> str:
        return self._config.base_url

    async def passthrough(self, method: bytes, path: bytes, headers: bytes, body: PassthroughBody
                          ) -> HttpUpstreamResponse:
        return await self._client.request(method, path, headers, body)
