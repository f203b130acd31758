"""Azure OpenAI behind the gateway: the OpenAI-format mock served at Azure's deployment URLs, through the SDK.

The gateway must address ``/openai/deployments/{deployment}/...?api-version=...``, send the key as ``api-key``
(never as a Bearer token), map model names to deployments, and relay OpenAI's answers as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from aiohttp import web

from gomodel_proxy.providers.azure.provider import DEFAULT_API_VERSION
from tests.support.fixtures import load_fixture
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway
from tests.support.mock_upstream import MockUpstream, Scenario

from .helpers import MESSAGES, content_of_payloads, record_numbers, sdk_call, usage_numbers

MODES = ["sync", "async"]
API_VERSION = "2025-04-01-preview"


class AzureMock(MockUpstream):
    """The shared OpenAI mock, answering at Azure's paths only: deployments (scenarios still by body model),
    and the v1 Responses route (a stored response is answered from the scenario named ``GET <id>``)."""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._answer)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self._answer)
        app.router.add_post("/openai/v1/responses", self._answer)
        app.router.add_get("/openai/v1/responses/{response_id}", self._stored)

    async def _stored(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            scenario = self.scenarios.get(f"GET {request.match_info['response_id']}")
            if scenario is None:
                return web.json_response({"error": {"message": "no such response", "type": "invalid_request_error",
                                                    "param": None, "code": None}}, status=404)
            return await self._respond(request, scenario, rec)
        finally:
            rec.done.set()


@pytest.fixture
async def azure() -> AsyncIterator[AzureMock]:
    mock = AzureMock()
    await mock.start()
    yield mock
    await mock.close()


def azure_entry(mock: AzureMock, **overrides: Any) -> dict[str, Any]:
    return {"type": "azure", "base_url": mock.url, "api_key": UPSTREAM_KEY, "api_version": API_VERSION,
            "deployments": {"gpt-4o-mini": "prod-mini", "text-embedding-3-small": "embed-small"},
            "models": ["gpt-4o"], "timeout_s": 5, "connect_timeout_s": 2, **overrides}


@pytest.fixture
async def gateway(make_gateway: Any, azure: AzureMock) -> Gateway:
    gateway: Gateway = await make_gateway(providers={"az": azure_entry(azure)})
    return gateway


def assert_azure_request(mock: AzureMock, model: str, path: str, api_version: str = API_VERSION,
                         key: str = UPSTREAM_KEY) -> None:
    rec = mock.last(model)
    assert rec.path == path
    assert rec.query == {"api-version": api_version}
    assert rec.headers["api-key"] == key
    assert "Authorization" not in rec.headers  # neither the provider's key as a Bearer token nor the client's
    assert CLIENT_KEY not in str(rec.headers)


@pytest.mark.parametrize("mode", MODES)
async def test_chat_goes_to_the_mapped_deployment(gateway: Gateway, azure: AzureMock, mode: str) -> None:
    fx = load_fixture("openai/chat-completions/nonstream-text-gpt4o-mini")
    azure.replay("gpt-4o-mini", fx)
    result = await sdk_call(gateway, mode, "chat.completions.create", model="az/gpt-4o-mini", messages=MESSAGES,
                            request_id="az-json")
    assert result.choices[0].message.content == fx.json["choices"][0]["message"]["content"]
    assert result.id == fx.json["id"]
    assert_azure_request(azure, "gpt-4o-mini", "/openai/deployments/prod-mini/chat/completions")
    assert azure.last("gpt-4o-mini").json == {"model": "gpt-4o-mini", "messages": MESSAGES}
    record = await gateway.record("az-json")
    assert record.provider == "az" and record.status == 200
    assert record_numbers(record) == usage_numbers(fx.json["usage"])


async def test_body_is_relayed_byte_for_byte(gateway: Gateway, azure: AzureMock) -> None:
    fx = load_fixture("openai/chat-completions/nonstream-tool-call-gpt4o-mini")
    azure.replay("gpt-4o-mini", fx)
    raw = await gateway.async_openai().chat.completions.with_raw_response.create(model="az/gpt-4o-mini",
                                                                               messages=MESSAGES)
    assert raw.http_response.content == fx.body
    (call,) = raw.parse().choices[0].message.tool_calls
    assert call.function.name == "get_weather"


@pytest.mark.parametrize(("mode", "include_usage"), [(m, u) for m in MODES for u in (True, False)])
async def test_stream(gateway: Gateway, azure: AzureMock, mode: str, include_usage: bool) -> None:
    fx = load_fixture("openai/chat-completions/stream-text-after-tool-result-include-usage-gpt4o-mini")
    azure.replay("gpt-4o-mini", fx, split="bytes")
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = await sdk_call(gateway, mode, "chat.completions.create", model="az/gpt-4o-mini", messages=MESSAGES,
                            stream=True, request_id="az-stream", **kwargs)
    assert content_of_payloads([c.model_dump() for c in chunks]) == content_of_payloads(fx.data_payloads)
    assert [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason] == ["stop"]
    assert bool([c for c in chunks if c.usage is not None]) == include_usage
    assert_azure_request(azure, "gpt-4o-mini", "/openai/deployments/prod-mini/chat/completions")
    assert azure.last("gpt-4o-mini").json["stream_options"] == {"include_usage": True}
    record = await gateway.record("az-stream")
    assert fx.usage is not None and record_numbers(record) == usage_numbers(fx.usage)


async def test_unlisted_model_is_its_own_deployment_and_the_default_api_version(
    make_gateway: Any, azure: AzureMock
) -> None:
    entry = azure_entry(azure)
    del entry["api_version"]
    gateway = await make_gateway(providers={"az": entry})
    azure.replay("my-gpt5-deployment", "openai/chat-completions/nonstream-text-gpt4o")
    result = await gateway.async_openai().chat.completions.create(model="az/my-gpt5-deployment", messages=MESSAGES)
    assert result.choices[0].message.content
    assert_azure_request(azure, "my-gpt5-deployment", "/openai/deployments/my-gpt5-deployment/chat/completions",
                         api_version=DEFAULT_API_VERSION)


@pytest.mark.parametrize("mode", MODES)
async def test_embeddings(gateway: Gateway, azure: AzureMock, mode: str) -> None:
    fx = load_fixture("openai/embeddings/float-1536d-text-embedding-3-small")
    azure.replay("text-embedding-3-small", fx)
    result = await sdk_call(gateway, mode, "embeddings.create", model="az/text-embedding-3-small",
                            input="Hello, world!", encoding_format="float")
    assert result.data[0].embedding == fx.json["data"][0]["embedding"]
    assert_azure_request(azure, "text-embedding-3-small", "/openai/deployments/embed-small/embeddings")


async def test_models_are_the_configured_ones(gateway: Gateway) -> None:
    page = await gateway.async_openai().models.list()
    assert sorted(m.id for m in page.data) == ["az/gpt-4o", "az/gpt-4o-mini", "az/text-embedding-3-small"]
    # A bare name resolves through that list.
    assert gateway.state.registry.resolve("gpt-4o-mini")[1] == "gpt-4o-mini"


async def test_keys_rotate_in_the_api_key_header(make_gateway: Any, azure: AzureMock) -> None:
    gateway = await make_gateway(providers={"az": azure_entry(azure, api_key="", api_keys=["key-one", "key-two"])})
    azure.replay("gpt-4o-mini", "openai/chat-completions/nonstream-text-gpt4o-mini")
    client = gateway.async_openai()
    for _ in range(3):
        await client.chat.completions.create(model="az/gpt-4o-mini", messages=MESSAGES)
    sent = [r.headers["api-key"] for r in azure.requests_for("gpt-4o-mini")]
    assert sent == ["key-one", "key-two", "key-one"]
    assert all("Authorization" not in r.headers for r in azure.requests)


async def test_azure_error_keeps_status_and_message(gateway: Gateway, azure: AzureMock) -> None:
    message = "The API deployment for this resource does not exist."
    azure.fail("gpt-4o-mini", 404, {"error": {"code": "DeploymentNotFound", "message": message}})
    with pytest.raises(openai.NotFoundError) as info:
        await gateway.async_openai().chat.completions.create(model="az/gpt-4o-mini", messages=MESSAGES)
    assert info.value.body["message"] == message  # type: ignore[index]
    assert info.value.body["code"] == "DeploymentNotFound"  # type: ignore[index]


async def test_base_url_with_the_openai_suffix_is_accepted(make_gateway: Any, azure: AzureMock) -> None:
    gateway = await make_gateway(providers={"az": azure_entry(azure, base_url=azure.url + "/openai/")})
    azure.replay("gpt-4o-mini", "openai/chat-completions/nonstream-text-gpt4o-mini")
    await gateway.async_openai().chat.completions.create(model="az/gpt-4o-mini", messages=MESSAGES)
    assert azure.last("gpt-4o-mini").path == "/openai/deployments/prod-mini/chat/completions"


async def test_responses_api_uses_azures_v1_route_with_the_deployment_as_model(gateway: Gateway,
                                                                              azure: AzureMock) -> None:
    fx = load_fixture("openai/responses/nonstream-text-gpt4o")
    azure.replay("prod-mini", fx)  # Azure's v1 Responses API names the deployment in the body
    client = gateway.async_openai()
    created = await client.responses.create(model="az/gpt-4o-mini", input="Hello")
    assert created.id == fx.json["id"] and created.output_text
    rec = azure.last("prod-mini")
    assert rec.path == "/openai/v1/responses" and rec.query == {}
    assert rec.headers["api-key"] == UPSTREAM_KEY and "Authorization" not in rec.headers
    azure.on(f"GET {fx.json['id']}", Scenario.from_fixture(fx))
    again = await client.responses.retrieve(fx.json["id"])
    assert again.id == fx.json["id"]
    fetched = azure.requests[-1]
    assert (fetched.method, fetched.path) == ("GET", f"/openai/v1/responses/{fx.json['id']}")
    assert fetched.headers["api-key"] == UPSTREAM_KEY and "Authorization" not in fetched.headers
