"""OpenAI chat completions <-> Anthropic Messages: requests, whole answers, streams and errors. No I/O.

Thinking round trip: Anthropic only accepts earlier thinking back with its ``signature`` (or the opaque
``data`` of a ``redacted_thinking`` block), which OpenAI's shape has no field for. Answers therefore
carry, beside ``message.reasoning_content`` (the thinking text), ``message.thinking_blocks``: the
blocks as Anthropic sent them (``{"type": "thinking", "thinking", "signature"}`` or
``{"type": "redacted_thinking", "data"}``), the convention LiteLLM also uses. A client that sends the
assistant message back as it got it (the SDKs keep unknown fields) sends them back; requests turn an
assistant message's ``thinking_blocks`` into thinking blocks again. Streams send each block whole, once,
in a ``delta.thinking_blocks`` entry with an ``index`` when the block ends (so the openai SDK's stream
accumulator builds the same list), after its text went out as ``delta.reasoning_content``.

``reasoning_effort`` becomes ``thinking: {type: enabled, budget_tokens}`` per :data:`THINKING_BUDGETS`;
an Anthropic-style ``thinking`` object in the body is passed as it is and wins.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gomodel_proxy.core.errors import InvalidRequestError, error_type_for_status
from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

#: ``reasoning_effort`` -> thinking ``budget_tokens`` (Anthropic's minimum is 1024; "none" turns it off).
THINKING_BUDGETS: dict[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32768,
}

#: Anthropic ``stop_reason`` -> OpenAI ``finish_reason``.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic error ``type`` -> OpenAI error ``type`` and ``code``.
_ERRORS: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "billing_error"),
    "api_error": ("server_error", "api_error"),
    "overloaded_error": ("overloaded_error", "overloaded"),
    "timeout_error": ("timeout_error", "timeout"),
}

_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


# -- requests ---------------------------------------------------------------------------------------------


def chat_request_to_anthropic(body: dict[str, Any], *, default_max_tokens: int) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat body; ``InvalidRequestError`` for what cannot map.

    Dropped without error, having no Anthropic counterpart that changes the answer's shape:
    ``frequency_penalty``, ``presence_penalty``, ``seed``, ``logit_bias``, ``service_tier``, ``store``,
    ``metadata``, ``stream_options`` (usage is always reported), message ``name`` fields.
    Refused: ``n`` > 1, ``logprobs``, audio, ``response_format: json_object``, non-function tools.
    Passed as they are: ``temperature``, ``top_p`` (and ``top_k``); Anthropic judges their ranges.
    """
    _refuse_unsupported(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array.", param="messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"{where} must be an object.", param=where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), f"{where}.content"))
        elif role == "user":
            _append_turn(turns, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result(message, where)])
        else:
            raise InvalidRequestError(
                f"{where}.role {role!r} is not supported for Anthropic models "
                "(use system, developer, user, assistant or tool).",
                param=f"{where}.role",
            )
    out: dict[str, Any] = {"model": body.get("model"), "messages": turns}
    max_tokens = _max_tokens(body, default_max_tokens)
    out["max_tokens"] = max_tokens
    if system:
        plain = len(system) == 1 and set(system[0]) == {"type", "text"}
        out["system"] = system[0]["text"] if plain else system
    _map_tools(body, out)
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        if not all(isinstance(s, str) for s in stop):
            raise InvalidRequestError("'stop' must be a string or an array of strings.", param="stop")
        out["stop_sequences"] = stop
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    _map_thinking(body, out, max_tokens)
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if body.get("stream") is True:
        out["stream"] = True
    _map_response_format(body, out)
    return out


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequestError(f"'{key}' must be a positive integer.", param=key)
        return value
    return default


def _map_thinking(body: dict[str, Any], out: dict[str, Any], max_tokens: int) -> None:
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        out["thinking"] = thinking
        budget = thinking.get("budget_tokens")
    else:
        effort = body.get("reasoning_effort")
        if effort is None or effort == "none":
            return
        budget = THINKING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise InvalidRequestError(
                f"'reasoning_effort' {effort!r} is not supported; use one of none, "
                + ", ".join(THINKING_BUDGETS) + ".",
                param="reasoning_effort",
            )
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if isinstance(budget, int) and max_tokens <= budget:
        # Anthropic wants max_tokens above the budget: keep the room the client asked for the answer.
        out["max_tokens"] = budget + max_tokens


