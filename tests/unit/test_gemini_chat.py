"""The Gemini translations on every recorded Gemini fixture: requests, answers, errors, embeddings, and the
stream state machine split at every byte position and at random.

What the recordings hold is read here independently of the package (plain ``json``), and what the package
produces for clients is parsed with the ``openai`` SDK's own models.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.core.types import Usage
from gomodel_proxy.translators.gemini_chat import (
    GeminiToChatStream,
    chat_request_to_gemini,
    clean_schema,
    embeddings_request_to_gemini,
    gemini_embeddings_to_openai,
    gemini_error_to_openai,
    gemini_response_to_chat,
)
from tests.support.fixtures import Fixture, fixture_names, load_fixture, require_fixtures
from tests.support.mock_gemini import gemini_stream_body, gemini_stream_payloads

from ._support import data_of, reference_events, split_at

STREAMS = fixture_names("gemini/stream-generate-content")
NONSTREAM = fixture_names("gemini/generate-content", "nonstream-")
ERRORS = [*fixture_names("gemini/generate-content", "error-"), *fixture_names("gemini/embeddings", "error-")]
EMBEDDINGS = fixture_names("gemini/embeddings", "batch-")
#: What each recorded error must become for an OpenAI client.
ERROR_STATUS = {
    "error-400-api-key-invalid": (401, "authentication_error", "invalid_api_key"),
    "error-400-invalid-argument-vertex": (400, "invalid_request_error", "invalid_argument"),
    "error-404-not-found": (404, "invalid_request_error", "model_not_found"),
    "error-404-not-found-batch-embed": (404, "invalid_request_error", "model_not_found"),
    "error-429-resource-exhausted-dsq": (429, "rate_limit_error", "resource_exhausted"),
    "error-429-resource-exhausted-no-details": (429, "rate_limit_error", "resource_exhausted"),
    "error-429-resource-exhausted-retry-info": (429, "rate_limit_error", "resource_exhausted"),
    "error-503-unavailable-overloaded": (503, "server_error", "unavailable"),
}
#: Streams up to this size are also re-fed whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 4_000


def test_fixtures_are_collected() -> None:
    require_fixtures()
    assert len(STREAMS) == 10 and len(NONSTREAM) == 6 and len(EMBEDDINGS) == 2
    assert {e.rsplit("/", 1)[1] for e in ERRORS} == set(ERROR_STATUS)


# -- what a recording says, read without the package ---------------------------------------------------------


def expected_of(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Choice 0's text, reasoning, tool calls, finish, and the last usage of a list of Gemini responses."""
    text, reasoning, calls, text_signature, finish, usage = "", "", [], None, None, None
    for payload in payloads:
        usage = payload.get("usageMetadata", usage)
        for candidate in payload.get("candidates", []):
            for part in candidate.get("content", {}).get("parts", []):
                if "functionCall" in part:
                    calls.append((part["functionCall"]["name"], part["functionCall"].get("args", {}),
                                  part.get("thoughtSignature")))
                    continue
                if part.get("thought"):
                    reasoning += part["text"]
                elif "text" in part:
                    text += part["text"]
                if "thoughtSignature" in part:
                    text_signature = part["thoughtSignature"]
            finish = candidate.get("finishReason", finish)
    numbers = None
    if usage is not None:
        thoughts = usage.get("thoughtsTokenCount", 0)
        numbers = (usage.get("promptTokenCount", 0), usage.get("candidatesTokenCount", 0) + thoughts,
                   usage.get("cachedContentTokenCount", 0), thoughts)
    expected_finish = {"STOP": "tool_calls" if calls else "stop", "MAX_TOKENS": "length"}[finish] if finish else None
    return {"text": text, "reasoning": reasoning, "calls": calls, "text_signature": text_signature,
            "finish": expected_finish, "usage": numbers}


def usage_tuple(usage: Any) -> tuple[int, int, int, int]:
    return (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens,
            usage.completion_tokens_details.reasoning_tokens)


def signature_of(obj: Any) -> str | None:
    extra = (obj.model_extra or {}).get("extra_content") if hasattr(obj, "model_extra") else obj.get("extra_content")
    return extra["google"]["thought_signature"] if extra else None


# -- non-stream answers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NONSTREAM)
def test_nonstream_answer_matches_the_recording(name: str) -> None:
    fx = load_fixture(name)
    payload = fx.json
    expected = expected_of([payload])
    out = gemini_response_to_chat(payload, model="asked-model", created=123, fallback_id="unused")
    assert gemini_response_to_chat(payload, model="asked-model", created=123, fallback_id="other") == out
    completion = ChatCompletion.model_validate(out)  # the SDK's own model of the answer
    assert completion.id == f"chatcmpl-{payload['responseId']}"
    assert completion.model == payload["modelVersion"] and completion.created == 123
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == (expected["text"] if any(
        "text" in p and not p.get("thought") for p in payload["candidates"][0]["content"]["parts"]) else None)
    assert (choice.message.model_extra or {}).get("reasoning_content", "") == expected["reasoning"]
    calls = [c for c in choice.message.tool_calls or [] if c.type == "function"]
    assert [(c.function.name, json.loads(c.function.arguments), signature_of(c)) for c in calls] == expected["calls"]
    for k, call in enumerate(calls):
        assert call.id == f"call_{payload['responseId']}_{k}"
        assert call.function.arguments == json.dumps(expected["calls"][k][1], separators=(",", ":"),
                                                     ensure_ascii=False)  # compact JSON
    assert signature_of(choice.message) == expected["text_signature"]
    assert choice.finish_reason == expected["finish"]
    assert completion.usage is not None
    assert usage_tuple(completion.usage) == expected["usage"]
    assert completion.usage.total_tokens == payload["usageMetadata"]["totalTokenCount"]


