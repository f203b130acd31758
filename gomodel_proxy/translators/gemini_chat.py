"""OpenAI chat completions and embeddings <-> Google Gemini ``generateContent`` (native v1beta), sans-I/O.

Requests: :func:`chat_request_to_gemini`, :func:`embeddings_request_to_gemini`. Whole answers:
:func:`gemini_response_to_chat`, :func:`gemini_embeddings_to_openai`, :func:`gemini_error_to_openai`.
Streams (``streamGenerateContent?alt=sse``): :class:`GeminiToChatStream`.

Gemini's thought signatures must go back to Gemini exactly as received, or Gemini 3 refuses the next
tool-use turn. They travel on the OpenAI side the way Google's own OpenAI-compatible endpoint carries
them: ``extra_content: {"google": {"thought_signature": ...}}`` on a tool call (and, for a signature on
a text part, on the assistant message), where the official SDKs keep unknown fields.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import orjson

from gomodel_proxy.core.errors import InvalidRequestError, error_type_for_status
from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.sse import SSEFramer, parse_event

# -- shared -----------------------------------------------------------------------------------------------

#: Gemini finish reasons that mean the answer was withheld or cut by a content filter.
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"}
)
_DONE = b"data: [DONE]\n\n"


def gemini_model_path(model: str) -> str:
    """The resource path of ``model`` (``models/x`` or a tuned model), without the leading slash."""
    if model.startswith(("models/", "tunedModels/")):
        return model
    return "models/" + model


def finish_reason(reason: str | None, *, tool_calls: bool) -> str:
    """OpenAI's finish_reason for Gemini's (unknown ones read as a normal stop)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if tool_calls else "stop"