def _map_tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is None or tools == []:
        return
    if not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array.", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequestError(
                f"tools[{i}]: only tools of type 'function' can be sent to Anthropic models.", param=f"tools[{i}]"
            )
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"tools[{i}].function.name is required.", param=f"tools[{i}].function.name")
        entry: dict[str, Any] = {"name": name}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        parameters = function.get("parameters")
        entry["input_schema"] = parameters if isinstance(parameters, dict) else _EMPTY_SCHEMA
        if isinstance(tool.get("cache_control"), dict):
            entry["cache_control"] = tool["cache_control"]
        converted.append(entry)
    out["tools"] = converted
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    raise InvalidRequestError(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        param="tool_choice",
    )


def _map_response_format(body: dict[str, Any], out: dict[str, Any]) -> None:
    fmt = body.get("response_format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequestError(
                "'response_format.json_schema.schema' must be an object.", param="response_format"
            )
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    raise InvalidRequestError(
        "Anthropic models take 'response_format' of type 'text' or 'json_schema' only; "
        "for JSON output send a json_schema.",
        param="response_format",
    )


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequestError("Anthropic models return one choice: 'n' must be 1.", param="n")
    if body.get("logprobs") is True:
        raise InvalidRequestError("Anthropic models do not return log probabilities.", param="logprobs")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise InvalidRequestError("Anthropic models do not produce audio.", param="modalities")


def _append_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merged into the previous one of the same role: Anthropic wants roles to alternate."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        blocks = turns[-1]["content"] + blocks
        if role == "user":
            # A user turn with tool results must begin with them.
            results = [b for b in blocks if b["type"] == "tool_result"]
            blocks = results + [b for b in blocks if b["type"] != "tool_result"]
        turns[-1]["content"] = blocks
    else:
        turns.append({"role": role, "content": blocks})


