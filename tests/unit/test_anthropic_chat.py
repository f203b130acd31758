"""OpenAI chat <-> Anthropic Messages: every recorded Anthropic stream split every way, bodies, errors, requests.

The expected values are read from the recordings by a deliberately naive reader written here (full JSON
parses of every event, its own tables), and the translator's output is read back with the openai SDK's own
models and its stream accumulator, so a client-side surprise shows up here first.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.types import Usage
from gomodel_proxy.translators.anthropic_chat import (
    THINKING_BUDGETS,
    AnthropicToChatStream,
    anthropic_response_to_chat,
    chat_request_to_anthropic,
    error_body_to_openai,
)
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap
from tests.support.fixtures import fixture_names, load_fixture
from tests.support.mock_anthropic import anthropic_sse_body, message_request_problems, read_recording

from ._support import data_of, reference_events, split_at

FOLDER = "anthropic/messages"
STREAMS = fixture_names(FOLDER, "stream-")
NONSTREAM = fixture_names(FOLDER, "nonstream-")
ERRORS = fixture_names(FOLDER, "error-")
#: Streams that reach message_stop (the transcribed mid-stream error is the one that does not).
COMPLETE_STREAMS = [n for n in STREAMS if "midstream-error" not in n]
#: Streams up to this size are also re-fed whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 4_000
CREATED = 1_700_000_000

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "refusal": "content_filter"}


def body_of(name: str) -> bytes:
    return anthropic_sse_body(load_fixture(name))


# -- running the translator --------------------------------------------------------------------------------


def run(chunks: list[bytes], *, include_usage: bool = True) -> tuple[bytes, Any]:
    t = AnthropicToChatStream(include_usage=include_usage, created=CREATED)
    out = b"".join(t.feed(c) for c in chunks) + t.finish()
    return out, snapshot(t)


def snapshot(t: AnthropicToChatStream) -> Any:
    """Everything the translator knows, framer buffer aside, as comparable values."""
    values = []
    for name in type(t).__slots__:
        if name == "_framer":
            continue
        value = getattr(t, name)
        if name == "_blocks":
            value = sorted((k, tuple(getattr(b, s) for s in type(b).__slots__)) for k, b in value.items())
        values.append((name, repr(value)))
    return (tuple(values), t.usage, t.error, t.complete)


def payloads(out: bytes) -> list[dict[str, Any]]:
    events, rest = reference_events(out)
    assert rest == b"", "the output must end on an event boundary"
    result = []
    for raw in events:
        assert raw.startswith(b"data: ") and raw.endswith(b"\n\n"), raw
        data = data_of(raw)
        if data != b"[DONE]":
            result.append(json.loads(data or b""))
    return result


def accumulate(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """The openai SDK's own stream accumulator over the chunks (what ``client.chat.completions.stream`` does)."""
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


