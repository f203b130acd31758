"""Replaying cached answers in the other form, driven by the recorded provider traffic (read in place)."""

from __future__ import annotations

import copy
import json
from typing import Any

import anthropic.types
import openai.types.chat
import openai.types.responses
import orjson
import pydantic
import pytest

from gomodel_proxy.cache.replay import adapt_chat_stream, body_to_stream, openai_usage, stream_to_body
from tests.support.fixtures import fixture_names, load_fixture, require_fixtures, split_sse_events, sse_data

CHAT = "openai/chat-completions"
RESPONSES = "openai/responses"
MESSAGES = "anthropic/messages"


def names(folder: str, prefix: str) -> list[str]:
    return fixture_names(folder, prefix)


def payloads(sse: bytes) -> list[Any]:
    out = []
    for event in split_sse_events(sse):
        data = sse_data(event)
        if data is not None and data != b"[DONE]":
            out.append(json.loads(data))
    return out


# -- what a chat answer says, whichever its form ----------------------------------------------------------


def chat_facts(answer: dict[str, Any]) -> dict[str, Any]:
    choice = answer["choices"][0]
    message = choice["message"]
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
    return {"content": message.get("content") or "", "calls": calls, "finish": choice["finish_reason"],
            "usage": answer.get("usage"), "id": answer["id"], "model": answer["model"]}