def usage_from_gemini(meta: Any) -> Usage | None:
    """Gemini's ``usageMetadata`` as the gateway's Usage: thoughts are output, tool-use prompts are input."""
    if not isinstance(meta, dict):
        return None
    prompt = _int(meta.get("promptTokenCount")) + _int(meta.get("toolUsePromptTokenCount"))
    thoughts = _int(meta.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=prompt,
        output_tokens=_int(meta.get("candidatesTokenCount")) + thoughts,
        cached_tokens=_int(meta.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _signature_extra(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


def _signature_of(obj: Any) -> str | None:
    """The thought signature carried in an OpenAI object's ``extra_content``, if any."""
    if not isinstance(obj, dict):
        return None
    extra = obj.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _call_id(response_id: str, choice: int, k: int) -> str:
    """A tool call id, the same every time the same response is translated."""
    return f"call_{response_id}_{k}" if choice == 0 else f"call_{response_id}_{choice}_{k}"


# -- request: chat ----------------------------------------------------------------------------------------

#: Image/file extensions Gemini accepts as ``fileData``, for URLs that do not say their type.
_MIME_BY_EXTENSION = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
    "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf", "txt": "text/plain",
    "mp3": "audio/mp3", "wav": "audio/wav", "ogg": "audio/ogg", "flac": "audio/flac", "aac": "audio/aac",
    "mp4": "video/mp4", "mpeg": "video/mpeg", "mov": "video/mov", "webm": "video/webm",
}
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3"}

#: Keys of Gemini's Schema object (an OpenAPI 3.0 subset); anything else in a JSON schema is refused by Gemini.
_SCHEMA_KEYS = frozenset({
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
})
_FORMATS = {"string": frozenset({"enum", "date-time"}), "number": frozenset({"float", "double"}),
            "integer": frozenset({"int32", "int64"})}
_MAX_SCHEMA_DEPTH = 64

#: Google's documented reasoning_effort -> thinking budget for Gemini 2.5 (OpenAI-compatibility guide).
_THINKING_BUDGET = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}


def chat_request_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions request as a Gemini ``generateContent`` body (the model goes in the URL).

    Raises ``InvalidRequestError`` (400) for what Gemini cannot be asked, with the reason.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array.", param="messages")
    system_parts: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names_by_call_id: dict[str, str] = {}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object.", param=f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            system_parts.extend(_text_parts(message.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            gemini_role, parts = "model", _assistant_parts(message, i, names_by_call_id)
        elif role in ("tool", "function"):
            gemini_role, parts = "user", [_function_response(message, i, names_by_call_id)]
        else:
            raise InvalidRequestError(f"messages[{i}].role {role!r} is not supported.", param=f"messages[{i}].role")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            # Gemini wants turns to alternate: parallel tool results, say, are one user turn.
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        raise InvalidRequestError("'messages' must hold at least one user or assistant message with content.",
                                  param="messages")
    out: dict[str, Any] = {"contents": contents}
    if system_parts:
        out["systemInstruction"] = {"parts": system_parts}
    tools, tool_config = _tools(body)
    if tools:
        out["tools"] = tools
    if tool_config:
        out["toolConfig"] = tool_config
    generation = _generation_config(body)
    if generation:
        out["generationConfig"] = generation
    google = _google_extras(body)
    for key, target in (("safety_settings", "safetySettings"), ("cached_content", "cachedContent")):
        if key in google:
            out[target] = google[key]
    return out


def _text_of(content: Any, where: str) -> str:
    """Plain text of a string or an array of text parts (system, tool and assistant messages)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                value = part.get("text") if part.get("type") == "text" else part.get("refusal")
                if isinstance(value, str):
                    texts.append(value)
                    continue
            raise InvalidRequestError(f"{where}[{j}] must be a text part here.", param=f"{where}[{j}]")
        return "".join(texts)
    raise InvalidRequestError(f"{where} must be a string or an array of content parts.", param=where)


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    text = _text_of(content, where)
    return [{"text": text}] if text else []


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where} must be a string or an array of content parts.", param=where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequestError(f"{at} must be a content part object.", param=at)
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise InvalidRequestError(f"{at}.image_url.url must be a string.", param=at)
            explicit = image.get("format") if isinstance(image, dict) else None
            parts.append(_media_part(url, at, explicit if isinstance(explicit, str) else None))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            data = audio.get("data") if isinstance(audio, dict) else None
            fmt = audio.get("format") if isinstance(audio, dict) else None
            if not isinstance(data, str) or not isinstance(fmt, str) or fmt not in _AUDIO_MIME:
                raise InvalidRequestError(f"{at}.input_audio needs base64 'data' and a format of wav or mp3.",
                                          param=at)
            parts.append({"inlineData": {"mimeType": _AUDIO_MIME[fmt], "data": data}})
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            if not isinstance(data, str):
                raise InvalidRequestError(
                    f"{at}: Gemini needs the file's content inline ('file.file_data' as a data: URL); "
                    "uploaded file ids are not supported.", param=at,
                )
            parts.append(_media_part(data, at, None))
        else:
            raise InvalidRequestError(f"{at}: content part type {kind!r} is not supported for Gemini.", param=at)
    return parts


def _media_part(url: str, where: str, explicit_mime: str | None) -> dict[str, Any]:
    """A data: URL as ``inlineData``, an http(s) URL as ``fileData`` with its MIME type."""
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        mime, _, encoding = header[5:].partition(";")
        if not comma or encoding != "base64" or not mime:
            raise InvalidRequestError(f"{where}: a data: URL must be 'data:<mime type>;base64,<data>'.", param=where)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        guessed = explicit_mime or _mime_of_url(url)
        if guessed is None:
            raise InvalidRequestError(
                f"{where}: the media type of {url[:200]!r} cannot be told from its extension; Gemini needs it. "
                "Send the content inline as a data: URL, or give image_url.format (e.g. 'image/png').",
                param=where,
            )
        return {"fileData": {"mimeType": guessed, "fileUri": url}}
    raise InvalidRequestError(f"{where}: the URL must be a data: URL or an http(s) URL.", param=where)


def _mime_of_url(url: str) -> str | None:
    path = url.split("?", 1)[0].split("#", 1)[0]
    name = path.rsplit("/", 1)[-1]
    if "." not in name:
        return None
    return _MIME_BY_EXTENSION.get(name.rsplit(".", 1)[-1].lower())


def _assistant_parts(message: dict[str, Any], i: int, names_by_call_id: dict[str, str]) -> list[dict[str, Any]]:
    parts = _text_parts(message.get("content"), f"messages[{i}].content")
    calls = message.get("tool_calls")
    legacy = message.get("function_call")
    if calls is None and isinstance(legacy, dict):
        calls = [{"id": "", "type": "function", "function": legacy}]
    first_call = len(parts)
    if calls is not None:
        if not isinstance(calls, list):
            raise InvalidRequestError(f"messages[{i}].tool_calls must be an array.", param=f"messages[{i}].tool_calls")
        for k, call in enumerate(calls):
            at = f"messages[{i}].tool_calls[{k}]"
            function = call.get("function") if isinstance(call, dict) else None
            name = function.get("name") if isinstance(function, dict) else None
            if not isinstance(function, dict) or not isinstance(name, str) or not name:
                raise InvalidRequestError(f"{at}.function.name is required.", param=at)
            call_id = call.get("id")
            function_call: dict[str, Any] = {"name": name, "args": _arguments(function.get("arguments"), at)}
            if isinstance(call_id, str) and call_id:
                function_call["id"] = call_id
                names_by_call_id[call_id] = name
            part: dict[str, Any] = {"functionCall": function_call}
            signature = _signature_of(call)
            if signature:
                part["thoughtSignature"] = signature
            parts.append(part)
    signature = _signature_of(message)
    if signature:
        # A signature Gemini put on a text part goes back on the text; with no text, on the first call.
        texts = [p for p in parts if "text" in p]
        target = texts[-1] if texts else (parts[first_call] if len(parts) > first_call else None)
        if target is not None and "thoughtSignature" not in target:
            target["thoughtSignature"] = signature
    return parts


def _arguments(raw: Any, where: str) -> dict[str, Any]:
    """A tool call's JSON-string arguments as the object Gemini wants."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    raise InvalidRequestError(f"{where}.function.arguments must be a JSON object for Gemini.", param=where)


def _function_response(message: dict[str, Any], i: int, names_by_call_id: dict[str, str]) -> dict[str, Any]:
    where = f"messages[{i}]"
    call_id = message.get("tool_call_id")
    if message.get("role") == "function":
        name = message.get("name")
    elif isinstance(call_id, str):
        name = names_by_call_id.get(call_id)
        if name is None:
            raise InvalidRequestError(
                f"{where}.tool_call_id {call_id!r} matches no tool call of an earlier assistant message; "
                "Gemini needs the function's name.", param=f"{where}.tool_call_id",
            )
    else:
        raise InvalidRequestError(f"{where}.tool_call_id is required.", param=f"{where}.tool_call_id")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"{where}.name is required.", param=f"{where}.name")
    text = _text_of(message.get("content"), f"{where}.content")
    result: Any = None
    if text.startswith("{"):
        try:
            result = orjson.loads(text)
        except orjson.JSONDecodeError:
            result = None
    response = result if isinstance(result, dict) else {"result": text}
    function_response: dict[str, Any] = {"name": name, "response": response}
    if isinstance(call_id, str) and call_id:
        function_response["id"] = call_id
    return {"functionResponse": function_response}


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    raw_tools = body.get("tools")
    if raw_tools is None and isinstance(body.get("functions"), list):  # the legacy form
        raw_tools = [{"type": "function", "function": f} for f in body["functions"]]
    choice = body.get("tool_choice", body.get("function_call"))
    declarations: list[dict[str, Any]] = []
    for k, tool in enumerate(raw_tools or []):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequestError(f"tools[{k}]: only function tools can be sent to Gemini.", param=f"tools[{k}]")
        declaration: dict[str, Any] = {"name": function["name"]}
        if isinstance(function.get("description"), str) and function["description"]:
            declaration["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            declaration["parameters"] = clean_schema(function["parameters"])
        declarations.append(declaration)
    mode: str | None = None
    allowed: list[str] | None = None
    if choice in ("auto", "none"):
        mode = str(choice).upper()
    elif choice == "required":
        mode = "ANY"
    elif isinstance(choice, dict):
        named = choice.get("function") if choice.get("type", "function") == "function" else None
        name = named.get("name") if isinstance(named, dict) else choice.get("name")
        if choice.get("type") == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
            spec = choice["allowed_tools"]
            allowed = [t["function"]["name"] for t in spec.get("tools") or []
                       if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]]
            if spec.get("mode") == "required":
                mode = "ANY"
            else:
                # allowedFunctionNames only goes with ANY: in auto mode the others are simply not offered.
                declarations = [d for d in declarations if d["name"] in allowed]
                mode, allowed = "AUTO", None
        elif isinstance(name, str):
            mode, allowed = "ANY", [name]
        else:
            raise InvalidRequestError("tool_choice is not one Gemini can follow.", param="tool_choice")
    elif choice is not None:
        raise InvalidRequestError("tool_choice must be 'auto', 'none', 'required' or a named function.",
                                  param="tool_choice")
    tools = [{"functionDeclarations": declarations}] if declarations else []
    if mode is None or not declarations:
        return tools, None
    config: dict[str, Any] = {"mode": mode}
    if allowed:
        config["allowedFunctionNames"] = allowed
    return tools, {"functionCallingConfig": config}