# -- whole streams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_stream_translates_everything_the_recording_holds(name: str) -> None:
    data = body_of(name)
    expected = read_recording(data)
    assert expected.ended and expected.stop_reason is not None
    out, _ = run([data])
    assert out.endswith(b"data: [DONE]\n\n") and out.count(b"[DONE]") == 1
    chunks = payloads(out)
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert (chunk["id"], chunk["model"], chunk["created"]) == (expected.id, expected.model, CREATED)
        assert chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == expected.text
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert reasoning == expected.reasoning
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [FINISH[expected.stop_reason]]
    # The usage-only chunk comes last, as OpenAI's, and carries the recording's figures.
    assert chunks[-1]["choices"] == [] and all(c["choices"] for c in chunks[:-1])
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == expected.prompt_tokens
    assert usage["completion_tokens"] == expected.usage["output_tokens"]
    assert usage["total_tokens"] == expected.prompt_tokens + expected.usage["output_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == (expected.usage.get("cache_read_input_tokens") or 0)
    # What the SDK's accumulator builds from the chunks.
    final = accumulate(chunks)
    message = final.choices[0].message
    assert final.choices[0].finish_reason == FINISH[expected.stop_reason]
    assert message.content == expected.text
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or []]
    assert calls == expected.tool_calls
    for _, _, arguments in calls:
        assert isinstance(json.loads(arguments), dict)
    extra = message.model_extra or {}
    assert extra.get("reasoning_content", "") == expected.reasoning
    blocks = [{k: v for k, v in b.items() if k != "index"} for b in extra.get("thinking_blocks", [])]
    assert blocks == expected.thinking_blocks


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_stream_facts_and_usage_are_kept_on_the_translator(name: str) -> None:
    data = body_of(name)
    expected = read_recording(data)
    t = AnthropicToChatStream(include_usage=False, created=CREATED)
    out = t.feed(data) + t.finish()
    assert t.complete and t.error is None
    assert t.usage == Usage(
        input_tokens=expected.prompt_tokens, output_tokens=expected.usage["output_tokens"],
        cached_tokens=expected.usage.get("cache_read_input_tokens") or 0,
    )
    # Without include_usage no chunk carries usage, but the stream ends the same way.
    assert b'"usage"' not in out and b'"choices":[]' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    with_usage, _ = run([data], include_usage=True)
    kept = [e for e in reference_events(with_usage)[0] if b'"choices":[],"usage"' not in e]
    assert out == b"".join(kept)


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_the_relay_tap_strips_the_usage_chunk_exactly_as_for_a_native_openai_stream(name: str) -> None:
    """The gateway asks for usage (include_usage) and strips it when the client did not ask: the client
    then sees what the translator gives without include_usage, and the tap still reads the usage."""
    data = body_of(name)
    injected, _ = run([data], include_usage=True)
    plain, _ = run([data], include_usage=False)
    tap = ChatStreamTap(strip_usage=True)
    assert tap.feed(injected) + tap.finish() == plain
    t = AnthropicToChatStream(include_usage=True)
    t.feed(data)
    assert tap.usage == t.usage and tap.complete and tap.error is None
    passthrough = ChatStreamTap(strip_usage=False)
    assert passthrough.feed(injected) == injected
    assert passthrough.usage == t.usage


# -- splits --------------------------------------------------------------------------------------------------


def check_every_split(data: bytes) -> None:
    """Each position inside each event, from the translator's state just before that event, gives nothing
    for the first piece and the whole event's output for the second, and the same state after."""
    whole_out, whole_state = run([data])
    events, rest = reference_events(data)
    base = AnthropicToChatStream(include_usage=True, created=CREATED)
    outputs: list[bytes] = []
    for event in events:
        reference = copy.deepcopy(base)
        ref_out = reference.feed(event)
        for cut in range(1, len(event)):
            t = copy.deepcopy(base)
            first, second = t.feed(event[:cut]), t.feed(event[cut:])
            assert (first, second) == (b"", ref_out), cut
            assert snapshot(t) == snapshot(reference), cut
        outputs.append(ref_out)
        base = reference
    for cut in range(1, len(rest)):
        t = copy.deepcopy(base)
        reference = copy.deepcopy(base)
        assert t.feed(rest[:cut]) + t.feed(rest[cut:]) + t.finish() == reference.feed(rest) + reference.finish()
        assert snapshot(t) == snapshot(reference)
    outputs.append(base.feed(rest) + base.finish())
    assert b"".join(outputs) == whole_out
    assert snapshot(base) == whole_state


@pytest.mark.parametrize("name", STREAMS)
def test_every_split_position(name: str) -> None:
    data = body_of(name)
    check_every_split(data)
    if len(data) <= WHOLE_RUN_LIMIT:
        whole = run([data])
        for cut in range(1, len(data)):
            assert run([data[:cut], data[cut:]]) == whole, cut


@pytest.mark.parametrize("name", STREAMS)
def test_one_byte_reads(name: str) -> None:
    data = body_of(name)
    assert run([data[i : i + 1] for i in range(len(data))]) == run([data])