def test_thought_summary_answer_has_reasoning_and_text_apart() -> None:
    payload = load_fixture("gemini/generate-content/nonstream-thought-summary-gemini3-pro").json
    out = gemini_response_to_chat(payload, model="m", created=0, fallback_id="x")
    message = out["choices"][0]["message"]
    assert message["reasoning_content"].startswith("**A Safe Street-Crossing Guide")
    assert message["content"].startswith("Crossing the street safely")
    assert "**A Safe Street-Crossing Guide" not in message["content"]
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1001


@pytest.mark.parametrize(
    ("reason", "tools", "expected"),
    [("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
     ("MAX_TOKENS", True, "length"), ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
     ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
     ("SPII", False, "content_filter"), ("OTHER", False, "stop"), ("MALFORMED_FUNCTION_CALL", False, "stop"),
     ("FINISH_REASON_UNSPECIFIED", False, "stop")],
)
def test_finish_reason_mapping(reason: str, tools: bool, expected: str) -> None:
    parts: list[dict[str, Any]] = [{"text": "x"}]
    if tools:
        parts.append({"functionCall": {"name": "f", "args": {"a": 1}}})
    payload = {"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": reason}]}
    out = gemini_response_to_chat(payload, model="m", created=0, fallback_id="fb")
    assert out["choices"][0]["finish_reason"] == expected
    assert out["id"] == "chatcmpl-fb" and out["model"] == "m"


def test_usage_counts_thoughts_as_output_and_cache_as_cached() -> None:
    payload = {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 7, "thoughtsTokenCount": 30,
                                 "cachedContentTokenCount": 64, "toolUsePromptTokenCount": 5,
                                 "totalTokenCount": 142}}
    usage = gemini_response_to_chat(payload, model="m", created=0, fallback_id="x")["usage"]
    assert usage == {"prompt_tokens": 105, "completion_tokens": 37, "total_tokens": 142,
                     "prompt_tokens_details": {"cached_tokens": 64},
                     "completion_tokens_details": {"reasoning_tokens": 30}}


def test_blocked_prompt_is_a_content_filter_finish() -> None:
    payload = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 9}}
    out = gemini_response_to_chat(payload, model="m", created=0, fallback_id="x")
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                               "finish_reason": "content_filter"}]
    ChatCompletion.model_validate(out)


