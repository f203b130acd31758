"""A provider that speaks OpenAI's API: requests are forwarded as they are, answers come back raw."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import orjson

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.errors import GatewayError
from gomodel_proxy.core.interfaces import API_CHAT
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.providers.http import HttpUpstreamResponse, make_session, send


class OpenAICompatibleProvider:
    """Forwards to ``base_url`` with the provider's own key; the client's credentials never leave."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.kind = config.type
        self.injects_stream_usage = config.stream_usage
        self.native_apis = frozenset({API_CHAT})
        self._config = config
        self._base = config.base_url.rstrip("/")
        keys = [k for k in [config.api_key, *config.api_keys] if k]
        self._keys = itertools.cycle(keys) if keys else None
        self._extra_headers = dict(config.headers)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        # Created lazily so that it binds to the running loop, and only once.
        if self._session is None:
            self._session = make_session(
                connect_timeout_s=self._config.connect_timeout_s,
                read_timeout_s=self._config.timeout_s,
                max_connections=self._config.max_connections,
            )
        return self._session

    def _headers(self, *, json_body: bool) -> dict[str, str]:
        headers = {"Accept": "application/json", **self._extra_headers}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self._keys is not None:
            headers["Authorization"] = f"Bearer {next(self._keys)}"
        return headers

    async def _post(self, path: str, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await send(
            self.session, "POST", self._base + path,
            provider=self.name, body=orjson.dumps(body), headers=self._headers(json_body=True),
        )

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post("/chat/completions", body)

    async def embeddings(self, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await self._post("/embeddings", body)

    async def list_models(self) -> list[ModelInfo]:
        if self._config.models:
            return [ModelInfo(id=m, provider=self.name) for m in self._config.models]
        response = await send(
            self.session, "GET", self._base + "/models",
            provider=self.name, body=None, headers=self._headers(json_body=False),
        )
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
        if self._session is not None:
            await self._session.close()
            self._session = None