@pytest.mark.parametrize("name", STREAMS)
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_random_multi_way_splits(name: str, draw: st.DataObject) -> None:
    data = body_of(name)
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40), label="cuts")
    assert run(split_at(data, cuts)) == run([data])


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("name", STREAMS)
def test_crlf_and_cr_framing_give_the_same_output(name: str, newline: bytes) -> None:
    data = body_of(name)
    assert b"\r" not in data
    assert run([data.replace(b"\n", newline)]) == run([data])


# -- ends that are not message_stop ------------------------------------------------------------------------


def test_midstream_error_event_becomes_an_openai_error_event_and_ends_the_stream() -> None:
    data = body_of(f"{FOLDER}/stream-midstream-error-event-overloaded")
    recorded = read_recording(data).error
    assert recorded is not None
    out, _ = run([data])
    assert b"[DONE]" not in out
    (event,) = reference_events(out)[0]
    payload = json.loads(data_of(event) or b"")
    assert payload == {"error": {"message": recorded["message"], "type": "overloaded_error", "param": None,
                                 "code": "overloaded"}}
    t = AnthropicToChatStream(include_usage=True)
    t.feed(data)
    assert t.finish() == b""
    assert t.error == payload["error"] and t.complete  # ended by the provider's own error: relayed, not truncated
    # The openai SDK's stream raises on it (an "error" member in a data payload).
    assert payload["error"]["message"] == "Overloaded"


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_error_event_in_the_middle_of_a_stream_keeps_what_came_before_and_nothing_after(name: str) -> None:
    data = body_of(name)
    error = body_of(f"{FOLDER}/stream-midstream-error-event-overloaded")
    events, _ = reference_events(data)
    cut = len(events) // 2
    spliced = b"".join(events[:cut]) + error + b"".join(events[cut:])
    before = AnthropicToChatStream(include_usage=True, created=CREATED).feed(b"".join(events[:cut]))
    assert before.count(b"data: ") >= 1
    t = AnthropicToChatStream(include_usage=True, created=CREATED)
    out = t.feed(spliced) + t.finish()
    assert out == before + run([error])[0]
    assert t.error is not None and t.error["type"] == "overloaded_error"
    assert t.complete and b"[DONE]" not in out
    assert t.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") == b""


@pytest.mark.parametrize("name", COMPLETE_STREAMS)
def test_truncated_stream_ends_with_a_stream_truncated_error_event(name: str) -> None:
    data = body_of(name)
    stop = data.rindex(b"event: message_stop")
    events, _ = reference_events(data[:stop])
    # Cut at every event boundary before message_stop, and in the middle of the last event kept.
    cuts = [sum(len(e) for e in events[:k]) for k in range(1, len(events) + 1)]
    cuts.append(cuts[-1] - len(events[-1]) // 2)
    for cut in cuts:
        t = AnthropicToChatStream(include_usage=True, created=CREATED)
        out = t.feed(data[:cut]) + t.finish()
        assert b"[DONE]" not in out
        last = payloads(out)[-1]
        assert last == {"error": {"message": "The provider ended the stream before it was complete.",
                                  "type": "upstream_error", "param": None, "code": "stream_truncated"}}
        assert t.error == last["error"]
        assert not t.complete, cut
        assert not any(p.get("choices") == [] for p in payloads(out)), "no usage chunk on a cut stream"


def test_stream_without_trailing_blank_line_still_completes() -> None:
    data = body_of(f"{FOLDER}/stream-text-minimal-sonnet4")
    assert not data.endswith(b"\n\n")
    t = AnthropicToChatStream(include_usage=False)
    assert b"[DONE]" not in t.feed(data)
    assert t.finish().endswith(b"data: [DONE]\n\n")
    assert t.complete and t.error is None


def test_an_event_that_is_not_json_fails_the_stream() -> None:
    data = body_of(f"{FOLDER}/stream-text-haiku45")
    events, _ = reference_events(data)
    broken = events[0] + events[1] + b"event: content_block_delta\ndata: {not json\n\n" + b"".join(events[2:])
    t = AnthropicToChatStream(include_usage=True)
    out = t.feed(broken) + t.finish()
    assert b"[DONE]" not in out
    assert t.error is not None and t.error["code"] == "invalid_stream"
    assert not t.complete


def test_pings_comments_and_done_are_ignored() -> None:
    data = body_of(f"{FOLDER}/stream-text-haiku45")
    noisy = data.replace(b"event: content_block_stop", b": keep-alive\n\nevent: ping\ndata: {\"type\": \"ping\"}\n\n"
                         b"data: [DONE]\n\nevent: content_block_stop")
    assert noisy != data
    assert run([noisy]) == run([data])


def test_streams_without_event_lines_are_read_from_the_payload_type() -> None:
    fx = load_fixture(f"{FOLDER}/stream-tool-use-input-json-delta-args-haiku45")
    with_events = anthropic_sse_body(fx)
    payload_only = b"".join(b"data: " + line + b"\n\n" for line in fx.raw.splitlines() if line.strip())
    assert run([payload_only]) == run([with_events])


def test_tool_arguments_stream_in_order_per_tool_call_index() -> None:
    data = body_of(f"{FOLDER}/stream-text-then-tool-use-input-json-delta-claude3-opus-2024")
    chunks = payloads(run([data])[0])
    deltas = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0] == {"index": 0, "id": "toolu_01DYJo37oETVsCdLTTcCWcdq", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}
    assert [d["function"]["arguments"] for d in deltas[1:]] == [
        '{"location":', ' "Sa', "n Fran", 'cisco, CA"}']
    assert all(d["index"] == 0 for d in deltas)