def test_several_candidates_become_several_choices_with_distinct_call_ids() -> None:
    call = {"functionCall": {"name": "f", "args": {}}}
    payload = {"responseId": "R", "candidates": [
        {"index": 0, "content": {"parts": [call, call]}, "finishReason": "STOP"},
        {"index": 1, "content": {"parts": [call]}, "finishReason": "STOP"},
    ]}
    out = gemini_response_to_chat(payload, model="m", created=0, fallback_id="x")
    ids = [c["id"] for ch in out["choices"] for c in ch["message"]["tool_calls"]]
    assert ids == ["call_R_0", "call_R_1", "call_R_1_0"]
    assert [ch["index"] for ch in out["choices"]] == [0, 1]


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ERRORS)
def test_error_keeps_the_message_and_gets_the_openai_status(name: str) -> None:
    fx = load_fixture(name)
    status, body, headers = gemini_error_to_openai(fx.status, fx.raw)
    assert (status, body["error"]["type"], body["error"]["code"]) == ERROR_STATUS[fx.name]
    assert body["error"]["message"] == fx.json["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if fx.name == "error-429-resource-exhausted-retry-info":
        assert headers == {"retry-after": "35", "retry-after-ms": "34400"}  # RetryInfo "34.4s", rounded up
    else:
        assert headers == {}


@pytest.mark.parametrize(
    ("status", "raw", "expected_status", "message"),
    [
        (502, b"<html>Bad Gateway</html>", 502, "<html>Bad Gateway</html>"),
        (500, b"", 500, "Gemini answered HTTP 500 with an empty body"),
        (400, b'[{"error": {"code": 400, "message": "in a list", "status": "INVALID_ARGUMENT"}}]', 400, "in a list"),
        (400, b'{"error": {"code": 400, "message": "API key expired. Please renew the API key.", '
              b'"status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", '
              b'"reason": "API_KEY_EXPIRED"}]}}', 401, "API key expired. Please renew the API key."),
        (403, b'{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}', 403, "denied"),
    ],
    ids=["html", "empty", "list", "expired-key", "forbidden"],
)
def test_unusual_error_bodies(status: int, raw: bytes, expected_status: int, message: str) -> None:
    got_status, body, _ = gemini_error_to_openai(status, raw)
    assert got_status == expected_status
    assert body["error"]["message"] == message


# -- streams -------------------------------------------------------------------------------------------------


def translator(*, include_usage: bool = True) -> GeminiToChatStream:
    return GeminiToChatStream(model="asked-model", include_usage=include_usage, created=77, fallback_id="fallback")


def run(chunks: list[bytes], *, include_usage: bool = True) -> tuple[bytes, tuple[Any, ...]]:
    t = translator(include_usage=include_usage)
    out = b"".join(t.feed(c) for c in chunks) + t.finish()
    return out, state(t)


def state(t: GeminiToChatStream) -> tuple[Any, ...]:
    return (t.usage, t.error, t.complete)


def client_events(out: bytes) -> tuple[list[ChatCompletionChunk], list[dict[str, Any]], bool]:
    """The chunks as the SDK parses them, the error payloads, and whether [DONE] ended the stream."""
    events, rest = reference_events(out)
    assert rest == b"", "every output event is whole"
    chunks, errors, done = [], [], False
    for event in events:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n") == 2
        data = data_of(event)
        assert not done, "nothing may follow [DONE]"
        if data == b"[DONE]":
            done = True
            continue
        payload = json.loads(data or b"")
        assert orjson.dumps(payload) == data  # compact JSON
        if "error" in payload:
            assert set(payload) <= {"error", "usage"}
            errors.append(payload["error"])
        else:
            chunks.append(ChatCompletionChunk.model_validate(payload))
    return chunks, errors, done


def assembled(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    text, reasoning, finishes, usage = "", "", [], None
    calls: dict[int, dict[str, Any]] = {}
    text_signature = None
    for chunk in chunks:
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = usage_tuple(chunk.usage)
        for choice in chunk.choices:
            assert choice.index == 0
            delta = choice.delta
            text += delta.content or ""
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            text_signature = signature_of(delta) or text_signature
            for call in delta.tool_calls or []:
                assert call.index not in calls, "a Gemini function call arrives whole, in one delta"
                assert call.function is not None
                calls[call.index] = {"id": call.id, "name": call.function.name,
                                     "arguments": call.function.arguments, "signature": signature_of(call)}
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return {"text": text, "reasoning": reasoning, "calls": calls, "finishes": finishes, "usage": usage,
            "text_signature": text_signature}


@pytest.mark.parametrize("include_usage", [True, False], ids=["include_usage", "no_usage_option"])
@pytest.mark.parametrize("name", STREAMS)
def test_stream_matches_the_recording(name: str, include_usage: bool) -> None:
    fx = load_fixture(name)
    payloads = gemini_stream_payloads(fx)
    expected = expected_of(payloads)
    out, (usage, error, complete) = run([gemini_stream_body(fx)], include_usage=include_usage)
    chunks, errors, done = client_events(out)
    assert errors == [] and error is None
    assert done and complete
    got = assembled(chunks)
    assert got["text"] == expected["text"]
    assert got["reasoning"] == expected["reasoning"]
    assert got["text_signature"] == expected["text_signature"]
    assert [(c["name"], json.loads(c["arguments"]), c["signature"]) for c in got["calls"].values()] \
        == expected["calls"]
    assert list(got["calls"]) == list(range(len(expected["calls"])))
    assert all(c["id"] == f"call_{payloads[0]['responseId']}_{k}" for k, c in got["calls"].items())
    assert got["finishes"] == [expected["finish"]]
    assert usage is not None and not usage.estimated
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens) \
        == expected["usage"]
    # The usage chunk is there only when asked for, and last before [DONE].
    if include_usage:
        assert got["usage"] == expected["usage"] and chunks[-1].usage is not None
    else:
        assert got["usage"] is None
    # Every chunk carries the same id and the model Gemini named; the first delta carries the role.
    assert {c.id for c in chunks} == {f"chatcmpl-{payloads[0]['responseId']}"}
    assert {c.model for c in chunks} == {payloads[0]["modelVersion"]}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.delta.role is None for c in chunks[1:] for ch in c.choices)


def check_every_split(data: bytes) -> None:
    """Every position inside every event, as a split point, gives the same output and the same facts.

    A split inside event k cannot change what happened before it, and after a whole event the translator
    holds no bytes, so each position is checked from a copy of the state before event k: event k fed in two
    pieces gives nothing for the first piece, then the output and state of event k fed whole.
    """
    whole_out, whole_state = run([data])
    events, rest = reference_events(data)
    assert rest == b""
    base = translator()
    outputs = []
    for event in events:
        reference = copy.deepcopy(base)
        ref_out = reference.feed(event)
        for cut in range(1, len(event)):
            t = copy.deepcopy(base)
            assert t.feed(event[:cut]) == b"", cut
            assert t.feed(event[cut:]) == ref_out, cut
            assert state(t) == state(reference), cut
        outputs.append(ref_out)
        base = reference
    outputs.append(base.finish())
    assert b"".join(outputs) == whole_out
    assert state(base) == whole_state


@pytest.mark.parametrize("name", STREAMS)
def test_every_split_position(name: str) -> None:
    data = gemini_stream_body(load_fixture(name))
    check_every_split(data)
    if len(data) <= WHOLE_RUN_LIMIT:
        whole = run([data])
        for cut in range(1, len(data)):
            assert run([data[:cut], data[cut:]]) == whole, cut


