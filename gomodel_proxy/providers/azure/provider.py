"""Azure OpenAI: the OpenAI provider with Azure's addressing and key header.

Chat and embeddings go to ``{base_url}/openai/deployments/{deployment}/{operation}?api-version=...`` with the
key in ``api-key``. A model name maps to a deployment through ``deployments`` (a name not listed is taken as
the deployment's own name). The Responses API lives on Azure's versionless v1 route
(``/openai/v1/responses``), where the deployment is named in the body's ``model``. Azure has no model list a
key can read, so the models are the configured ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from gomodel_proxy.config.schema import ProviderConfig
from gomodel_proxy.core.types import ModelInfo
from gomodel_proxy.llmclient import AuthScheme
from gomodel_proxy.providers.http import HttpUpstreamResponse
from gomodel_proxy.providers.openai import OpenAICompatibleProvider

#: The latest generally available data-plane version with deployment URLs (``stream_options`` included).
DEFAULT_API_VERSION = "2024-10-21"
_RESPONSES_PATH = b"/openai/v1/responses"


class AzureOpenAIProvider(OpenAICompatibleProvider):
    """``type: azure``: requests and answers are OpenAI's, only the URL and the key header differ."""

    #: Azure's key auth reads ``api-key`` (it ignores ``Authorization: Bearer``).
    auth_scheme = AuthScheme("api-key")

    def __init__(self, name: str, config: ProviderConfig) -> None:
        base = config.base_url.rstrip("/").removesuffix("/openai")
        super().__init__(name, dataclasses.replace(config, base_url=base))
        self._query = "?api-version=" + quote(config.api_version or DEFAULT_API_VERSION, safe="")
        self._deployments = dict(config.deployments)
        self._models = list(dict.fromkeys([*config.models, *config.deployments]))

    def deployment_path(self, model: str, operation: str) -> bytes:
        deployment = self._deployments.get(model, model)
        return f"/openai/deployments/{quote(deployment, safe='')}/{operation}{self._query}".encode("ascii")

    def _response_path(self, response_id: str) -> bytes:
        return _RESPONSES_PATH + b"/" + quote(response_id, safe="").encode("ascii")

    async def chat_completions(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        return await self._post(self.deployment_path(str(body.get("model") or ""), "chat/completions"), body)

    async def embeddings(self, body: dict[str, Any]) -> HttpUpstreamResponse:
        return await self._post(self.deployment_path(str(body.get("model") or ""), "embeddings"), body)

    async def responses(self, body: dict[str, Any], *, stream: bool) -> HttpUpstreamResponse:
        model = str(body.get("model") or "")
        deployment = self._deployments.get(model, model)
        return await self._post(_RESPONSES_PATH, body if deployment == model else {**body, "model": deployment})

    async def get_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"GET", self._response_path(response_id))

    async def delete_response(self, response_id: str) -> HttpUpstreamResponse:
        return await self._client.request(b"DELETE", self._response_path(response_id))

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=m, provider=self.name, owned_by="azure") for m in self._models]