def clean_schema(schema: Any) -> dict[str, Any]:
    """A JSON schema reduced to what Gemini's Schema accepts: refs inlined, unknown keys dropped.

    ``type: [x, "null"]`` and ``anyOf`` with a null branch become ``nullable``; ``const`` an enum;
    ``oneOf`` an ``anyOf``; ``allOf`` is merged. Recursive references become a plain object.
    """
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        for key in ("$defs", "definitions"):
            if isinstance(schema.get(key), dict):
                defs.update(schema[key])
    return _clean(schema, defs, (), 0)


def _clean(schema: Any, defs: dict[str, Any], refs: tuple[str, ...], depth: int) -> dict[str, Any]:
    if depth > _MAX_SCHEMA_DEPTH:
        raise InvalidRequestError("A tool's JSON schema is nested too deeply for Gemini.", param="tools")
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in refs or name not in defs:
            return {"type": "object"}
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, defs, (*refs, name), depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for sub in schema["allOf"]:
            resolved = _clean(sub, defs, refs, depth + 1)
            for key, value in resolved.items():
                if key == "properties" and isinstance(merged.get("properties"), dict):
                    merged["properties"] = {**merged["properties"], **value}
                elif key == "required" and isinstance(merged.get("required"), list):
                    merged["required"] = [*merged["required"], *value]
                else:
                    merged.setdefault(key, value)
        schema = merged
    out: dict[str, Any] = {}
    nullable = schema.get("nullable") is True
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = nullable or "null" in kind
        kinds = [k for k in kind if k != "null"]
        if len(kinds) == 1:
            kind = kinds[0]
        elif kinds:
            out["anyOf"] = [{"type": k} for k in kinds]
            kind = None
        else:
            kind = None
    if isinstance(kind, str):
        out["type"] = kind
    branches = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(branches, list):
        cleaned = []
        for sub in branches:
            if isinstance(sub, dict) and sub.get("type") == "null":
                nullable = True
            else:
                cleaned.append(_clean(sub, defs, refs, depth + 1))
        if len(cleaned) == 1 and "type" not in out:
            out.update(cleaned[0])
        elif cleaned:
            out["anyOf"] = cleaned
    if "const" in schema and "enum" not in schema:
        out["enum"] = [schema["const"]]
        out.setdefault("type", "string" if isinstance(schema["const"], str) else out.get("type", "string"))
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key in ("type", "anyOf", "nullable"):
            continue
        if key == "properties" and isinstance(value, dict):
            out["properties"] = {name: _clean(sub, defs, refs, depth + 1) for name, sub in value.items()}
        elif key == "items":
            item = value[0] if isinstance(value, list) and value else value
            out["items"] = _clean(item, defs, refs, depth + 1)
        elif key == "format":
            if value in _FORMATS.get(out.get("type", ""), ()):
                out["format"] = value
        else:
            out[key] = value
    if isinstance(out.get("required"), list):
        known = out.get("properties") or {}
        out["required"] = [r for r in out["required"] if r in known]
        if not out["required"]:
            del out["required"]
    if nullable:
        out["nullable"] = True
    return out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source, target in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                           ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
                           ("seed", "seed")):
        if body.get(source) is not None:
            out[target] = body[source]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        out["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stopSequences"] = stop
    if isinstance(body.get("n"), int) and body["n"] != 1:
        out["candidateCount"] = body["n"]
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            out["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            out["responseMimeType"] = "application/json"
            if isinstance(schema, dict):
                out["responseSchema"] = clean_schema(schema)
        elif kind not in (None, "text"):
            raise InvalidRequestError(f"response_format type {kind!r} is not supported for Gemini.",
                                      param="response_format")
    thinking = _thinking_config(body)
    if thinking:
        out["thinkingConfig"] = thinking
    return out


def _thinking_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """``reasoning_effort`` as Gemini's thinking settings; Google's ``thinking_config`` extra wins over it.

    Gemini 3 takes a level (3 Pro knows only low and high), Gemini 2.5 a token budget (Google's own
    mapping: low 1K, medium 8K, high 24K; none turns thinking off). Thought summaries are asked for
    whenever thinking is, so that they reach the client as ``reasoning_content``.
    """
    explicit = _google_extras(body).get("thinking_config")
    if isinstance(explicit, dict):
        return {_camel(k): v for k, v in explicit.items()}
    effort = body.get("reasoning_effort")
    if not isinstance(effort, str):
        return None
    if effort not in _THINKING_BUDGET:
        raise InvalidRequestError(f"reasoning_effort {effort!r} is not supported.", param="reasoning_effort")
    model = str(body.get("model", "")).rsplit("/", 1)[-1]
    if model.startswith("gemini-3"):
        if "pro" in model:
            level = "low" if effort in ("none", "minimal", "low") else "high"
        else:
            level = {"none": "minimal", "xhigh": "high"}.get(effort, effort)
        return {"thinkingLevel": level, "includeThoughts": effort != "none"}
    if effort == "none":
        return {"thinkingBudget": 0}
    return {"thinkingBudget": _THINKING_BUDGET[effort], "includeThoughts": True}


def _google_extras(body: dict[str, Any]) -> dict[str, Any]:
    """Google's OpenAI-compatibility extras (``extra_body: {"google": {...}}``), top level or nested."""
    nested = body.get("extra_body")
    google = body.get("google")
    if not isinstance(google, dict) and isinstance(nested, dict):
        google = nested.get("google")
    return google if isinstance(google, dict) else {}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


# -- response: chat ---------------------------------------------------------------------------------------


def gemini_response_to_chat(payload: dict[str, Any], *, model: str, created: int, fallback_id: str) -> dict[str, Any]:
    """A ``GenerateContentResponse`` as an OpenAI ``chat.completion``.

    ``fallback_id`` names the response when Gemini gave no ``responseId`` (tool call ids derive from it).
    """
    rid = payload.get("responseId")
    response_id = rid if isinstance(rid, str) and rid else fallback_id
    choices = []
    candidates = payload.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
        if not isinstance(candidate, dict):
            continue
        index = _index(candidate, position)
        content = _CandidateContent(response_id, index)
        content.add_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content.text) if content.text_seen else None}
        if content.reasoning:
            message["reasoning_content"] = "".join(content.reasoning)
        if content.tool_calls:
            message["tool_calls"] = content.tool_calls
        if content.signature:
            message["extra_content"] = _signature_extra(content.signature)
        choices.append({
            "index": index,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(candidate.get("finishReason"), tool_calls=bool(content.tool_calls)),
        })
    if not choices and _prompt_blocked(payload):
        choices.append({"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                        "finish_reason": "content_filter"})
    out: dict[str, Any] = {
        "id": f"chatcmpl-{response_id}",
        "object": "chat.completion",
        "created": created,
        "model": payload.get("modelVersion") if isinstance(payload.get("modelVersion"), str) else model,
        "choices": choices,
    }
    usage = usage_from_gemini(payload.get("usageMetadata"))
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def _index(candidate: dict[str, Any], position: int) -> int:
    index = candidate.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else position


def _prompt_blocked(payload: dict[str, Any]) -> bool:
    feedback = payload.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


class _CandidateContent:
    """What one candidate's parts say, in OpenAI's terms (also one stream event's worth)."""

    __slots__ = ("choice", "reasoning", "response_id", "signature", "text", "text_seen", "tool_calls", "tools_before")

    def __init__(self, response_id: str, choice: int, tools_before: int = 0) -> None:
        self.response_id = response_id
        self.choice = choice
        self.tools_before = tools_before
        self.text: list[str] = []
        self.text_seen = False
        self.reasoning: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.signature: str | None = None

    def add_parts(self, candidate: dict[str, Any]) -> None:
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            signature = part.get("thoughtSignature")
            call = part.get("functionCall")
            if isinstance(call, dict):
                k = self.tools_before + len(self.tool_calls)
                call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else None
                args = call.get("args") if isinstance(call.get("args"), dict) else {}
                tool_call: dict[str, Any] = {
                    "id": call_id or _call_id(self.response_id, self.choice, k),
                    "type": "function",
                    "function": {"name": str(call.get("name", "")), "arguments": orjson.dumps(args).decode()},
                }
                if isinstance(signature, str) and signature:
                    tool_call["extra_content"] = _signature_extra(signature)
                self.tool_calls.append(tool_call)
                continue
            text = part.get("text")
            if isinstance(text, str):
                if part.get("thought") is True:
                    self.reasoning.append(text)
                else:
                    self.text.append(text)
                    self.text_seen = True
            if isinstance(signature, str) and signature:
                self.signature = signature


# -- stream -----------------------------------------------------------------------------------------------


class _ChoiceState:
    __slots__ = ("finish", "started", "tools")

    def __init__(self) -> None:
        self.started = False
        self.tools = 0
        self.finish: str | None = None


class GeminiToChatStream:
    """``streamGenerateContent?alt=sse`` bytes in (any split), OpenAI ``chat.completion.chunk`` events out.

    Each Gemini event is a whole ``GenerateContentResponse``: its parts become one delta per choice, its
    finish reason a finish chunk, its usage (repeated in every event) is kept, the last one winning. Gemini
    sends no ``[DONE]``: once the upstream ends after every choice finished, the usage chunk (when the client
    asked for it with ``include_usage``) and ``data: [DONE]`` follow. An upstream error event, an unreadable
    event or an end before the finish reason ends the stream with an OpenAI error event instead (carrying
    the usage seen so far, if any).
    """

    __slots__ = ("_choices", "_chunk_head", "_created", "_fallback_id", "_framer", "_include_usage",
                 "_model", "_response_id", "complete", "error", "usage")

    def __init__(self, *, model: str, include_usage: bool, created: int, fallback_id: str) -> None:
        self._framer = SSEFramer()
        self._model = model
        self._include_usage = include_usage
        self._created = created
        self._fallback_id = fallback_id
        self._response_id: str | None = None
        self._chunk_head = b""
        self._choices: dict[int, _ChoiceState] = {}
        self.usage: Usage | None = None
        self.error: dict[str, Any] | None = None
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        if self.error is not None:
            return b""  # nothing after an error is the client's
        out = []
        for raw in self._framer.feed(data):
            out.append(self._event(raw, last=False))
            if self.error is not None:
                break
        return b"".join(out)

    def finish(self) -> bytes:
        rest = self._framer.flush()
        if self.error is not None:
            return b""
        out = self._event(rest, last=True) if rest.strip() else b""
        if self.error is not None:
            return out
        if self._choices and all(c.finish is not None for c in self._choices.values()):
            if self._include_usage and self.usage is not None:
                out += self._chunk([], usage=openai_usage(self.usage))
            self.complete = True
            return out + _DONE
        return out + self._fail({
            "message": "Gemini ended the stream before it was complete (no finish reason).",
            "type": "upstream_error", "param": None, "code": "stream_truncated",
        })

    def _event(self, raw: bytes, *, last: bool) -> bytes:
        data = parse_event(raw).data.strip()
        if not data or data == b"[DONE]":
            return b""
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            if last:  # the connection was cut inside the event: reported as truncation by finish()
                return b""
            return self._fail({"message": "Gemini sent a stream event that is not JSON.",
                               "type": "upstream_error", "param": None, "code": "bad_upstream_event"})
        if isinstance(payload, list) and payload and isinstance(payload[0], dict):
            payload = payload[0]
        if not isinstance(payload, dict):
            return self._fail({"message": "Gemini sent a stream event that is not a JSON object.",
                               "type": "upstream_error", "param": None, "code": "bad_upstream_event"})
        if "error" in payload:
            status = payload["error"].get("code") if isinstance(payload["error"], dict) else None
            return self._fail(_openai_error(payload, status if isinstance(status, int) else 500)[1]["error"])
        return self._response(payload)

    def _response(self, payload: dict[str, Any]) -> bytes:
        if self._response_id is None:
            rid = payload.get("responseId")
            self._response_id = rid if isinstance(rid, str) and rid else self._fallback_id
            version = payload.get("modelVersion")
            model = version if isinstance(version, str) and version else self._model
            self._chunk_head = (
                b'{"id":' + orjson.dumps(f"chatcmpl-{self._response_id}")
                + b',"object":"chat.completion.chunk","created":' + str(self._created).encode()
                + b',"model":' + orjson.dumps(model)
            )
        usage = usage_from_gemini(payload.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        out = []
        candidates = payload.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            if isinstance(candidate, dict):
                out.append(self._candidate(_index(candidate, position), candidate))
        if not candidates and _prompt_blocked(payload):
            state = self._choices.setdefault(0, _ChoiceState())
            if state.finish is None:
                state.finish = "content_filter"
                out.append(self._choice_chunk(0, {"role": "assistant", "content": None}, "content_filter"))
        return b"".join(out)

    def _candidate(self, index: int, candidate: dict[str, Any]) -> bytes:
        state = self._choices.setdefault(index, _ChoiceState())
        content = _CandidateContent(self._response_id or self._fallback_id, index, state.tools)
        content.add_parts(candidate)
        delta: dict[str, Any] = {}
        if not state.started:
            delta["role"] = "assistant"
        if content.reasoning and any(content.reasoning):
            delta["reasoning_content"] = "".join(content.reasoning)
        text = "".join(content.text)
        if text or (not state.started and not content.tool_calls):
            delta["content"] = text
        if content.tool_calls:
            delta["tool_calls"] = [{"index": state.tools + k, **call} for k, call in enumerate(content.tool_calls)]
            state.tools += len(content.tool_calls)
        if content.signature:
            delta["extra_content"] = _signature_extra(content.signature)
        out = b""
        if delta:  # the first delta always has the role
            state.started = True
            out = self._choice_chunk(index, delta, None)
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason and state.finish is None:
            state.finish = finish_reason(reason, tool_calls=state.tools > 0)
            out += self._choice_chunk(index, {}, state.finish)
        return out

    def _choice_chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._chunk([choice])

    def _chunk(self, choices: list[dict[str, Any]], *, usage: dict[str, Any] | None = None) -> bytes:
        tail: dict[str, Any] = {"choices": choices}
        if usage is not None:
            tail["usage"] = usage
        # The head (id, object, created, model) is the same in every chunk: encoded once.
        return b"data: " + self._chunk_head + b"," + orjson.dumps(tail)[1:] + b"\n\n"

    def _fail(self, error: dict[str, Any]) -> bytes:
        """The stream's last event: the error, with the usage seen so far (as OpenRouter's error chunks carry
        it), so that the gateway accounts what Gemini counted rather than an estimate."""
        self.error = error
        payload: dict[str, Any] = {"error": error}
        if self.usage is not None:
            payload["usage"] = openai_usage(self.usage)
        return b"data: " + orjson.dumps(payload) + b"\n\n"


# -- errors -----------------------------------------------------------------------------------------------

_API_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})


def gemini_error_to_openai(status: int, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """A Gemini error answer as (status for the client, OpenAI error body, headers to add).

    The provider's message is kept. A bad key (Gemini says 400 INVALID_ARGUMENT) is the client's 401;
    a ``RetryInfo`` delay becomes ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``.
    """
    try:
        parsed: Any = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), dict):
        text = raw.decode("utf-8", "replace").strip()[:2000] or f"Gemini answered HTTP {status} with an empty body"
        parsed = {"error": {"message": text}}
    return _openai_error(parsed, status)