@pytest.mark.parametrize("name", STREAMS)
def test_one_byte_reads(name: str) -> None:
    data = gemini_stream_body(load_fixture(name))
    assert run([data[i : i + 1] for i in range(len(data))]) == run([data])


@pytest.mark.parametrize("name", STREAMS)
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_random_multi_way_splits(name: str, draw: st.DataObject) -> None:
    data = gemini_stream_body(load_fixture(name))
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40), label="cuts")
    assert run(split_at(data, cuts)) == run([data])


@pytest.mark.parametrize("newline", [b"\n", b"\r"], ids=["lf", "cr"])
@pytest.mark.parametrize("name", STREAMS)
def test_other_line_endings_give_the_same_output(name: str, newline: bytes) -> None:
    data = gemini_stream_body(load_fixture(name))
    assert b"\r\n\r\n" in data
    assert run([data.replace(b"\r\n", newline)]) == run([data])


def usage_of_prefix(data: bytes) -> dict[str, Any]:
    """OpenAI usage of the last usageMetadata among the whole events of ``data``."""
    meta = [json.loads(data_of(e) or b"")["usageMetadata"] for e in reference_events(data)[0]][-1]
    thoughts = meta.get("thoughtsTokenCount", 0)
    completion = meta.get("candidatesTokenCount", 0) + thoughts
    return {"prompt_tokens": meta["promptTokenCount"], "completion_tokens": completion,
            "total_tokens": meta["promptTokenCount"] + completion,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": thoughts}}


def finishing_event_start(data: bytes) -> int:
    """Where the first event that carries a finish reason starts."""
    pos = 0
    for event in reference_events(data)[0]:
        if b'"finishReason"' in event:
            return pos
        pos += len(event)
    raise AssertionError("no finishing event")


@pytest.mark.parametrize("name", STREAMS)
def test_truncated_stream_ends_with_an_error_never_a_finish(name: str) -> None:
    data = gemini_stream_body(load_fixture(name))
    start = finishing_event_start(data)
    event = reference_events(data[start:])[0][0]
    json_end = start + len(event.rstrip(b"\r\n"))
    # Cut before the finishing event, and at every byte inside its JSON (the connection dropped mid-event).
    for cut in range(start, json_end):
        out, (_, error, complete) = run([data[:cut]])
        chunks, errors, done = client_events(out)
        assert not done and not complete, cut
        assert errors == [error] and error is not None and error["code"] == "stream_truncated", cut
        # The error event is the last one, and carries what Gemini had counted so far, for the gateway.
        last = orjson.loads(data_of(reference_events(out)[0][-1]) or b"")
        assert last["error"] == error
        assert last.get("usage") == (usage_of_prefix(data[:cut]) if b"usageMetadata" in data[:start] else None)
        assert not any(ch.finish_reason for c in chunks for ch in c.choices), cut
    # Only the blank line after the whole JSON lost: the event said all it had to say, and counts.
    for cut in range(json_end, start + len(event)):
        out, (_, error, complete) = run([data[:cut]])
        assert complete and error is None, cut
        assert out == run([data[: start + len(event)]])[0], cut


def test_empty_stream_is_truncated() -> None:
    out, (usage, error, complete) = run([b""])
    assert not complete and usage is None and error is not None and error["code"] == "stream_truncated"
    assert client_events(out)[1] == [error]


def test_error_event_inside_the_stream_becomes_an_openai_error_event() -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    events = reference_events(gemini_stream_body(fx))[0]
    gemini_error = {"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}}
    data = events[0] + b"data: " + json.dumps(gemini_error).encode() + b"\r\n\r\n" + events[1] + events[2]
    for chunks_in in ([data], [data[i : i + 5] for i in range(0, len(data), 5)]):
        out, (usage, error, complete) = run(chunks_in)
        chunks, errors, done = client_events(out)
        assert errors == [{"message": "An internal error has occurred.", "type": "server_error", "param": None,
                           "code": "internal"}]
        assert error == errors[0] and not complete and not done
        assert assembled(chunks)["text"] == "The"  # what came before the error, and nothing after it
        assert usage == Usage(input_tokens=15)


@pytest.mark.parametrize("bad", [b"data: {not json\r\n\r\n", b"data: 42\r\n\r\n"], ids=["not-json", "not-object"])
def test_unreadable_event_is_an_error(bad: bytes) -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    events = reference_events(gemini_stream_body(fx))[0]
    out, (_, error, complete) = run([events[0] + bad + events[1] + events[2]])
    assert error is not None and error["code"] == "bad_upstream_event" and not complete
    assert client_events(out)[1] == [error]


def test_blocked_prompt_in_a_stream_finishes_with_content_filter() -> None:
    event = b'data: {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": ' \
            b'{"promptTokenCount": 4, "totalTokenCount": 4}, "responseId": "B"}\r\n\r\n'
    out, (usage, error, complete) = run([event])
    chunks, errors, done = client_events(out)
    assert complete and done and errors == [] and error is None
    assert assembled(chunks)["finishes"] == ["content_filter"]
    assert usage == Usage(input_tokens=4)


def test_parallel_calls_across_events_get_increasing_indexes_and_ids() -> None:
    def event(name: str, finish: bool) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": [{"functionCall": {"name": name, "args": {"n": name}}}],
                                                 "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = "STOP"
        return b"data: " + json.dumps({"candidates": [candidate], "responseId": "P"}).encode() + b"\r\n\r\n"

    out, _ = run([event("a", False) + event("b", False) + event("c", True)])
    got = assembled(client_events(out)[0])
    assert [(k, c["id"], c["name"]) for k, c in got["calls"].items()] == [
        (0, "call_P_0", "a"), (1, "call_P_1", "b"), (2, "call_P_2", "c")]
    assert got["finishes"] == ["tool_calls"]


def test_done_line_from_a_re_framed_recording_is_ignored() -> None:
    fx = load_fixture("gemini/stream-generate-content/sse-text-gemini2.0-flash-exp")
    data = gemini_stream_body(fx)
    assert run([data + b"data: [DONE]\n\n"]) == run([data])


# -- requests ------------------------------------------------------------------------------------------------


def normalized(request: dict[str, Any]) -> dict[str, Any]:
    """A Gemini request without what recorders add or leave out and Gemini ignores: empty generationConfig,
    a role on systemInstruction, empty descriptions, type-name case, function call ids; thought signatures
    compared as bytes (clients may re-encode them URL-safe)."""
    out = copy.deepcopy(request)
    if out.get("generationConfig") == {}:
        del out["generationConfig"]
    out.get("systemInstruction", {}).pop("role", None)
    for content in out.get("contents", []):
        for part in content["parts"]:
            for key in ("functionCall", "functionResponse"):
                if key in part:
                    part[key].pop("id", None)
            if "thoughtSignature" in part:
                part["thoughtSignature"] = base64.urlsafe_b64decode(
                    part["thoughtSignature"].replace("+", "-").replace("/", "_"))

    def schema(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v.upper() if k == "type" and isinstance(v, str) else schema(v)) for k, v in node.items()}
        return node

    for tool in out.get("tools", []):
        for declaration in tool.get("functionDeclarations", []):
            if not declaration.get("description"):
                declaration.pop("description", None)
            if "parameters" in declaration:
                declaration["parameters"] = schema(declaration["parameters"])
    return out


SYSTEM_CHATBOT = {"role": "system", "content": "You are a helpful chatbot."}
CAPITAL_TOOLS = [
    {"type": "function", "function": {"name": "get_capital", "description": "Get the capital of a country.",
     "parameters": {"type": "object", "properties": {"country": {"type": "string", "description": "The country name."}},
                    "required": ["country"], "additionalProperties": False}, "strict": True}},
    {"type": "function", "function": {"name": "get_temperature", "description": "Get the temperature in a city.",
     "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "properties": {"city": {"type": "string", "description": "The city name."}},
                    "required": ["city"], "additionalProperties": False}}},
]
COUNTRY_TOOLS = [
    {"type": "function", "function": {"name": "get_user_country", "description": "",
                                      "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "final_result",
                                      "description": "The final response which ends this conversation",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string"}, "country": {"type": "string"}},
                                          "required": ["city", "country"]}}},
]
BOTH_REQUIRED = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
    {"type": "function", "function": {"name": "get_user_country"}},
    {"type": "function", "function": {"name": "final_result"}}]}}


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