def chat_stream_facts(sse: bytes) -> dict[str, Any]:
    content, finish, usage = "", None, None
    calls: dict[int, list[str]] = {}
    head: dict[str, Any] = {}
    for chunk in payloads(sse):
        head = head or chunk
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                held = calls.setdefault(call["index"], ["", "", ""])
                held[0] = call.get("id") or held[0]
                held[1] += call.get("function", {}).get("name") or ""
                held[2] += call.get("function", {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    return {"content": content, "calls": [tuple(calls[i]) for i in sorted(calls)], "finish": finish,
            "usage": usage, "id": head["id"], "model": head["model"]}


@pytest.mark.parametrize("rel", names(CHAT, "nonstream-"))
def test_chat_body_to_stream_to_body(rel: str) -> None:
    fixture = load_fixture(rel)
    body = fixture.raw
    stream = body_to_stream("chat", body, include_usage=True)
    assert stream.endswith(b"data: [DONE]\n\n")
    for chunk in payloads(stream):
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk"
    assert payloads(stream)[-1]["choices"] == []  # the usage chunk
    assert chat_stream_facts(stream) == chat_facts(fixture.json)
    back = stream_to_body("chat", stream)
    assert back is not None
    again = orjson.loads(back)
    openai.types.chat.ChatCompletion.model_validate(again)
    assert again["object"] == "chat.completion"
    assert chat_facts(again) == chat_facts(fixture.json)
    assert again["created"] == fixture.json["created"]
    assert again.get("system_fingerprint") == fixture.json.get("system_fingerprint")
    without = body_to_stream("chat", body, include_usage=False)
    assert all(chunk["choices"] for chunk in payloads(without))


@pytest.mark.parametrize("rel", names(CHAT, "stream-"))
def test_chat_stream_to_body_to_stream(rel: str) -> None:
    fixture = load_fixture(rel)
    body = stream_to_body("chat", fixture.body)
    assert body is not None
    answer = orjson.loads(body)
    openai.types.chat.ChatCompletion.model_validate(answer)
    assert chat_facts(answer) == chat_stream_facts(fixture.body)
    include = bool((fixture.request or {}).get("stream_options", {}).get("include_usage"))
    assert (answer.get("usage") is not None) == include
    replayed = body_to_stream("chat", body, include_usage=True)
    assert chat_stream_facts(replayed) == chat_stream_facts(fixture.body)


@pytest.mark.parametrize("rel", [*names("groq/chat-completions", "stream-"),
                                 *names("openrouter/chat-completions", "stream-")])
def test_compatible_chat_streams(rel: str) -> None:
    """OpenAI-compatible providers: complete streams assemble (reasoning included), error streams do not."""
    fixture = load_fixture(rel)
    body = stream_to_body("chat", fixture.body)
    if "error" in rel:
        assert body is None
        return
    assert body is not None
    answer = orjson.loads(body)
    assert chat_facts(answer) == chat_stream_facts(fixture.body)
    assert answer["usage"] == fixture.usage
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in fixture.data_payloads if c["choices"])
    assert (answer["choices"][0]["message"].get("reasoning") or "") == reasoning


def test_chat_stream_incomplete_or_unreadable_is_none() -> None:
    fixture = load_fixture(f"{CHAT}/stream-text-no-usage-gpt4o-mini")
    events = fixture.events
    finish = next(i for i, e in enumerate(events) if b'"finish_reason":"stop"' in e)
    assert stream_to_body("chat", b"".join(events[:finish])) is None
    assert stream_to_body("chat", b"".join(events[: finish + 1])) is not None  # [DONE] is not required
    assert stream_to_body("chat", b"data: {not json\n\n") is None
    assert stream_to_body("chat", b"") is None
    assert stream_to_body("chat", b'data: {"error": {"message": "boom"}}\n\ndata: [DONE]\n\n') is None


def test_chat_extras_reasoning_refusal_and_logprobs_round_trip() -> None:
    answer = {
        "id": "c1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [{
            "index": 0, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "hi", "logprob": -0.1, "bytes": [104, 105], "top_logprobs": []}]},
            "message": {"role": "assistant", "content": "hi", "reasoning_content": "think",
                        "annotations": [{"type": "url_citation"}], "extra_content": {"google": {"x": 1}}},
        }, {
            "index": 1, "finish_reason": "stop",
            "message": {"role": "assistant", "content": None, "refusal": "no"},
        }],
    }
    stream = body_to_stream("chat", orjson.dumps(answer), include_usage=True)  # no usage: no usage chunk
    assert all(chunk["choices"] for chunk in payloads(stream))
    back = orjson.loads(stream_to_body("chat", stream) or b"")
    first, second = back["choices"]
    assert first["message"]["content"] == "hi"
    assert first["message"]["reasoning_content"] == "think"
    assert first["message"]["annotations"] == [{"type": "url_citation"}]
    assert first["message"]["extra_content"] == {"google": {"x": 1}}
    assert first["logprobs"] == answer["choices"][0]["logprobs"]  # type: ignore[index]
    assert second["message"]["refusal"] == "no" and second["message"]["content"] is None
    assert "usage" not in back


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"choices": []}', b'{"choices": [1]}'])
def test_chat_body_that_is_no_answer_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        body_to_stream("chat", body, include_usage=False)