def test_thinking_signature_is_kept_for_the_round_trip() -> None:
    data = body_of(f"{FOLDER}/stream-thinking-signature-sonnet4")
    expected = read_recording(data)
    assert expected.thinking_blocks and expected.thinking_blocks[0]["signature"]
    final = accumulate(payloads(run([data])[0]))
    message = final.choices[0].message.model_dump()
    request = chat_request_to_anthropic(
        {"model": "m", "messages": [{"role": "user", "content": "How do I cross the street?"}, message,
                                    {"role": "user", "content": "And at night?"}]},
        default_max_tokens=4096,
    )
    assistant = request["messages"][1]["content"]
    assert assistant[0] == expected.thinking_blocks[0]
    assert assistant[1] == {"type": "text", "text": expected.text}
    assert message_request_problems(request) == []


# -- whole answers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NONSTREAM)
def test_nonstream_body_translates_to_a_chat_completion(name: str) -> None:
    fx = load_fixture(name)
    body = fx.json
    result = anthropic_response_to_chat(body, created=CREATED)
    parsed = ChatCompletion.model_validate(result)
    assert (parsed.id, parsed.model, parsed.created, parsed.object) == (body["id"], body["model"], CREATED,
                                                                         "chat.completion")
    choice = parsed.choices[0]
    assert choice.finish_reason == FINISH[body["stop_reason"]]
    texts = [b["text"] for b in body["content"] if b["type"] == "text"]
    tools = [b for b in body["content"] if b["type"] == "tool_use"]
    assert choice.message.content == ("".join(texts) if texts or not tools else None)
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name) for c in calls] == [(b["id"], b["name"]) for b in tools]
    assert [json.loads(c.function.arguments) for c in calls] == [b["input"] for b in tools]
    extra = choice.message.model_extra or {}
    thinking = [b for b in body["content"] if b["type"] in ("thinking", "redacted_thinking")]
    assert extra.get("thinking_blocks", []) == [{k: b[k] for k in ("type", "thinking", "signature", "data") if k in b}
                                                for b in thinking]
    assert extra.get("reasoning_content", "") == "".join(b["thinking"] for b in thinking if b["type"] == "thinking")
    u = body["usage"]
    prompt = u["input_tokens"] + u.get("cache_read_input_tokens", 0) + u.get("cache_creation_input_tokens", 0)
    assert parsed.usage is not None
    assert (parsed.usage.prompt_tokens, parsed.usage.completion_tokens, parsed.usage.total_tokens) == (
        prompt, u["output_tokens"], prompt + u["output_tokens"])
    # The usage is the body's last member, where the relay reads it without parsing the body.
    assert list(result)[-1] == "usage"


