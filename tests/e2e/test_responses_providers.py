"""The Responses API in front of Gemini and Anthropic (through their chat translations): what those providers
need back in the next turn (Gemini 3's thought signatures, Claude's signed thinking) survives a
``previous_response_id`` round trip and a stateless one (output items sent back as input)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import MakeGateway
from tests.support.fixtures import load_fixture
from tests.support.gateway import UPSTREAM_KEY, Gateway
from tests.support.mock_anthropic import MockAnthropic
from tests.support.mock_gemini import MockGemini, gemini_stream_payloads

GEMINI_TOOLS: list[dict[str, Any]] = [{"type": "function", "name": "get_country", "description": "",
                                       "parameters": {"type": "object", "properties": {},
                                                      "additionalProperties": False}}]
QUESTION = "What is the capital of the user country? Call the tool"


@pytest.fixture
async def gemini() -> AsyncIterator[MockGemini]:
    mock = await MockGemini().start()
    yield mock
    await mock.close()


@pytest.fixture
async def mock_anthropic() -> AsyncIterator[MockAnthropic]:
    mock = await MockAnthropic().start()
    yield mock
    await mock.close()


async def gemini_gateway(make_gateway: MakeGateway, mock: MockGemini) -> Gateway:
    return await make_gateway(providers={"gem": {"type": "gemini", "base_url": mock.base_url, "api_key": UPSTREAM_KEY,
                                                 "timeout_s": 5, "connect_timeout_s": 2}})


@pytest.mark.parametrize("stateless", [False, True], ids=["previous_response_id", "items_sent_back"])
async def test_gemini3_thought_signature_survives_the_tool_round_trip(make_gateway: MakeGateway, gemini: MockGemini,
                                                                      stateless: bool) -> None:
    first = load_fixture("gemini/stream-generate-content/sse-function-call-thought-signature-gemini3-pro")
    second = load_fixture("gemini/stream-generate-content/sse-text-empty-final-part-gemini3-pro")
    model = "gemini-3-pro-preview"
    signature = gemini_stream_payloads(first)[0]["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    gateway = await gemini_gateway(make_gateway, gemini)
    client = gateway.async_openai()
    gemini.replay(model, first, split="bytes")
    async with client.responses.stream(model=f"gem/{model}", input=QUESTION, tools=GEMINI_TOOLS,
                                       store=not stateless) as stream:
        done_items = [e.item async for e in stream if e.type == "response.output_item.done"]
        turn = await stream.get_final_response()
    (call,) = [o for o in turn.output if o.type == "function_call"]
    assert call.name == "get_country" and json.loads(call.arguments) == {}
    assert call.model_extra["extra_content"] == {"google": {"thought_signature": signature}}
    assert [i.model_extra.get("extra_content") for i in done_items if i.type == "function_call"] == [
        {"google": {"thought_signature": signature}}]

    gemini.replay(model, second, split="bytes")
    output = {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"return_value": "Mexico"})}
    if stateless:
        items = [o.model_dump(exclude_none=True) for o in turn.output]
        follow_up: dict[str, Any] = {"store": False, "input": [{"role": "user", "content": QUESTION}, *items, output]}
    else:
        follow_up = {"previous_response_id": turn.id, "input": [output]}
    async with client.responses.stream(model=f"gem/{model}", tools=GEMINI_TOOLS, **follow_up) as stream:
        answer = await stream.get_final_response()
    assert answer.output_text == "The capital of Mexico is Mexico City."
    sent = gemini.last(model)
    assert sent.problems == []  # Gemini 3 refuses a call sent back without its signature
    call_part = sent.json["contents"][1]["parts"][0]
    assert call_part["thoughtSignature"] == signature
    assert call_part["functionCall"]["name"] == "get_country"


async def test_claude_signed_thinking_goes_back_in_the_next_turn(make_gateway: MakeGateway,
                                                                  mock_anthropic: MockAnthropic) -> None:
    fx = load_fixture("anthropic/messages/stream-thinking-signature-sonnet4")
    model = "claude-sonnet-4-20250514"
    gateway = await make_gateway(providers={"claude": {"type": "anthropic", "base_url": mock_anthropic.base_url,
                                                       "api_key": UPSTREAM_KEY, "timeout_s": 5}})
    client = gateway.async_openai()
    mock_anthropic.replay(model, fx, split="bytes")
    async with client.responses.stream(model=f"claude/{model}", input="Think, then answer.",
                                       reasoning={"effort": "low"}) as stream:
        turn = await stream.get_final_response()
    reasoning = [o for o in turn.output if o.type == "reasoning"]
    assert reasoning and reasoning[0].content and reasoning[0].content[0].text
    assert reasoning[0].encrypted_content
    first_request = mock_anthropic.last(model)
    assert first_request.problems == []
    assert first_request.json["thinking"]["type"] == "enabled"

    mock_anthropic.replay(model, "anthropic/messages/stream-text-after-tool-result-haiku45")
    async with client.responses.stream(model=f"claude/{model}", input="And then?",
                                       previous_response_id=turn.id) as stream:
        await stream.get_final_response()
    sent = mock_anthropic.last(model)
    assert sent.problems == []
    assistant = sent.json["messages"][1]
    assert assistant["role"] == "assistant"
    thinking = assistant["content"][0]
    assert thinking["type"] == "thinking" and thinking["signature"]
    assert thinking["thinking"] == reasoning[0].content[0].text
    assert assistant["content"][-1] == {"type": "text", "text": turn.output_text}
