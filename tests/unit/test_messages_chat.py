"""Anthropic Messages <-> OpenAI chat: requests, whole answers, and streams split every way.

Streams are read back the way the ``anthropic`` SDK reads them: its own SSE decoder, its event models
(validated strictly with pydantic) and its own accumulator (``accumulate_event``), so what these tests
accept is what an Anthropic client accepts.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
from anthropic._streaming import SSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.types import Usage
from gomodel_proxy.translators.gemini_chat import GeminiToChatStream, chat_request_to_gemini
from gomodel_proxy.translators.messages_chat import (
    MEDIA_TOKENS,
    TOOL_ID_SEPARATOR,
    ChatToMessagesStream,
    anthropic_error_of,
    chat_to_message,
    estimate_input_tokens,
    message_to_events,
    messages_to_chat,
    reasoning_effort_for_budget,
    signed_tool_id,
    split_tool_id,
    tool_input,
)
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap
from gomodel_proxy.wire.sse import SSEFramer

from ._support import CHAT_STREAM_DIRS, data_of, fixture_file, fixture_params, reference_events, split_at

EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
#: The OpenAI chat-completions recordings (xAI's folder also holds a Responses one).
CHAT_DIRS = tuple(d if d.endswith("chat-completions") else f"{d}/chat-completions" for d in CHAT_STREAM_DIRS)
SSE_FIXTURES = fixture_params(CHAT_DIRS, "*.response.sse")
CHUNK_FIXTURES = fixture_params(CHAT_DIRS, "*.response.chunks.jsonl")
STREAM_FIXTURES = SSE_FIXTURES + CHUNK_FIXTURES
NONSTREAM_FIXTURES = fixture_params(CHAT_DIRS, "nonstream-*.response.json")
ANTHROPIC_REQUESTS = fixture_params(("anthropic/messages",), "*.request.json")
#: Streams up to this size are also re-fed whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 3_000


def body_of(path: Path) -> bytes:
    """What the provider sent: the SSE file as is, or chunk lines re-framed as SSE (+ [DONE])."""
    raw = path.read_bytes()
    if path.name.endswith(".chunks.jsonl"):
        lines = [line for line in raw.splitlines() if line.strip()]
        return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"
    return raw


# -- reading the output as the anthropic SDK does -----------------------------------------------------


@dataclass
class Read:
    """An Anthropic stream as a client saw it."""

    events: list[Any] = field(default_factory=list)
    message: Any = None  # the SDK's accumulated snapshot
    error: dict[str, Any] | None = None  # the ``error`` event, which the SDK raises
    stopped: bool = False  # message_stop seen


def read_stream(out: bytes) -> Read:
    """Decode with the SDK's SSE decoder; validate each event with its models; accumulate with its
    accumulator; check the block protocol (start/delta/stop in order) on the way."""
    result = Read()
    open_blocks: set[int] = set()
    started_blocks = 0
    json_bufs: dict[int, bytes] = {}
    for sse in SSEDecoder().iter_bytes(iter([out])):
        assert result.error is None and not result.stopped, f"event after the end: {sse.event}"
        if sse.event == "ping":
            continue
        payload = sse.json()
        if sse.event == "error":
            assert payload["type"] == "error"
            assert isinstance(payload["error"]["type"], str) and isinstance(payload["error"]["message"], str)
            result.error = payload["error"]
            continue
        assert sse.event == payload["type"], "event name and type disagree"
        event = EVENT.validate_python(payload)  # strict: every required field present and typed
        result.events.append(event)
        if event.type == "message_start":
            assert result.message is None
        else:
            assert result.message is not None, f"{event.type} before message_start"
        if event.type == "content_block_start":
            assert event.index == started_blocks and not open_blocks
            open_blocks.add(event.index)
            started_blocks += 1
        elif event.type == "content_block_delta":
            assert event.index in open_blocks or event.index < started_blocks
        elif event.type == "content_block_stop":
            assert event.index in open_blocks
            open_blocks.discard(event.index)
        elif event.type == "message_delta":
            assert not open_blocks, "message_delta with a block still open"
        elif event.type == "message_stop":
            result.stopped = True
        result.message = accumulate_event(event=event, current_snapshot=result.message, json_bufs=json_bufs)
    if result.stopped:
        Message.model_validate(result.message.model_dump())
    return result


# -- what a chat stream holds, read independently -------------------------------------------------------


@dataclass
class ChatFacts:
    text: str = ""
    reasoning: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    done: bool = False
    model: str | None = None


def chat_facts(data: bytes) -> ChatFacts:
    facts = ChatFacts()
    events, rest = reference_events(data)
    for raw in [*events, rest]:
        payload_bytes = data_of(raw)
        if payload_bytes is None:
            continue
        if payload_bytes == b"[DONE]":
            facts.done = True
            break
        payload = json.loads(payload_bytes)
        usage = payload.get("usage") or (payload.get("x_groq") or {}).get("usage")
        if isinstance(usage, dict):
            facts.usage = usage
        if b"event: error" in raw or isinstance(payload.get("error"), dict):
            facts.error = payload.get("error")
            break
        facts.model = facts.model or payload.get("model")
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            facts.text += delta.get("content") or ""
            facts.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            for call in delta.get("tool_calls") or []:
                entry = facts.calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                entry["id"] = entry["id"] or call.get("id") or ""
                entry["name"] = entry["name"] or (call.get("function") or {}).get("name") or ""
                entry["arguments"] += (call.get("function") or {}).get("arguments") or ""
            if choice.get("finish_reason"):
                facts.finish = choice["finish_reason"]
    return facts


STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def expected_usage(usage: dict[str, Any]) -> tuple[int, int, int]:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    written = (usage.get("prompt_tokens_details") or {}).get("cache_write_tokens", 0)
    return usage["prompt_tokens"] - cached - written, usage["completion_tokens"], cached


def run(chunks: list[bytes], **kwargs: Any) -> tuple[bytes, ChatToMessagesStream]:
    translator = ChatToMessagesStream(model="requested-model", **kwargs)
    out = [translator.feed(chunk) for chunk in chunks]
    out.append(translator.finish())
    return b"".join(out), translator


def state(t: ChatToMessagesStream) -> tuple[Any, ...]:
    return (t.usage, t.error, t.complete, t.content_events, t.message_id)


def clone_at_boundary(t: ChatToMessagesStream) -> ChatToMessagesStream:
    """A translator in the same state as ``t``, which has just consumed a whole event."""
    assert t._framer.pending == 0
    twin = copy.copy(t)
    twin._framer = SSEFramer()
    twin._tool_blocks = dict(t._tool_blocks)  # the only state mutated in place
    return twin


# -- streams: whole ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_stream_reads_back_as_the_recorded_answer(path: Path) -> None:
    data = body_of(path)
    facts = chat_facts(data)
    out, translator = run([data])
    read = read_stream(out)
    if facts.error is not None:
        # The upstream's error ends the stream as an Anthropic error event: never a message_stop.
        assert read.error is not None and not read.stopped
        assert translator.error == facts.error and translator.complete
        assert read.error["message"] == facts.error["message"]
        assert read.error["type"] == "invalid_request_error"  # Groq's type, OpenRouter's code 400
    else:
        assert read.stopped and read.error is None and translator.error is None and translator.complete
    message = read.message
    assert message is not None, "no message_start"
    assert message.id.startswith("msg_")
    assert message.model == (facts.model or "requested-model")
    texts = [b.text for b in message.content if b.type == "text"]
    thinking = [b.thinking for b in message.content if b.type == "thinking"]
    tools = [b for b in message.content if b.type == "tool_use"]
    assert "".join(texts) == facts.text
    assert len(texts) <= 1 and len(thinking) <= 1  # one block per kind: no interleaving in these recordings
    assert "".join(thinking) == facts.reasoning
    assert [(t.id, t.name, t.input) for t in tools] == [
        (c["id"], c["name"], json.loads(c["arguments"] or "{}")) for _, c in sorted(facts.calls.items())
    ]
    if read.stopped:
        assert message.stop_reason == STOP[facts.finish or "stop"]
        assert message.stop_sequence is None
        if facts.usage is not None:
            fresh, output, cached = expected_usage(facts.usage)
            assert (message.usage.input_tokens, message.usage.output_tokens) == (fresh, output)
            assert message.usage.cache_read_input_tokens == cached
        else:
            assert message.usage.output_tokens == 0 and message.usage.input_tokens == 0
    if facts.usage is not None:
        assert translator.usage == Usage.from_openai(facts.usage)
    else:
        assert translator.usage is None
    # Everything but the end is emitted as it arrives: the events before [DONE] carry all the content.
    done_at = data.find(b"data: [DONE]")
    if done_at > 0 and facts.error is None:
        early = ChatToMessagesStream(model="requested-model").feed(data[:done_at])
        assert b"message_stop" not in early and early.count(b"content_block_delta") == out.count(b"content_block_delta")


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_output_is_framed_as_anthropic_sends_it(path: Path) -> None:
    out, _ = run([body_of(path)])
    events, rest = reference_events(out)
    assert rest == b""
    for raw in events:
        name, data, blank = raw.split(b"\n", 2)
        assert name.startswith(b"event: ") and data.startswith(b"data: ") and blank == b"\n"
        payload = orjson.loads(data[6:])
        assert data[6:] == orjson.dumps(payload)  # compact JSON, one line
        assert name[7:].decode() == payload["type"]


# -- streams: splits -----------------------------------------------------------------------------------


def check_every_split(data: bytes) -> None:
    """Every position inside every event, as a split point, gives the same output and the same facts.

    Checked from the translator's state before each event (a copy of it: its framer is empty at an
    event boundary), the chain of states reproducing the unsplit run.
    """
    whole_out, whole = run([data])
    events, rest = reference_events(data)
    base = ChatToMessagesStream(model="requested-model")
    outputs: list[bytes] = []
    for event in [*events, rest] if rest else events:
        reference = clone_at_boundary(base)
        ref_out = reference.feed(event)
        for cut in range(1, len(event)):
            t = clone_at_boundary(base)
            assert t.feed(event[:cut]) + t.feed(event[cut:]) == ref_out, cut
            assert state(t) == state(reference), cut
        outputs.append(ref_out)
        base = reference
    outputs.append(base.finish())
    assert b"".join(outputs) == whole_out
    assert state(base) == state(whole)


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_every_split_position(path: Path) -> None:
    data = body_of(path)
    check_every_split(data)
    if len(data) <= WHOLE_RUN_LIMIT:
        whole_out, whole = run([data])
        for cut in range(1, len(data)):
            out, t = run([data[:cut], data[cut:]])
            assert out == whole_out and state(t) == state(whole), cut


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_one_byte_reads(path: Path) -> None:
    data = body_of(path)
    out, t = run([data[i : i + 1] for i in range(len(data))])
    whole_out, whole = run([data])
    assert out == whole_out and state(t) == state(whole)


@pytest.mark.parametrize("path", STREAM_FIXTURES)
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_random_multi_way_splits(path: Path, draw: st.DataObject) -> None:
    data = body_of(path)
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40), label="cuts")
    out, t = run(split_at(data, cuts))
    whole_out, whole = run([data])
    assert out == whole_out and state(t) == state(whole)


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_crlf_and_cr_framed_streams_translate_the_same(path: Path, newline: bytes) -> None:
    lf = body_of(path)
    assert b"\r" not in lf
    data = lf.replace(b"\n", newline)
    mid = len(data) // 2
    assert run([data[:mid], data[mid:]])[0] == run([lf])[0]


# -- streams: truncation -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_a_stream_cut_before_its_end_ends_with_an_error_event(path: Path) -> None:
    """Cut at every event boundary (and inside the event) before the finish reason: the client gets
    all that arrived, then an error event; never a message_stop."""
    data = body_of(path)
    facts = chat_facts(data)
    events, _ = reference_events(data)
    positions = [0]
    for event in events:
        if b'"finish_reason":"' in event or b"[DONE]" in event or b"event: error" in event \
                or b'"error":{' in event:
            break
        positions.append(positions[-1] + len(event))
    assert len(positions) > 1 or facts.error is not None
    if len(positions) > 40:  # long recordings: 40 boundaries spread over the stream, the first and last kept
        step = len(positions) / 40
        positions = sorted({positions[int(i * step)] for i in range(40)} | {positions[-1]})
    for end in positions:
        for cut in {end, end + 7} if end + 7 < len(data) else {end}:
            out, t = run([data[:cut]])
            read = read_stream(out)
            assert not read.stopped and not t.complete, cut
            assert read.error is not None and read.error["type"] == "api_error", cut
            assert "incomplete" in read.error["message"]
            assert t.error is not None and t.error["code"] == "stream_truncated"
            assert out.endswith(b"\n\n") and out.rindex(b"event: error") == out.rindex(b"event: ")


@pytest.mark.parametrize("path", STREAM_FIXTURES)
def test_a_stream_with_a_finish_reason_but_no_done_still_ends_normally(path: Path) -> None:
    data = body_of(path)
    facts = chat_facts(data)
    if facts.finish is None or facts.error is not None:
        pytest.skip("no finish reason in this recording")
    done_at = data.find(b"data: [DONE]")
    if done_at < 0:
        pytest.skip("no [DONE] in this recording")
    out, t = run([data[:done_at]])
    read = read_stream(out)
    assert read.stopped and t.complete and t.error is None
    assert read.message.stop_reason == STOP[facts.finish]


def test_nothing_at_all_is_a_truncation() -> None:
    out, t = run([b""])
    read = read_stream(out)
    assert read.error is not None and read.message is None and not t.complete


def test_done_alone_is_an_empty_message() -> None:
    out, _ = run([b"data: [DONE]\n\n"])
    read = read_stream(out)
    assert read.stopped and read.message.content == [] and read.message.stop_reason == "end_turn"
    assert read.message.model == "requested-model"


# -- streams: synthetic cases --------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    payload: dict[str, Any] = {"id": "chatcmpl-1", "model": "up-model",
                               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **extra}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def test_blocks_switch_with_kind_and_tool_index() -> None:
    data = b"".join([
        chunk({"role": "assistant", "reasoning_content": "Let me think."}),
        chunk({"reasoning_content": " Done."}),
        chunk({"content": "Calling two tools."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "g", "arguments": '{"y": [1, 2]}'}}]}),
        chunk(finish="tool_calls"),
        b'data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,'
        b'"prompt_tokens_details":{"cached_tokens":60},"completion_tokens_details":{"reasoning_tokens":5}}}\n\n',
        DONE,
    ])
    out, t = run([data])
    read = read_stream(out)
    m = read.message
    assert [b.type for b in m.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert m.content[0].thinking == "Let me think. Done." and m.content[0].signature == ""
    assert m.content[1].text == "Calling two tools."
    assert (m.content[2].id, m.content[2].name, m.content[2].input) == ("call_a", "f", {"x": 1})
    assert (m.content[3].id, m.content[3].name, m.content[3].input) == ("call_b", "g", {"y": [1, 2]})
    assert m.stop_reason == "tool_use"
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.output_tokens) == (40, 60, 20)
    assert t.usage == Usage(input_tokens=100, output_tokens=20, cached_tokens=60, reasoning_tokens=5)
    # The argument fragments pass through as they came, one input_json_delta each.
    partials = [e.delta.partial_json for e in read.events
                if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert partials == ['{"x":', " 1}", '{"y": [1, 2]}']
    assert m.id == "msg_chatcmpl-1" and m.model == "up-model"


def test_text_after_a_tool_call_opens_a_new_block() -> None:
    data = chunk({"content": "a"}) + chunk({"tool_calls": [{"index": 0, "id": "c", "function": {
        "name": "f", "arguments": "{}"}}]}) + chunk({"content": "b"}) + chunk(finish="stop") + DONE
    m = read_stream(run([data])[0]).message
    assert [b.type for b in m.content] == ["text", "tool_use", "text"]
    assert m.stop_reason == "tool_use"  # "stop" after tool calls (Gemini's OpenAI endpoint) is a tool turn


def test_stop_sequence_when_the_provider_names_it() -> None:
    data = chunk({"content": "def pelican():"}) + chunk(finish="stop", stop_reason="```") + DONE
    m = read_stream(run([data], stop_sequences=["```"])[0]).message
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "```")
    # Without the request's stop sequences, or with a different match, a plain end_turn.
    m = read_stream(run([data])[0]).message
    assert (m.stop_reason, m.stop_sequence) == ("end_turn", None)
    sglang = chunk({"content": "x"}) + chunk(finish="stop", matched_stop="STOP") + DONE
    m = read_stream(run([sglang], stop_sequences=["STOP", "END"])[0]).message
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", "STOP")


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_tokens"), ("content_filter", "refusal"),
                                                ("stop", "end_turn"), ("something_new", "end_turn")])
def test_finish_reasons(finish: str, reason: str) -> None:
    m = read_stream(run([chunk({"content": "x"}) + chunk(finish=finish) + DONE])[0]).message
    assert m.stop_reason == reason


def test_openrouter_reasoning_signature_becomes_a_signature_delta() -> None:
    data = chunk({"reasoning": "hmm", "reasoning_details": [{"type": "reasoning.text", "text": "hmm"}]}) \
        + chunk({"reasoning": None, "reasoning_details": [{"type": "reasoning.text", "signature": "c2ln"}]}) \
        + chunk({"content": "4"}) + chunk(finish="stop") + DONE
    m = read_stream(run([data])[0]).message
    assert (m.content[0].thinking, m.content[0].signature) == ("hmm", "c2ln")
    fixture = fixture_file("openrouter/chat-completions/stream-reasoning-details-claude-sonnet45.response.sse")
    m = read_stream(run([fixture.read_bytes()])[0]).message
    assert m.content[0].type == "thinking" and m.content[0].signature.startswith("Et0BCkgI")


def test_comments_become_pings_and_nothing_else() -> None:
    out, _ = run([b": OPENROUTER PROCESSING\n\n" + chunk({"content": "x"}) + b": keep\n\n" + chunk(finish="stop")
                  + DONE])
    assert out.count(b"event: ping\n") == 2
    assert read_stream(out).stopped


@pytest.mark.parametrize("raw", [
    b'event: error\ndata: {"error":{"message":"overloaded","type":"overloaded_error"}}\n\n',
    b'data: {"error":{"message":"overloaded","code":529}}\n\n',
    b"event: error\ndata: overloaded\n\n",
    b'data: {"error":"overloaded"}\n\n',
])
def test_error_shapes_become_one_error_event(raw: bytes) -> None:
    out, t = run([chunk({"content": "partial"}) + raw + chunk({"content": "ignored"}) + DONE])
    read = read_stream(out)
    assert read.error is not None and "overloaded" in read.error["message"] and not read.stopped
    assert read.message.content[0].text == "partial"
    assert b"ignored" not in out
    assert t.complete and t.error is not None
    if b"529" in raw or b"overloaded_error" in raw:
        assert read.error["type"] == "overloaded_error"


def test_anthropic_error_types() -> None:
    assert anthropic_error_of({"message": "m", "type": "server_error"})["error"]["type"] == "api_error"
    assert anthropic_error_of({"message": "m", "code": 429})["error"]["type"] == "rate_limit_error"
    assert anthropic_error_of({"message": "m", "type": "weird", "status_code": 401})["error"] == {
        "type": "authentication_error", "message": "m"}
    assert anthropic_error_of({"message": "m", "code": "tool_use_failed"})["error"]["type"] == "api_error"
    assert anthropic_error_of("boom")["error"] == {"type": "api_error", "message": "boom"}


def test_usage_before_the_first_content_goes_into_message_start() -> None:
    data = (b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],'
            b'"usage":{"prompt_tokens":7,"completion_tokens":1}}\n\n' + chunk(finish="stop") + DONE)
    read = read_stream(run([data])[0])
    assert read.events[0].message.usage.input_tokens == 7
    assert read.message.usage.output_tokens == 1


def test_nothing_is_emitted_after_the_end() -> None:
    t = ChatToMessagesStream()
    assert b"message_stop" in t.feed(chunk({"content": "x"}) + chunk(finish="stop") + DONE)
    assert t.feed(chunk({"content": "late"})) == b""
    assert t.finish() == b""


def test_message_to_events_round_trips_through_the_sdk() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "thinking", "thinking": "t", "signature": ""}, {"type": "text", "text": "hello"},
                    {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": [1, {"b": None}]}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 9, "cache_read_input_tokens": 1,
                  "cache_creation_input_tokens": 0},
    }
    read = read_stream(message_to_events(message))
    assert read.stopped
    assert read.message.model_dump(exclude_none=True) == Message.model_validate(message).model_dump(exclude_none=True)


# -- whole answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", NONSTREAM_FIXTURES)
def test_whole_answers(path: Path) -> None:
    chat = json.loads(path.read_bytes())
    result = chat_to_message(chat, model="requested")
    message = Message.model_validate(result)  # the SDK's own model accepts it
    expected = chat["choices"][0]["message"]
    kinds = [b.type for b in message.content]
    reasoning = expected.get("reasoning_content") or expected.get("reasoning")
    assert ("thinking" in kinds) == bool(reasoning)
    if reasoning:
        assert message.content[0].thinking == reasoning and kinds[0] == "thinking"
    texts = [b.text for b in message.content if b.type == "text"]
    assert texts == ([expected["content"]] if expected.get("content") else [])
    tools = [b for b in message.content if b.type == "tool_use"]
    assert [(t.id, t.name, t.input) for t in tools] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in expected.get("tool_calls") or []
    ]
    assert message.stop_reason == STOP[chat["choices"][0]["finish_reason"]]
    assert message.id == "msg_" + chat["id"] and message.model == chat["model"]
    fresh, output, cached = expected_usage(chat["usage"])
    assert (message.usage.input_tokens, message.usage.output_tokens) == (fresh, output)
    assert message.usage.cache_read_input_tokens == cached
    assert message.usage.cache_creation_input_tokens == 0


def test_whole_answer_edge_cases() -> None:
    refused = {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
                                                              "refusal": "I can't help with that."},
                                       "finish_reason": "stop"}]}
    m = Message.model_validate(chat_to_message(refused, model="req"))
    assert m.stop_reason == "refusal" and m.content[0].text == "I can't help with that." and m.model == "req"
    assert m.usage.input_tokens == 0 and m.usage.output_tokens == 0
    stopped = {"id": "msg_abc", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop",
                                             "stop_reason": "END"}]}
    m = Message.model_validate(chat_to_message(stopped, stop_sequences=["END"]))
    assert (m.id, m.stop_reason, m.stop_sequence) == ("msg_abc", "stop_sequence", "END")
    filtered = {"choices": [{"message": {"content": "part"}, "finish_reason": "content_filter"}]}
    m = Message.model_validate(chat_to_message(filtered))
    assert m.stop_reason == "refusal" and m.id.startswith("msg_")
    openrouter_cache = {"choices": [{"message": {"content": "x"}, "finish_reason": "length"}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 5,
                                  "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 50}}}
    m = Message.model_validate(chat_to_message(openrouter_cache))
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.cache_creation_input_tokens) == (20, 30, 50)
    assert m.stop_reason == "max_tokens"


def test_tool_input_parsing() -> None:
    assert tool_input('{"a": 1}') == {"a": 1}
    assert tool_input("") == {} and tool_input(None) == {}
    assert tool_input('{"a": 1') == {"_arguments": '{"a": 1'}  # cut off mid-call: kept, not lost
    assert tool_input("[1]") == {"_arguments": "[1]"}


# -- requests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ANTHROPIC_REQUESTS)
def test_recorded_anthropic_requests_translate(path: Path) -> None:
    body = json.loads(path.read_bytes())
    if not all(isinstance(m, dict) for m in body["messages"]):
        with pytest.raises(InvalidRequestError):
            messages_to_chat(body)
        return
    chat = messages_to_chat(body)
    assert chat["model"] == body["model"] and chat["max_tokens"] == body["max_tokens"]
    messages = chat["messages"]
    if body.get("system"):
        assert messages[0] == {"role": "system", "content": body["system"]}
        messages = messages[1:]
    for key in ("temperature", "top_p"):
        assert chat.get(key) == body.get(key)
    assert chat.get("stop") == body.get("stop_sequences")
    assert "top_k" not in chat
    if body.get("stream"):
        assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    else:
        assert "stream" not in chat and "stream_options" not in chat
    if (body.get("thinking") or {}).get("type") == "enabled":
        assert chat["reasoning_effort"] == reasoning_effort_for_budget(body["thinking"]["budget_tokens"]) == "low"
    assert [t["function"]["name"] for t in chat.get("tools", [])] == [t["name"] for t in body.get("tools", [])]
    for tool, original in zip(chat.get("tools", []), body.get("tools", []), strict=True):
        assert tool["type"] == "function" and tool["function"]["parameters"] == original["input_schema"]
    if body.get("tool_choice") == {"type": "any"}:
        assert chat["tool_choice"] == "required"
    # Every tool_use is an assistant tool call whose JSON arguments decode to its input, and every
    # tool_result a tool message right after it, answering that call.
    uses = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
            if b["type"] == "tool_use"]
    calls = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (u["id"], u["name"], u["input"]) for u in uses
    ]
    results = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b["type"] == "tool_result"]
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        (r["tool_use_id"], r["content"]) for r in results
    ]
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            assert messages[i - 1]["role"] == "tool" or messages[i - 1].get("tool_calls")


def test_full_request_mapping() -> None:
    body = {
        "model": "up/m", "max_tokens": 1000, "temperature": 0.3, "top_p": 0.9, "top_k": 40, "stream": True,
        "stop_sequences": ["END"], "metadata": {"user_id": "user-7"},
        "thinking": {"type": "enabled", "budget_tokens": 10_000},
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Answer in English."}],
        "tools": [{"name": "read", "description": "Read a file", "input_schema": {"type": "object"},
                   "cache_control": {"type": "ephemeral"}}, {"name": "ls", "input_schema": {}, "strict": True}],
        "tool_choice": {"type": "tool", "name": "read", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
                {"type": "document", "title": "a.pdf",
                 "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.txt"}},
                {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
                ]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such dir", "is_error": True},
                {"type": "text", "text": "Now summarise.", "cache_control": {"type": "ephemeral"}},
            ]},
            {"role": "assistant", "content": "Prefill"},
        ],
    }
    chat = messages_to_chat(body)
    assert chat == {
        "model": "up/m", "max_tokens": 1000, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "user": "user-7",
        "reasoning_effort": "medium", "stream": True, "stream_options": {"include_usage": True},
        "tools": [
            {"type": "function", "function": {"name": "read", "parameters": {"type": "object"},
                                              "description": "Read a file"}},
            {"type": "function", "function": {"name": "ls", "parameters": {"type": "object"}, "strict": True}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "read"}},
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in English."},
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "doc text"},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBER", "filename": "a.pdf"}},
            ]},
            {"role": "assistant", "content": "Reading.", "reasoning_content": "I should read it.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "read", "arguments": '{"path":"a.txt"}'}},
                {"id": "toolu_2", "type": "function", "function": {"name": "ls", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "line 1\nline 2"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such dir"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                {"type": "text", "text": "Now summarise."},
            ]},
            {"role": "assistant", "content": "Prefill"},
        ],
    }
    # The client's own body is left as it was (the route still needs it).
    assert body["top_k"] == 40 and body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_request_options() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert messages_to_chat(base) == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert messages_to_chat({**base, "stream": True}, include_usage=False)["stream"] is True
    assert "stream_options" not in messages_to_chat({**base, "stream": True}, include_usage=False)
    for choice, expected in [({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none")]:
        assert messages_to_chat({**base, "tool_choice": choice})["tool_choice"] == expected
    # disable_parallel_tool_use without tools would be refused by OpenAI: not sent.
    assert "parallel_tool_calls" not in messages_to_chat({**base, "tool_choice": {
        "type": "auto", "disable_parallel_tool_use": True}})
    assert "reasoning_effort" not in messages_to_chat({**base, "thinking": {"type": "disabled"}})
    assert messages_to_chat({**base, "output_config": {"effort": "high"}})["reasoning_effort"] == "high"
    assert messages_to_chat({**base, "system": ""})["messages"] == base["messages"]
    only_results = {**base, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1"}]}]}
    assert messages_to_chat(only_results)["messages"] == [{"role": "tool", "tool_call_id": "t1", "content": ""}]
    tool_only = {**base, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}
    assert messages_to_chat(tool_only)["messages"][0]["content"] is None
    empty = {**base, "messages": [{"role": "assistant", "content": []}]}
    assert messages_to_chat(empty)["messages"] == [{"role": "assistant", "content": ""}]


@pytest.mark.parametrize(("budget", "effort"), [(1024, "low"), (4000, "low"), (7999, "low"), (8000, "medium"),
                                                (10_000, "medium"), (23_999, "medium"), (24_000, "high"),
                                                (31_999, "high")])
def test_thinking_budget_to_reasoning_effort(budget: int, effort: str) -> None:
    assert reasoning_effort_for_budget(budget) == effort


@pytest.mark.parametrize(("change", "param"), [
    ({"messages": "hi"}, "messages"),
    ({"messages": ["hi"]}, "messages.0"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result", "content": []}]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "u"}}]}]},
     "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages.0.content.0.source"),
    ({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s"}]}]},
     "messages.0.content.0"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
    ({"tools": [{"description": "no name"}]}, "tools.0"),
    ({"system": 5}, "system"),
])
def test_untranslatable_requests_are_refused_not_truncated(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(InvalidRequestError) as info:
        messages_to_chat(body)
    assert info.value.param == param and info.value.status == 400


def test_token_estimate() -> None:
    text = "x" * 400
    assert estimate_input_tokens({"messages": [{"role": "user", "content": text}]}) == 100
    assert estimate_input_tokens({"system": "y" * 40, "messages": [{"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "z" * 10_000}},
    ]}]}) == 110 + MEDIA_TOKENS
    with_tools = {"messages": [{"role": "user", "content": "hi"}],
                  "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    assert estimate_input_tokens(with_tools) > estimate_input_tokens({"messages": with_tools["messages"]})
    assert estimate_input_tokens({"messages": []}) == 1
    round_trip = {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"k": "v" * 100}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "r" * 200}]},
    ]}
    assert estimate_input_tokens(round_trip) >= 75


# -- thought signatures in tool ids ----------------------------------------------------------------------

#: Gemini 3 Pro's recorded signature (standard base64: ``+``, ``/`` and ``=`` padding).
GEMINI3_CALL = "gemini/stream-generate-content/sse-function-call-thought-signature-gemini3-pro.response.sse"
SIGNATURES = [
    pytest.param("EpwICpkIAXLI2nx+lU6g/sWZ==", id="standard-base64-with-+/="),
    pytest.param("CrUEAdHt+9/w=", id="one-pad"),
    pytest.param("QUJD", id="base64-already-url-safe"),
    pytest.param("ab-_cd", id="url-safe-alphabet-unpadded"),
    pytest.param("ab-_cd==", id="url-safe-alphabet-padded"),
    pytest.param("skip_thought_signature_validator", id="not-base64"),
    pytest.param("a", id="one-char"),
    pytest.param("a+b", id="plus-unpadded"),
    pytest.param("===", id="padding-only"),
    pytest.param("sig with spaces ~ and ünïcode", id="anything"),
]


def extra(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


@pytest.mark.parametrize("signature", SIGNATURES)
def test_signed_tool_ids_round_trip_exactly(signature: str) -> None:
    signed = signed_tool_id("call_abc_0", signature)
    assert split_tool_id(signed) == ("call_abc_0", signature)
    call_id, separator, packed = signed.partition(TOOL_ID_SEPARATOR)
    assert (call_id, separator) == ("call_abc_0", "~")
    assert re.fullmatch(r"~?[A-Za-z0-9_-]+", packed), signed  # url-safe, no padding; "~~": wrapped


def test_signed_tool_id_form() -> None:
    # A standard base64 signature (Gemini's) is only re-spelt: +/ -> -_, no padding.
    assert signed_tool_id("call_1", "ab+/cd==") == "call_1~ab-_cd"
    assert split_tool_id("call_1~ab-_cd") == ("call_1", "ab+/cd==")
    assert signed_tool_id("toolu_01", "QUJD") == "toolu_01~QUJD"  # already url-safe: as is
    # Anything that would not come back exactly so is wrapped (url-safe base64 of its UTF-8) behind "~~".
    assert signed_tool_id("call_1", "ab-_cd") == "call_1~~YWItX2Nk"
    assert split_tool_id("call_1~~YWItX2Nk") == ("call_1", "ab-_cd")


def test_ids_without_a_signature_pass_unchanged() -> None:
    for call_id in ("call_abc", "toolu_01A09q90qw90lq917835lq9", "functions.get_weather:0", "x", ""):
        assert signed_tool_id(call_id, None) == call_id
        assert signed_tool_id(call_id, "") == call_id
        assert split_tool_id(call_id) == (call_id, None)
    # A call id that holds the separator cannot carry a signature: it stays as it is.
    assert signed_tool_id("odd~id", "QUJD") == "odd~id"
    # Ids with a "~" that signed_tool_id cannot have made are not taken apart.
    for odd in ("~QUJD", "a~", "a~~", "a~b.c", "a~QUJDR", "a~~!!", "a~~_w", "a~b~c", "a~~~QUJD"):
        assert split_tool_id(odd) == (odd, None), odd


def test_recorded_gemini3_signature_round_trips() -> None:
    payload = orjson.loads(data_of(reference_events(fixture_file(GEMINI3_CALL).read_bytes())[0][0]) or b"")
    signature = payload["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    assert {"+", "/", "="} <= set(signature)
    signed = signed_tool_id("call_QUVVadTSNJ6_qtsPvN7J8Q0_0", signature)
    assert re.fullmatch(r"call_QUVVadTSNJ6_qtsPvN7J8Q0_0~[A-Za-z0-9_-]+", signed)
    assert len(signed) < len("call_QUVVadTSNJ6_qtsPvN7J8Q0_0~") + len(signature)
    assert split_tool_id(signed) == ("call_QUVVadTSNJ6_qtsPvN7J8Q0_0", signature)


def test_whole_answer_puts_the_signature_in_the_tool_use_id() -> None:
    chat = {"id": "chatcmpl-r", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_r_0", "type": "function", "function": {"name": "f", "arguments": '{"q": 1}'},
             "extra_content": extra("ab+/cd==")},
            {"id": "call_r_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
        ]}}]}
    m = Message.model_validate(chat_to_message(chat))
    assert [(b.id, b.name, b.input) for b in m.content] == [("call_r_0~ab-_cd", "f", {"q": 1}), ("call_r_1", "g", {})]
    assert m.stop_reason == "tool_use"
    # And as events, for a streamed request answered whole.
    read = read_stream(message_to_events(chat_to_message(chat)))
    assert [b.id for b in read.message.content] == ["call_r_0~ab-_cd", "call_r_1"]


def test_stream_puts_the_signature_in_content_block_start() -> None:
    data = b"".join([
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [{"index": 0, "id": "call_r_0", "type": "function",
                               "function": {"name": "f", "arguments": '{"q":'}, "extra_content": extra("ab+/cd==")}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_r_1", "type": "function",
                               "function": {"name": "g", "arguments": "{}"}}]}),
        chunk(finish="tool_calls"),
        DONE,
    ])
    read = read_stream(run([data])[0])
    starts = [e.content_block.id for e in read.events if e.type == "content_block_start"]
    assert starts == ["call_r_0~ab-_cd", "call_r_1"]
    assert [(b.id, b.input) for b in read.message.content] == [("call_r_0~ab-_cd", {"q": 1}), ("call_r_1", {})]


def test_request_takes_the_signature_out_of_the_ids() -> None:
    body = {"model": "gem/gemini-3-pro-preview", "max_tokens": 100, "messages": [
        {"role": "user", "content": "Call them."},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_r_0~ab-_cd", "name": "f", "input": {"q": 1}},
            {"type": "tool_use", "id": "call_r_1", "name": "g", "input": {}},
            {"type": "tool_use", "id": "call_r_2~~YWItX2Nk", "name": "h", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_r_0~ab-_cd", "content": "one"},
            {"type": "tool_result", "tool_use_id": "call_r_1", "content": "two"},
            {"type": "tool_result", "tool_use_id": "call_r_2~~YWItX2Nk", "content": "three"},
        ]},
    ]}
    assert messages_to_chat(body)["messages"] == [
        {"role": "user", "content": "Call them."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_r_0", "type": "function", "function": {"name": "f", "arguments": '{"q":1}'},
             "extra_content": extra("ab+/cd==")},
            {"id": "call_r_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            {"id": "call_r_2", "type": "function", "function": {"name": "h", "arguments": "{}"},
             "extra_content": extra("ab-_cd")},
        ]},
        {"role": "tool", "tool_call_id": "call_r_0", "content": "one"},
        {"role": "tool", "tool_call_id": "call_r_1", "content": "two"},
        {"role": "tool", "tool_call_id": "call_r_2", "content": "three"},
    ]


@pytest.mark.parametrize("strip", [False, True], ids=["direct", "through-ChatStreamTap-strip"])
def test_gemini3_stream_signature_reaches_the_tool_use_and_goes_back(strip: bool) -> None:
    """Gemini's recorded stream -> GeminiToChatStream (the provider's TranslatedStream) -> [ChatStreamTap in strip
    mode, as on the chat route] -> ChatToMessagesStream: the streamed tool-call delta carries ``extra_content``,
    and the tool_use id carries the signature; sent back, the function call gets it again, byte for byte."""
    raw = fixture_file(GEMINI3_CALL).read_bytes()
    events, _ = reference_events(raw)
    signature = orjson.loads(data_of(events[0]) or b"")["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    gemini = GeminiToChatStream(model="gemini-3-pro-preview", include_usage=True, created=1, fallback_id="f")
    chat = b"".join(gemini.feed(raw[i:i + 7]) for i in range(0, len(raw), 7)) + gemini.finish()
    if strip:
        tap = ChatStreamTap(strip_usage=True)
        chat = tap.feed(chat) + tap.finish()
        assert tap.usage is not None and tap.complete
    deltas = [c for raw_event in reference_events(chat)[0] if (d := data_of(raw_event)) and d != b"[DONE]"
              for choice in orjson.loads(d).get("choices", []) for c in choice["delta"].get("tool_calls") or []]
    (delta,) = deltas
    assert delta["extra_content"] == extra(signature)
    out, _ = run([chat[i:i + 5] for i in range(0, len(chat), 5)])
    read = read_stream(out)
    (use,) = read.message.content
    assert use.id == signed_tool_id(delta["id"], signature) and use.input == {} and use.name == "get_country"
    assert read.message.stop_reason == "tool_use"

    history = {"model": "gem/gemini-3-pro-preview", "max_tokens": 100, "messages": [
        {"role": "user", "content": "What is the capital of the user country? Call the tool"},
        {"role": "assistant", "content": [b.model_dump() for b in read.message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"r": 1}'}]},
    ]}
    contents = chat_request_to_gemini(messages_to_chat(history))["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_country", "args": {}, "id": delta["id"]},
                                     "thoughtSignature": signature}]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "get_country", "response": {"r": 1},
                                                          "id": delta["id"]}}]
