"""Anthropic Messages API <-> OpenAI chat completions, so Anthropic clients can use any provider.

Requests go Messages -> chat (:func:`messages_to_chat`); answers come back chat -> Messages, whole
(:func:`chat_to_message`) or streamed (:class:`ChatToMessagesStream`). What the mapping cannot carry:

- ``top_k``: OpenAI's API has none; it is dropped.
- ``cache_control``, citations, thinking ``signature`` and ``redacted_thinking`` blocks: Anthropic-only
  (OpenAI caches prompts on its own); dropped. Thinking *text* goes back as ``reasoning_content``.
- ``tool_result.is_error``: chat tool messages have no such flag; the content is prefixed ``"Error: "``.
- Images inside a ``tool_result``: chat tool messages take text only, so they follow in a user message.
- ``thinking.budget_tokens`` becomes ``reasoning_effort`` (:func:`reasoning_effort_for_budget`).
- ``stop_sequence`` as the stop reason: only when the provider says which stop sequence matched
  (vLLM's ``stop_reason``, SGLang's ``matched_stop``); OpenAI reports a plain ``"stop"`` -> ``end_turn``.
- Anthropic server tools (web search, code execution, ...), Files API sources and other block types
  without a chat equivalent are refused with a 400 rather than silently dropped.
- A tool call's thought signature (Gemini's ``extra_content.google.thought_signature``) rides in the
  ``tool_use`` id, the one thing of the block every client sends back (:func:`signed_tool_id`).

Usage: Anthropic's ``input_tokens`` excludes cached input, OpenAI's ``prompt_tokens`` includes it, so
``input_tokens = prompt_tokens - cached - cache writes`` and the cache figures go to their own fields.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

import orjson

from gomodel_proxy.core.errors import InvalidRequestError, anthropic_error_type
from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

#: ``thinking.budget_tokens`` below these go to "low", then "medium"; from the second one, "high".
#: Chosen so that Claude Code's "think" (4k), "think hard" (10k) and "ultrathink" (32k) land on
#: low, medium and high.
EFFORT_THRESHOLDS = (8_000, 24_000)

#: Chat finish reasons -> Anthropic stop reasons (``stop`` is refined by the caller).
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: Error ``type`` values that already are Anthropic's, or OpenAI's with an Anthropic twin.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "rate_limit_error": "rate_limit_error",
    "overloaded_error": "overloaded_error",
    "api_error": "api_error",
    "timeout_error": "timeout_error",
    "billing_error": "billing_error",
    "request_too_large": "request_too_large",
    "server_error": "api_error",
    "insufficient_quota": "rate_limit_error",
}
#: Per image or document block in :func:`estimate_input_tokens` (Anthropic bills a ~1.15 MP image ~1,600).
MEDIA_TOKENS = 1_600


# -- tool ids that carry a thought signature --------------------------------------------------------------

#: Between a tool call's id and its thought signature in a ``tool_use`` id (see :func:`signed_tool_id`).
TOOL_ID_SEPARATOR = "~"
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_TO_URL_SAFE = str.maketrans("+/", "-_")
_FROM_URL_SAFE = str.maketrans("-_", "+/")


def signed_tool_id(call_id: str, signature: str | None) -> str:
    """The Anthropic ``tool_use`` id of a chat tool call, carrying the call's thought signature, if any.

    Why: Gemini (3 and later) refuses the next tool-use turn unless each function call comes back with
    the ``thoughtSignature`` it was given (in chat, ``extra_content.google.thought_signature``), and an
    Anthropic client sends a ``tool_use`` block back with its own fields only (``id``, ``name``, ``input``:
    Claude Code's typed SDK drops any other). The ``id`` always comes back, and each ``tool_result`` names
    it: so the signature goes into the id, and :func:`split_tool_id` takes it out again on the next turn.

    - ``<call id>~<signature>``: a standard base64 signature (Gemini's form) in the url-safe alphabet,
      unpadded (``+`` ``/`` become ``-`` ``_``, ``=`` is dropped); one already url-safe is unchanged.
    - ``<call id>~~<url-safe base64 of the signature's UTF-8, unpadded>``: any other signature, so that
      every signature comes back exactly as it was given.

    ``~`` appears in neither part (the signature part keeps to ``[A-Za-z0-9_-]``; a call id holding a ``~``
    is left alone, without its signature). Anthropic's SDKs take any string as an id; only Anthropic's own
    API requires ``[A-Za-z0-9_-]``, which matters only if such a history is sent to a Claude model later.
    """
    if not signature or not call_id or TOOL_ID_SEPARATOR in call_id:
        return call_id
    signed = call_id + TOOL_ID_SEPARATOR + signature.rstrip("=").translate(_TO_URL_SAFE)
    if split_tool_id(signed) == (call_id, signature):
        return signed
    wrapped = base64.urlsafe_b64encode(signature.encode()).rstrip(b"=").decode("ascii")
    return call_id + TOOL_ID_SEPARATOR * 2 + wrapped


def split_tool_id(tool_id: str) -> tuple[str, str | None]:
    """``(call id, thought signature)`` of a ``tool_use`` id made by :func:`signed_tool_id`; any other id
    is ``(tool_id, None)``."""
    call_id, separator, packed = tool_id.partition(TOOL_ID_SEPARATOR)
    wrapped = packed.startswith(TOOL_ID_SEPARATOR)
    if wrapped:
        packed = packed[1:]
    if not (separator and call_id and _URL_SAFE.fullmatch(packed)) or len(packed) % 4 == 1:
        return tool_id, None
    padded = packed + "=" * (-len(packed) % 4)
    if not wrapped:
        return call_id, padded.translate(_FROM_URL_SAFE)
    try:
        return call_id, base64.urlsafe_b64decode(padded).decode()
    except ValueError:  # not base64 (binascii.Error) or not UTF-8 (UnicodeDecodeError)
        return tool_id, None


def _thought_signature(call: dict[str, Any]) -> str | None:
    """A chat tool call's ``extra_content.google.thought_signature``, if any."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


# -- requests ---------------------------------------------------------------------------------------------


def reasoning_effort_for_budget(budget: int) -> str:
    """OpenAI's ``reasoning_effort`` for an Anthropic thinking budget (see ``EFFORT_THRESHOLDS``)."""
    low, medium = EFFORT_THRESHOLDS
    if budget < low:
        return "low"
    return "medium" if budget < medium else "high"


def messages_to_chat(body: dict[str, Any], *, include_usage: bool = True) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat-completions request.

    ``include_usage`` asks a streamed answer for its usage (the stream translator needs it for
    ``message_delta``); off for providers configured to refuse ``stream_options``.
    """
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidRequestError("'messages' must be an array of messages.", param="messages")
    out: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages.{i} must be an object.", param=f"messages.{i}")
        role = message.get("role")
        if role == "user":
            out.extend(_user_messages(message.get("content"), i))
        elif role == "assistant":
            out.append(_assistant_message(message.get("content"), i))
        else:
            raise InvalidRequestError(
                f"messages.{i}.role must be 'user' or 'assistant', not {role!r}.", param=f"messages.{i}.role"
            )
    chat: dict[str, Any] = {"model": body.get("model"), "messages": out}
    if isinstance(body.get("max_tokens"), int):
        chat["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if isinstance(stops, list) and stops:
        chat["stop"] = stops
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    effort = _reasoning_effort(body)
    if effort is not None:
        chat["reasoning_effort"] = effort
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [_tool(t, i) for i, t in enumerate(tools)]
    _tool_choice(body.get("tool_choice"), chat)
    if body.get("stream") is True:
        chat["stream"] = True
        if include_usage:
            chat["stream_options"] = {"include_usage": True}
    return chat


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        # Several system blocks (Claude Code sends a few, for cache breakpoints) read as one text.
        return "\n\n".join(b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str))
    if system is None:
        return ""
    raise InvalidRequestError("'system' must be a string or an array of text blocks.", param="system")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content must be a string or an array of blocks.", param=f"{where}.content")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise InvalidRequestError(f"{where}.content.{j} must be a block with a 'type'.",
                                      param=f"{where}.content.{j}")
    return content


def _user_messages(content: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic user turn: its tool results become ``tool`` messages (first, as chat requires them
    right after the assistant's tool calls), the rest one user message."""
    where = f"messages.{i}"
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    tool_media: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "tool_result":
            text, media = _tool_result_content(block.get("content"), f"{where}.content.{j}")
            if block.get("is_error") is True:
                text = "Error: " + text
            call_id = split_tool_id(str(block.get("tool_use_id", "")))[0]
            tools.append({"role": "tool", "tool_call_id": call_id, "content": text})
            tool_media.extend(media)
        else:
            part = _content_part(block, f"{where}.content.{j}")
            if part is not None:
                parts.append(part)
    parts = tool_media + parts
    out = tools
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _tool_result_content(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    media: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        part = _content_part(block, f"{where}.content.{j}")
        if part is None:
            continue
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            media.append(part)
    return "\n".join(texts), media


def _content_part(block: dict[str, Any], where: str) -> dict[str, Any] | None:
    """A user-side block as a chat content part; ``None`` for a block with nothing to carry."""
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _media_url(block.get("source"), where, "image")}}
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
            return {"type": "text", "text": source["data"]}
        if isinstance(source, dict) and source.get("type") == "base64":
            file: dict[str, Any] = {"file_data": _media_url(source, where, "document")}
            if isinstance(block.get("title"), str):
                file["filename"] = block["title"]
            return {"type": "file", "file": file}
        raise InvalidRequestError(
            f"{where}: a document must be base64 or text to reach this provider (OpenAI chat cannot fetch "
            "document URLs or Files API ids).", param=where,
        )
    if kind in ("thinking", "redacted_thinking"):
        return None
    raise InvalidRequestError(
        f"{where}: content blocks of type '{kind}' cannot be translated for this provider (it does not speak "
        "Anthropic's API).", param=where,
    )


def _media_url(source: Any, where: str, what: str) -> str:
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return f"data:{source.get('media_type') or 'application/octet-stream'};base64,{source['data']}"
        if source.get("type") == "url" and isinstance(source.get("url"), str) and what == "image":
            return str(source["url"])
    raise InvalidRequestError(f"{where}: an {what} source must be base64 data or a URL.", param=f"{where}.source")


def _assistant_message(content: Any, i: int) -> dict[str, Any]:
    where = f"messages.{i}"
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(_blocks(content, where)):
        kind = block["type"]
        if kind == "text":
            if isinstance(block.get("text"), str) and block["text"]:
                texts.append(block["text"])
        elif kind == "tool_use":
            call_id, signature = split_tool_id(str(block.get("id", "")))
            call: dict[str, Any] = {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": str(block.get("name", "")),
                    "arguments": orjson.dumps(block.get("input") or {}).decode(),
                },
            }
            if signature is not None:
                call["extra_content"] = {"google": {"thought_signature": signature}}
            calls.append(call)
        elif kind == "thinking":
            if isinstance(block.get("thinking"), str) and block["thinking"]:
                thinking.append(block["thinking"])
        elif kind != "redacted_thinking":  # opaque: only Anthropic can read it back
            raise InvalidRequestError(
                f"{where}.content.{j}: assistant blocks of type '{kind}' cannot be translated for this provider.",
                param=f"{where}.content.{j}",
            )
    message: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if thinking:
        message["reasoning_content"] = "\n\n".join(thinking)
    return message