#: OpenAI requests that must become the recorded Gemini requests.
OPENAI_REQUESTS: dict[str, dict[str, Any]] = {
    "gemini/generate-content/nonstream-text-gemini2.0-flash": {
        "model": "gemini-2.0-flash",
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is the capital of France?"}],
    },
    "gemini/stream-generate-content/sse-text-gemini2.0-flash-exp": {
        "model": "gemini-2.0-flash-exp", "temperature": 0.0, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [SYSTEM_CHATBOT, {"role": "user", "content": [
            {"type": "text", "text": "What is the capital of France?"}]}],
    },
    "gemini/generate-content/nonstream-function-call-noargs-gemini2.0-flash": {
        "model": "gemini-2.0-flash", "tools": COUNTRY_TOOLS, "tool_choice": BOTH_REQUIRED,
        "messages": [{"role": "user", "content": "What is the largest city in the user country?"}],
    },
    "gemini/generate-content/nonstream-function-call-withargs-gemini2.0-flash": {
        "model": "gemini-2.0-flash", "tools": COUNTRY_TOOLS, "tool_choice": BOTH_REQUIRED,
        "messages": [
            {"role": "user", "content": "What is the largest city in the user country?"},
            {"role": "assistant", "content": None,
             "tool_calls": [call("pyd_ai_3fa5644dae1d4aad997ae39c70006fbd", "get_user_country", "{}")]},
            {"role": "tool", "tool_call_id": "pyd_ai_3fa5644dae1d4aad997ae39c70006fbd",
             "content": '{"return_value": "Mexico"}'},
        ],
    },
    "gemini/stream-generate-content/sse-function-call-gemini2.0-flash": {
        "model": "gemini-2.0-flash", "stream": True, "tools": CAPITAL_TOOLS,
        "messages": [{"role": "developer", "content": "You are a helpful chatbot."},
                     {"role": "user", "content": "What is the temperature of the capital of France?"}],
    },
    "gemini/stream-generate-content/sse-text-after-function-response-gemini2.0-flash": {
        "model": "gemini-2.0-flash", "stream": True, "tools": CAPITAL_TOOLS,
        "messages": [
            SYSTEM_CHATBOT,
            {"role": "user", "content": "What is the temperature of the capital of France?"},
            {"role": "assistant", "content": "",
             "tool_calls": [call("pyd_ai_0e1a07b3c2b64d2ab3ad2efbe18e1b97", "get_capital", '{"country": "France"}')]},
            {"role": "tool", "tool_call_id": "pyd_ai_0e1a07b3c2b64d2ab3ad2efbe18e1b97",
             "content": '{"return_value":"Paris"}'},
            {"role": "assistant",
             "tool_calls": [call("pyd_ai_98b25d994c5648df82f683188629229d", "get_temperature", '{"city":"Paris"}')]},
            {"role": "tool", "tool_call_id": "pyd_ai_98b25d994c5648df82f683188629229d",
             "content": [{"type": "text", "text": '{"return_value": "30\u00b0C"}'}]},
        ],
    },
}


