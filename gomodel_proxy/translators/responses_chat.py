"""OpenAI Responses <-> OpenAI chat completions, for providers without the Responses API. No I/O.

A Responses request becomes a chat request (:func:`responses_to_chat`); the chat answer becomes a
Responses object (:func:`chat_to_response`), and a chat stream becomes the Responses event sequence
(:class:`ChatToResponsesStream`). The conversation of a stored response is kept as Responses input
items (the request's input followed by the answer's output items, which are valid input items), so
``previous_response_id`` is the stored items put before the new input; ``instructions`` are not
carried over, as with OpenAI.

Reasoning: a chat answer's ``reasoning_content`` (or ``reasoning``) becomes a reasoning item with a
``reasoning_text`` part. Anthropic's signed thinking blocks (``thinking_blocks``, see
``anthropic_chat``) ride in the item's opaque ``encrypted_content`` so that a reasoning item sent back
gives the provider its thinking again; a reasoning item's plain text is not sent back (chat has no
input field for it, and some providers refuse ``reasoning_content`` in requests). Gemini's thought
signatures (``extra_content``, see ``gemini_chat``) stay on the items they came with: a tool call's on
its ``function_call`` item, the message's on the message item (or the reasoning item when there is no
text), and go back with them.

Built-in Responses tools (web search, file search, computer use, ...) need OpenAI's servers; through
chat they are refused with a 400 rather than silently dropped.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gomodel_proxy.core.errors import GatewayError, InvalidRequestError, error_type_for_status
from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

#: Prefix of the ``encrypted_content`` that carries a chat answer's ``thinking_blocks``.
THINKING_BLOCKS_PREFIX = "gomodel.thinking_blocks.v1:"

#: Top-level Responses parameters that have no chat counterpart and change what is asked: refused.
_REFUSED_PARAMS: dict[str, str] = {
    "background": "background mode needs the provider to run the response on its own",
    "conversation": "conversations are stored by OpenAI",
    "prompt": "prompt templates are stored by OpenAI",
}

#: ``ResponseError.code`` values clients know (the SDK's enumeration); others become ``server_error``.
_RESPONSE_ERROR_CODES = frozenset({
    "server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout", "invalid_image",
    "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small",
    "image_parse_error", "image_content_policy_violation", "invalid_image_mode", "image_file_too_large",
    "unsupported_image_media_type", "empty_image_file", "failed_to_download_image", "image_file_not_found",
})

_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True, frozen=True)
class ResponseContext:
    """What a converted answer needs besides the chat answer: its id, time, model and the request."""

    response_id: str
    created_at: int
    model: str
    request: Mapping[str, Any]

    @property
    def base(self) -> str:
        """The id's suffix, shared by the ids of the response's output items."""
        return self.response_id.removeprefix("resp_")


# -- requests ---------------------------------------------------------------------------------------


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as a list of items (a string is one user message)."""
    value = body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list):
        raise InvalidRequestError("'input' must be a string or an array of input items.", param="input")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidRequestError(f"input[{i}] must be an object.", param=f"input[{i}]")
    return list(value)


def responses_to_chat(
    body: Mapping[str, Any], history: list[dict[str, Any]] | None = None, *, include_usage: bool = True
) -> dict[str, Any]:
    """The chat-completions request for a Responses request; ``history``: the stored conversation items.

    ``include_usage``: whether a stream may ask for ``stream_options.include_usage`` (the usage that
    ``response.completed`` carries); some OpenAI-compatible servers refuse the option.
    """
    for name, why in _REFUSED_PARAMS.items():
        value = body.get(name)
        if value is not None and value is not False:
            raise InvalidRequestError(
                f"'{name}' is not supported for this model: {why}, and it is reached through chat completions.",
                param=name,
            )
    out: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages.extend(_items_to_messages(instructions, "instructions"))
    elif instructions is not None:
        raise InvalidRequestError("'instructions' must be a string.", param="instructions")
    earlier = history or []
    messages.extend(_items_to_messages([*earlier, *input_items(body)], "input", offset=len(earlier)))
    if not messages:
        raise InvalidRequestError("'input' must not be empty.", param="input")
    out["messages"] = messages

    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequestError("'tools' must be an array.", param="tools")
        if tools:
            out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = _tool_choice(choice)
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            out[key] = body[key]
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool):
            raise InvalidRequestError("'max_output_tokens' must be an integer.", param="max_output_tokens")
        out["max_tokens"] = limit
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("stream") is True:
        out["stream"] = True
        if include_usage:
            out["stream_options"] = {"include_usage": True}
    return out