def test_unknown_api_is_refused() -> None:
    with pytest.raises(ValueError):
        body_to_stream("embeddings", b"{}", include_usage=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        stream_to_body("embeddings", b"")  # type: ignore[arg-type]


# -- adapt_chat_stream ------------------------------------------------------------------------------------


def test_adapt_chat_stream_strips_the_usage_chunk() -> None:
    fixture = load_fixture(f"{CHAT}/stream-tool-call-include-usage-gpt4o-mini")
    stripped = adapt_chat_stream(fixture.body, include_usage=False, usage=None)
    assert all(chunk["choices"] for chunk in payloads(stripped))
    assert stripped.endswith(b"data: [DONE]\n\n")
    assert len(split_sse_events(stripped)) == len(fixture.events) - 1
    kept = adapt_chat_stream(fixture.body, include_usage=True, usage={"input_tokens": 1})
    assert kept == fixture.body  # already has one: byte for byte


def test_adapt_chat_stream_adds_a_usage_chunk_before_done() -> None:
    fixture = load_fixture(f"{CHAT}/stream-text-no-usage-gpt4o-mini")
    usage = {"input_tokens": 10, "output_tokens": 5, "cached_tokens": 2, "reasoning_tokens": 1}
    added = adapt_chat_stream(fixture.body, include_usage=True, usage=usage)
    events = split_sse_events(added)
    assert events[-1].startswith(b"data: [DONE]")
    last = json.loads(sse_data(events[-2]) or b"")
    openai.types.chat.ChatCompletionChunk.model_validate(last)
    first = fixture.data_payloads[0]
    assert (last["id"], last["created"], last["model"], last["choices"]) == (
        first["id"], first["created"], first["model"], [])
    assert last["usage"]["prompt_tokens"] == 10 and last["usage"]["total_tokens"] == 15
    assert last["usage"]["prompt_tokens_details"] == {"cached_tokens": 2}
    assert adapt_chat_stream(fixture.body, include_usage=True, usage=None) == fixture.body  # nothing to add
    assert adapt_chat_stream(fixture.body, include_usage=False, usage=usage) == fixture.body
    # no [DONE] (cut or a provider that sends none): the chunk goes last
    no_done = b"".join(e for e in fixture.events if b"[DONE]" not in e).rstrip(b"\n") + b"\n"
    assert json.loads(sse_data(split_sse_events(adapt_chat_stream(no_done, include_usage=True, usage=usage))[-1])
                      or b"")["choices"] == []


def test_openai_usage_accepts_openai_names() -> None:
    assert openai_usage({"prompt_tokens": 3, "completion_tokens": 4})["total_tokens"] == 7


# -- messages ---------------------------------------------------------------------------------------------


def message_facts(message: dict[str, Any]) -> dict[str, Any]:
    blocks: list[tuple[Any, ...]] = []
    for block in message["content"]:
        kind = block["type"]
        if kind == "text":
            blocks.append(("text", block["text"]))
        elif kind == "thinking":
            blocks.append(("thinking", block["thinking"], block.get("signature", "")))
        elif kind == "tool_use":
            blocks.append(("tool_use", block["id"], block["name"], block["input"]))
        else:
            blocks.append((kind, block.get("data")))
    usage = message["usage"]
    return {"blocks": blocks, "stop": (message["stop_reason"], message["stop_sequence"]), "id": message["id"],
            "model": message["model"], "tokens": (usage.get("input_tokens"), usage.get("output_tokens"))}


def message_stream_facts(sse: bytes) -> dict[str, Any]:
    texts: dict[int, list[Any]] = {}
    message: dict[str, Any] = {}
    stop: tuple[Any, Any] = (None, None)
    output = None
    for payload in payloads(sse):
        kind = payload["type"]
        if kind == "message_start":
            message = payload["message"]
        elif kind == "content_block_start":
            block = payload["content_block"]
            texts[payload["index"]] = [block["type"], block.get("data"), "", ""]
            if block["type"] == "tool_use":
                texts[payload["index"]][1:3] = [block["id"], block["name"]]
        elif kind == "content_block_delta":
            delta = payload["delta"]
            held = texts[payload["index"]]
            held[3] += delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
            if delta["type"] == "signature_delta":
                held[2] = delta["signature"]
        elif kind == "message_delta":
            stop = (payload["delta"]["stop_reason"], payload["delta"]["stop_sequence"])
            output = payload["usage"]["output_tokens"]
    blocks: list[tuple[Any, ...]] = []
    for index in sorted(texts):
        kind, a, b, text = texts[index]
        if kind == "text":
            blocks.append(("text", text))
        elif kind == "thinking":
            blocks.append(("thinking", text, b))
        elif kind == "tool_use":
            blocks.append(("tool_use", a, b, json.loads(text) if text.strip() else {}))
        else:
            blocks.append((kind, a))
    return {"blocks": blocks, "stop": stop, "id": message["id"], "model": message["model"],
            "tokens": (message["usage"]["input_tokens"], output)}


@pytest.mark.parametrize("rel", names(MESSAGES, "nonstream-"))
def test_message_body_to_stream_to_body(rel: str) -> None:
    fixture = load_fixture(rel)
    stream = body_to_stream("messages", fixture.raw, include_usage=False)
    assert message_stream_facts(stream) == message_facts(fixture.json)
    back = stream_to_body("messages", stream)
    assert back is not None
    again = orjson.loads(back)
    anthropic.types.Message.model_validate(again)
    assert message_facts(again) == message_facts(fixture.json)
    assert again["usage"] == fixture.json["usage"]


@pytest.mark.parametrize("rel", names(MESSAGES, "stream-"))
def test_message_stream_to_body_to_stream(rel: str) -> None:
    fixture = load_fixture(rel)
    body = stream_to_body("messages", fixture.body)
    if "error" in rel:
        assert body is None
        return
    assert body is not None
    message = orjson.loads(body)
    anthropic.types.Message.model_validate(message)
    assert message_facts(message) == message_stream_facts(fixture.body)
    assert message["usage"]["output_tokens"] == fixture.usage["output_tokens"]  # type: ignore[index]
    replayed = body_to_stream("messages", body, include_usage=True)
    assert message_stream_facts(replayed) == message_stream_facts(fixture.body)
    assert orjson.loads(stream_to_body("messages", replayed) or b"") == message


def test_message_stream_cut_or_unreadable_is_none() -> None:
    fixture = load_fixture(f"{MESSAGES}/stream-text-haiku45")
    assert stream_to_body("messages", b"".join(fixture.events[:-1])) is None  # no message_stop
    assert stream_to_body("messages", b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                                      b"\"index\":0,\"delta\":{}}\n\n") is None


def test_message_citations_and_server_blocks() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 2},
        "content": [
            {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "text", "text": "cited", "citations": [{"type": "web_search_result_location", "url": "u"}]},
        ],
    }
    stream = body_to_stream("messages", orjson.dumps(message), include_usage=False)
    back = orjson.loads(stream_to_body("messages", stream) or b"")
    assert back["content"][0] == message["content"][0]  # type: ignore[index]
    assert back["content"][1]["text"] == "cited"
    delta = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":' \
            b'{"type":"citations_delta","citation":{"url":"v"}}}\n\n'
    start = stream.split(b"event: content_block_stop", 1)[0]
    rest = b"event: content_block_stop" + stream.split(b"event: content_block_stop", 1)[1]
    with_citation = orjson.loads(stream_to_body("messages", start + delta + rest) or b"")
    assert with_citation["content"][0]["citations"] == [{"url": "v"}]