def _tool(tool: Any, i: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise InvalidRequestError(f"tools.{i} must be an object with a 'name'.", param=f"tools.{i}")
    kind = tool.get("type")
    if "input_schema" not in tool or kind not in (None, "custom"):
        raise InvalidRequestError(
            f"tools.{i} ('{tool['name']}', type {kind!r}) is an Anthropic server tool; only tools with an "
            "input_schema can be translated for this provider.", param=f"tools.{i}",
        )
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if isinstance(tool.get("description"), str) and tool["description"]:
        function["description"] = tool["description"]
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif kind == "none":
        chat["tool_choice"] = "none"
    if choice.get("disable_parallel_tool_use") is True and chat.get("tools"):
        chat["parallel_tool_calls"] = False


def _reasoning_effort(body: dict[str, Any]) -> str | None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        return reasoning_effort_for_budget(budget if isinstance(budget, int) else 0)
    config = body.get("output_config")
    if isinstance(config, dict) and config.get("effort") in ("low", "medium", "high"):
        return str(config["effort"])
    return None


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """About how many input tokens a Messages request holds, with no tokenizer: ~4 characters per
    token over its text (system, messages, tool inputs and results, tool definitions), plus
    ``MEDIA_TOKENS`` per image or document."""
    chars = 0
    media = 0

    def walk(value: Any) -> None:
        nonlocal chars, media
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind in ("image", "document") and isinstance(value.get("source"), dict) \
                    and value["source"].get("type") != "text":
                media += 1
                return
            if kind == "tool_use":
                chars += len(str(value.get("name", ""))) + len(orjson.dumps(value.get("input") or {}))
                return
            for key in ("text", "thinking", "content", "source", "data"):
                if key in value:
                    walk(value[key])

    walk(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            walk(message.get("content"))
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            chars += len(orjson.dumps(tool))
    return max(1, -(-chars // 4) + media * MEDIA_TOKENS)


# -- answers ----------------------------------------------------------------------------------------------


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic's ``usage`` from OpenAI's (cached input moved out of ``input_tokens``)."""
    if not isinstance(usage, dict):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = _int(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = written = 0
    if isinstance(details, dict):
        cached = _int(details.get("cached_tokens"))
        written = _int(details.get("cache_write_tokens"))  # OpenRouter
    return {
        "input_tokens": max(0, prompt - cached - written),
        "output_tokens": _int(usage.get("completion_tokens")),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def message_id(upstream_id: Any) -> str:
    """A ``msg_`` id derived from the provider's, so that the two can be matched in logs."""
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id
    return "msg_" + os.urandom(12).hex()


def stop_reason(
    finish_reason: Any, choice: dict[str, Any], stop_sequences: list[str] | None, *, has_tool_calls: bool
) -> tuple[str, str | None]:
    """Anthropic's ``(stop_reason, stop_sequence)`` for a chat choice's finish."""
    if finish_reason == "stop" or finish_reason is None:
        if has_tool_calls:
            return "tool_use", None  # some providers (Gemini's OpenAI endpoint) say "stop" after tool calls
        if stop_sequences:
            for key in ("stop_reason", "matched_stop"):  # vLLM, SGLang: the stop string that matched
                matched = choice.get(key)
                if isinstance(matched, str) and matched in stop_sequences:
                    return "stop_sequence", matched
        return "end_turn", None
    return _STOP_REASONS.get(str(finish_reason), "end_turn"), None


def chat_to_message(
    chat: dict[str, Any], *, model: str = "", stop_sequences: list[str] | None = None
) -> dict[str, Any]:
    """A whole chat.completion as an Anthropic message (``model``: used when the body names none)."""
    choices = chat.get("choices")
    choice: dict[str, Any] = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
        else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    assert isinstance(message, dict)
    content: list[dict[str, Any]] = []
    reasoning = _reasoning_of(message)
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, list):  # content parts, from some providers
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
    refusal = message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    elif isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    calls = message.get("tool_calls")
    calls = calls if isinstance(calls, list) else []
    for i, call in enumerate(calls):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        content.append({
            "type": "tool_use",
            "id": signed_tool_id(str(call.get("id") or f"call_{i}"), _thought_signature(call)),
            "name": str(function.get("name") or ""),
            "input": tool_input(function.get("arguments")),
        })
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice, stop_sequences, has_tool_calls=bool(calls)
    )
    if isinstance(refusal, str) and refusal and not text:
        reason = "refusal"
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model") if isinstance(chat.get("model"), str) else model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(chat.get("usage")),
    }


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON-string arguments as Anthropic's ``input`` object.

    Arguments that are not a JSON object (a model cut off mid-call) are kept, unparsed, under
    ``"_arguments"`` rather than lost: ``input`` must be an object.
    """
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"_arguments": arguments}


def _reasoning_of(holder: dict[str, Any]) -> str:
    """The reasoning text of a chat message or delta: ``reasoning_content`` (xAI, DeepSeek) or
    ``reasoning`` (Groq, OpenRouter, vLLM); one of them, never both (some send the same text twice)."""
    value = holder.get("reasoning_content")
    if not (isinstance(value, str) and value):
        value = holder.get("reasoning")
    return value if isinstance(value, str) else ""


def message_to_events(message: dict[str, Any]) -> bytes:
    """A whole Anthropic message as the SSE events that would have streamed it (for a provider that
    answered a streamed request with one JSON body)."""
    out: list[bytes] = []
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {**usage, "output_tokens": 0}}
    _emit(out, "message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "thinking":
            empty: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
            delta: dict[str, Any] = {"type": "thinking_delta", "thinking": block.get("thinking", "")}
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input") or {}).decode()}
        else:
            empty = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        _emit(out, "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})
        _emit(out, "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        _emit(out, "content_block_stop", {"type": "content_block_stop", "index": index})
    _emit(out, "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")},
        "usage": usage,
    })
    _emit(out, "message_stop", {"type": "message_stop"})
    return b"".join(out)


def _emit(out: list[bytes], name: str, payload: dict[str, Any]) -> None:
    out.append(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n")


def anthropic_error_of(error: Any, *, status: int | None = None) -> dict[str, Any]:
    """Anthropic's ``{"type": "error", "error": {type, message}}`` for an OpenAI-style error object."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    kind = _ERROR_TYPES.get(str(error.get("type")))
    if kind is None:
        codes = [_int(error.get(k)) for k in ("status_code", "status", "code")]
        code = next((c for c in codes if c >= 400), status)
        kind = anthropic_error_type(code) if code is not None else "api_error"
    message = error.get("message")
    return {"type": "error", "error": {"type": kind, "message": message if isinstance(message, str) else str(error)}}


# -- streams ----------------------------------------------------------------------------------------------

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_DONE = b"[DONE]"
_TRUNCATED = (
    "The provider's stream ended before it was complete (no finish reason and no [DONE]); the answer is "
    "incomplete."
)


class ChatToMessagesStream:
    """OpenAI chat-completions SSE in (any split), Anthropic Messages SSE out.

    Blocks are opened as their kind changes (thinking, text, one ``tool_use`` per tool call index)
    and closed before the next; tool arguments pass through as ``input_json_delta`` fragments as
    they arrive. The message ends (``message_delta`` + ``message_stop``) at ``[DONE]``, or at the end
    of a stream that gave a finish reason; an upstream error, or an end without either, becomes an
    ``error`` event instead, and nothing follows it.
    """

    __slots__ = (
        "_block", "_ended", "_finish", "_framer", "_index", "_matched", "_model", "_started", "_stop_sequences",
        "_tool_blocks", "_usage_raw", "complete", "content_events", "error", "message_id", "usage",
    )

    def __init__(self, *, model: str = "", stop_sequences: list[str] | None = None) -> None:
        self._framer = SSEFramer()
        self._model = model
        self._stop_sequences = stop_sequences
        self._started = False
        self._ended = False
        #: The open block: (kind, tool index or -1); ``None`` before the first or after it closed.
        self._block: tuple[str, int] | None = None
        self._index = -1
        self._tool_blocks: dict[int, int] = {}
        self._finish: Any = None
        self._matched: str | None = None
        self._usage_raw: dict[str, Any] | None = None
        self.message_id = ""
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.complete = False
        #: Chunks that carried choices (an estimate of output tokens when usage never comes).
        self.content_events = 0

    def feed(self, data: bytes) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        for raw in self._framer.feed(data):
            self._event(raw, out)
            if self._ended:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        rest = self._framer.flush()
        if rest.strip():
            self._event(rest, out)  # a last event without its blank line: taken if it parses
        if self._ended:
            return b"".join(out)
        if self._finish is not None:
            self._end(out)
        else:
            self.error = {"type": "api_error", "message": _TRUNCATED, "code": "stream_truncated"}
            _emit(out, "error", {"type": "error", "error": {"type": "api_error", "message": _TRUNCATED}})
            self._ended = True
        return b"".join(out)

    # -- one upstream event --------------------------------------------------------------------------
    def _event(self, raw: bytes, out: list[bytes]) -> None:
        event = parse_event(raw)
        data = event.data
        if not data:
            if event.event == "error":
                self._fail({"message": "the provider sent an error event without details"}, out)
            elif not event.event:
                out.append(_PING)  # a comment keep-alive (OpenRouter's PROCESSING) stays a keep-alive
            return
        if data == _DONE:
            self._end(out)
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            if event.event == "error":
                self._fail({"message": data.decode("utf-8", "replace")}, out)
            return
        usage = payload.get("usage")
        if not isinstance(usage, dict):
            x_groq = payload.get("x_groq")
            usage = x_groq.get("usage") if isinstance(x_groq, dict) else None
        if isinstance(usage, dict):
            self._usage_raw = usage
            self.usage = Usage.from_openai(usage)
        error = payload.get("error")
        if event.event == "error" or isinstance(error, dict | str):
            self._fail(error if error is not None else payload, out)
            return
        if not self._started:
            self._start(payload, out)
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        self.content_events += 1
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = _reasoning_of(delta)
            if reasoning:
                self._switch("thinking", -1, {"type": "thinking", "thinking": "", "signature": ""}, out)
                self._delta({"type": "thinking_delta", "thinking": reasoning}, out)
            details = delta.get("reasoning_details")
            if isinstance(details, list) and self._block is not None and self._block[0] == "thinking":
                for detail in details:
                    if isinstance(detail, dict) and isinstance(detail.get("signature"), str) and detail["signature"]:
                        self._delta({"type": "signature_delta", "signature": detail["signature"]}, out)
            text = delta.get("content")
            if not (isinstance(text, str) and text):
                text = delta.get("refusal")
            if isinstance(text, str) and text:
                self._switch("text", -1, {"type": "text", "text": ""}, out)
                self._delta({"type": "text_delta", "text": text}, out)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        self._tool_call(call, position, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            for key in ("stop_reason", "matched_stop"):
                if isinstance(choice.get(key), str):
                    self._matched = choice[key]

    def _tool_call(self, call: dict[str, Any], position: int, out: list[bytes]) -> None:
        key = call["index"] if isinstance(call.get("index"), int) else position
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        assert isinstance(function, dict)
        index = self._tool_blocks.get(key)
        if index is None:
            # A signature must come with the call's first delta (as Gemini's translation sends it): the id
            # is out with the block's start.
            self._switch("tool_use", key, {
                "type": "tool_use",
                "id": signed_tool_id(str(call.get("id") or f"call_{key}"), _thought_signature(call)),
                "name": str(function.get("name") or ""),
                "input": {},
            }, out)
            index = self._tool_blocks[key] = self._index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # A late fragment of an earlier call (no provider is known to interleave) still reaches its block.
            _emit(out, "content_block_delta", {
                "type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            })

    # -- Anthropic events -----------------------------------------------------------------------------
    def _start(self, payload: dict[str, Any] | None, out: list[bytes]) -> None:
        self._started = True
        payload = payload or {}
        self.message_id = message_id(payload.get("id"))
        model = payload.get("model")
        usage = anthropic_usage(self._usage_raw) if self._usage_raw is not None else \
            {"input_tokens": 0, "output_tokens": 0}
        _emit(out, "message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant",
            "model": model if isinstance(model, str) and model else self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {**usage, "output_tokens": 0},
        }})

    def _switch(self, kind: str, key: int, block: dict[str, Any], out: list[bytes]) -> None:
        if self._block == (kind, key):
            return
        self._close_block(out)
        self._index += 1
        self._block = (kind, key)
        _emit(out, "content_block_start", {"type": "content_block_start", "index": self._index,
                                           "content_block": block})

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        _emit(out, "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close_block(self, out: list[bytes]) -> None:
        if self._block is not None:
            _emit(out, "content_block_stop", {"type": "content_block_stop", "index": self._index})
            self._block = None

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start(None, out)
        self._close_block(out)
        reason, sequence = stop_reason(
            self._finish, {"stop_reason": self._matched}, self._stop_sequences, has_tool_calls=bool(self._tool_blocks)
        )
        usage = anthropic_usage(self._usage_raw) if self._usage_raw is not None else {"output_tokens": 0}
        _emit(out, "message_delta", {
            "type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage,
        })
        _emit(out, "message_stop", {"type": "message_stop"})
        self._ended = True
        self.complete = True

    def _fail(self, error: Any, out: list[bytes]) -> None:
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        _emit(out, "error", anthropic_error_of(self.error))
        self._ended = True
        # An error event is the stream's proper (failed) end, as for ChatStreamTap: not a truncation.
        self.complete = True
