"""The Responses API forwarded natively (OpenAI, xAI): every recorded answer byte for byte, read by the openai SDK.

The mock speaks OpenAI's Responses API; the gateway's provider is ``type: openai`` (or ``xai``), so the
request is forwarded with only ``model`` rewritten and the answer relayed untouched, streamed or not,
errors included. The gateway remembers which provider owns each response id for ``GET``/``DELETE``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from tests.conftest import MakeGateway
from tests.support.fixtures import fixture_names, load_fixture, split_sse_events, sse_data
from tests.support.gateway import CLIENT_KEY, UPSTREAM_KEY, Gateway, provider_config
from tests.support.mock_responses import ResponsesMock, responses_scenario, responses_stream_body

FIXTURES = fixture_names("openai/responses") + fixture_names("xai/responses")
DEFAULT_REQUEST: dict[str, Any] = {"input": "Say hello."}


@pytest.fixture
async def responses_mock() -> AsyncIterator[ResponsesMock]:
    mock = ResponsesMock()
    await mock.start()
    yield mock
    await mock.close()


async def native_gateway(make_gateway: MakeGateway, mock: ResponsesMock, kind: str = "openai") -> Gateway:
    return await make_gateway(providers={"up": provider_config(mock.base_url, type=kind)})


def request_for(rel: str) -> dict[str, Any]:
    fx = load_fixture(rel)
    request = dict(fx.request or DEFAULT_REQUEST)
    request["model"] = "up/m"
    if fx.is_stream:
        request["stream"] = True
    return request


def final_event(body: bytes) -> dict[str, Any] | None:
    for event in reversed(split_sse_events(body)):
        data = sse_data(event)
        if data:
            payload = json.loads(data)
            if payload.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                return payload
    return None


def sdk_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k != "stream"}


@pytest.mark.parametrize("rel", FIXTURES)
async def test_recorded_answer_passes_byte_for_byte(make_gateway: MakeGateway, responses_mock: ResponsesMock,
                                                    rel: str) -> None:
    fx = load_fixture(rel)
    gateway = await native_gateway(make_gateway, responses_mock, "xai" if rel.startswith("xai/") else "openai")
    responses_mock.on("m", responses_scenario(fx, split="bytes") if fx.is_stream else responses_scenario(fx))
    request = request_for(rel)
    async with gateway.http.post("v1/responses", json=request,
                                 headers={"Authorization": f"Bearer {CLIENT_KEY}", "X-Request-ID": "native-1"}) as resp:
        body = await resp.read()
        status, content_type = resp.status, resp.headers["Content-Type"]
    expected = responses_stream_body(fx) if fx.is_stream else fx.raw
    assert status == fx.status
    assert body == expected  # untouched, whatever it holds (an error body too)
    assert content_type.split(";")[0] == fx.content_type.split(";")[0]
    upstream = responses_mock.last("m")
    assert upstream.path == "/v1/responses"
    assert upstream.json == {**request, "model": "m"}  # only the model rewritten
    assert upstream.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    record = await gateway.record("native-1")
    assert record.endpoint == "responses" and record.provider == "up" and record.model == "m"
    assert record.stream is (request.get("stream") is True)
    usage = final_event(body)["response"].get("usage") if fx.is_stream else (
        fx.json.get("usage") if fx.status == 200 else None)
    if usage:
        assert record.usage is not None and not record.usage.estimated
        assert (record.usage.input_tokens, record.usage.output_tokens, record.usage.cached_tokens,
                record.usage.reasoning_tokens) == (
            usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"],
            usage["output_tokens_details"]["reasoning_tokens"])
    if status >= 400 or "error" in fx.name:
        assert record.outcome == "upstream_error"
    else:
        assert record.outcome == "ok"


@pytest.mark.parametrize("rel", FIXTURES)
async def test_openai_sdk_reads_every_recording(make_gateway: MakeGateway, responses_mock: ResponsesMock,
                                                rel: str) -> None:
    fx = load_fixture(rel)
    gateway = await native_gateway(make_gateway, responses_mock)
    scenario = responses_scenario(fx)
    if fx.is_stream and not scenario.body.endswith(b"\n\n"):
        # One recorder kept the last event without the blank line that ends it (and that OpenAI sends);
        # no SSE client dispatches such an event, so the SDK gets it as OpenAI sent it.
        scenario.body += b"\n"
    responses_mock.on("m", scenario)
    client = gateway.async_openai()
    kwargs = sdk_kwargs(request_for(rel))
    if fx.status >= 400:
        with pytest.raises(openai.APIStatusError) as info:
            await client.responses.create(**kwargs)
        assert info.value.status_code == fx.status
        recorded = fx.json["error"]
        assert info.value.body["message"] == recorded["message"]
        assert info.value.code == recorded.get("code")
        return
    if not fx.is_stream:
        result = await client.responses.create(**kwargs)
        recorded = fx.json
        assert result.id == recorded["id"] and result.model == recorded["model"]
        texts = [p["text"] for i in recorded["output"] if i["type"] == "message" for p in i["content"]
                 if p["type"] == "output_text"]
        assert result.output_text == "".join(texts)
        calls = [(i["call_id"], i["name"], i["arguments"]) for i in recorded["output"] if i["type"] == "function_call"]
        assert [(o.call_id, o.name, o.arguments) for o in result.output if o.type == "function_call"] == calls
        assert result.usage is not None and result.usage.input_tokens == recorded["usage"]["input_tokens"]
        return
    final = final_event(responses_stream_body(fx))
    if final is None or final["type"] != "response.completed":
        # The in-stream error reaches the SDK as an error, never as a finished response.
        with pytest.raises(openai.APIError) as error:
            async with client.responses.stream(**kwargs) as stream:
                async for _ in stream:
                    pass
        assert "exceeded your current quota" in error.value.message
        return
    async with client.responses.stream(**kwargs) as stream:
        events = [event async for event in stream]
        response = await stream.get_final_response()
    recorded = final["response"]
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert response.id == recorded["id"]
    texts = [p["text"] for i in recorded["output"] if i["type"] == "message" for p in i["content"]
             if p["type"] == "output_text"]
    assert response.output_text == "".join(texts)
    calls = [(i["call_id"], i["name"], i["arguments"]) for i in recorded["output"] if i["type"] == "function_call"]
    assert [(o.call_id, o.name, o.arguments) for o in response.output if o.type == "function_call"] == calls
    assert calls or texts
    assert response.usage is not None
    assert response.usage.output_tokens == recorded["usage"]["output_tokens"]


async def test_get_and_delete_reach_the_provider_that_owns_the_id(make_gateway: MakeGateway,
                                                                  responses_mock: ResponsesMock) -> None:
    fx = load_fixture("openai/responses/nonstream-text-gpt4o")
    stream_fx = load_fixture("openai/responses/stream-text-gpt5.2")
    other = ResponsesMock()
    await other.start()
    try:
        gateway = await make_gateway(providers={
            "up": provider_config(responses_mock.base_url, type="openai"),
            "other": provider_config(other.base_url, type="openai"),
        })
        responses_mock.on("m", responses_scenario(fx))
        other.on("s", responses_scenario(stream_fx))
        client = gateway.async_openai()
        created = await client.responses.create(model="up/m", input="Hi")
        async with client.responses.stream(model="other/s", input="Hi") as stream:
            streamed = await stream.get_final_response()
        responses_mock.on_stored("GET", created.id, responses_scenario(fx))
        mini = load_fixture("openai/responses/nonstream-text-gpt4o-mini")
        other.on_stored("GET", streamed.id, responses_scenario(mini))
        other.on_stored("DELETE", streamed.id, responses_scenario(fx, body=json.dumps(
            {"id": streamed.id, "object": "response", "deleted": True}).encode()))

        again = await client.responses.retrieve(created.id)
        assert again.id == created.id and again.output_text == created.output_text
        assert responses_mock.requests[-1].method == "GET" and responses_mock.requests[-1].path.endswith(created.id)
        assert (await client.responses.retrieve(streamed.id)).model == "gpt-4o-mini-2024-07-18"
        assert other.requests[-1].path == f"/v1/responses/{streamed.id}"
        assert other.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

        await client.responses.delete(streamed.id)
        assert other.requests[-1].method == "DELETE"
        with pytest.raises(openai.NotFoundError) as info:  # forgotten with its provider's copy
            await client.responses.retrieve(streamed.id)
        assert info.value.status_code == 404 and streamed.id in info.value.message
        assert other.requests[-1].method == "DELETE"  # the gateway answered that itself
    finally:
        await other.close()


async def test_unknown_id_and_store_false(make_gateway: MakeGateway, responses_mock: ResponsesMock) -> None:
    gateway = await native_gateway(make_gateway, responses_mock)
    client = gateway.async_openai()
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.retrieve("resp_unknown")
    assert info.value.body == {"message": "Response with id 'resp_unknown' not found.",
                               "type": "invalid_request_error", "param": None, "code": "not_found"}
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete("resp_unknown")
    assert responses_mock.requests_to("/v1/responses/resp_unknown") == []
    fx = load_fixture("openai/responses/nonstream-text-gpt4o")
    responses_mock.on("m", responses_scenario(fx))
    created = await client.responses.create(model="up/m", input="Hi", store=False)
    assert responses_mock.last("m").json["store"] is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_truncated_native_stream_ends_with_an_error(make_gateway: MakeGateway,
                                                          responses_mock: ResponsesMock) -> None:
    fx = load_fixture("openai/responses/stream-text-gpt5.2")
    events = split_sse_events(responses_stream_body(fx))
    responses_mock.on("m", responses_scenario(fx, max_pieces=len(events), drop_after=6))
    gateway = await native_gateway(make_gateway, responses_mock)
    async with gateway.http.post("v1/responses", json={"model": "up/m", "input": "Hi", "stream": True},
                                 headers={"X-Request-ID": "cut"}) as resp:
        body = await resp.read()
    assert body.startswith(b"".join(events[:6]))  # what came is relayed as it came
    tail = [json.loads(sse_data(e) or b"{}") for e in split_sse_events(body[len(b"".join(events[:6])):])]
    assert [p["type"] for p in tail] == ["error", "response.failed"]
    assert tail[-1]["response"]["status"] == "failed"
    assert b"response.completed" not in body
    record = await gateway.record("cut")
    assert record.outcome == "upstream_error"

    client = gateway.async_openai()
    with pytest.raises(openai.APIError):
        async with client.responses.stream(model="up/m", input="Hi") as stream:
            async for _ in stream:
                pass


async def test_previous_response_id_is_forwarded_to_its_provider(make_gateway: MakeGateway,
                                                                 responses_mock: ResponsesMock) -> None:
    gateway = await native_gateway(make_gateway, responses_mock)
    responses_mock.on("m", responses_scenario(load_fixture("openai/responses/nonstream-function-call-gpt4o")))
    client = gateway.async_openai()
    first = await client.responses.create(model="up/m", input="Capital of PotatoLand?")
    follow_up = load_fixture("openai/responses/nonstream-text-after-function-output-gpt4o")
    responses_mock.on("m", responses_scenario(follow_up))
    second = await client.responses.create(
        model="up/m", previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": first.output[0].call_id, "output": "Potato City"}],
    )
    assert responses_mock.last("m").json["previous_response_id"] == first.id  # the provider keeps the context
    assert "Potato City" in second.output_text


async def test_conversation_moves_between_converted_and_native(make_gateway: MakeGateway,
                                                                 responses_mock: ResponsesMock) -> None:
    """A converted response continued with a native model goes through chat (only the gateway has its
    content); a native one cannot be continued elsewhere, and the error says why."""
    gateway = await make_gateway(providers={
        "up": provider_config(responses_mock.base_url, type="openai"), "mock": {"type": "mock"},
    })
    client = gateway.async_openai()
    converted = await client.responses.create(model="mock/mock-chat", input="hello there")
    responses_mock.replay("m", "openai/chat-completions/nonstream-text-gpt4o")
    follow = await client.responses.create(model="up/m", input="and then?", previous_response_id=converted.id)
    sent = responses_mock.last("m")
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": converted.output_text},
        {"role": "user", "content": "and then?"},
    ]
    assert follow.previous_response_id == converted.id

    responses_mock.on("n", responses_scenario(load_fixture("openai/responses/nonstream-text-gpt4o")))
    native = await client.responses.create(model="up/n", input="Hi")
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="mock/mock-chat", input="more", previous_response_id=native.id)
    assert info.value.body["param"] == "previous_response_id" and "'up'" in info.value.message