@pytest.mark.parametrize("body", [b'{"type": "message"}', b'{"type": "message", "content": [1]}'])
def test_message_body_that_is_no_message_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        body_to_stream("messages", body, include_usage=False)


# -- responses --------------------------------------------------------------------------------------------


def response_text(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


def response_calls(response: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i["call_id"], i["name"], i["arguments"]) for i in response["output"] if i["type"] == "function_call"]


_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(openai.types.responses.ResponseStreamEvent)


def sdk_validate(payload: dict[str, Any]) -> None:
    """Validate with the SDK, which (this version) requires ``usage.input_tokens_details.cache_write_tokens``
    although the recorded answers, older than that field, lack it: it is filled in a copy first."""
    payload = copy.deepcopy(payload)
    response = payload.get("response", payload)
    details = (response.get("usage") or {}).get("input_tokens_details")
    if isinstance(details, dict):
        details.setdefault("cache_write_tokens", 0)
    if "sequence_number" in payload:
        _EVENTS.validate_python(payload)
    else:
        openai.types.responses.Response.model_validate(payload)


def completed_usage(sse: bytes) -> Any:
    return next(p["response"]["usage"] for p in payloads(sse) if p["type"] == "response.completed")


def stream_text(sse: bytes) -> str:
    return "".join(p["delta"] for p in payloads(sse) if p["type"] == "response.output_text.delta")