def _openai_error(parsed: dict[str, Any], status: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    error = parsed["error"] if isinstance(parsed.get("error"), dict) else {"message": str(parsed.get("error"))}
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) and raw_message else f"Gemini answered HTTP {status}"
    google_status = error.get("status") if isinstance(error.get("status"), str) else None
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    reasons = {d.get("reason") for d in details if str(d.get("@type", "")).endswith("ErrorInfo")}
    code: str | None = google_status.lower() if google_status else None
    out_status = status
    headers: dict[str, str] = {}
    if reasons & _API_KEY_REASONS:
        out_status, code = 401, "invalid_api_key"
    elif status == 404 and message.startswith(("models/", "Model ")):
        code = "model_not_found"
    for detail in details:
        if str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = _seconds(detail.get("retryDelay"))
            if delay is not None:
                headers["retry-after"] = str(math.ceil(delay))
                headers["retry-after-ms"] = str(round(delay * 1000))
    body = {"error": {"message": message, "type": error_type_for_status(out_status), "param": None, "code": code}}
    return out_status, body, headers


def _seconds(value: Any) -> float | None:
    """A protobuf Duration in JSON (``"34.4s"``) as seconds."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        seconds = float(value[:-1])
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


# -- embeddings -------------------------------------------------------------------------------------------


def embeddings_request_to_gemini(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings request as a ``batchEmbedContents`` body (one request per input)."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise InvalidRequestError(
            "'input' must be a string or a non-empty array of strings for Gemini (token arrays are not supported).",
            param="input",
        )
    path = gemini_model_path(model)
    extra: dict[str, Any] = {}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise InvalidRequestError("'dimensions' must be a positive integer.", param="dimensions")
        extra["outputDimensionality"] = dimensions
    task_type = body.get("task_type")
    if isinstance(task_type, str):
        extra["taskType"] = task_type
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise InvalidRequestError("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return {"requests": [{"model": path, "content": {"parts": [{"text": text}]}, **extra} for text in inputs]}


def gemini_embeddings_to_openai(payload: dict[str, Any], request: dict[str, Any], *, model: str) -> dict[str, Any]:
    """A ``batchEmbedContents`` answer as OpenAI's embeddings list (base64 when the client asked for it).

    Gemini's batch answer carries no token counts: usage is then estimated from the inputs (about four
    characters a token) and says so with ``"estimated": true``.
    """
    embeddings = payload.get("embeddings")
    if not isinstance(embeddings, list):
        raise ValueError("batchEmbedContents answer without 'embeddings'")
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(embeddings):
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list):
            raise ValueError(f"embedding {i} has no 'values'")
        vector: Any = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode() if as_base64 else values
        data.append({"object": "embedding", "index": i, "embedding": vector})
    meta = payload.get("usageMetadata")
    prompt = _int(meta.get("promptTokenCount")) if isinstance(meta, dict) else 0
    usage: dict[str, Any]
    if prompt:
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
    else:
        raw = request.get("input")
        texts = [raw] if isinstance(raw, str) else [t for t in raw or [] if isinstance(t, str)]
        estimate = sum(max(1, -(-len(t) // 4)) for t in texts)
        usage = {"prompt_tokens": estimate, "total_tokens": estimate, "estimated": True}
    return {"object": "list", "data": data, "model": model, "usage": usage}