@pytest.mark.parametrize("name", list(OPENAI_REQUESTS))
def test_request_becomes_the_recorded_gemini_request(name: str) -> None:
    fx = load_fixture(name)
    assert fx.request is not None
    got = chat_request_to_gemini(OPENAI_REQUESTS[name])
    assert normalized(got) == normalized(fx.request)
    # Nothing in it that Gemini's Schema refuses (the OpenAI tools above carry all three).
    for refused in (b"additionalProperties", b"$schema", b"strict"):
        assert refused not in orjson.dumps(got)


@pytest.mark.parametrize(
    ("first", "second"),
    [("gemini/stream-generate-content/sse-function-call-thought-signature-gemini3-pro",
      "gemini/stream-generate-content/sse-text-empty-final-part-gemini3-pro"),
     ("gemini/generate-content/nonstream-function-call-thought-signature-raw-gemini2.5-pro",
      "gemini/generate-content/nonstream-text-after-function-response-raw-gemini2.5-pro")],
    ids=["stream-gemini3", "nonstream-gemini2.5"],
)
def test_thought_signature_round_trip_matches_the_recorded_next_turn(first: str, second: str) -> None:
    """Turn 1's answer, as the client got it, sent back with the tool's result: the next request is the one
    the recording's client sent (whose signature Gemini accepted), signature byte for byte."""
    answer_fx, next_fx = load_fixture(first), load_fixture(second)
    assert next_fx.request is not None
    recorded_contents = next_fx.request["contents"]
    user_text = recorded_contents[0]["parts"][0]["text"]
    result = recorded_contents[2]["parts"][0]["functionResponse"]["response"]
    if answer_fx.kind == "json":
        message = ChatCompletion.model_validate(gemini_response_to_chat(
            answer_fx.json, model="m", created=0, fallback_id="x")).choices[0].message
        assistant = message.model_dump(exclude_none=True)
        tool_call_id = message.tool_calls[0].id  # type: ignore[index]
    else:
        out, _ = run([gemini_stream_body(answer_fx)])
        (got_call,) = assembled(client_events(out)[0])["calls"].values()
        tool_call_id = got_call["id"]
        assistant = {"role": "assistant", "content": None, "tool_calls": [{
            "id": got_call["id"], "type": "function",
            "function": {"name": got_call["name"], "arguments": got_call["arguments"]},
            "extra_content": {"google": {"thought_signature": got_call["signature"]}}}]}
    body: dict[str, Any] = {"model": "gemini-3-pro-preview", "messages": [
        {"role": "user", "content": user_text}, assistant,
        {"role": "tool", "tool_call_id": tool_call_id, "content": json.dumps(result)}]}
    request = chat_request_to_gemini(body)
    assert normalized(request)["contents"] == normalized(next_fx.request)["contents"]
    sent = request["contents"][1]["parts"][0]
    recorded_signature = expected_of(gemini_stream_payloads(answer_fx) if answer_fx.kind != "json"
                                     else [answer_fx.json])["calls"][0][2]
    assert sent["thoughtSignature"] == recorded_signature  # exactly as Gemini sent it
    assert request["contents"][2]["parts"][0]["functionResponse"]["name"] == sent["functionCall"]["name"]
    assert request["contents"][2]["parts"][0]["functionResponse"]["id"] == tool_call_id


def test_text_signature_goes_back_on_the_text() -> None:
    payload = load_fixture("gemini/generate-content/nonstream-thought-summary-gemini3-pro").json
    message = gemini_response_to_chat(payload, model="m", created=0, fallback_id="x")["choices"][0]["message"]
    request = chat_request_to_gemini({"model": "gemini-3-pro-preview", "messages": [
        {"role": "user", "content": "How do I cross the street?"}, message, {"role": "user", "content": "Thanks"}]})
    (model_turn,) = [c for c in request["contents"] if c["role"] == "model"]
    assert model_turn["parts"] == [{"text": message["content"], "thoughtSignature": expected_of([payload])[
        "text_signature"]}]  # the reasoning summary is not sent back