def test_cache_tokens_count_as_prompt_tokens() -> None:
    body = load_fixture(f"{FOLDER}/nonstream-text-claude3-opus").json
    body = {**body, "usage": {"input_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
                              "output_tokens": 7}}
    usage = anthropic_response_to_chat(body)["usage"]
    assert usage == {"prompt_tokens": 125, "completion_tokens": 7, "total_tokens": 132,
                     "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20}}
    assert Usage.from_openai(usage) == Usage(input_tokens=125, output_tokens=7, cached_tokens=100,
                                             cache_write_tokens=20)


@pytest.mark.parametrize(("stop_reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), ("model_context_window_exceeded", "length"),
    (None, "stop"), ("something_new", "stop"),
])
def test_stop_reasons(stop_reason: str | None, finish: str) -> None:
    body = {**load_fixture(f"{FOLDER}/nonstream-text-claude3-opus").json, "stop_reason": stop_reason}
    assert anthropic_response_to_chat(body)["choices"][0]["finish_reason"] == finish


# -- errors ----------------------------------------------------------------------------------------------------

ERROR_TYPES = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "not_found_error": ("invalid_request_error", "model_not_found"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", "api_error"),
    "overloaded_error": ("overloaded_error", "overloaded"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_error_bodies_keep_the_providers_message(name: str) -> None:
    fx = load_fixture(name)
    recorded = fx.json
    out = json.loads(error_body_to_openai(fx.body, fx.status))
    error = out["error"]
    assert set(out) == {"error"}
    assert error["message"] == recorded["error"]["message"]
    assert (error["type"], error["code"]) == ERROR_TYPES[recorded["error"]["type"]]
    assert error["param"] is None
    assert error.get("request_id") == recorded.get("request_id")


@pytest.mark.parametrize(("status", "body", "message", "error_type"), [
    (502, b"<html>Bad gateway</html>", "<html>Bad gateway</html>", "upstream_error"),
    (503, b"", "Anthropic answered HTTP 503 without an error message", "server_error"),
    (413, b'{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum size"}}',
     "Request exceeds the maximum size", "invalid_request_error"),
    (403, b'{"type":"error","error":{"type":"permission_error","message":"no access"}}', "no access",
     "permission_error"),
    (418, b'{"type":"error","error":{"type":"teapot_error","message":"short and stout"}}', "short and stout",
     "invalid_request_error"),
])
def test_unusual_error_bodies(status: int, body: bytes, message: str, error_type: str) -> None:
    error = json.loads(error_body_to_openai(body, status))["error"]
    assert (error["message"], error["type"]) == (message, error_type)


# -- requests --------------------------------------------------------------------------------------------------


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    out = chat_request_to_anthropic(body, default_max_tokens=4096)
    assert message_request_problems(out) == [], out
    return out


def refused(**body: Any) -> InvalidRequestError:
    body.setdefault("model", "claude-x")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequestError) as info:
        chat_request_to_anthropic(body, default_max_tokens=4096)
    assert info.value.status == 400
    return info.value


def recorded_request(name: str) -> dict[str, Any]:
    request = load_fixture(f"{FOLDER}/{name}").request
    assert request is not None
    return request


def test_request_matches_a_recorded_one_system_prompt() -> None:
    recorded = recorded_request("nonstream-text-claude3-opus")
    got = translate(model=recorded["model"], messages=[
        {"role": "system", "content": recorded["system"]},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]},
    ])
    assert got == {k: v for k, v in recorded.items() if k != "stream"}


