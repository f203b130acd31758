"""Converting a cached answer between its streamed and non-streamed forms, in the client API's wire format.

The streamed and non-streamed forms of one request share a cache key (``request_key`` drops ``stream``), so
whichever form was stored first must serve the other: :func:`body_to_stream` plays a whole JSON answer as the
SSE events the client would have received, :func:`stream_to_body` assembles a recorded stream into the JSON
answer. :func:`adapt_chat_stream` fixes a stored chat stream for a client whose ``stream_options.include_usage``
differs from the first caller's. Everything here is pure (bytes in, bytes out).

Choices:

* A stream that did not end properly (no ``[DONE]``/finish reason, ``message_stop``, ``response.completed``)
  or that carries an error gives ``None``: that entry is not used for the other form.
* chat: one chunk per kind of content (role, reasoning, content, each tool call, finish), not one per token;
  clients join deltas anyway. Provider extras on the message (``reasoning_content``, ``annotations``, Gemini's
  ``extra_content``) ride along.
* messages: :func:`~gomodel_proxy.translators.messages_chat.message_to_events` plays text, tool use and unsigned
  thinking; it drops thinking signatures and treats unknown blocks as text, so a message with a signed thinking
  block, ``redacted_thinking`` or any other block is played here, with ``signature_delta`` and blocks passed whole.
* responses: the Responses object is played as OpenAI streams it (ids, items and parts kept). The chat-based
  ``chat_to_events`` of ``translators.responses_chat`` would rebuild ids and lose non-chat items, so it is not
  used. ``include_usage`` means nothing for messages and responses (their streams always carry usage).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from gomodel_proxy.cache.request_key import Api
from gomodel_proxy.translators.messages_chat import message_to_events
from gomodel_proxy.wire.sse import SSEEvent, SSEFramer, parse_event

_DONE = b"data: [DONE]\n\n"
#: Message fields carrying reasoning (xAI/DeepSeek, Groq/OpenRouter, OpenRouter, Anthropic-through-chat).
_REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details", "thinking_blocks")
#: Delta fields whose strings are pieces of one text (other fields: the last value wins, lists are joined).
_TEXT_FIELDS = frozenset({"content", "refusal", "reasoning_content", "reasoning"})
#: Top-level fields of a chat completion repeated on every chunk.
_CHUNK_HEAD = ("id", "created", "model", "service_tier", "system_fingerprint")


def body_to_stream(api: Api, body: bytes, *, include_usage: bool) -> bytes:
    """The SSE stream a client of ``api`` would have received for the whole answer ``body``.

    Raises ``ValueError`` when ``body`` is not such an answer.
    """
    answer = _load_object(body)
    try:
        if api == "chat":
            return _chat_events(answer, include_usage=include_usage)
        if api == "messages":
            return _message_events(answer)
        if api == "responses":
            return _response_events(answer)
    except (TypeError, AttributeError, KeyError) as exc:
        raise ValueError(f"not a {api} answer: {type(exc).__name__}: {exc}") from exc
    raise ValueError(f"unknown api {api!r}")


def stream_to_body(api: Api, sse: bytes) -> bytes | None:
    """The whole JSON answer of a complete ``api`` stream; ``None`` when it is incomplete, failed or unreadable."""
    assemble: Callable[[Iterator[tuple[str, Any]]], dict[str, Any] | None]
    if api == "chat":
        assemble = _assemble_chat
    elif api == "messages":
        assemble = _assemble_message
    elif api == "responses":
        assemble = _assemble_response
    else:
        raise ValueError(f"unknown api {api!r}")
    try:
        answer = assemble(_payloads(sse))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return None if answer is None else orjson.dumps(answer)


def adapt_chat_stream(sse: bytes, *, include_usage: bool, usage: Mapping[str, int] | None) -> bytes:
    """A stored chat stream for a client whose ``stream_options.include_usage`` differs from the first caller's.

    Without it, the usage-only chunk (``choices: []``) is removed. With it, a stream without one gets one
    before ``[DONE]``, made from ``usage`` (the cache entry's meta usage, ``input_tokens``/``output_tokens``/
    ``cached_tokens``/``reasoning_tokens``, or OpenAI's own names); without ``usage`` nothing can be added.
    Other events are kept byte for byte.
    """
    events = _events(sse)
    kept: list[bytes] = []
    head: dict[str, Any] | None = None
    has_usage = False
    done_at: int | None = None
    for raw, event in events:
        chunk = _chunk_of(event)
        if chunk is not None:
            if head is None:
                head = chunk
            if chunk.get("choices") == [] and isinstance(chunk.get("usage"), dict):
                has_usage = True
                if not include_usage:
                    continue
        if event.data == b"[DONE]" and done_at is None:
            done_at = len(kept)
        kept.append(raw)
    if include_usage and not has_usage and usage is not None and head is not None:
        extra = _sse({**_head(head), "choices": [], "usage": openai_usage(usage)})
        if done_at is None:
            kept[-1] = _terminated(kept[-1])  # a stream cut mid-event must not swallow the new one
            kept.append(extra)
        else:
            kept.insert(done_at, extra)
    return b"".join(kept)


def openai_usage(usage: Mapping[str, int]) -> dict[str, Any]:
    """Chat's ``usage`` object from the gateway's figures (or OpenAI's own names, which pass through)."""
    prompt = int(usage.get("input_tokens", usage.get("prompt_tokens", 0)))
    completion = int(usage.get("output_tokens", usage.get("completion_tokens", 0)))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": int(usage.get("cached_tokens", 0))},
        "completion_tokens_details": {"reasoning_tokens": int(usage.get("reasoning_tokens", 0))},
    }


# -- SSE helpers ------------------------------------------------------------------------------------------


def _terminated(raw: bytes) -> bytes:
    """``raw`` ending with a blank line."""
    if raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r")):
        return raw
    return raw + (b"\n" if raw.endswith(b"\n") else b"\n\n")


def _load_object(body: bytes) -> dict[str, Any]:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    return answer


def _events(sse: bytes) -> list[tuple[bytes, SSEEvent]]:
    framer = SSEFramer()
    raws = framer.feed(sse)
    rest = framer.flush()
    if rest.strip():
        raws.append(rest)
    return [(raw, parse_event(raw)) for raw in raws]


def _payloads(sse: bytes) -> Iterator[tuple[str, Any]]:
    """``(event name, parsed data)`` of each event with data; ``[DONE]`` is ``("", "[DONE]")``."""
    for _raw, event in _events(sse):
        if not event.data:
            continue
        if event.data == b"[DONE]":
            yield event.event, "[DONE]"
        else:
            yield event.event, orjson.loads(event.data)


def _chunk_of(event: SSEEvent) -> dict[str, Any] | None:
    if not event.data or event.data == b"[DONE]":
        return None
    try:
        chunk = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _sse(payload: Mapping[str, Any], name: str | None = None) -> bytes:
    line = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"event: " + name.encode() + b"\n" + line if name else line


def _head(answer: Mapping[str, Any]) -> dict[str, Any]:
    head = {k: answer[k] for k in _CHUNK_HEAD if k in answer}
    return {"id": head.pop("id", None), "object": "chat.completion.chunk", **head}


# -- chat -------------------------------------------------------------------------------------------------


def _chat_events(answer: dict[str, Any], *, include_usage: bool) -> bytes:
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ValueError("not a chat completion (no choices)")
    head = _head(answer)
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> None:
        out.append(_sse({**head, "choices": [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}))

    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        message = dict(choice.get("message") or {})
        content = message.pop("content", None)
        calls = message.pop("tool_calls", None) or []
        role = message.pop("role", "assistant")
        refusal = message.pop("refusal", None)
        start: dict[str, Any] = {"role": role, "content": "" if isinstance(content, str) else None}
        if refusal is None:
            start["refusal"] = None
        chunk(index, start)
        reasoning = {k: message.pop(k) for k in _REASONING_FIELDS if message.get(k)}
        if reasoning:
            chunk(index, reasoning)
        extras = {k: v for k, v in message.items() if v not in (None, [], {})}
        if content or extras:
            chunk(index, {**({"content": content} if content else {}), **extras}, logprobs=choice.get("logprobs"))
        if refusal:
            chunk(index, {"refusal": refusal})
        for n, call in enumerate(calls):
            chunk(index, {"tool_calls": [{"index": n, **call}]})
        chunk(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and isinstance(answer.get("usage"), dict):
        out.append(_sse({**head, "choices": [], "usage": answer["usage"]}))
    out.append(_DONE)
    return b"".join(out)


def _assemble_chat(payloads: Iterator[tuple[str, Any]]) -> dict[str, Any] | None:
    answer: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for name, chunk in payloads:
        if chunk == "[DONE]":
            break
        if name == "error" or "error" in chunk:
            return None
        for key in _CHUNK_HEAD:
            if chunk.get(key) is not None:
                answer[key] = chunk[key]
        usage = chunk.get("usage")
        if not isinstance(usage, dict) and isinstance(chunk.get("x_groq"), dict):
            usage = chunk["x_groq"].get("usage")
        if isinstance(usage, dict):
            answer["usage"] = usage
        for choice in chunk.get("choices") or []:
            _add_choice(choices.setdefault(choice.get("index", 0), {"tools": {}, "message": {}}), choice)
    if not choices or not all(c.get("finish_reason") for c in choices.values()):
        return None  # cut short: a stream may lack [DONE] (some providers), never its finish reasons
    out: dict[str, Any] = {"id": answer.pop("id", None), "object": "chat.completion",
                           "created": answer.pop("created", None), "model": answer.pop("model", None)}
    out["choices"] = [_choice_of(index, choices[index]) for index in sorted(choices)]
    out.update(answer)
    return out


def _add_choice(state: dict[str, Any], choice: dict[str, Any]) -> None:
    message: dict[str, Any] = state["message"]
    delta = choice.get("delta") or {}
    for key, value in delta.items():
        if key == "tool_calls":
            for n, call in enumerate(value or []):
                _add_call(state["tools"].setdefault(call.get("index", n), {}), call)
        elif key in _TEXT_FIELDS and isinstance(value, str):
            message[key] = message.get(key, "") + value
        elif isinstance(value, list):
            message[key] = [*message.get(key, []), *value]
        elif value is not None:
            message[key] = value
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict):
        held = state.setdefault("logprobs", {})
        for key, value in logprobs.items():
            held[key] = [*(held.get(key) or []), *value] if isinstance(value, list) else value
    if choice.get("finish_reason"):
        state["finish_reason"] = choice["finish_reason"]


def _add_call(call: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if key == "function":
            function = call.setdefault("function", {"name": "", "arguments": ""})
            for part in ("name", "arguments"):
                if isinstance(value.get(part), str):
                    function[part] += value[part]
        elif key != "index" and value is not None:
            call[key] = value


def _choice_of(index: int, state: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "refusal": None, **state["message"]}
    calls = [state["tools"][n] for n in sorted(state["tools"])]
    if calls:
        message["tool_calls"] = [{"id": c.get("id"), "type": c.get("type", "function"), **c} for c in calls]
    return {"index": index, "message": message, "logprobs": state.get("logprobs"),
            "finish_reason": state["finish_reason"]}


# -- messages ---------------------------------------------------------------------------------------------


def _message_events(message: dict[str, Any]) -> bytes:
    content = message.get("content")
    if message.get("type") != "message" or not isinstance(content, list):
        raise ValueError("not an Anthropic message")
    if all(_plain_block(block) for block in content):
        return message_to_events(message)
    out: list[bytes] = []
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 0}}
    out.append(_sse({"type": "message_start", "message": start}, "message_start"))
    for index, block in enumerate(content):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            empty, deltas = {**block, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
        elif kind == "thinking":
            empty = {**block, "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block.get("thinking", "")},
                      {"type": "signature_delta", "signature": block.get("signature", "")}]
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}]
        else:  # redacted_thinking, server tool blocks, ...: whole in the start event
            empty = block
        out.append(_sse({"type": "content_block_start", "index": index, "content_block": empty},
                        "content_block_start"))
        for delta in deltas:
            out.append(_sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"))
        out.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    out.append(_sse({
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")},
        "usage": usage,
    }, "message_delta"))
    out.append(_sse({"type": "message_stop"}, "message_stop"))
    return b"".join(out)


def _plain_block(block: Any) -> bool:
    """A block :func:`message_to_events` plays faithfully."""
    if not isinstance(block, dict):
        raise ValueError("content block is not an object")
    kind = block.get("type")
    if kind == "thinking":
        return not block.get("signature") and set(block) <= {"type", "thinking", "signature"}
    if kind == "text":
        return set(block) <= {"type", "text"}
    return kind == "tool_use"


def _assemble_message(payloads: Iterator[tuple[str, Any]]) -> dict[str, Any] | None:
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for name, payload in payloads:
        kind = payload.get("type") if isinstance(payload, dict) else None
        if name == "error" or kind == "error":
            return None
        if kind == "message_start":
            message = copy.deepcopy(payload["message"])
        elif kind == "content_block_start":
            blocks[payload["index"]] = copy.deepcopy(payload["content_block"])
        elif kind == "content_block_delta":
            _add_block_delta(blocks[payload["index"]], payload["delta"], partial, payload["index"])
        elif kind == "content_block_stop":
            index = payload["index"]
            if partial.get(index, "").strip():
                blocks[index]["input"] = orjson.loads(partial[index])
        elif kind == "message_delta" and message is not None:
            message.update({k: v for k, v in (payload.get("delta") or {}).items()})
            usage = message.setdefault("usage", {})
            usage.update({k: v for k, v in (payload.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop" and message is not None:
            message["content"] = [*message.get("content", []), *(blocks[i] for i in sorted(blocks))]
            return message
    return None


def _add_block_delta(block: dict[str, Any], delta: dict[str, Any], partial: dict[int, str], index: int) -> None:
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + delta["text"]
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + delta["thinking"]
    elif kind == "signature_delta":
        block["signature"] = block.get("signature", "") + delta["signature"]
    elif kind == "input_json_delta":
        partial[index] = partial.get(index, "") + delta["partial_json"]
    elif kind == "citations_delta":
        block["citations"] = [*(block.get("citations") or []), delta["citation"]]


# -- responses --------------------------------------------------------------------------------------------


_FINAL_EVENTS = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}


def _response_events(response: dict[str, Any]) -> bytes:
    output = response.get("output")
    if response.get("object") != "response" or not isinstance(output, list):
        raise ValueError("not a Responses object")
    out: list[bytes] = []
    seq = 0

    def emit(kind: str, payload: dict[str, Any]) -> None:
        nonlocal seq
        out.append(_sse({"type": kind, **payload, "sequence_number": seq}, kind))
        seq += 1

    shell = {**response, "status": "in_progress", "output": [], "usage": None}
    if "completed_at" in shell:
        shell["completed_at"] = None
    emit("response.created", {"response": shell})
    emit("response.in_progress", {"response": shell})
    for index, item in enumerate(output):
        _item_events(emit, index, item)
    status = response.get("status")
    emit(_FINAL_EVENTS.get(status if isinstance(status, str) else "", "response.completed"), {"response": response})
    return b"".join(out)


def _item_events(emit: Callable[[str, dict[str, Any]], None], index: int, item: dict[str, Any]) -> None:
    kind = item.get("type")
    item_id = item.get("id")
    at = {"item_id": item_id, "output_index": index}
    if kind == "message":
        emit("response.output_item.added", {"output_index": index,
                                            "item": {**item, "status": "in_progress", "content": []}})
        for part_index, part in enumerate(item.get("content") or []):
            _part_events(emit, {**at, "content_index": part_index}, part)
    elif kind == "function_call":
        emit("response.output_item.added", {"output_index": index,
                                            "item": {**item, "status": "in_progress", "arguments": ""}})
        arguments = item.get("arguments") or ""
        emit("response.function_call_arguments.delta", {**at, "delta": arguments})
        emit("response.function_call_arguments.done", {**at, "name": item.get("name"), "arguments": arguments})
    elif kind == "reasoning":
        summary, content = item.get("summary") or [], item.get("content") or []
        added = {**item, "summary": []}
        if "content" in item:
            added["content"] = []
        emit("response.output_item.added", {"output_index": index, "item": added})
        for summary_index, part in enumerate(summary):
            where = {**at, "summary_index": summary_index}
            text = part.get("text", "")
            emit("response.reasoning_summary_part.added", {**where, "part": {**part, "text": ""}})
            emit("response.reasoning_summary_text.delta", {**where, "delta": text})
            emit("response.reasoning_summary_text.done", {**where, "text": text})
            emit("response.reasoning_summary_part.done", {**where, "part": part})
        for content_index, part in enumerate(content):
            where = {**at, "content_index": content_index}
            emit("response.reasoning_text.delta", {**where, "delta": part.get("text", "")})
            emit("response.reasoning_text.done", {**where, "text": part.get("text", "")})
    else:  # built-in tool calls and other items: whole
        emit("response.output_item.added", {"output_index": index, "item": item})
    emit("response.output_item.done", {"output_index": index, "item": item})


def _part_events(emit: Callable[[str, dict[str, Any]], None], at: dict[str, Any], part: dict[str, Any]) -> None:
    kind = part.get("type")
    if kind == "output_text":
        text = part.get("text", "")
        logprobs = part.get("logprobs") or []
        emit("response.content_part.added", {**at, "part": {**part, "text": "", "annotations": [], "logprobs": []}})
        emit("response.output_text.delta", {**at, "delta": text, "logprobs": logprobs})
        for annotation_index, annotation in enumerate(part.get("annotations") or []):
            emit("response.output_text.annotation.added",
                 {**at, "annotation_index": annotation_index, "annotation": annotation})
        emit("response.output_text.done", {**at, "text": text, "logprobs": logprobs})
    elif kind == "refusal":
        emit("response.content_part.added", {**at, "part": {**part, "refusal": ""}})
        emit("response.refusal.delta", {**at, "delta": part.get("refusal", "")})
        emit("response.refusal.done", {**at, "refusal": part.get("refusal", "")})
    else:
        emit("response.content_part.added", {**at, "part": part})
    emit("response.content_part.done", {**at, "part": part})


def _assemble_response(payloads: Iterator[tuple[str, Any]]) -> dict[str, Any] | None:
    for name, payload in payloads:
        kind = payload.get("type") if isinstance(payload, dict) else name
        if kind in ("response.completed", "response.incomplete"):
            response = payload["response"]
            return response if isinstance(response, dict) else None
        if kind in ("error", "response.failed"):
            return None
    return None