def _items_to_messages(items: list[Any], where: str, *, offset: int = 0) -> list[dict[str, Any]]:
    """Responses items -> chat messages: an answer's items (reasoning, text, calls) make one assistant turn."""
    messages: list[dict[str, Any]] = []
    thinking: list[dict[str, Any]] = []  # from reasoning items, for the next assistant message
    extra: dict[str, Any] | None = None  # a reasoning item's extra_content, likewise
    for i, item in enumerate(items):
        here = f"{where}[{i - offset}]" if i >= offset else f"previous_response[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequestError(f"{here} must be an object.", param=here)
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):
            message = _message(item, here)
            if message["role"] == "assistant":
                if thinking:
                    message["thinking_blocks"], thinking = thinking, []
                if extra is not None:
                    message.setdefault("extra_content", extra)
                    extra = None
            messages.append(message)
        elif kind == "function_call":
            call = _function_call(item, here)
            last = messages[-1] if messages else None
            if last is None or last.get("role") != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
            if thinking:
                last.setdefault("thinking_blocks", []).extend(thinking)
                thinking = []
            if extra is not None:
                last.setdefault("extra_content", extra)
                extra = None
        elif kind == "function_call_output":
            messages.append(_function_output(item, here))
        elif kind == "reasoning":
            thinking.extend(_decode_thinking(item.get("encrypted_content")))
            if isinstance(item.get("extra_content"), dict):
                extra = item["extra_content"]
        elif kind == "item_reference":
            raise InvalidRequestError(
                f"{here}: item references are not supported for this model; use previous_response_id or "
                "send the items themselves.", param=here,
            )
        else:
            raise InvalidRequestError(
                f"{here}: input items of type '{kind}' are not supported for this model (it is reached "
                "through chat completions, which has messages, function calls and their outputs only).",
                param=f"{here}.type",
            )
    return messages