def test_request_matches_a_recorded_one_tools_and_tool_choice_required() -> None:
    recorded = recorded_request("nonstream-tool-use-withargs-after-tool-result-sonnet45")
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in recorded["tools"]]
    got = translate(model=recorded["model"], tools=tools, tool_choice="required", messages=[
        {"role": "user", "content": [{"type": "text", "text": "What is the largest city in the user country?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "toolu_01X9wcHKKAZD9tBC711xipPa", "type": "function",
            "function": {"name": "get_user_country", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_01X9wcHKKAZD9tBC711xipPa", "content": "Mexico"},
    ])
    expected = {k: v for k, v in recorded.items() if k != "stream"}
    # OpenAI's tool messages have no is_error flag: the gateway sends none (Anthropic's default is false).
    expected["messages"][2]["content"][0].pop("is_error")
    assert got == expected


def test_request_matches_a_recorded_one_parallel_tool_results_and_stop() -> None:
    recorded = recorded_request("stream-text-after-tool-result-haiku45")
    calls = [b for b in recorded["messages"][1]["content"] if b["type"] == "tool_use"]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                               "parameters": t["input_schema"]}} for t in recorded["tools"]]
    got = translate(model=recorded["model"], max_tokens=recorded["max_tokens"], temperature=1.0, stream=True,
                    tools=tools, messages=[
        {"role": "user", "content": [{"type": "text", "text": "Two names for a pet pelican"}]},
        {"role": "assistant", "content": " ", "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": ""}} for c in calls]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "Charles"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "Sammy"},
    ])
    assert got == recorded


def test_request_matches_a_recorded_one_assistant_prefill_and_stop_sequences() -> None:
    recorded = recorded_request("stream-stop-sequence-haiku45")
    got = translate(model=recorded["model"], max_completion_tokens=8192, temperature=1.0, stream=True, stop="```",
                    messages=[{"role": "user", "content": "Very short function describing a pelican"},
                              {"role": "assistant", "content": "```python"}])
    assert got == recorded


@pytest.mark.parametrize("name", ["stream-thinking-text-haiku45", "nonstream-thinking-sonnet45"])
def test_request_matches_a_recorded_one_with_thinking(name: str) -> None:
    recorded = recorded_request(name)
    user = recorded["messages"][0]["content"][0]["text"]
    extra = {"temperature": recorded["temperature"]} if "temperature" in recorded else {}
    got = translate(model=recorded["model"], max_tokens=recorded["max_tokens"], reasoning_effort="minimal",
                    messages=[{"role": "user", "content": user}], stream=recorded.get("stream") or None, **extra)
    assert got == {k: v for k, v in recorded.items() if not (k == "stream" and v is False)}


def test_max_tokens_defaults_and_precedence() -> None:
    assert translate()["max_tokens"] == 4096
    assert chat_request_to_anthropic({"model": "m", "messages": [{"role": "user", "content": "x"}]},
                                     default_max_tokens=77)["max_tokens"] == 77
    assert translate(max_tokens=10)["max_tokens"] == 10
    assert translate(max_tokens=10, max_completion_tokens=20)["max_tokens"] == 20
    for bad in (0, -1, "10", True, 1.5):
        assert refused(max_tokens=bad).param == "max_tokens"


