"""Responses <-> chat translation: recorded requests, chat answers and chat streams (split every way),
checked with the openai SDK's own Responses models and stream accumulator."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError
from gomodel_proxy.translators.responses_chat import (
    THINKING_BLOCKS_PREFIX,
    ChatToResponsesStream,
    ResponseContext,
    chat_to_events,
    chat_to_response,
    encode_thinking,
    input_items,
    responses_to_chat,
)
from tests.support.responses_check import (
    ChatFacts,
    accumulate,
    chat_body_facts,
    chat_stream_facts,
    output_facts,
    reframe_chunks,
    responses_events,
    usage_matches,
    validate_events,
    validate_response,
)

from ._support import CHAT_STREAM_DIRS, fixture_params, reference_events, split_at

#: Chat-completions recordings (``xai`` also holds Responses recordings, which are not chat).
CHAT_DIRS = tuple(d if d != "xai" else "xai/chat-completions" for d in CHAT_STREAM_DIRS)
REQUEST_FIXTURES = fixture_params(("openai/responses",), "*.request.json")
CHAT_BODY_FIXTURES = fixture_params(CHAT_DIRS, "nonstream-*.response.json")
CHAT_STREAM_FIXTURES = fixture_params(CHAT_DIRS, "stream-*.response.sse") + fixture_params(
    CHAT_DIRS, "stream-*.response.chunks.jsonl"
)
#: Streams up to this size are also run whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 2_500
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}]


def ctx(request: dict[str, Any] | None = None, rid: str = "resp_0123456789abcdef") -> ResponseContext:
    return ResponseContext(response_id=rid, created_at=1_700_000_000, model="m", request=request or {"model": "m"})


def body_of(path: Path) -> bytes:
    raw = path.read_bytes()
    return reframe_chunks(raw) if path.name.endswith(".chunks.jsonl") else raw


def run(chunks: list[bytes], request: dict[str, Any] | None = None) -> tuple[bytes, ChatToResponsesStream]:
    stream = ChatToResponsesStream(ctx(request))
    out = [stream.feed(c) for c in chunks]
    out.append(stream.finish())
    return b"".join(out), stream


# -- requests -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REQUEST_FIXTURES)
def test_recorded_requests_convert_to_chat(path: Path) -> None:
    request = json.loads(path.read_text())
    tools = request.get("tools") or []
    if any(t.get("type") != "function" for t in tools):
        with pytest.raises(InvalidRequestError) as info:
            responses_to_chat(request)
        assert info.value.status == 400
        assert info.value.param == "tools[0].type"
        assert "web_search_preview" in info.value.message
        return
    chat = responses_to_chat(request)
    assert chat["model"] == request["model"]
    messages = chat["messages"]
    items = input_items(request)
    if request.get("instructions"):
        assert messages[0] == {"role": "system", "content": request["instructions"]}
        messages = messages[1:]
    # Every message item is one chat message; function calls join the assistant turn before them.
    expected_roles = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            expected_roles.append({"developer": "system"}.get(item["role"], item["role"]))
        elif kind == "function_call" and (not expected_roles or expected_roles[-1] != "assistant"):
            expected_roles.append("assistant")
        elif kind == "function_call_output":
            expected_roles.append("tool")
    assert [m["role"] for m in messages] == expected_roles
    texts = [i["content"] for i in items if i.get("type", "message") == "message"]
    assert [m["content"] for m in messages if m["role"] in ("user", "system") or
            (m["role"] == "assistant" and m.get("content") is not None)] == texts
    calls = [i for i in items if i.get("type") == "function_call"]
    chat_calls = [c for m in messages for c in m.get("tool_calls", [])]
    assert [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in chat_calls] == [
        (i["call_id"], i["name"], i["arguments"]) for i in calls
    ]
    outputs = [i for i in items if i.get("type") == "function_call_output"]
    assert [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"] == [
        (i["call_id"], i["output"]) for i in outputs
    ]
    assert len(chat.get("tools", [])) == len(tools)
    for got, tool in zip(chat.get("tools", []), tools, strict=True):
        assert got["type"] == "function"
        assert got["function"]["name"] == tool["name"]
        assert got["function"]["parameters"] == tool["parameters"]
        assert got["function"]["strict"] == tool["strict"]
        assert "description" not in got["function"] or got["function"]["description"] == tool["description"]
    if "tool_choice" in request:
        assert chat["tool_choice"] == request["tool_choice"]
    if request.get("stream"):
        assert chat["stream"] is True
        assert chat["stream_options"] == {"include_usage": True}
    else:
        assert "stream" not in chat
    if "temperature" in request:
        assert chat["temperature"] == request["temperature"]
    effort = (request.get("reasoning") or {}).get("effort")
    assert chat.get("reasoning_effort") == effort
    for key in ("include", "previous_response_id", "service_tier", "instructions", "input", "reasoning"):
        assert key not in chat


def test_input_string_and_parameters() -> None:
    chat = responses_to_chat({
        "model": "m", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 50, "top_p": 0.5,
        "text": {"format": {"type": "json_schema", "name": "answer", "strict": True,
                            "schema": {"type": "object", "properties": {}}}},
        "reasoning": {"effort": "high", "summary": "auto"}, "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": False,
        "store": False, "include": ["reasoning.encrypted_content"], "metadata": {"a": "b"}, "truncation": "auto",
    })
    assert chat == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather.", "strict": False,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "top_p": 0.5, "parallel_tool_calls": False, "max_tokens": 50,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "properties": {}}, "strict": True}},
        "reasoning_effort": "high",
    }


def test_multimodal_parts_developer_role_and_json_object() -> None:
    chat = responses_to_chat({
        "model": "m", "text": {"format": {"type": "json_object"}}, "stream": True,
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Rule one."},
                                               {"type": "input_text", "text": "Rule two."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
            ]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "An image", "annotations": []},
                                              {"type": "output_text", "text": " and a file."}]},
        ],
    }, include_usage=False)
    assert chat["messages"] == [
        {"role": "system", "content": "Rule one.\nRule two."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
        ]},
        {"role": "assistant", "content": "An image and a file."},
    ]
    assert chat["response_format"] == {"type": "json_object"}
    assert chat["stream"] is True and "stream_options" not in chat


def test_tool_round_trip_items_make_one_assistant_turn() -> None:
    blocks = [{"type": "thinking", "thinking": "Check the weather.", "signature": "sig=="}]
    history = [
        {"type": "message", "role": "user", "content": "Weather in Paris and Rome?"},
        {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": encode_thinking(blocks),
         "content": [{"type": "reasoning_text", "text": "Check the weather."}]},
        {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Looking.", "annotations": []}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
    ]
    chat = responses_to_chat({
        "model": "m", "instructions": "New instructions only.",
        "input": [{"type": "function_call_output", "call_id": "c1", "output": "sunny"},
                  {"type": "function_call_output", "call_id": "c2",
                   "output": [{"type": "input_text", "text": "rain"}]}],
    }, history)
    assert chat["messages"] == [
        {"role": "system", "content": "New instructions only."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Looking.", "thinking_blocks": blocks, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_openai_encrypted_reasoning_is_not_sent_to_chat() -> None:
    chat = responses_to_chat({"model": "m", "input": [
        {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "thought"}],
         "encrypted_content": "gAAAAB-opaque"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]})
    assert chat["messages"] == [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "x", "tools": [TOOLS[0], {"type": "file_search", "vector_store_ids": []}]}, "tools[1].type"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": "a"}, {"type": "web_search_call", "id": "ws"}]}, "input[1].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input[0].content[0]"),
    ({"input": [{"type": "function_call", "name": "f"}]}, "input[0]"),
    ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"input": 3}, "input"),
    ({"input": []}, "input"),
])
def test_unsupported_requests_are_clear_400s(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        responses_to_chat({"model": "m", **body})
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.to_dict()["error"]["type"] == "invalid_request_error"


# -- whole answers ------------------------------------------------------------------------------------------


def check_response(response: dict[str, Any], facts: ChatFacts) -> None:
    model = validate_response(response)
    assert model.id == "resp_0123456789abcdef"
    assert model.object == "response"
    got = output_facts(response)
    assert got.content == facts.content
    assert got.reasoning == facts.reasoning
    assert [(c["name"], c["arguments"]) for c in got.calls] == [(c["name"], c["arguments"]) for c in facts.calls]
    for call, expected in zip(got.calls, facts.calls, strict=True):
        assert call["id"] == expected["id"] if expected["id"] else call["id"].startswith("call_")
    usage_matches(response["usage"], facts.usage)
    if facts.finish_reason == "length":
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    else:
        assert response["status"] == "completed"
        assert response["incomplete_details"] is None
    if facts.content or not facts.calls:
        messages = [i for i in response["output"] if i["type"] == "message"]
        assert len(messages) == 1 and messages[0]["role"] == "assistant"


@pytest.mark.parametrize("path", CHAT_BODY_FIXTURES)
def test_recorded_chat_answers_become_responses(path: Path) -> None:
    chat = orjson.loads(path.read_bytes())
    facts = chat_body_facts(chat)
    response = chat_to_response(chat, ctx({"model": "m", "tools": TOOLS}))
    check_response(response, facts)
    assert response["model"] == chat["model"]
    assert response["tools"] == [{**TOOLS[0]}]
    # The same answer as a stream (a provider that answered a stream request whole) ends the same.
    events, final = chat_to_events(chat, ctx({"model": "m", "tools": TOOLS}))
    payloads = responses_events(events)
    validate_events(payloads)
    assert final == payloads[-1]["response"]
    assert output_facts(final) == output_facts(response)


def test_thinking_blocks_ride_in_encrypted_content() -> None:
    blocks = [{"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"}, {"type": "redacted_thinking", "data": "x"}]
    chat = {"model": "claude", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Hi", "reasoning_content": "Hmm.", "thinking_blocks": blocks}}]}
    response = chat_to_response(chat, ctx())
    reasoning = response["output"][0]
    assert reasoning["type"] == "reasoning"
    assert reasoning["encrypted_content"].startswith(THINKING_BLOCKS_PREFIX)
    validate_response(response)
    # Sent back as input (stateless or via the stored conversation), the blocks return to the provider.
    again = responses_to_chat({"model": "m", "input": [*response["output"], {"role": "user", "content": "More"}]})
    assert again["messages"][0] == {"role": "assistant", "content": "Hi", "thinking_blocks": blocks}


def test_refusal_length_and_error_answers() -> None:
    chat = {"choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": None,
                                                                              "refusal": "I can't."}}]}
    response = chat_to_response(chat, ctx())
    validate_response(response)
    assert response["status"] == "incomplete"
    assert response["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't."}]
    assert response["output"][0]["status"] == "incomplete"
    with pytest.raises(GatewayError) as info:
        chat_to_response({"error": {"message": "Token limit reached", "code": 429}}, ctx())
    assert (info.value.status, info.value.message) == (429, "Token limit reached")
    with pytest.raises(GatewayError) as info:
        chat_to_response({"choices": []}, ctx())
    assert info.value.status == 502


# -- streams ------------------------------------------------------------------------------------------------


def check_stream_output(out: bytes, facts: ChatFacts, stream: ChatToResponsesStream) -> list[dict[str, Any]]:
    payloads = responses_events(out)
    types = [p["type"] for p in payloads]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.created") == 1
    if facts.error is not None:
        assert types[-2:] == ["error", "response.failed"]
        assert "response.completed" not in types and "response.incomplete" not in types
        assert stream.error is not None and stream.complete
        assert payloads[-2]["message"] == facts.error["message"]
        failed = validate_response(payloads[-1]["response"])
        assert failed.status == "failed" and failed.error is not None
        # What streamed before the error is kept, as far as it got.
        assert output_facts(payloads[-1]["response"]).reasoning == facts.reasoning
        validate_events(payloads)
        return payloads
    terminal = "response.incomplete" if facts.finish_reason == "length" else "response.completed"
    assert types[-1] == terminal
    assert stream.complete and stream.error is None
    final = payloads[-1]["response"]
    check_response(final, facts)
    assert stream.response == final
    sdk_final = accumulate(payloads)
    if terminal == "response.completed":
        # The SDK's own accumulator agrees with the deltas: every item was added, streamed and done.
        assert sdk_final is not None
        assert output_facts(sdk_final) == output_facts(final)
        assert sdk_final.output_text == facts.content
    # Deltas add up to the done texts, per item and part.
    texts: dict[tuple[str, int], str] = {}
    for p in payloads:
        if p["type"] in ("response.output_text.delta", "response.reasoning_text.delta", "response.refusal.delta"):
            key = (p["item_id"], p["content_index"])
            texts[key] = texts.get(key, "") + p["delta"]
        elif p["type"] in ("response.output_text.done", "response.reasoning_text.done"):
            assert texts[(p["item_id"], p["content_index"])] == p["text"]
        elif p["type"] == "response.function_call_arguments.delta":
            texts[(p["item_id"], -1)] = texts.get((p["item_id"], -1), "") + p["delta"]
        elif p["type"] == "response.function_call_arguments.done":
            assert texts.get((p["item_id"], -1), "") == p["arguments"]
    if stream.usage is not None:
        assert facts.usage is not None
        assert stream.usage.input_tokens == facts.usage["prompt_tokens"]
    return payloads


@pytest.mark.parametrize("path", CHAT_STREAM_FIXTURES)
def test_recorded_chat_streams_become_responses_events(path: Path) -> None:
    data = body_of(path)
    out, stream = run([data])
    check_stream_output(out, chat_stream_facts(data), stream)


@pytest.mark.parametrize("path", CHAT_STREAM_FIXTURES)
def test_every_split_position_inside_every_event(path: Path) -> None:
    """A split inside event k leaves the translator's state as it was (its framer holds the piece), and
    the event fed whole from that state gives the same output; each event is checked from the state the
    stream reached before it (linear, where re-running the stream per position is quadratic). Where the
    state is small the second piece is also fed to a copy of the translator for every position."""
    data = body_of(path)
    whole, _ = run([data])
    events, rest = reference_events(data)
    stream = ChatToResponsesStream(ctx())
    outputs = []
    for k, event in enumerate(events):
        reference = copy.deepcopy(stream)
        expected = reference.feed(event)
        deep = k < 4 or len(data) <= 4_000
        for cut in range(1, len(event)):
            if deep:
                twin = copy.deepcopy(stream)
                assert (twin.feed(event[:cut]), twin.feed(event[cut:])) == (b"", expected), cut
            else:
                assert stream.feed(event[:cut]) == b"", cut
                assert stream._framer.flush() == event[:cut], cut
        assert stream.feed(event) == expected
        outputs.append(expected)
    outputs.append(stream.feed(rest) + stream.finish())
    assert b"".join(outputs) == whole
    if len(data) <= WHOLE_RUN_LIMIT:
        for cut in range(1, len(data)):
            assert run([data[:cut], data[cut:]])[0] == whole, cut


@pytest.mark.parametrize("path", CHAT_STREAM_FIXTURES)
def test_one_byte_reads(path: Path) -> None:
    data = body_of(path)
    assert run([data[i : i + 1] for i in range(len(data))])[0] == run([data])[0]


@pytest.mark.parametrize("path", CHAT_STREAM_FIXTURES)
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=70_000), max_size=25))
def test_random_multi_way_splits(path: Path, cuts: list[int]) -> None:
    data = body_of(path)
    assert run(split_at(data, [c % len(data) for c in cuts]))[0] == run([data])[0]


@pytest.mark.parametrize("path", CHAT_STREAM_FIXTURES)
def test_truncated_streams_fail_never_complete(path: Path) -> None:
    """Cut before the finish reason (or the provider's error), the stream ends with error + failed."""
    data = body_of(path)
    events, _ = reference_events(data)
    checked = 0
    for keep in sorted({1, len(events) // 2, len(events) - 3}):
        if keep < 1:
            continue
        prefix = b"".join(events[:keep])
        facts = chat_stream_facts(prefix)
        if facts.finish_reason is not None or facts.error is not None or facts.done:
            continue
        checked += 1
        for tail in (b"", events[keep][: len(events[keep]) // 2]):  # also mid-event
            out, stream = run([prefix + tail])
            payloads = responses_events(out)
            validate_events(payloads)
            types = [p["type"] for p in payloads]
            assert types[-2:] == ["error", "response.failed"], types[-3:]
            assert "response.completed" not in types
            assert payloads[-2]["code"] == "stream_truncated"
            assert stream.error is not None and not stream.complete
            failed = validate_response(payloads[-1]["response"])
            assert failed.status == "failed"
            assert output_facts(payloads[-1]["response"]).content == facts.content
            assert accumulate(payloads) is None
    assert checked


def test_empty_upstream_stream_fails_with_created_first() -> None:
    out, stream = run([b""])
    payloads = responses_events(out)
    assert [p["type"] for p in payloads] == ["response.created", "response.in_progress", "error", "response.failed"]
    assert not stream.complete and stream.error is not None
    validate_events(payloads)


def test_relay_failure_mid_stream_is_a_responses_failure() -> None:
    stream = ChatToResponsesStream(ctx())
    first = stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n')
    failure = stream.fail("provider 'up' closed the connection", code="upstream_unreachable",
                          error_type="upstream_error")
    payloads = responses_events(first + failure)
    validate_events(payloads)
    assert [p["type"] for p in payloads][-2:] == ["error", "response.failed"]
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == "Hel"
    assert payloads[-1]["response"]["output"][0]["status"] == "incomplete"
    assert stream.finish() == b"" and stream.fail("again") == b""


def test_stream_of_thinking_text_refusal_and_interleaved_tools() -> None:
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Think"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "ing."}}]},
        {"choices": [{"index": 0, "delta": {"thinking_blocks": [
            {"index": 0, "type": "thinking", "thinking": "Thinking.", "signature": "c2ln"}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "Calling."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 1, "id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                  "completion_tokens_details": {"reasoning_tokens": 3}}},
    ]
    data = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    out, stream = run([data], {"model": "m", "tools": TOOLS})
    payloads = responses_events(out)
    final = accumulate(payloads)
    assert final is not None
    assert [i.type for i in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert final.output[0].content[0].text == "Thinking."
    assert final.output[0].encrypted_content == encode_thinking(
        [{"type": "thinking", "thinking": "Thinking.", "signature": "c2ln"}])
    assert final.output_text == "Calling."
    assert [(c.call_id, c.name, c.arguments) for c in final.output[2:]] == [("c1", "a", '{"x":1}'), ("c2", "b", "{}")]
    assert final.usage.output_tokens_details.reasoning_tokens == 3
    assert stream.usage is not None and stream.usage.output_tokens == 7

    refusal = b'data: {"choices":[{"index":0,"delta":{"refusal":"No."},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    out, _ = run([refusal])
    final = accumulate(responses_events(out))
    assert final.output[0].content[0].type == "refusal" and final.output[0].content[0].refusal == "No."


def test_gemini_thought_signatures_stay_on_their_items() -> None:
    """``extra_content`` (Gemini's signatures) rides on the items it came with and goes back with them."""
    sig_call, sig_text = {"google": {"thought_signature": "c2lnMQ=="}}, {"google": {"thought_signature": "c2lnMg=="}}
    chat = {"model": "gemini-3", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me look.", "extra_content": sig_text, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"},
             "extra_content": sig_call}]}}]}
    response = chat_to_response(chat, ctx())
    validate_response(response)
    assert response["output"][0]["extra_content"] == sig_text
    assert response["output"][1]["extra_content"] == sig_call
    _, streamed = chat_to_events(chat, ctx())
    assert streamed["output"] == response["output"]
    back = responses_to_chat({"model": "m", "input": response["output"]})
    assert back["messages"] == [{"role": "assistant", "content": "Let me look.", "extra_content": sig_text,
                                 "tool_calls": [{"id": "c1", "type": "function", "extra_content": sig_call,
                                                 "function": {"name": "f", "arguments": "{}"}}]}]
    # A signature that came with thought text only (no answer text) stays with the reasoning item.
    thought = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "reasoning_content": "Hm.", "extra_content": sig_text}}]}
    output = chat_to_response(thought, ctx())["output"]
    assert [i["type"] for i in output] == ["reasoning"] and output[0]["extra_content"] == sig_text
    # Sent back before the assistant's text of the same turn, it joins that message ...
    again = responses_to_chat({"model": "m", "input": [*output, {"role": "assistant", "content": "Done."}]})
    assert again["messages"] == [{"role": "assistant", "content": "Done.", "extra_content": sig_text}]
    # ... and a turn with no text and no call has no chat message to carry it.
    alone = responses_to_chat({"model": "m", "input": [*output, {"role": "user", "content": "ok"}]})
    assert alone["messages"] == [{"role": "user", "content": "ok"}]
