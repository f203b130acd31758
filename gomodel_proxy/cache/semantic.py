"""An optional semantic cache index for one instance: a request whose conversation means the same as an earlier
one may be answered with that one's cached answer.

The exact-match key (``request_key``) decides *which answers may be shared at all*; this module only relaxes
the conversation text. So a request is matched only within its *scope* (:func:`semantic_scope`): the hash of
everything in the body except the conversation, under the exact key's normalisation rules, so that the model,
tools, sampling parameters, response format and tenant must be identical. The conversation, system prompt
and instructions included, is embedded as text (:func:`semantic_text`); a request whose conversation holds
images, files or audio has no scope, since text alone would not tell two such requests apart.

:class:`SemanticIndex` is pure Python, as the gateway carries no numpy: vectors are normalised once when added
and kept as ``array('f')`` (6 KB for 1536 dimensions), so a lookup is one dot product per entry of the scope.
That is roughly 30-50 µs per 1536-dimension entry: with thousands of entries in one scope, call
:meth:`SemanticIndex.nearest` in a worker thread (it is thread-safe), or embed with fewer dimensions.
Entries are evicted least recently used first (a match counts as a use).
"""

from __future__ import annotations

import math
import operator
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson

from gomodel_proxy.cache.request_key import Api, cache_key

#: Body fields holding the conversation, per API: left out of the scope, put into the embedded text.
CONVERSATION_FIELDS: dict[str, frozenset[str]] = {
    "chat": frozenset({"messages"}),
    "responses": frozenset({"input", "instructions"}),
    "messages": frozenset({"messages", "system"}),
}

#: Content part types that carry no text (their content would not be embedded).
_NON_TEXT = frozenset({
    "image_url", "input_audio", "file", "image", "document", "input_image", "input_file", "audio",
})
#: Parts or blocks that are the model's own thinking: not embedded.
_SKIPPED = frozenset({"thinking", "redacted_thinking", "reasoning"})


class _NonText(Exception):
    """The conversation holds something besides text."""


def semantic_scope(api: Api, body: dict[str, Any], namespace: str) -> str | None:
    """The scope within which ``body`` may match others semantically, or ``None`` when it may not match at all
    (not cacheable, or a conversation holding images, files or audio)."""
    kept = {field: value for field, value in body.items() if field not in CONVERSATION_FIELDS[api]}
    key = cache_key(api, kept, namespace=namespace)
    if key is None:
        return None
    try:
        _lines(api, body, strict=True)
    except _NonText:
        return None
    return "semantic:" + key


def semantic_text(api: Api, body: dict[str, Any]) -> str:
    """The conversation to embed: ``role: text`` lines in order, system prompt or instructions first; tool calls
    and their results as text; non-text parts as a ``[type]`` placeholder."""
    return "\n".join(_lines(api, body, strict=False))


def _lines(api: Api, body: dict[str, Any], *, strict: bool) -> list[str]:
    lines: list[str] = []
    system = body.get("instructions" if api == "responses" else "system")
    if system is not None:
        _add(lines, "system", _text(system, strict=strict))
    messages = body.get("input" if api == "responses" else "messages")
    if isinstance(messages, str):  # a responses input given as one user message
        _add(lines, "user", messages)
        return lines
    if not isinstance(messages, list):
        return lines
    for message in messages:
        if isinstance(message, dict):
            _message_lines(lines, message, strict=strict)
    return lines


def _add(lines: list[str], role: str, text: str) -> None:
    if text:
        lines.append(f"{role}: {text}")


def _message_lines(lines: list[str], message: dict[str, Any], *, strict: bool) -> None:
    kind = message.get("type")
    if kind == "function_call":  # responses items
        _add(lines, "assistant", f"[call {message.get('name')}({message.get('arguments')})]")
        return
    if kind == "function_call_output":
        _add(lines, "tool", _text(message.get("output"), strict=strict))
        return
    role = str(message.get("role") or kind or "user")
    _add(lines, role, _text(message.get("content"), strict=strict))
    for call in message.get("tool_calls") or []:  # chat
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            _add(lines, role, f"[call {function.get('name')}({function.get('arguments')})]")


def _text(content: Any, *, strict: bool) -> str:
    """The text of a content value: a string, or a list of parts/blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return "" if content is None else orjson.dumps(content).decode()
    pieces: list[str] = []
    for part in content:
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in _SKIPPED:
            continue
        if kind in _NON_TEXT:
            if strict:
                raise _NonText(kind)
            pieces.append(f"[{kind}]")
        elif kind == "tool_use":
            pieces.append(f"[call {part.get('name')}({orjson.dumps(part.get('input')).decode()})]")
        elif kind == "tool_result":
            pieces.append(f"[result {_text(part.get('content'), strict=strict)}]")
        elif isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif isinstance(part.get("refusal"), str):
            pieces.append(part["refusal"])
    return "\n".join(pieces)


class SemanticIndex:
    """Embedding vectors of cached requests, by scope; the nearest one above a cosine threshold is a match."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._lru: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._scopes: dict[str, dict[str, array[float]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lru)

    def add(self, scope: str, vector: Sequence[float], key: str) -> None:
        """Index ``key`` (a cache key) under ``vector`` in ``scope``, replacing its older vector, evicting the least
        recently used entry beyond ``max_entries``. A zero or non-finite vector is ignored: it has no direction."""
        unit = _unit(vector)
        if unit is None:
            return
        with self._lock:
            self._scopes.setdefault(scope, {})[key] = array("f", unit)
            self._lru[(scope, key)] = None
            self._lru.move_to_end((scope, key))
            while len(self._lru) > self._max_entries:
                old_scope, old_key = self._lru.popitem(last=False)[0]
                self._drop(old_scope, old_key)

    def discard(self, scope: str, key: str) -> None:
        """Forget ``key`` in ``scope`` (its answer is gone from the store)."""
        with self._lock:
            if (scope, key) in self._lru:
                del self._lru[(scope, key)]
                self._drop(scope, key)

    def nearest(self, scope: str, vector: Sequence[float], threshold: float) -> tuple[str, float] | None:
        """The key in ``scope`` most similar to ``vector`` and its cosine similarity, if at least ``threshold``.

        Vectors of another dimension (another embedding model) never match.
        """
        query = _unit(vector)
        if query is None:
            return None
        with self._lock:
            candidates = list(self._scopes.get(scope, {}).items())
        best_key, best = None, -math.inf
        dims = len(query)
        for key, unit in candidates:
            if len(unit) != dims:
                continue
            similarity = sum(map(operator.mul, query, unit))
            if similarity > best:
                best_key, best = key, similarity
        if best_key is None or best < threshold:
            return None
        with self._lock:
            if (scope, best_key) in self._lru:
                self._lru.move_to_end((scope, best_key))
        return best_key, min(1.0, best)

    def _drop(self, scope: str, key: str) -> None:
        bucket = self._scopes[scope]
        del bucket[key]
        if not bucket:
            del self._scopes[scope]


def _unit(vector: Sequence[float]) -> list[float] | None:
    values = [float(v) for v in vector]
    norm = math.sqrt(math.fsum(v * v for v in values))
    if not (norm > 0 and math.isfinite(norm)):
        return None
    return [v / norm for v in values]
