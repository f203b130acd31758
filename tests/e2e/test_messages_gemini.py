"""Anthropic's Messages API in front of Gemini, with the official ``anthropic`` SDK: multi-turn tool use with
Gemini's thought signatures, which ride in the ``tool_use`` ids (see ``translators.messages_chat``).

The mock Gemini replays recorded answers and refuses, as Gemini 3 does, a turn that sends a function call back
without its thought signature. The client does what every Anthropic client does: it appends the assistant
message as it received it and answers each ``tool_use`` with a ``tool_result`` naming its id.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from gomodel_proxy.translators.messages_chat import TOOL_ID_SEPARATOR
from tests.conftest import MakeGateway
from tests.support.anthropic_client import anthropic_client, async_anthropic_client
from tests.support.fixtures import load_fixture
from tests.support.gateway import UPSTREAM_KEY, Gateway
from tests.support.mock_gemini import MISSING_SIGNATURE, MockGemini, gemini_stream_payloads

MODES = ["sync", "async"]
STREAMED = "gemini/stream-generate-content/"
WHOLE = "gemini/generate-content/"
#: An id as the gateway writes it for a call with a signature: call id, separator, url-safe signature.
SIGNED_ID = re.compile(rf"[A-Za-z0-9_-]+{re.escape(TOOL_ID_SEPARATOR)}[A-Za-z0-9_-]+")


@pytest.fixture
async def gemini() -> AsyncIterator[MockGemini]:
    mock = await MockGemini().start()
    yield mock
    await mock.close()


@pytest.fixture
async def gateway(make_gateway: MakeGateway, gemini: MockGemini) -> Gateway:
    return await make_gateway(providers={"gem": {"type": "gemini", "base_url": gemini.base_url,
                                                 "api_key": UPSTREAM_KEY, "timeout_s": 5, "connect_timeout_s": 2}})


async def stream_final(gateway: Gateway, mode: str, **kwargs: Any) -> Any:
    """``client.messages.stream(...)`` read to its end; the SDK's accumulated final message."""
    if mode == "sync":
        client = anthropic_client(gateway)

        def run() -> Any:
            with client.messages.stream(**kwargs) as stream:
                return stream.get_final_message()

        return await asyncio.to_thread(run)
    async with async_anthropic_client(gateway).messages.stream(**kwargs) as astream:
        return await astream.get_final_message()


async def create(gateway: Gateway, mode: str, **kwargs: Any) -> Any:
    if mode == "sync":
        client = anthropic_client(gateway)
        return await asyncio.to_thread(lambda: client.messages.create(**kwargs))
    return await async_anthropic_client(gateway).messages.create(**kwargs)


def recorded_call(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The recorded functionCall part (with its thoughtSignature)."""
    (part,) = [p for payload in payloads for c in payload.get("candidates") or []
               for p in c["content"].get("parts") or [] if "functionCall" in p]
    return part


def text_of(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def follow_up(question: str, turn: Any, result: dict[str, Any], use_id: str) -> list[dict[str, Any]]:
    """The history a client sends next: the question, the assistant message as received, the tool's result."""
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": turn.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use_id, "content": json.dumps(result)}]},
    ]