def test_roles_merge_and_system_messages_join() -> None:
    request = chat_request_to_gemini({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call("c1", "weather", '{"city":"Oslo"}'),
                                                                     call("c2", "weather", '{"city":"Rome"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": "-3 C"},
        {"role": "tool", "tool_call_id": "c2", "content": '{"celsius": 18}'},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Thanks"},
    ]})
    assert request["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]}
    assert request["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "Weather in Oslo and Rome?"}]},
        {"role": "model", "parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}, "id": "c1"}},
            {"functionCall": {"name": "weather", "args": {"city": "Rome"}, "id": "c2"}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "weather", "response": {"result": "-3 C"}, "id": "c1"}},
            {"functionResponse": {"name": "weather", "response": {"celsius": 18}, "id": "c2"}},
            {"text": "Thanks"}]},
    ]


def test_images_and_files() -> None:
    request = chat_request_to_gemini({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.JPG?size=large#x", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render", "format": "image/webp"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}]})
    assert request["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/cat.JPG?size=large#x"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/render"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
    ]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ([{"type": "image_url", "image_url": {"url": "https://example.com/picture"}}], "cannot be told"),
        ([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}], "data: URL or an http(s) URL"),
        ([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}], "base64"),
        ([{"type": "file", "file": {"file_id": "file-123"}}], "file ids are not supported"),
        ([{"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}], "wav or mp3"),
        ([{"type": "video_url", "video_url": "x"}], "not supported"),
    ],
    ids=["no-extension", "ftp", "not-base64", "file-id", "audio-format", "unknown-part"],
)
def test_unusable_content_is_a_clear_400(content: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat_request_to_gemini({"model": "g", "messages": [{"role": "user", "content": content}]})
    assert info.value.status == 400 and words in info.value.message
    assert info.value.param == "messages[0].content[0]"


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "matches no tool call"),
        ([{"role": "system", "content": "only a system prompt"}], "at least one user or assistant"),
        ([{"role": "assistant", "tool_calls": [call("a", "f", "[1, 2]")]}], "must be a JSON object"),
        ([{"role": "wizard", "content": "x"}], "not supported"),
        ([], "non-empty"),
    ],
    ids=["unknown-tool-call-id", "no-contents", "array-arguments", "unknown-role", "no-messages"],
)
def test_unusable_messages_are_a_clear_400(messages: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        chat_request_to_gemini({"model": "g", "messages": messages})
    assert words in info.value.message


def test_tool_choice_modes() -> None:
    base = {"model": "g", "messages": [{"role": "user", "content": "x"}], "tools": COUNTRY_TOOLS}
    config = {choice if isinstance(choice, str) else json.dumps(choice):
              chat_request_to_gemini({**base, "tool_choice": choice}).get("toolConfig")
              for choice in ["auto", "none", "required",
                             {"type": "function", "function": {"name": "final_result"}}]}
    assert config == {
        "auto": {"functionCallingConfig": {"mode": "AUTO"}},
        "none": {"functionCallingConfig": {"mode": "NONE"}},
        "required": {"functionCallingConfig": {"mode": "ANY"}},
        '{"type": "function", "function": {"name": "final_result"}}':
            {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["final_result"]}},
    }
    # allowed_tools in auto mode: the others are not offered (allowedFunctionNames goes only with ANY).
    auto_subset = chat_request_to_gemini({**base, "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "final_result"}}]}}})
    assert [d["name"] for d in auto_subset["tools"][0]["functionDeclarations"]] == ["final_result"]
    assert auto_subset["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    legacy = chat_request_to_gemini({"model": "g", "messages": [{"role": "user", "content": "x"}],
                                     "functions": [COUNTRY_TOOLS[1]["function"]],
                                     "function_call": {"name": "final_result"}})
    assert legacy["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["final_result"]
    assert "toolConfig" not in chat_request_to_gemini({**base, "tools": [], "tool_choice": "auto"})
    with pytest.raises(InvalidRequestError):
        chat_request_to_gemini({**base, "tools": [{"type": "web_search"}]})


def test_schema_cleaning() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Order", "type": "object",
        "additionalProperties": False, "strict": True,
        "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string", "format": "uuid"},
                                                            "child": {"$ref": "#/$defs/Item"}},
                           "required": ["sku"], "additionalProperties": False}},
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "note": {"type": ["string", "null"], "maxLength": 200},
            "when": {"type": "string", "format": "date-time"},
            "kind": {"const": "order"},
            "amount": {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}]},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer", "format": "int64"}]},
            "merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                 {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
        },
        "required": ["items", "missing"],
    }
    assert clean_schema(schema) == {
        "title": "Order", "type": "object",
        "properties": {
            "items": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["sku"],
                "properties": {"sku": {"type": "string"}, "child": {"type": "object"}}}},
            "note": {"type": "string", "maxLength": 200, "nullable": True},
            "when": {"type": "string", "format": "date-time"},
            "kind": {"enum": ["order"], "type": "string"},
            "amount": {"type": "number", "nullable": True},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer", "format": "int64"}]},
            "merged": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]},
        },
        "required": ["items"],
    }


