"""Checking Responses API output with the openai SDK's own models, against what a chat answer held.

``chat_facts`` reads a recorded chat-completions answer (stream or body) independently of the package:
text, reasoning, tool calls, finish reason, usage, error. ``responses_events`` splits a Responses SSE
body into its payloads, checking the ``event:`` line against ``type`` and the sequence numbers;
``validate_events``/``validate_response`` parse them with the SDK's pydantic models (validation, not
``construct``), and ``accumulate`` runs the SDK's own stream accumulator over them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from .fixtures import split_sse_events, sse_data, sse_event_name

_EVENT = TypeAdapter(ResponseStreamEvent)


@dataclass
class ChatFacts:
    """What a chat answer said (choice 0), read naively from the recording."""

    content: str = ""
    reasoning: str = ""
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    done: bool = False

    @property
    def calls(self) -> list[dict[str, str]]:
        return [self.tool_calls[i] for i in sorted(self.tool_calls)]


def reframe_chunks(raw: bytes) -> bytes:
    """A ``.chunks.jsonl`` recording as the SSE body a provider sends."""
    lines = [line for line in raw.splitlines() if line.strip()]
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def chat_stream_facts(body: bytes) -> ChatFacts:
    facts = ChatFacts()
    for event in split_sse_events(body):
        data = sse_data(event)
        if data is None:
            continue
        if data.strip() == b"[DONE]":
            facts.done = True
            continue
        try:
            payload = json.loads(data)
        except ValueError:
            continue
        if isinstance(payload.get("error"), dict) or sse_event_name(event) == "error":
            facts.error = payload.get("error") or payload
            break
        usage = payload.get("usage")
        if not isinstance(usage, dict) and isinstance(payload.get("x_groq"), dict):
            usage = payload["x_groq"].get("usage")
        if isinstance(usage, dict):
            facts.usage = usage
        for choice in payload.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            facts.content += delta.get("content") or ""
            facts.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            for n, call in enumerate(delta.get("tool_calls") or []):
                slot = facts.tool_calls.setdefault(call.get("index", n), {"id": "", "name": "", "arguments": ""})
                slot["id"] = slot["id"] or call.get("id") or ""
                function = call.get("function") or {}
                slot["name"] = slot["name"] or function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                facts.finish_reason = choice["finish_reason"]
    return facts


def chat_body_facts(body: dict[str, Any]) -> ChatFacts:
    choice = body["choices"][0]
    message = choice.get("message") or {}
    calls = {
        n: {"id": c.get("id") or "", "name": c["function"]["name"], "arguments": c["function"].get("arguments") or ""}
        for n, c in enumerate(message.get("tool_calls") or [])
    }
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content)
    return ChatFacts(
        content=content or "",
        reasoning=message.get("reasoning_content") or message.get("reasoning") or "",
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=body.get("usage"),
        done=True,
    )


def responses_events(data: bytes) -> list[dict[str, Any]]:
    """The payloads of a Responses SSE body, checking framing: ``event:`` matches ``type``; sequence
    numbers count from 0 without a gap."""
    payloads = []
    events = split_sse_events(data)
    assert data.endswith(b"\n\n"), data[-200:]
    for n, event in enumerate(events):
        raw = sse_data(event)
        assert raw is not None, event
        payload = json.loads(raw)
        assert sse_event_name(event) == payload["type"], event
        assert payload["sequence_number"] == n, (n, payload)
        payloads.append(payload)
    return payloads


def validate_events(payloads: list[dict[str, Any]]) -> list[Any]:
    """Each payload parsed (validated) as the SDK's ``ResponseStreamEvent``."""
    out = []
    for payload in payloads:
        event = _EVENT.validate_python(payload)
        assert event.type == payload["type"]
        out.append(event)
    return out


def validate_response(payload: dict[str, Any]) -> Response:
    return Response.model_validate(payload)


def accumulate(payloads: list[dict[str, Any]], tools: Any = omit) -> Any:
    """Run the SDK's own stream accumulator (what ``responses.stream()`` uses); the final response
    when the stream completed, else ``None``."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=tools, text_format=omit)
    for event in validate_events(payloads):
        state.handle_event(event)
    return state._completed_response


def output_facts(response: dict[str, Any] | Any) -> ChatFacts:
    """The text, reasoning and function calls of a Responses object (dict or SDK model)."""
    data = response if isinstance(response, dict) else response.model_dump(exclude_none=True)
    facts = ChatFacts()
    calls = 0
    for item in data["output"]:
        if item["type"] == "message":
            facts.content += "".join(p.get("text", "") for p in item["content"] if p["type"] == "output_text")
        elif item["type"] == "reasoning":
            facts.reasoning += "".join(p["text"] for p in item.get("content") or [])
        elif item["type"] == "function_call":
            facts.tool_calls[calls] = {"id": item["call_id"], "name": item["name"], "arguments": item["arguments"]}
            calls += 1
    facts.usage = data.get("usage")
    return facts


def usage_matches(responses_usage: dict[str, Any] | None, chat_usage: dict[str, Any] | None) -> None:
    if chat_usage is None:
        assert responses_usage is None
        return
    assert responses_usage is not None
    assert responses_usage["input_tokens"] == chat_usage["prompt_tokens"]
    assert responses_usage["output_tokens"] == chat_usage["completion_tokens"]
    assert responses_usage["total_tokens"] == chat_usage["total_tokens"]
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    assert responses_usage["input_tokens_details"]["cached_tokens"] == cached
    assert responses_usage["output_tokens_details"]["reasoning_tokens"] == reasoning