def assert_turn_two_reached_gemini(sent: Any, call: dict[str, Any], result: dict[str, Any]) -> None:
    """The function call went back with the exact recorded signature, under its plain id, answered by the
    tool's result under the same id."""
    assert sent.problems == []  # Gemini 3 refuses a function call sent back without its signature
    contents = sent.json["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    (call_part,) = contents[1]["parts"]
    assert call_part["thoughtSignature"] == call["thoughtSignature"]  # byte for byte as Gemini sent it
    call_id = call_part["functionCall"].pop("id")
    assert TOOL_ID_SEPARATOR not in call_id
    assert call_part["functionCall"] == {"name": call["functionCall"]["name"], "args": call["functionCall"]["args"]}
    assert contents[2]["parts"] == [{"functionResponse": {"name": call["functionCall"]["name"], "response": result,
                                                          "id": call_id}}]


TOOLS = {
    "get_country": [{"name": "get_country", "description": "", "input_schema": {
        "type": "object", "properties": {}, "additionalProperties": False}}],
    "multiply": [{"name": "multiply", "description": "Multiply two numbers.", "input_schema": {
        "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}}],
    "search_docs": [{"name": "search_docs", "description": "A tiny search tool stub.", "input_schema": {
        "type": "object", "properties": {"query": {"type": "string"}}}}],
}
#: Gemini 3 streams: (first turn, the recorded answer to the tool's result, the model, the question, the result).
#: Gemini 3 Flash's recording has no second turn; the Pro one's answers it (what is checked is what reaches Gemini).
STREAM_CASES = [
    pytest.param("sse-function-call-thought-signature-gemini3-pro", "gemini-3-pro-preview",
                 "What is the capital of the user country? Call the tool", {"return_value": "Mexico"},
                 id="gemini3-pro"),
    pytest.param("json-array-function-call-args-thought-signature-gemini3-flash", "gemini-3-flash-preview",
                 "What is 5 times 3?", {"result": 15}, id="gemini3-flash-args"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("first_name", "model", "question", "result"), STREAM_CASES)
async def test_streamed_gemini3_tool_use_round_trip(gateway: Gateway, gemini: MockGemini, mode: str,
                                                    first_name: str, model: str, question: str,
                                                    result: dict[str, Any]) -> None:
    first = load_fixture(STREAMED + first_name)
    second = load_fixture(STREAMED + "sse-text-empty-final-part-gemini3-pro")
    call = recorded_call(gemini_stream_payloads(first))
    tools = TOOLS[call["functionCall"]["name"]]
    gemini.replay(model, first, split="bytes")
    turn = await stream_final(gateway, mode, model=f"gem/{model}", max_tokens=1024, tools=tools,
                              messages=[{"role": "user", "content": question}])
    assert gemini.last(model).problems == []
    assert turn.stop_reason == "tool_use"
    (use,) = [b for b in turn.content if b.type == "tool_use"]
    assert use.name == call["functionCall"]["name"]
    assert use.input == call["functionCall"]["args"]  # complete, from the streamed input_json_delta
    assert SIGNED_ID.fullmatch(use.id), use.id

    gemini.replay(model, second, split="bytes")
    answer = await stream_final(gateway, mode, model=f"gem/{model}", max_tokens=1024, tools=tools,
                                messages=follow_up(question, turn, result, use.id))
    assert text_of(answer) == "The capital of Mexico is Mexico City."
    assert answer.stop_reason == "end_turn"
    assert_turn_two_reached_gemini(gemini.last(model), call, result)


@pytest.mark.parametrize("mode", MODES)
async def test_whole_answer_tool_use_round_trip(make_gateway: MakeGateway, mode: str) -> None:
    """Not streamed: Gemini's recorded generateContent answers (Gemini 2.5 Pro's, the recorded non-streamed
    signature; the mock asks for signatures as Gemini 3 does)."""
    first = load_fixture(WHOLE + "nonstream-function-call-thought-signature-raw-gemini2.5-pro")
    second = load_fixture(WHOLE + "nonstream-text-after-function-response-raw-gemini2.5-pro")
    model = "gemini-2.5-pro"
    question = "Can you search for information about recurring revenue?"
    result = {"results": ["Found reference for: recurring revenue"]}
    call = recorded_call([first.json])
    mock = await MockGemini(require_signatures=True).start()
    try:
        gateway = await make_gateway(providers={"gem": {"type": "gemini", "base_url": mock.base_url,
                                                        "api_key": UPSTREAM_KEY, "timeout_s": 5}})
        mock.replay(model, first)
        turn = await create(gateway, mode, model=f"gem/{model}", max_tokens=1024, tools=TOOLS["search_docs"],
                            messages=[{"role": "user", "content": question}])
        assert turn.stop_reason == "tool_use"
        (use,) = turn.content
        assert use.type == "tool_use" and use.input == {"query": "recurring revenue"}
        assert SIGNED_ID.fullmatch(use.id), use.id

        mock.replay(model, second)
        answer = await create(gateway, mode, model=f"gem/{model}", max_tokens=1024, tools=TOOLS["search_docs"],
                              messages=follow_up(question, turn, result, use.id))
        assert text_of(answer) == second.json["candidates"][0]["content"]["parts"][0]["text"]
        assert_turn_two_reached_gemini(mock.last(model), call, result)
    finally:
        await mock.close()


async def test_without_the_signature_gemini3_refuses_the_turn(gateway: Gateway, gemini: MockGemini) -> None:
    """The id is what carries the signature: a client that sent back only the call id would get Gemini's 400."""
    first = load_fixture(STREAMED + "sse-function-call-thought-signature-gemini3-pro")
    model = "gemini-3-pro-preview"
    question = "What is the capital of the user country? Call the tool"
    gemini.replay(model, first, split="bytes")
    turn = await stream_final(gateway, "async", model=f"gem/{model}", max_tokens=1024, tools=TOOLS["get_country"],
                              messages=[{"role": "user", "content": question}])
    (use,) = [b for b in turn.content if b.type == "tool_use"]
    plain = use.id.split(TOOL_ID_SEPARATOR)[0]
    history = follow_up(question, turn, {"return_value": "Mexico"}, plain)
    history[1] = {"role": "assistant", "content": [{"type": "tool_use", "id": plain, "name": use.name, "input": {}}]}
    gemini.replay(model, STREAMED + "sse-text-empty-final-part-gemini3-pro", split="bytes")
    with pytest.raises(anthropic.BadRequestError) as info:
        await create(gateway, "async", model=f"gem/{model}", max_tokens=1024, tools=TOOLS["get_country"],
                     messages=history)
    assert MISSING_SIGNATURE in info.value.message
    assert gemini.last(model).problems