def _text_block(part: dict[str, Any], text: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    """Text blocks of a content that may only hold text (system, developer, assistant)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or an array of content parts.", param=where)
    blocks = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise InvalidRequestError(f"{where}[{j}] must be a text part here.", param=f"{where}[{j}]")
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if not isinstance(text, str):
            raise InvalidRequestError(f"{where}[{j}] has no text.", param=f"{where}[{j}]")
        if text:
            blocks.append(_text_block(part, text))
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or an array of content parts.", param=where)
    blocks = []
    for j, part in enumerate(content):
        here = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequestError(f"{here}.text must be a string.", param=here)
            if text:
                blocks.append(_text_block(part, text))
        elif kind == "image_url":
            blocks.append(_image_block(part, here))
        elif kind == "file":
            blocks.append(_document_block(part, here))
        else:
            raise InvalidRequestError(
                f"{here}: content part type {kind!r} is not supported for Anthropic models "
                "(text, image_url and file are).",
                param=here,
            )
    return blocks


def _split_data_url(url: str, here: str) -> tuple[str, str]:
    """``data:<media type>;base64,<data>`` -> (media type, data)."""
    head, sep, data = url.partition(",")
    media_type = head[len("data:"):]
    if not sep or not media_type.endswith(";base64"):
        raise InvalidRequestError(f"{here}: data URLs must be base64 ('data:<type>;base64,...').", param=here)
    return media_type[: -len(";base64")], data


def _image_block(part: dict[str, Any], here: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequestError(f"{here}.image_url.url must be a string.", param=here)
    if url.startswith("data:"):
        media_type, data = _split_data_url(url, here)
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("http://", "https://")):
        source = {"type": "url", "url": url}
    else:
        raise InvalidRequestError(f"{here}.image_url.url must be an http(s) or data URL.", param=here)
    block: dict[str, Any] = {"type": "image", "source": source}
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: dict[str, Any], here: str) -> dict[str, Any]:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    if not isinstance(data, str) or not data.startswith("data:"):
        raise InvalidRequestError(
            f"{here}: only inline files ('file_data' as a base64 data URL) can be sent to Anthropic models.",
            param=here,
        )
    media_type, payload = _split_data_url(data, here)
    source = {"type": "base64", "media_type": media_type, "data": payload}
    block: dict[str, Any] = {"type": "document", "source": source}
    filename = file.get("filename") if isinstance(file, dict) else None
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return block


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _thinking_blocks(message.get("thinking_blocks"), f"{where}.thinking_blocks")
    blocks.extend(_text_parts(message.get("content"), f"{where}.content"))
    calls = message.get("tool_calls")
    if calls is None:
        return blocks
    if not isinstance(calls, list):
        raise InvalidRequestError(f"{where}.tool_calls must be an array.", param=f"{where}.tool_calls")
    for j, call in enumerate(calls):
        here = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) or not isinstance(
            function.get("name"), str
        ):
            raise InvalidRequestError(f"{here} needs an id and a function name.", param=here)
        arguments = function.get("arguments")
        if arguments is None or arguments == "":
            arguments = "{}"
        if not isinstance(arguments, str):
            raise InvalidRequestError(f"{here}.function.arguments must be a JSON string.", param=here)
        try:
            tool_input = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise InvalidRequestError(
                f"{here}.function.arguments is not valid JSON; Anthropic needs the tool input as a JSON object.",
                param=f"{here}.function.arguments",
            ) from None
        if not isinstance(tool_input, dict):
            raise InvalidRequestError(
                f"{here}.function.arguments must encode a JSON object.", param=f"{here}.function.arguments"
            )
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"], "input": tool_input})
    return blocks


def _thinking_blocks(value: Any, where: str) -> list[dict[str, Any]]:
    """Earlier thinking sent back; a thinking block without its signature cannot be, so it is left out."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequestError(f"{where} must be an array.", param=where)
    blocks = []
    for j, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            signature, text = block.get("signature"), block.get("thinking")
            if isinstance(signature, str) and signature and isinstance(text, str):
                blocks.append({"type": "thinking", "thinking": text, "signature": signature})
        elif kind == "redacted_thinking":
            if isinstance(block.get("data"), str):
                blocks.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise InvalidRequestError(
                f"{where}[{j}] must be a 'thinking' or 'redacted_thinking' block.", param=f"{where}[{j}]"
            )
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(
            f"{where}.tool_call_id is required for a tool message.", param=f"{where}.tool_call_id"
        )
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content is not None:
        parts = _user_blocks(content, f"{where}.content")
        if any(p["type"] == "document" for p in parts):
            raise InvalidRequestError(f"{where}.content: a tool result holds text and images only.", param=where)
        if parts:
            block["content"] = parts
    return block


# -- whole answers -----------------------------------------------------------------------------------------


def usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``usage`` for Anthropic's: prompt tokens include cache reads and writes, as OpenAI's do."""
    fresh = _int(usage.get("input_tokens"))
    read = _int(usage.get("cache_read_input_tokens"))
    written = _int(usage.get("cache_creation_input_tokens"))
    output = _int(usage.get("output_tokens"))
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read, "cache_write_tokens": written},
    }


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def anthropic_response_to_chat(message: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """A ``chat.completion`` for an Anthropic message. Server-tool blocks (web search, ...) are left out."""
    texts: list[str] = []
    reasoning: list[str] = []
    thinking: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    content = message.get("content")
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            calls.append({
                "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": _arguments(block.get("input"))},
            })
        elif kind == "thinking":
            reasoning.append(str(block.get("thinking") or ""))
            thinking.append(
                {"type": "thinking", "thinking": block.get("thinking"), "signature": block.get("signature")}
            )
        elif kind == "redacted_thinking":
            thinking.append({"type": "redacted_thinking", "data": block.get("data")})
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
        "refusal": None,
    }
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if thinking:
        reply["thinking_blocks"] = thinking
    if calls:
        reply["tool_calls"] = calls
    usage = message.get("usage")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model"),
        "choices": [{
            "index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message.get("stop_reason")),
        }],
        "usage": usage_to_openai(usage if isinstance(usage, dict) else {}),
    }


def _arguments(tool_input: Any) -> str:
    return orjson.dumps(tool_input if tool_input is not None else {}).decode()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# -- errors ------------------------------------------------------------------------------------------------


def error_to_openai(error: Any, status: int = 0, request_id: Any = None) -> dict[str, Any]:
    """OpenAI's ``{"error": {...}}`` for Anthropic's ``error`` object, its message kept word for word."""
    kind = error.get("type") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = f"Anthropic answered HTTP {status} without an error message" if status else "Anthropic error"
    mapped = _ERRORS.get(kind) if isinstance(kind, str) else None
    if mapped is None:
        fallback = error_type_for_status(status) if status else "server_error"
        mapped = (fallback, kind if isinstance(kind, str) else None)
    error_type, code = mapped
    if kind == "not_found_error" and message.startswith("model:"):
        code = "model_not_found"
    out: dict[str, Any] = {"message": message, "type": error_type, "param": None, "code": code}
    if isinstance(request_id, str):
        out["request_id"] = request_id
    return {"error": out}


def error_body_to_openai(body: bytes, status: int) -> bytes:
    """An Anthropic error body (any status) in OpenAI's shape; a body that is not Anthropic's is quoted."""
    try:
        parsed = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return orjson.dumps(error_to_openai(parsed["error"], status, parsed.get("request_id")))
    text = body.decode("utf-8", "replace").strip()[:2000]
    return orjson.dumps(error_to_openai({"message": text} if text else {}, status))


# -- streams -----------------------------------------------------------------------------------------------

_PING = b"event: ping"
_DONE_EVENT = b"data: [DONE]\n\n"
_NO_FINISH = {"logprobs": None, "finish_reason": None}


class _Block:
    """What a content block in progress needs remembered."""

    __slots__ = ("kind", "number", "sent_args", "signature", "text", "value")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        #: The tool call's index (tool_use) or the thinking block's (thinking, redacted_thinking).
        self.number = -1
        self.sent_args = False
        #: The tool's ``input`` given at the start (tool_use) or the opaque ``data`` (redacted_thinking).
        self.value: Any = None
        self.text: list[str] = []
        self.signature = ""


class AnthropicToChatStream:
    """Anthropic Messages SSE in (any split), OpenAI ``chat.completion.chunk`` SSE out.

    ``include_usage``: end with a usage-only chunk (``choices: []``), as OpenAI does when the client
    asked for ``stream_options.include_usage``; the usage is read in any case and kept on ``usage``.
    An upstream ``error`` event becomes an OpenAI error event that ends the stream (no ``[DONE]``); a
    stream cut before ``message_stop`` ends, at :meth:`finish`, with a ``stream_truncated`` error event.
    """

    __slots__ = (
        "_blocks", "_ended", "_failed", "_finish", "_framer", "_head", "_thinking", "_tools", "_usage",
        "created", "error", "include_usage",
    )

    def __init__(self, *, include_usage: bool, created: int | None = None) -> None:
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.error: dict[str, Any] | None = None
        self._framer = SSEFramer()
        self._head = self._make_head("", "")
        self._usage: dict[str, Any] | None = None
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._thinking = 0
        self._finish: str | None = None
        self._ended = False  # message_stop seen
        self._failed = False  # an upstream error event seen

    # -- the StreamTranslator protocol ------------------------------------------------------------------
    @property
    def usage(self) -> Usage | None:
        return Usage.from_openai(usage_to_openai(self._usage)) if self._usage is not None else None

    @property
    def complete(self) -> bool:
        """Reached ``message_stop``, or ended on the provider's own error event (relayed as such)."""
        return self._ended or self._failed

    def feed(self, data: bytes) -> bytes:
        if self._ended or self.error is not None:
            return b""  # the stream is over; anything after its end is not relayed
        out: list[bytes] = []
        for raw in self._framer.feed(data):
            self._event(raw, out)
            if self._ended or self.error is not None:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        rest = self._framer.flush()
        if rest.strip() and not self._ended and self.error is None:
            self._event(rest, out, last=True)  # the last event may lack its blank line
        if not self._ended and self.error is None:
            self._fail(out, {
                "error": {
                    "message": "The provider ended the stream before it was complete.",
                    "type": "upstream_error", "param": None, "code": "stream_truncated",
                }
            })
        return b"".join(out)

    # -- events -----------------------------------------------------------------------------------------
    def _event(self, raw: bytes, out: list[bytes], *, last: bool = False) -> None:
        if raw.startswith(_PING):
            return
        event = parse_event(raw)
        if not event.data or event.data == b"[DONE]":
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            if last:
                return  # an event cut short: the stream is truncated, which finish() reports
            self._fail(out, {"error": {
                "message": "The provider sent a stream event that is not a JSON object.",
                "type": "upstream_error", "param": None, "code": "invalid_stream",
            }})
            return
        kind = payload.get("type") or event.event
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            self._block_stop(payload, out)
        elif kind == "message_start":
            self._message_start(payload, out)
        elif kind == "message_delta":
            self._message_delta(payload, out)
        elif kind == "message_stop":
            self._message_stop(out)
        elif kind == "error":
            self._failed = True
            self._fail(out, error_to_openai(payload.get("error"), 0, payload.get("request_id")))

    def _message_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        message = payload.get("message")
        message = message if isinstance(message, dict) else {}
        self._head = self._make_head(message.get("id"), message.get("model"))
        usage = message.get("usage")
        if isinstance(usage, dict):
            self._usage = dict(usage)
        self._choice(out, {"role": "assistant", "content": ""})

    def _block_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        block = payload.get("content_block")
        block = block if isinstance(block, dict) else {}
        state = _Block(str(block.get("type")))
        self._blocks[_int(payload.get("index"))] = state
        if state.kind == "tool_use":
            state.number = self._tools
            self._tools += 1
            state.value = block.get("input")
            self._choice(out, {"tool_calls": [{
                "index": state.number, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }]})
        elif state.kind == "text" and block.get("text"):
            self._choice(out, {"content": block["text"]})
        elif state.kind in ("thinking", "redacted_thinking"):
            state.number = self._thinking
            self._thinking += 1
            state.value = block.get("data")
            if isinstance(block.get("thinking"), str) and block["thinking"]:
                state.text.append(block["thinking"])
                self._choice(out, {"reasoning_content": block["thinking"]})

    def _delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        state = self._blocks.get(_int(payload.get("index")))
        if kind == "text_delta":
            if delta.get("text"):
                self._choice(out, {"content": delta["text"]})
        elif kind == "input_json_delta":
            part = delta.get("partial_json")
            if state is not None and state.kind == "tool_use" and isinstance(part, str) and part:
                state.sent_args = True
                self._choice(out, {"tool_calls": [{"index": state.number, "function": {"arguments": part}}]})
        elif kind == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str) and text:
                if state is not None:
                    state.text.append(text)
                self._choice(out, {"reasoning_content": text})
        elif kind == "signature_delta" and state is not None and isinstance(delta.get("signature"), str):
            state.signature += delta["signature"]

    def _block_stop(self, payload: dict[str, Any], out: list[bytes]) -> None:
        state = self._blocks.pop(_int(payload.get("index")), None)
        if state is None:
            return
        if state.kind == "tool_use" and not state.sent_args:
            # A tool without arguments streams only "": the client still gets a complete JSON object.
            self._choice(out, {"tool_calls": [{
                "index": state.number, "function": {"arguments": _arguments(state.value or {})},
            }]})
        elif state.kind == "thinking":
            self._choice(out, {"thinking_blocks": [{
                "index": state.number, "type": "thinking", "thinking": "".join(state.text),
                "signature": state.signature,
            }]})
        elif state.kind == "redacted_thinking":
            self._choice(out, {"thinking_blocks": [
                {"index": state.number, "type": "redacted_thinking", "data": state.value}
            ]})

    def _message_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            merged = dict(self._usage or {})
            merged.update({k: v for k, v in usage.items() if v is not None})
            self._usage = merged
        delta = payload.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is not None and self._finish is None:
            self._finish = finish_reason(stop_reason)
            out.append(self._head + orjson.dumps(
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": self._finish}
            ) + b"]}\n\n")

    def _message_stop(self, out: list[bytes]) -> None:
        if self._finish is None:
            self._finish = "stop"
            out.append(self._head + orjson.dumps(
                {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
            ) + b"]}\n\n")
        if self.include_usage:
            out.append(self._head + b'],"usage":' + orjson.dumps(usage_to_openai(self._usage or {})) + b"}\n\n")
        out.append(_DONE_EVENT)
        self._ended = True

    # -- output -----------------------------------------------------------------------------------------
    def _make_head(self, message_id: Any, model: Any) -> bytes:
        """The chunk's bytes up to its ``choices`` array, the same for every chunk of the message."""
        head = orjson.dumps(
            {"id": message_id, "object": "chat.completion.chunk", "created": self.created, "model": model}
        )
        return b"data: " + head[:-1] + b',"choices":['

    def _choice(self, out: list[bytes], delta: dict[str, Any]) -> None:
        out.append(self._head + orjson.dumps({"index": 0, "delta": delta, **_NO_FINISH}) + b"]}\n\n")

    def _fail(self, out: list[bytes], body: dict[str, Any]) -> None:
        self.error = body["error"]
        out.append(b"data: " + orjson.dumps(body) + b"\n\n")
