"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.fixtures import Fixture, split_sse_events, sse_data
from tests.support.gateway import Gateway

MESSAGES = [{"role": "user", "content": "Say hello."}]


async def sdk_call(gateway: Gateway, mode: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
    """Call ``client.<method>(**kwargs)`` with the sync client (in a thread) or the async one.

    A stream is consumed whole and returned as the list of its chunks. ``request_id=`` sends X-Request-ID.
    """
    stream = kwargs.get("stream") is True
    request_id = kwargs.pop("request_id", None)
    if request_id is not None:  # names the gateway's usage record (see Gateway.record)
        kwargs["extra_headers"] = {**kwargs.get("extra_headers", {}), "X-Request-ID": request_id}
    if mode == "sync":
        client = gateway.openai()

        def run() -> Any:
            result = _resolve(client, method)(*args, **kwargs)
            return list(result) if stream else result

        return await asyncio.to_thread(run)
    assert mode == "async", mode
    aclient = gateway.async_openai()
    result = await _resolve(aclient, method)(*args, **kwargs)
    if stream:
        return [chunk async for chunk in result]
    return result


def _resolve(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def content_of_payloads(payloads: list[dict[str, Any]]) -> str:
    """The assistant text of a stream's chunk payloads (choice 0)."""
    parts = []
    for payload in payloads:
        for choice in payload.get("choices") or []:
            if choice.get("index", 0) == 0:
                parts.append((choice.get("delta") or {}).get("content") or "")
    return "".join(parts)


def tool_calls_of_payloads(payloads: list[dict[str, Any]]) -> dict[int, dict[str, str]]:
    """Tool calls reassembled from the deltas of a stream's chunk payloads: index -> id, name, arguments."""
    calls: dict[int, dict[str, str]] = {}
    for payload in payloads:
        for choice in payload.get("choices") or []:
            for delta in (choice.get("delta") or {}).get("tool_calls") or []:
                call = calls.setdefault(delta["index"], {"id": "", "name": "", "arguments": ""})
                if delta.get("id"):
                    call["id"] = delta["id"]
                function = delta.get("function") or {}
                if function.get("name"):
                    call["name"] = function["name"]
                call["arguments"] += function.get("arguments") or ""
    return calls


def tool_calls_of_chunks(chunks: list[Any]) -> dict[int, dict[str, str]]:
    """The same reassembly, from the SDK's parsed chunk objects."""
    return tool_calls_of_payloads([c.model_dump() for c in chunks])


def events_of(body: bytes) -> list[bytes]:
    return split_sse_events(body)


def payloads_of(body: bytes) -> list[Any]:
    """The JSON ``data:`` payloads of an SSE body, ``[DONE]`` excluded."""
    out = []
    for event in split_sse_events(body):
        data = sse_data(event)
        if data is not None and data != b"[DONE]":
            out.append(json.loads(data))
    return out


def expected_after_strip(fx: Fixture) -> list[Any]:
    """The fixture's payloads as a client that did not ask for usage should see them:
    no usage-only chunk (``choices: []``) and no ``usage: null`` member."""
    out = []
    for payload in fx.data_payloads:
        if payload.get("choices") == [] and isinstance(payload.get("usage"), dict):
            continue
        out.append({k: v for k, v in payload.items() if not (k == "usage" and v is None)})
    return out


def usage_numbers(usage: dict[str, Any]) -> tuple[int, int, int, int]:
    """(input, output, cached, reasoning) from an OpenAI ``usage`` object, as the gateway normalises them."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        prompt_details.get("cached_tokens", 0),
        completion_details.get("reasoning_tokens", 0),
    )


def record_numbers(record: Any) -> tuple[int, int, int, int]:
    u = record.usage
    assert u is not None, f"no usage recorded for {record.request_id}"
    return (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens)