@pytest.mark.parametrize("effort", sorted(THINKING_BUDGETS))
def test_reasoning_effort_becomes_a_thinking_budget_below_max_tokens(effort: str) -> None:
    budget = THINKING_BUDGETS[effort]
    got = translate(reasoning_effort=effort, max_tokens=100_000)
    assert got["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert got["max_tokens"] == 100_000
    small = translate(reasoning_effort=effort, max_tokens=500)
    assert small["max_tokens"] == budget + 500  # the answer keeps the room the client asked for
    assert small["thinking"]["budget_tokens"] < small["max_tokens"]


def test_reasoning_effort_none_and_unknown() -> None:
    assert "thinking" not in translate(reasoning_effort="none")
    assert refused(reasoning_effort="extreme").param == "reasoning_effort"


def test_anthropic_thinking_object_is_passed_and_wins() -> None:
    thinking = {"type": "enabled", "budget_tokens": 3000}
    got = translate(thinking=thinking, reasoning_effort="high", max_tokens=1000)
    assert got["thinking"] == thinking and got["max_tokens"] == 4000


def test_system_and_developer_messages_join_the_system_prompt_in_order() -> None:
    got = translate(messages=[
        {"role": "system", "content": "one"},
        {"role": "user", "content": "hi"},
        {"role": "developer", "content": [{"type": "text", "text": "two"},
                                          {"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}}]},
    ])
    assert got["system"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"},
                             {"type": "text", "text": "three", "cache_control": {"type": "ephemeral"}}]
    assert got["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert translate(messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}])[
        "system"] == "be brief"


def test_images_become_image_blocks() -> None:
    got = translate(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": "http://example.com/dog.webp"},
    ]}])
    assert got["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "image", "source": {"type": "url", "url": "http://example.com/dog.webp"}},
    ]
    for url in ("data:image/png,notbase64", "ftp://example.com/x.png", "file:///etc/passwd"):
        refused(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])


def test_inline_pdf_becomes_a_document_block() -> None:
    got = translate(messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "text", "text": "Summarise"},
    ]}])
    assert got["messages"][0]["content"][0] == {
        "type": "document", "title": "a.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    refused(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}])
    refused(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}])


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
])
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert translate(tools=tools, tool_choice=choice)["tool_choice"] == expected
    parallel_off = translate(tools=tools, tool_choice=choice, parallel_tool_calls=False)["tool_choice"]
    assert parallel_off == (expected if expected["type"] == "none" else {**expected,
                                                                           "disable_parallel_tool_use": True})


def test_tools_without_parameters_get_an_empty_schema_and_tool_choice_without_tools_is_dropped() -> None:
    got = translate(tools=[{"type": "function", "function": {"name": "now"}}], parallel_tool_calls=False)
    assert got["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert got["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in translate(tool_choice="auto")
    refused(tools=[{"type": "custom", "custom": {"name": "x"}}])
    refused(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="sometimes")


def test_stop_user_stream_and_sampling() -> None:
    got = translate(stop=["a", "b"], user="u-1", stream=True, temperature=0.2, top_p=0.9, seed=3,
                    frequency_penalty=0.5, presence_penalty=0.1, stream_options={"include_usage": True})
    assert got["stop_sequences"] == ["a", "b"]
    assert got["metadata"] == {"user_id": "u-1"}
    assert (got["stream"], got["temperature"], got["top_p"]) == (True, 0.2, 0.9)
    for dropped in ("seed", "frequency_penalty", "presence_penalty", "stream_options", "user", "stop"):
        assert dropped not in got
    assert "stream" not in translate(stream=False)
    refused(stop=["a", 1])


def test_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    got = translate(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert got["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "output_config" not in translate(response_format={"type": "text"})
    assert refused(response_format={"type": "json_object"}).param == "response_format"


def test_what_anthropic_cannot_do_is_refused() -> None:
    assert refused(n=2).param == "n"
    assert refused(logprobs=True).param == "logprobs"
    assert refused(modalities=["text", "audio"]).param == "modalities"
    assert refused(messages=[]).param == "messages"
    assert refused(messages=[{"role": "function", "name": "f", "content": "x"}]).param == "messages[0].role"
    translate(n=1, logprobs=False)


def test_invalid_tool_call_arguments_are_a_400_naming_the_field() -> None:
    error = refused(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                              "function": {"name": "f", "arguments": '{"a": '}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "x"},
    ])
    assert error.param == "messages[1].tool_calls[0].function.arguments"
    assert "not valid JSON" in error.message
    refused(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}])


