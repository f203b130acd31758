"""What the gateway needs from OpenAI-shaped JSON bodies, read as cheaply as possible."""

from __future__ import annotations

import json
from typing import Any

import orjson

from gomodel_proxy.core.errors import error_type_for_status
from gomodel_proxy.core.types import Usage

_USAGE_KEY = b'"usage"'
# The stdlib's C scanner parses one value at an offset and stops there, which orjson cannot do; it
# lets the gateway read the trailing ``usage`` object without parsing the whole answer.
_DECODER = json.JSONDecoder()


def extract_usage(body: bytes) -> Usage | None:
    """The ``usage`` of a chat-completion or embeddings body; ``None`` when it has none.

    OpenAI writes ``usage`` last (followed only by a few short members), and ``"usage"`` followed by
    ``:`` cannot occur inside a JSON string (its quotes would be escaped), so the last occurrence of
    the key is the one to read.
    """
    pos = body.rfind(_USAGE_KEY)
    if pos < 0:
        return None
    start = body.find(b"{", pos)
    between = body[pos + len(_USAGE_KEY):start] if start > 0 else b""
    if between.strip() == b":":
        # The usage object holds numbers and objects of numbers, no strings: its end is the brace that
        # closes its first one, found without a scanner, and orjson parses just that slice.
        end, depth = start, 0
        while True:
            close = body.find(b"}", end)
            if close < 0:
                break
            depth += body.count(b"{", end, close) - 1
            end = close + 1
            if depth <= 0:
                try:
                    return Usage.from_openai(orjson.loads(body[start:end]))
                except orjson.JSONDecodeError:
                    break
    # Strings, null or an odd layout: the stdlib's C scanner reads one value at an offset and stops.
    tail = body[pos + len(_USAGE_KEY) :].decode("utf-8", "replace").lstrip()
    if not tail.startswith(":"):
        return None
    try:
        value, _ = _DECODER.raw_decode(tail[1:].lstrip())
    except ValueError:
        return None
    return Usage.from_openai(value)


def normalize_error_body(body: bytes, status: int, provider: str) -> bytes:
    """An upstream error body in OpenAI's shape: kept as it is when it already is, wrapped when not."""
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            if isinstance(error.get("type"), str):
                return body
            # OpenRouter's wrapped errors carry no ``type``, which OpenAI's shape requires: add it, keep the rest.
            fixed = {**error, "type": error_type_for_status(status)}
            fixed.setdefault("param", None)
            fixed.setdefault("code", None)
            parsed["error"] = fixed
            return orjson.dumps(parsed)
        if isinstance(error, str):
            message = error
        elif isinstance(parsed.get("message"), str):
            message = parsed["message"]
        else:
            message = body.decode("utf-8", "replace")
    else:
        message = body.decode("utf-8", "replace").strip()
    if not message:
        message = f"provider '{provider}' answered HTTP {status} with an empty body"
    return orjson.dumps(
        {
            "error": {
                "message": message[:2000],
                "type": error_type_for_status(status),
                "param": None,
                "code": None,
            }
        }
    )