def _message(item: dict[str, Any], here: str) -> dict[str, Any]:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        return {"role": "system", "content": _plain_text(content, here)}
    if role == "assistant":
        message = {"role": "assistant", "content": _plain_text(content, here, joiner="")}
        if isinstance(item.get("extra_content"), dict):
            message["extra_content"] = item["extra_content"]
        return message
    if role != "user":
        raise InvalidRequestError(f"{here}.role must be one of user, assistant, system, developer.",
                                  param=f"{here}.role")
    if isinstance(content, str):
        return {"role": "user", "content": content}
    if not isinstance(content, list):
        raise InvalidRequestError(f"{here}.content must be a string or an array of parts.", param=f"{here}.content")
    parts = [_user_part(part, f"{here}.content[{j}]") for j, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": "user", "content": parts[0]["text"]}
    return {"role": "user", "content": parts}


def _plain_text(content: Any, here: str, joiner: str = "\n") -> str:
    """The text of a system or assistant message (chat takes only text there)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError(f"{here}.content must be a string or an array of parts.", param=f"{here}.content")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise InvalidRequestError(
                f"{here}.content[{j}]: only text parts are supported in this message for this model.",
                param=f"{here}.content[{j}]",
            )
    return joiner.join(texts)


def _user_part(part: Any, here: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "text", "output_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequestError(
                f"{here}: images are supported as 'image_url' (a URL or data URL) for this model, not by file id.",
                param=here,
            )
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file: dict[str, Any] = {}
        for key in ("file_data", "file_id", "filename"):
            if isinstance(part.get(key), str):
                file[key] = part[key]
        if "file_data" not in file and "file_id" not in file:
            raise InvalidRequestError(
                f"{here}: files are supported as 'file_data' or 'file_id' for this model, not by URL.", param=here
            )
        return {"type": "file", "file": file}
    if kind == "input_audio" and isinstance(part.get("input_audio"), dict):
        return {"type": "input_audio", "input_audio": part["input_audio"]}
    raise InvalidRequestError(f"{here}: content parts of type '{kind}' are not supported.", param=here)


def _function_call(item: dict[str, Any], here: str) -> dict[str, Any]:
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise InvalidRequestError(f"{here}: a function_call item needs 'call_id' and 'name'.", param=here)
    arguments = item.get("arguments")
    if arguments is None:
        arguments = "{}"
    elif not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(item.get("extra_content"), dict):
        call["extra_content"] = item["extra_content"]
    return call


def _function_output(item: dict[str, Any], here: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequestError(f"{here}: a function_call_output item needs 'call_id'.", param=f"{here}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        output = _plain_text(output, here, joiner="")
    elif not isinstance(output, str):
        output = orjson.dumps(output).decode()
    return {"role": "tool", "tool_call_id": call_id, "content": output}


def _tool(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        raise InvalidRequestError(
            f"tools[{i}]: the built-in tool '{kind}' runs on OpenAI's servers and is not available for this "
            "model, which is reached through chat completions; only function tools can be used.",
            param=f"tools[{i}].type", code="unsupported_tool",
        )
    nested = tool.get("function")
    if isinstance(nested, dict) and "name" not in tool:  # chat's shape sent to the Responses API
        return {"type": "function", "function": nested}
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"tools[{i}].name is required.", param=f"tools[{i}].name")
    function: dict[str, Any] = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind == "allowed_tools" and isinstance(choice.get("tools"), list):
        tools = [_tool_choice(t) for t in choice["tools"]]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": tools}}
    raise InvalidRequestError(
        f"tool_choice {orjson.dumps(choice).decode()} is not supported for this model; use auto, none, required "
        "or a function.", param="tool_choice",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(fmt, dict):
        schema: dict[str, Any] = {"name": fmt.get("name") or "response"}
        for key in ("schema", "strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError(f"text.format of type '{kind}' is not supported.", param="text.format")


def encode_thinking(blocks: list[dict[str, Any]]) -> str:
    """Signed thinking blocks as an opaque ``encrypted_content`` string."""
    return THINKING_BLOCKS_PREFIX + base64.urlsafe_b64encode(orjson.dumps(blocks)).decode()


def _decode_thinking(value: Any) -> list[dict[str, Any]]:
    """The thinking blocks of an ``encrypted_content`` this module made; others (OpenAI's own) are opaque."""
    if not isinstance(value, str) or not value.startswith(THINKING_BLOCKS_PREFIX):
        return []
    try:
        blocks = orjson.loads(base64.urlsafe_b64decode(value[len(THINKING_BLOCKS_PREFIX):]))
    except (binascii.Error, ValueError):
        return []
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


# -- answers ----------------------------------------------------------------------------------------


def response_shell(ctx: ResponseContext, *, model: str | None = None) -> dict[str, Any]:
    """The Responses object before any output: what the request asked for, echoed as OpenAI does."""
    req = ctx.request
    reasoning = _dict(req.get("reasoning"))
    text = _dict(req.get("text"))
    parallel = req.get("parallel_tool_calls")
    return {
        "id": ctx.response_id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": req.get("instructions"),
        "max_output_tokens": req.get("max_output_tokens"),
        "max_tool_calls": req.get("max_tool_calls"),
        "model": model or ctx.model,
        "output": [],
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "previous_response_id": req.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": req.get("store") is not False,
        "temperature": req.get("temperature", 1.0),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": req.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in req.get("tools") or [] if isinstance(t, dict)],
        "top_p": req.get("top_p", 1.0),
        "truncation": req.get("truncation") or "disabled",
        "usage": None,
        "user": req.get("user"),
        "metadata": req.get("metadata") or {},
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": None, **tool}


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """A chat ``usage`` object in the Responses shape (``None`` when there is none)."""
    parsed = Usage.from_openai(usage)
    if parsed is None:
        return None
    details = usage.get("prompt_tokens_details")
    written = details.get("cache_write_tokens") if isinstance(details, dict) else None
    total = usage.get("total_tokens")
    return {
        "input_tokens": parsed.input_tokens,
        "input_tokens_details": {
            "cached_tokens": parsed.cached_tokens,
            "cache_write_tokens": written if isinstance(written, int) else 0,
        },
        "output_tokens": parsed.output_tokens,
        "output_tokens_details": {"reasoning_tokens": parsed.reasoning_tokens},
        "total_tokens": total if isinstance(total, int) else parsed.total_tokens,
    }


def chat_to_response(chat: Any, ctx: ResponseContext) -> dict[str, Any]:
    """A non-streamed chat answer as a Responses object."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise upstream_error(chat.get("error") if isinstance(chat, dict) else None, ctx.model)
    choice = choices[0]
    message = _dict(choice.get("message"))
    finish = choice.get("finish_reason")
    incomplete = _INCOMPLETE_REASONS.get(finish) if isinstance(finish, str) else None
    item_status = "incomplete" if incomplete else "completed"
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    thinking = message.get("thinking_blocks")
    if (isinstance(reasoning, str) and reasoning) or (isinstance(thinking, list) and thinking):
        item = _reasoning_item(ctx, len(output), reasoning if isinstance(reasoning, str) else "", item_status)
        if isinstance(thinking, list) and thinking:
            item["encrypted_content"] = encode_thinking(thinking)
        output.append(item)
    text = _answer_text(message.get("content"))
    refusal = message.get("refusal")
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if text or (isinstance(refusal, str) and refusal) or not (calls or output):
        content: list[dict[str, Any]] = []
        if text or not (isinstance(refusal, str) and refusal):
            content.append(_output_text(text))
        if isinstance(refusal, str) and refusal:
            content.append({"type": "refusal", "refusal": refusal})
        output.append({**_message_item(ctx, len(output), item_status), "content": content})
    extra = message.get("extra_content")
    if isinstance(extra, dict):
        _attach_extra(output, extra)
    for call in calls:
        function = _dict(call.get("function"))
        arguments = function.get("arguments")
        item = _call_item(ctx, len(output), call.get("id"), function.get("name"))
        output.append({**item, "arguments": arguments if isinstance(arguments, str) else "", "status": "completed"})
        if isinstance(call.get("extra_content"), dict):
            output[-1]["extra_content"] = call["extra_content"]
    model = chat.get("model")
    response = response_shell(ctx, model=model if isinstance(model, str) and model else None)
    response.update(
        status="incomplete" if incomplete else "completed",
        incomplete_details={"reason": incomplete} if incomplete else None,
        output=output,
        usage=responses_usage(chat.get("usage")),
    )
    return response


def chat_to_events(chat: Any, ctx: ResponseContext) -> tuple[bytes, dict[str, Any]]:
    """A whole chat answer as the Responses event stream (for a stream the provider answered whole),
    and the final Responses object."""
    choices = chat.get("choices") if isinstance(chat, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise upstream_error(chat.get("error") if isinstance(chat, dict) else None, ctx.model)
    choice = choices[0]
    message = _dict(choice.get("message"))
    delta = {k: v for k, v in message.items() if k != "tool_calls"}
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if calls:
        delta["tool_calls"] = [{**c, "index": n} for n, c in enumerate(calls)]
    head = {"model": chat.get("model")}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason") or "stop"}]},
    ]
    if isinstance(chat.get("usage"), dict):
        chunks.append({**head, "choices": [], "usage": chat["usage"]})
    stream = ChatToResponsesStream(ctx)
    data = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    out = stream.feed(data) + stream.finish()
    assert stream.response is not None
    return out, stream.response


def _attach_extra(output: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """The message's ``extra_content`` on its message item, or on the reasoning item when there is no text."""
    for kind in ("message", "reasoning"):
        for item in reversed(output):
            if item["type"] == kind:
                item["extra_content"] = extra
                return


def upstream_error(error: Any, provider_model: str) -> GatewayError:
    """The gateway error for a chat answer that carries an error (or no choice) instead of an answer."""
    if isinstance(error, dict):
        message, code = error.get("message"), error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        return GatewayError(
            message if isinstance(message, str) else orjson.dumps(error).decode(), status=status,
            error_type=error_type_for_status(status), code=code if isinstance(code, str) else None,
        )
    return GatewayError(
        f"the provider answered for model '{provider_model}' without any choice", status=502,
        error_type="upstream_error", code="empty_answer",
    )


def _answer_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _reasoning_item(ctx: ResponseContext, index: int, text: str, status: str) -> dict[str, Any]:
    item: dict[str, Any] = {"id": f"rs_{ctx.base}_{index}", "type": "reasoning", "summary": []}
    item["content"] = [{"type": "reasoning_text", "text": text}] if text else []
    item["status"] = status
    return item


def _message_item(ctx: ResponseContext, index: int, status: str) -> dict[str, Any]:
    return {"id": f"msg_{ctx.base}_{index}", "type": "message", "status": status, "content": [],
            "role": "assistant"}


def _call_item(ctx: ResponseContext, index: int, call_id: Any, name: Any) -> dict[str, Any]:
    return {
        "id": f"fc_{ctx.base}_{index}", "type": "function_call", "status": "in_progress", "arguments": "",
        "call_id": call_id if isinstance(call_id, str) and call_id else f"call_{ctx.base}_{index}",
        "name": name if isinstance(name, str) else "",
    }


def _failure_code(code: Any, status: Any) -> str:
    if isinstance(code, str) and code in _RESPONSE_ERROR_CODES:
        return code
    if status == 429 or code in ("rate_limit_error", "rate_limit"):
        return "rate_limit_exceeded"
    return "server_error"


# -- streams ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    """An output item being streamed: its index in ``output`` and the texts of its parts so far."""

    index: int
    parts: list[list[str]]
    kinds: list[str]


class ChatToResponsesStream:
    """Chat-completions SSE in (any split), Responses SSE out: the event sequence OpenAI sends.

    ``response.created``/``in_progress`` come with the provider's first bytes; each reasoning text,
    answer text and function call is an output item (added, deltas, done); the end is
    ``response.completed`` (``response.incomplete`` when cut by the token limit) with usage, sent once
    the chat stream ended (``[DONE]`` or its close after a finish reason). A provider error event or a
    stream cut short ends with an ``error`` event and ``response.failed``, never a completion.
    ``response`` holds the final Responses object once the stream has ended either way.
    """

    def __init__(self, ctx: ResponseContext) -> None:
        self._ctx = ctx
        self._framer = SSEFramer()
        self._seq = 0
        self._started = False
        self._ended = False
        self._model: str | None = None
        self._output: list[dict[str, Any]] = []
        self._reasoning: _Open | None = None
        self._message: _Open | None = None
        self._tools: dict[int, _Open] = {}  # chat tool-call index -> its open function_call item
        self._finish: str | None = None
        self._chat_usage: dict[str, Any] | None = None
        self._extra: dict[str, Any] | None = None  # the message's extra_content, until an item takes it
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.complete = False
        self.content_events = 0
        #: The final Responses object (completed, incomplete or failed) once the stream has ended.
        self.response: dict[str, Any] | None = None

    # -- StreamTranslator -------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for raw in self._framer.feed(data):
            self._event(raw, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        rest = self._framer.flush()
        if rest.strip():
            self._event(rest, out)
        if not self._ended:
            self._start(out)
            if self._finish is not None:
                self._end(out)
            else:
                self._fail_into(out, "The provider ended the stream before the response was complete.",
                               code="stream_truncated", error_type="upstream_error")
        return b"".join(out)

    def fail(self, message: str, *, code: str | None = None, error_type: str = "server_error") -> bytes:
        """End the stream as failed (the gateway's own error, e.g. the provider connection dropped)."""
        out: list[bytes] = []
        if not self._ended:
            self._start(out)
            self._fail_into(out, message, code=code, error_type=error_type)
        return b"".join(out)

    # -- events -----------------------------------------------------------------------------------
    def _emit(self, out: list[bytes], kind: str, payload: dict[str, Any]) -> None:
        payload["sequence_number"] = self._seq
        self._seq += 1
        out.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n")

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        shell = response_shell(self._ctx)
        self._emit(out, "response.created", {"response": shell})
        self._emit(out, "response.in_progress", {"response": shell})

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        if self._ended:
            return
        self._start(out)
        event = parse_event(raw)
        if not event.data:
            return
        if event.data == b"[DONE]":
            self._end(out)
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        error = payload.get("error")
        if isinstance(error, dict) or event.event == "error":
            self._provider_error(error if isinstance(error, dict) else {"message": str(payload)}, out)
            return
        if isinstance(payload.get("model"), str) and payload["model"]:
            self._model = payload["model"]
        usage = payload.get("usage")
        if not isinstance(usage, dict) and isinstance(payload.get("x_groq"), dict):
            usage = payload["x_groq"].get("usage")
        if isinstance(usage, dict):
            self._chat_usage = usage
            self.usage = Usage.from_openai(usage)
        for choice in payload.get("choices") or []:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        self.content_events += 1
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._text(out, "reasoning_text", reasoning)
            blocks = delta.get("thinking_blocks")
            if isinstance(blocks, list) and blocks:
                self._thinking(out, blocks)
            if isinstance(delta.get("extra_content"), dict):
                self._extra = delta["extra_content"]
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text(out, "output_text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._text(out, "refusal", delta["refusal"])
            if self._extra is not None:
                self._place_extra()
            for n, call in enumerate(delta.get("tool_calls") or []):
                if isinstance(call, dict):
                    self._tool(out, call, n)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._close_all(out, "incomplete" if finish in _INCOMPLETE_REASONS else "completed")

    # -- items ------------------------------------------------------------------------------------
    def _add_item(self, out: list[bytes], item: dict[str, Any]) -> _Open:
        index = len(self._output)
        self._output.append(item)
        self._emit(out, "response.output_item.added", {"output_index": index, "item": item})
        return _Open(index=index, parts=[], kinds=[])

    def _text(self, out: list[bytes], kind: str, text: str) -> None:
        if kind == "reasoning_text":
            if self._reasoning is None:
                self._close_message(out, "completed")
                self._reasoning = self._add_item(out, _reasoning_item(self._ctx, len(self._output), "", "in_progress"))
            current = self._reasoning
        else:
            if self._message is None:
                self._close_reasoning(out, "completed")
                self._message = self._add_item(out, _message_item(self._ctx, len(self._output), "in_progress"))
            current = self._message
        item_id = self._output[current.index]["id"]
        if not current.kinds or current.kinds[-1] != kind:
            if current.kinds:
                self._close_part(out, current, item_id)
            current.kinds.append(kind)
            current.parts.append([])
            self._emit(out, "response.content_part.added", {
                "item_id": item_id, "output_index": current.index, "content_index": len(current.parts) - 1,
                "part": _part(kind, ""),
            })
        current.parts[-1].append(text)
        event: dict[str, Any] = {
            "item_id": item_id, "output_index": current.index, "content_index": len(current.parts) - 1,
            "delta": text,
        }
        if kind == "output_text":
            event["logprobs"] = []
        self._emit(out, _DELTA_EVENTS[kind], event)

    def _place_extra(self) -> None:
        """The message's extra_content on the open message item (else the open reasoning item), so that
        its ``output_item.done`` carries it; when neither is open it waits for the end."""
        current = self._message or self._reasoning
        if current is not None and self._extra is not None:
            self._output[current.index]["extra_content"] = self._extra
            self._extra = None

    def _thinking(self, out: list[bytes], blocks: list[Any]) -> None:
        if self._reasoning is None:
            self._close_message(out, "completed")
            self._reasoning = self._add_item(out, _reasoning_item(self._ctx, len(self._output), "", "in_progress"))
        item = self._output[self._reasoning.index]
        found = [{k: v for k, v in b.items() if k != "index"} for b in blocks if isinstance(b, dict)]
        item["encrypted_content"] = encode_thinking([*_decode_thinking(item.get("encrypted_content")), *found])

    def _close_part(self, out: list[bytes], current: _Open, item_id: str) -> None:
        kind, text = current.kinds[-1], "".join(current.parts[-1])
        position = {"item_id": item_id, "output_index": current.index, "content_index": len(current.parts) - 1}
        done: dict[str, Any] = {**position, _DONE_FIELD[kind]: text}
        if kind == "output_text":
            done["logprobs"] = []
        self._emit(out, _DONE_EVENTS[kind], done)
        self._emit(out, "response.content_part.done", {**position, "part": _part(kind, text)})

    def _finish_item(self, out: list[bytes], current: _Open, status: str) -> None:
        item = self._output[current.index]
        if current.kinds:
            self._close_part(out, current, item["id"])
        item["content"] = [_part(k, "".join(p)) for k, p in zip(current.kinds, current.parts, strict=True)]
        item["status"] = status
        self._emit(out, "response.output_item.done", {"output_index": current.index, "item": item})

    def _close_reasoning(self, out: list[bytes], status: str) -> None:
        if self._reasoning is not None:
            self._finish_item(out, self._reasoning, status)
            self._reasoning = None

    def _close_message(self, out: list[bytes], status: str) -> None:
        if self._message is not None:
            self._finish_item(out, self._message, status)
            self._message = None

    def _tool(self, out: list[bytes], call: dict[str, Any], position: int) -> None:
        index = call.get("index")
        if not isinstance(index, int):
            index = position
        function = _dict(call.get("function"))
        current = self._tools.get(index)
        if current is None:
            self._close_reasoning(out, "completed")
            self._close_message(out, "completed")
            item = _call_item(self._ctx, len(self._output), call.get("id"), function.get("name"))
            current = self._add_item(out, item)
            current.parts.append([])
            self._tools[index] = current
        elif isinstance(function.get("name"), str) and function["name"] and not self._output[current.index]["name"]:
            self._output[current.index]["name"] = function["name"]
        if isinstance(call.get("extra_content"), dict):
            self._output[current.index]["extra_content"] = call["extra_content"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            current.parts[0].append(arguments)
            self._emit(out, "response.function_call_arguments.delta", {
                "item_id": self._output[current.index]["id"], "output_index": current.index, "delta": arguments,
            })

    def _close_tools(self, out: list[bytes], status: str) -> None:
        for current in sorted(self._tools.values(), key=lambda o: o.index):
            item = self._output[current.index]
            item["arguments"] = "".join(current.parts[0])
            item["status"] = status
            self._emit(out, "response.function_call_arguments.done", {
                "item_id": item["id"], "output_index": current.index, "name": item["name"],
                "arguments": item["arguments"],
            })
            self._emit(out, "response.output_item.done", {"output_index": current.index, "item": item})
        self._tools.clear()

    def _close_all(self, out: list[bytes], status: str) -> None:
        self._close_reasoning(out, status)
        self._close_message(out, status)
        self._close_tools(out, status)

    # -- ends -------------------------------------------------------------------------------------
    def _final(self, status: str) -> dict[str, Any]:
        if self._extra is not None:
            _attach_extra(self._output, self._extra)
            self._extra = None
        response = response_shell(self._ctx, model=self._model)
        response.update(status=status, output=self._output, usage=responses_usage(self._chat_usage))
        return response

    def _end(self, out: list[bytes]) -> None:
        """The chat stream ended properly: the response is completed (or incomplete)."""
        finish = self._finish or "stop"
        reason = _INCOMPLETE_REASONS.get(finish)
        self._close_all(out, "incomplete" if reason else "completed")
        response = self._final("incomplete" if reason else "completed")
        if reason:
            response["incomplete_details"] = {"reason": reason}
        self._emit(out, "response.incomplete" if reason else "response.completed", {"response": response})
        self.response = response
        self._ended = True
        self.complete = True

    def _provider_error(self, error: dict[str, Any], out: list[bytes]) -> None:
        message, code, kind = error.get("message"), error.get("code"), error.get("type")
        status = error.get("status_code", code)
        self.complete = True  # the provider ended the stream with its error: nothing was cut
        self._fail_into(
            out, message if isinstance(message, str) else orjson.dumps(error).decode(),
            code=code if isinstance(code, str) else None, error_type=kind if isinstance(kind, str) else "server_error",
            status=status if isinstance(status, int) else None,
        )

    def _fail_into(self, out: list[bytes], message: str, *, code: str | None, error_type: str,
                  status: int | None = None) -> None:
        """Append the ``error`` event and ``response.failed``; the items so far stay, unfinished ones incomplete."""
        error = {"type": error_type, "code": code, "message": message, "param": None}
        self.error = error
        self._emit(out, "error", {"code": code, "message": message, "param": None, "error": error})
        for current in [self._reasoning, self._message, *self._tools.values()]:
            if current is not None:
                item = self._output[current.index]
                item["status"] = "incomplete"
                if item["type"] == "function_call":
                    item["arguments"] = "".join(current.parts[0])
                else:
                    item["content"] = [_part(k, "".join(p)) for k, p in zip(current.kinds, current.parts, strict=True)]
        self._reasoning = self._message = None
        self._tools.clear()
        response = self._final("failed")
        response["error"] = {"code": _failure_code(code or error_type, status), "message": message}
        self._emit(out, "response.failed", {"response": response})
        self.response = response
        self._ended = True


_DELTA_EVENTS = {
    "output_text": "response.output_text.delta",
    "refusal": "response.refusal.delta",
    "reasoning_text": "response.reasoning_text.delta",
}
_DONE_EVENTS = {
    "output_text": "response.output_text.done",
    "refusal": "response.refusal.done",
    "reasoning_text": "response.reasoning_text.done",
}
_DONE_FIELD = {"output_text": "text", "refusal": "refusal", "reasoning_text": "text"}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return _output_text(text)
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "reasoning_text", "text": text}
