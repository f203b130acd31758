"""A provider that speaks OpenAI's API: requests are forwarded as they are, answers come back raw."""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import quote

import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.interfaces import API_CHAT, API_RESPONSES
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.httpclient import encode_headers
from gomodel_proxy.providers.http import HttpUpstreamResponse, make_client

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
        keys = [k for k in [config.api_key, *config.api_keys] if k]
        fixed: list[tuple[str, str]] = [("Accept", "application/json"), *config.headers.items()]
        if len(keys) == 1:
            fixed.append(("Authorization", f"Bearer {keys[0]}"))
        #: With several keys, each request takes the next (round robin); one key is a fixed header.
        self._rotation = (
            itertools.cycle([encode_headers([("Authorization", f"Bearer {k}")]) for k in keys])
            if len(keys) > 1 else None
        )
        self._client = make_client(name, config, headers=fixed)

    def _auth(self) -> bytes:
        return next(self._rotation) if self._rotation is not None else b""

    async def _post(self, path: bytes, body: dict[str, Any]) -> HttpUpstreamResponse:
        headers = _JSON_BODY + next(self._rotation) if self._rotation is not None else _JSON_BODY
        return await self._client.request(b"POST", path, headers, orjson.dumps(body))

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post(_CHAT_PATH, body)

    async def embeddings(self, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await self._post(_EMBEDDINGS_PATH, body)

    async def responses(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post(_RESPONSES_PATH, body)

    async def get_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"GET", _RESPONSES_PATH + b"/" + quote(response_id, safe="").encode(),
                                          self._auth())

    async def delete_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"DELETE", _RESPONSES_PATH + b"/" + quote(response_id, safe="").encode(),
                                          self._auth())

    async def list_models(self) -> list[ModelInfo]:
        if self._config.models:
            return [ModelInfo(id=m, provider=self.name) for m in self._config.models]
        response = await self._client.request(b"GET", _MODELS_PATH, self._auth())
        try:
            raw = await response.read()
        finally:
            response.release()
        if response.status != 200:
            raise GatewayError(f"listing models of '{self.name}' failed with HTTP {response.status}")
        try:
            data = orjson.loads(raw).get("data")
        except (orjson.JSONDecodeError, AttributeError):
            data = None
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
