"""Which provider a model id reaches: bare names through the discovered lists, ``provider/model`` by name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.gateway import Gateway, provider_config
from tests.support.mock_upstream import MockUpstream

from .helpers import MESSAGES

TEXT = "openai/chat-completions/nonstream-text-gpt4o-mini"
EMBED = "openai/embeddings/float-1536d-text-embedding-3-small"


@pytest.fixture
async def two(make_gateway: Any, make_mock_upstream: Any) -> tuple[Gateway, MockUpstream, MockUpstream]:
    """Providers ``a`` then ``b`` (configuration order); both serve ``shared``; ``b`` has a slashed id."""
    a: MockUpstream = await make_mock_upstream(model_ids=["alpha", "shared", "embed-a"])
    b: MockUpstream = await make_mock_upstream(model_ids=["beta", "shared", "openai/gpt-4o"])
    for mock in (a, b):
        for model in ("alpha", "beta", "shared", "openai/gpt-4o"):
            mock.replay(model, TEXT)
    a.replay("embed-a", EMBED)
    providers = {"a": provider_config(a.base_url), "b": provider_config(b.base_url)}
    gateway: Gateway = await make_gateway(providers=providers)
    return gateway, a, b


async def _chat(gateway: Gateway, model: str, request_id: str = "resolve") -> tuple[int, dict[str, Any]]:
    async with gateway.http.post("v1/chat/completions", json={"model": model, "messages": MESSAGES},
                                 headers={"X-Request-ID": request_id}) as resp:
        return resp.status, json.loads(await resp.read())


@pytest.mark.parametrize(
    ("model", "provider", "upstream_model"),
    [
        ("alpha", "a", "alpha"),  # bare, only a lists it
        ("beta", "b", "beta"),  # bare, only b lists it
        ("shared", "a", "shared"),  # bare, both list it: the first provider in configuration order
        ("b/shared", "b", "shared"),  # named provider wins
        ("a/alpha", "a", "alpha"),
        ("openai/gpt-4o", "b", "openai/gpt-4o"),  # "openai" is no provider here: a bare id with a slash
        ("b/openai/gpt-4o", "b", "openai/gpt-4o"),
    ],
)
async def test_resolution(
    two: tuple[Gateway, MockUpstream, MockUpstream], model: str, provider: str, upstream_model: str
) -> None:
    gateway, a, b = two
    status, body = await _chat(gateway, model)
    assert status == 200, body
    target, other = (a, b) if provider == "a" else (b, a)
    assert target.last().json["model"] == upstream_model
    assert other.requests_to("/v1/chat/completions") == []
    record = await gateway.record("resolve")
    assert (record.provider, record.model, record.model_requested) == (provider, upstream_model, model)


async def test_named_provider_decides_for_models_it_did_not_list(
    two: tuple[Gateway, MockUpstream, MockUpstream],
) -> None:
    gateway, a, b = two
    status, _ = await _chat(gateway, "a/beta")  # a did not list beta; it is asked anyway and answers
    assert status == 200
    assert a.last().json["model"] == "beta" and b.requests_to("/v1/chat/completions") == []


@pytest.mark.parametrize("model", ["gamma", "c/alpha", "openai/gpt-4o-mini", "a/", "/alpha"])
async def test_unknown_models_are_404_and_reach_nobody(
    two: tuple[Gateway, MockUpstream, MockUpstream], model: str
) -> None:
    gateway, a, b = two
    status, body = await _chat(gateway, model)
    assert status == 404
    assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    assert model in body["error"]["message"] and "GET /v1/models" in body["error"]["message"]
    assert a.requests_to("/v1/chat/completions") == b.requests_to("/v1/chat/completions") == []


async def test_embeddings_resolve_bare_names(two: tuple[Gateway, MockUpstream, MockUpstream]) -> None:
    gateway, a, _ = two
    result = await gateway.async_openai().embeddings.create(model="embed-a", input="x", encoding_format="float")
    assert len(result.data[0].embedding) == 1536
    assert a.last().path == "/v1/embeddings" and a.last().json["model"] == "embed-a"


async def test_models_lists_every_provider_in_order(two: tuple[Gateway, MockUpstream, MockUpstream]) -> None:
    gateway, _, _ = two
    page = await gateway.async_openai().models.list()
    assert [m.id for m in page.data] == [
        "a/alpha", "a/shared", "a/embed-a", "b/beta", "b/shared", "b/openai/gpt-4o",
    ]
    got = await gateway.async_openai().models.retrieve("b/openai/gpt-4o")
    assert got.id == "b/openai/gpt-4o"
    got = await gateway.async_openai().models.retrieve("shared")
    assert got.id == "a/shared"


async def test_a_provider_whose_list_fails_is_still_reachable_by_name(
    make_gateway: Any, make_mock_upstream: Any
) -> None:
    good: MockUpstream = await make_mock_upstream(model_ids=["alpha"])
    broken: MockUpstream = await make_mock_upstream()
    broken.models_scenario = broken.fail("unused", 500, {"error": {"message": "down", "type": "server_error"}})
    broken.replay("zeta", TEXT)
    good.replay("alpha", TEXT)
    gateway: Gateway = await make_gateway(
        providers={"good": provider_config(good.base_url), "broken": provider_config(broken.base_url)}
    )
    assert gateway.state.registry.status == {"good": "ok", "broken": "failed"}
    assert (await _chat(gateway, "alpha"))[0] == 200
    assert (await _chat(gateway, "zeta"))[0] == 404  # not listed anywhere
    assert (await _chat(gateway, "broken/zeta"))[0] == 200
    assert broken.last("zeta").json["model"] == "zeta"