def test_consecutive_tool_results_and_a_following_user_message_share_one_user_turn() -> None:
    got = translate(messages=[
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}},
            {"id": "b", "type": "function", "function": {"name": "w", "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rain"}]},
        {"role": "user", "content": "and tomorrow?"},
        {"role": "user", "content": "thanks"},
    ])
    assert got["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "a", "name": "w", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "b", "name": "w", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "b", "content": [{"type": "text", "text": "rain"}]},
            {"type": "text", "text": "and tomorrow?"},
            {"type": "text", "text": "thanks"}]},
    ]


def test_thinking_blocks_round_trip_through_a_nonstream_answer() -> None:
    body = load_fixture(f"{FOLDER}/nonstream-thinking-sonnet45").json
    message = anthropic_response_to_chat(body)["choices"][0]["message"]
    got = translate(messages=[{"role": "user", "content": "How do I cross the street?"}, message,
                              {"role": "user", "content": "thanks"}])
    assert got["messages"][1]["content"] == [
        {"type": "thinking", "thinking": body["content"][0]["thinking"], "signature": body["content"][0]["signature"]},
        {"type": "text", "text": body["content"][1]["text"]},
    ]


def test_redacted_thinking_round_trips_and_unsigned_thinking_is_left_out() -> None:
    got = translate(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "reasoning_content": "mm", "thinking_blocks": [
            {"type": "redacted_thinking", "data": "opaque", "index": 0},
            {"type": "thinking", "thinking": "no signature"},
            {"type": "thinking", "thinking": "signed", "signature": "sig", "index": 2}]},
        {"role": "user", "content": "again"},
    ])
    assert got["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "thinking", "thinking": "signed", "signature": "sig"},
        {"type": "text", "text": "hello"},
    ]
    refused(messages=[{"role": "assistant", "content": "x", "thinking_blocks": [{"type": "text", "text": "x"}]}])


ROLE = st.sampled_from(["system", "user", "assistant", "tool", "assistant_tools"])


@settings(max_examples=60, deadline=None, database=None)
@given(roles=st.lists(ROLE, min_size=1, max_size=12))
def test_any_conversation_becomes_alternating_turns_with_answered_tool_uses(roles: list[str]) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "start"}]
    pending: list[str] = []
    for n, role in enumerate(roles):
        if role == "tool":
            if not pending:
                continue
            messages.append({"role": "tool", "tool_call_id": pending.pop(0), "content": f"r{n}"})
            continue
        if pending:  # OpenAI requires every tool call answered before the conversation goes on
            messages.extend({"role": "tool", "tool_call_id": p, "content": "late"} for p in pending)
            pending = []
        if role == "assistant_tools":
            ids = [f"call_{n}_{k}" for k in range(1 + n % 2)]
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": i, "type": "function", "function": {"name": "f", "arguments": '{"n": 1}'}} for i in ids]})
            pending = ids
        else:
            messages.append({"role": role, "content": f"m{n}"})
    messages.extend({"role": "tool", "tool_call_id": p, "content": "last"} for p in pending)
    got = chat_request_to_anthropic({"model": "m", "messages": messages}, default_max_tokens=16)
    assert message_request_problems(got) == []
    roles_out = [m["role"] for m in got["messages"]]
    assert all(a != b for a, b in itertools.pairwise(roles_out))
    texts_in = [m["content"] for m in messages if m["role"] in ("user", "assistant") and m["content"]]
    texts_out = [b["text"] for m in got["messages"] for b in m["content"] if b["type"] == "text"]
    assert sorted(texts_out) == sorted(texts_in)
    results_in = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    results_out = [b["tool_use_id"] for m in got["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert results_out == results_in


def test_fixture_reader_sanity() -> None:
    """The naive reader above agrees with the recordings' own final figures (it is what the tests trust)."""
    rec = read_recording(body_of(f"{FOLDER}/stream-text-haiku45"))
    assert (rec.text, rec.stop_reason, rec.usage["output_tokens"], rec.prompt_tokens) == ("Hello", "end_turn", 4, 10)
    two = read_recording(body_of(f"{FOLDER}/stream-two-tool-use-blocks-haiku45"))
    assert [c[2] for c in two.tool_calls] == ["{}", "{}"]