def test_generation_config() -> None:
    request = chat_request_to_gemini({
        "model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "max_completion_tokens": 100, "stop": "END", "n": 2,
        "presence_penalty": 0.1, "frequency_penalty": 0.3, "seed": 7, "user": "u1", "metadata": {"a": "b"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
            "type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}}},
    })
    assert request["generationConfig"] == {
        "temperature": 0.2, "topP": 0.9, "presencePenalty": 0.1, "frequencyPenalty": 0.3, "seed": 7,
        "maxOutputTokens": 100, "stopSequences": ["END"], "candidateCount": 2,
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    }
    json_mode = chat_request_to_gemini({"model": "g", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9,
                                        "stop": ["a", "b"], "response_format": {"type": "json_object"}})
    assert json_mode["generationConfig"] == {"maxOutputTokens": 9, "stopSequences": ["a", "b"],
                                             "responseMimeType": "application/json"}


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-pro", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
        ("gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
        ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
        ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "low", "includeThoughts": True}),
        ("gemini-3-pro-preview", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-flash-preview", "medium", {"thinkingLevel": "medium", "includeThoughts": True}),
        ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "minimal", "includeThoughts": True}),
        ("gemini-3-flash-preview", "none", {"thinkingLevel": "minimal", "includeThoughts": False}),
    ],
)
def test_reasoning_effort(model: str, effort: str, expected: dict[str, Any]) -> None:
    request = chat_request_to_gemini({"model": model, "reasoning_effort": effort,
                                      "messages": [{"role": "user", "content": "x"}]})
    assert request["generationConfig"]["thinkingConfig"] == expected


def test_google_extras_as_googles_openai_endpoint_takes_them() -> None:
    request = chat_request_to_gemini({
        "model": "gemini-2.5-flash", "reasoning_effort": "low", "messages": [{"role": "user", "content": "x"}],
        "extra_body": {"google": {"thinking_config": {"thinking_budget": 800, "include_thoughts": True},
                                  "cached_content": "cachedContents/abc",
                                  "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH",
                                                       "threshold": "BLOCK_NONE"}]}},
    })
    assert request["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 800, "includeThoughts": True}
    assert request["cachedContent"] == "cachedContents/abc"
    assert request["safetySettings"][0]["threshold"] == "BLOCK_NONE"
    with pytest.raises(InvalidRequestError):
        chat_request_to_gemini({"model": "g", "reasoning_effort": "extreme",
                                "messages": [{"role": "user", "content": "x"}]})


# -- embeddings ----------------------------------------------------------------------------------------------


def embed_request_of(fx: Fixture) -> dict[str, Any]:
    """The OpenAI request that stands for the recorded Gemini one."""
    assert fx.request is not None
    (recorded,) = fx.request["requests"]
    body: dict[str, Any] = {"model": recorded["model"].removeprefix("models/"),
                            "input": recorded["content"]["parts"][0]["text"]}
    if "outputDimensionality" in recorded:
        body["dimensions"] = recorded["outputDimensionality"]
    if "taskType" in recorded:
        body["task_type"] = recorded["taskType"]
    return body


@pytest.mark.parametrize("name", [*EMBEDDINGS, "gemini/embeddings/error-404-not-found-batch-embed"])
def test_embeddings_request_is_the_recorded_one(name: str) -> None:
    fx = load_fixture(name)
    body = embed_request_of(fx)
    assert embeddings_request_to_gemini(body, body["model"]) == fx.request


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_embeddings_answer_float_and_base64(name: str) -> None:
    fx = load_fixture(name)
    body = embed_request_of(fx)
    values = fx.json["embeddings"][0]["values"]
    floats = CreateEmbeddingResponse.model_validate(gemini_embeddings_to_openai(fx.json, body, model=body["model"]))
    assert floats.data[0].embedding == values and len(values) == body["dimensions"]
    assert floats.model == body["model"] and floats.object == "list" and floats.data[0].index == 0
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == -(-len(body["input"]) // 4)
    assert (floats.usage.model_extra or {}).get("estimated") is True
    b64 = gemini_embeddings_to_openai(fx.json, {**body, "encoding_format": "base64"}, model=body["model"])
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert len(raw) == 4 * len(values)
    assert list(struct.unpack(f"<{len(values)}f", raw)) == [struct.unpack("<f", struct.pack("<f", v))[0]
                                                            for v in values]
    # The gateway's usage reader takes the estimate for what it is.
    assert Usage.from_openai(b64["usage"]) == Usage(input_tokens=floats.usage.prompt_tokens, estimated=True)


def test_embeddings_several_inputs_and_reported_usage() -> None:
    body = {"model": "gemini-embedding-001", "input": ["a", "bb"], "dimensions": 2}
    request = embeddings_request_to_gemini(body, "gemini-embedding-001")
    assert [r["content"]["parts"][0]["text"] for r in request["requests"]] == ["a", "bb"]
    assert all(r["outputDimensionality"] == 2 and r["model"] == "models/gemini-embedding-001"
               for r in request["requests"])
    answer = {"embeddings": [{"values": [0.5, 0.25]}, {"values": [1.0, -1.0]}],
              "usageMetadata": {"promptTokenCount": 3}}
    out = gemini_embeddings_to_openai(answer, body, model="gemini-embedding-001")
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


@pytest.mark.parametrize(
    "body",
    [{"input": [1, 2, 3]}, {"input": []}, {"input": "x", "dimensions": 0}, {"input": "x", "encoding_format": "hex"}],
    ids=["tokens", "empty", "zero-dims", "bad-encoding"],
)
def test_embeddings_requests_gemini_cannot_take(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        embeddings_request_to_gemini({"model": "e", **body}, "e")