@pytest.mark.parametrize("rel", names(RESPONSES, "nonstream-"))
def test_response_body_to_stream_to_body(rel: str) -> None:
    fixture = load_fixture(rel)
    stream = body_to_stream("responses", fixture.raw, include_usage=False)
    events = payloads(stream)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[0]["response"]["output"] == []
    assert events[-1]["type"] == "response.completed"
    for event in events:
        sdk_validate(event)
    assert stream_text(stream) == response_text(fixture.json)
    back = stream_to_body("responses", stream)
    assert back is not None
    assert orjson.loads(back) == fixture.json
    sdk_validate(orjson.loads(back))


@pytest.mark.parametrize("rel", names(RESPONSES, "stream-"))
def test_response_stream_to_body_to_stream(rel: str) -> None:
    fixture = load_fixture(rel)
    body = stream_to_body("responses", fixture.body)
    if "error" in rel:
        assert body is None
        return
    assert body is not None
    response = orjson.loads(body)
    sdk_validate(response)
    assert response_text(response) == stream_text(fixture.body)
    args = "".join(p["delta"] for p in fixture.data_payloads if p["type"] == "response.function_call_arguments.delta")
    assert "".join(a for _, _, a in response_calls(response)) == args
    assert response["usage"] == completed_usage(fixture.body)
    replayed = body_to_stream("responses", body, include_usage=True)
    assert stream_text(replayed) == stream_text(fixture.body)
    assert orjson.loads(stream_to_body("responses", replayed) or b"") == response


def test_response_reasoning_refusal_and_other_items_are_played() -> None:
    response = {
        "id": "resp_1", "object": "response", "status": "incomplete", "completed_at": 5, "output": [
            {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "sum"}],
             "content": [{"type": "reasoning_text", "text": "deep"}]},
            {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search"}},
            {"id": "msg_1", "type": "message", "role": "assistant", "status": "incomplete", "content": [
                {"type": "refusal", "refusal": "no"},
                {"type": "output_text", "text": "t", "annotations": [{"type": "url_citation"}], "logprobs": []},
                {"type": "mystery"},
            ]},
        ], "usage": {"input_tokens": 1},
    }
    stream = body_to_stream("responses", orjson.dumps(response), include_usage=False)
    kinds = [p["type"] for p in payloads(stream)]
    assert kinds[-1] == "response.incomplete"
    assert payloads(stream)[0]["response"]["completed_at"] is None
    for kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta", "response.refusal.delta",
                 "response.output_text.annotation.added"):
        assert kind in kinds
    assert orjson.loads(stream_to_body("responses", stream) or b"") == response


def test_response_failed_or_cut_stream_is_none() -> None:
    fixture = load_fixture(f"{RESPONSES}/stream-text-gpt5.2")
    assert stream_to_body("responses", b"".join(fixture.events[:-1])) is None
    assert stream_to_body("responses", b'data: {"type":"response.completed","response":[]}\n\n') is None
    with pytest.raises(ValueError):
        body_to_stream("responses", b'{"object": "list"}', include_usage=False)


def test_fixtures_present() -> None:
    """The parametrised tests above are empty, hence skipped, without the fixtures: say so."""
    require_fixtures()
    assert names(CHAT, "stream-") and names(MESSAGES, "stream-") and names(RESPONSES, "stream-")


def test_adapt_chat_stream_keeps_comments_and_unreadable_events() -> None:
    head = b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,' \
           b'"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
    odd = b": keep-alive\n\ndata: {oops\n\ndata: [1]\n\n"
    out = adapt_chat_stream(head + odd, include_usage=True, usage={"input_tokens": 1, "output_tokens": 1})
    assert out.startswith(head + odd)
    assert json.loads(sse_data(split_sse_events(out)[-1]) or b"")["usage"]["total_tokens"] == 2


def test_message_signed_thinking_with_tool_use_and_unknown_delta() -> None:
    message = {
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "tool_use",
        "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 4},
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}},
        ],
    }
    stream = body_to_stream("messages", orjson.dumps(message), include_usage=False)
    assert b'"signature_delta"' in stream
    odd = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"new"}}\n\n'
    stream = stream.replace(b"event: message_delta", odd + b"event: message_delta", 1)
    assert orjson.loads(stream_to_body("messages", stream) or b"") == message
