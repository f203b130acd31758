"""The text a model will read, found in the three client APIs' request bodies, and the few rewrites guardrails make.

Guardrails are written once for OpenAI chat completions, OpenAI Responses and Anthropic Messages: they see a
flat list of :class:`TextSlot` (each a piece of text with the role of who wrote it) instead of three nested
wire formats. A slot writes back into the parsed body in place, so a redactor or a filter never rebuilds the
request. Only text is found: images, files, audio and the arguments of tool calls are skipped (a tool call's
arguments are the model's own output coming back, and JSON besides).

The bodies come from clients and have not been validated against each API's schema yet: any part of an odd
shape (a number where a string belongs, a list where a mapping does) is skipped, never a crash; the provider
answers such a request with its own 400.
"""

from __future__ import annotations

from typing import Any, Literal

from gomodel_proxy.guardrails.interface import GuardedApi

SystemPromptMode = Literal["prepend", "append", "replace"]

_ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
#: Parts of a Responses message whose ``text`` the model reads.
_RESPONSES_TEXT_PARTS = frozenset({"input_text", "output_text"})
#: Parts of a chat or Messages message whose ``text`` the model reads.
_TEXT_PARTS = frozenset({"text"})
_SYSTEM_ROLES = frozenset({"system", "developer"})
_SEPARATOR = "\n\n"


class TextSlot:
    """One string of the request body: ``get`` reads it, ``set`` replaces it in the body itself."""

    __slots__ = ("_container", "_key", "role")

    def __init__(self, container: dict[str, Any], key: str, role: str) -> None:
        self._container = container
        self._key = key
        #: Who wrote it: ``system``, ``developer``, ``user``, ``assistant`` or ``tool``.
        self.role = role

    def get(self) -> str:
        value = self._container.get(self._key)
        return value if isinstance(value, str) else ""

    def set(self, text: str) -> None:
        self._container[self._key] = text

    def __repr__(self) -> str:
        return f"TextSlot(role={self.role!r}, key={self._key!r})"


def input_slots(api: GuardedApi, body: dict[str, Any]) -> list[TextSlot]:
    """Every piece of text the model will read in ``body``, in the order the model reads it."""
    if not isinstance(body, dict):
        return []
    slots: list[TextSlot] = []
    if api == "chat":
        for msg in _dicts(body.get("messages")):
            _content(msg, "content", _role(msg.get("role")), _TEXT_PARTS, slots)
    elif api == "responses":
        if isinstance(body.get("instructions"), str):
            slots.append(TextSlot(body, "instructions", "system"))
        items = body.get("input")
        if isinstance(items, str):
            slots.append(TextSlot(body, "input", "user"))
        for item in _dicts(items):
            kind = item.get("type", "message")
            if kind == "message":
                _content(item, "content", _role(item.get("role")), _RESPONSES_TEXT_PARTS, slots)
            elif kind == "function_call_output":
                _content(item, "output", "tool", _RESPONSES_TEXT_PARTS, slots)
    elif api == "messages":
        _content(body, "system", "system", _TEXT_PARTS, slots)
        for msg in _dicts(body.get("messages")):
            role = _role(msg.get("role"))
            content = msg.get("content")
            if isinstance(content, str):
                slots.append(TextSlot(msg, "content", role))
                continue
            for block in _dicts(content):
                if block.get("type") == "text" and isinstance(block.get("text"), str):
                    slots.append(TextSlot(block, "text", role))
                elif block.get("type") == "tool_result":
                    _content(block, "content", "tool", _TEXT_PARTS, slots)
    return slots


def apply_system_prompt(api: GuardedApi, body: dict[str, Any], mode: SystemPromptMode, text: str) -> None:
    """Put the administrator's system prompt ``text`` into ``body``: before the client's (``prepend``), after it
    (``append``) or instead of it (``replace``: every other system or developer instruction is removed)."""
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return  # nothing to instruct; the provider refuses the request anyway
        first = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES),
                     None)
        if first is None:
            messages.insert(0, {"role": "system", "content": text})
            return
        _merge(messages[first], "content", mode, text, "text")
        if mode == "replace":
            messages[:] = [m for i, m in enumerate(messages) if i == first or not _is_system_message(m)]
    elif api == "responses":
        _merge(body, "instructions", mode, text, "input_text")
        items = body.get("input")
        if mode == "replace" and isinstance(items, list):
            items[:] = [m for m in items if not (_is_system_message(m) and m.get("type", "message") == "message")]
    elif api == "messages":
        _merge(body, "system", mode, text, "text")


def clamp_output_tokens(api: GuardedApi, body: dict[str, Any], limit: int) -> bool:
    """Cap the answer at ``limit`` tokens: a larger cap the client gave is lowered, a missing one is set.
    True when ``body`` changed."""
    keys = {"chat": ("max_completion_tokens", "max_tokens"), "responses": ("max_output_tokens",),
            "messages": ("max_tokens",)}[api]
    present = [k for k in keys if body.get(k) is not None]
    if not present:
        body[keys[0]] = limit
        return True
    changed = False
    for key in present:
        value = body[key]
        # A value of the wrong type ("100000", true) is replaced too: a lenient provider might read it as a number.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value > limit:
            body[key] = limit
            changed = True
    return changed


# -- helpers -------------------------------------------------------------------------------------------------
def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _role(value: Any) -> str:
    if value == "function":
        return "tool"
    return value if isinstance(value, str) and value in _ROLES else "user"


def _is_system_message(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") in _SYSTEM_ROLES


def _content(container: dict[str, Any], key: str, role: str, part_types: frozenset[str],
             slots: list[TextSlot]) -> None:
    """The slots of ``container[key]``: the string itself, or the text parts of a list."""
    value = container.get(key)
    if isinstance(value, str):
        slots.append(TextSlot(container, key, role))
        return
    for part in _dicts(value):
        if part.get("type") in part_types and isinstance(part.get("text"), str):
            slots.append(TextSlot(part, "text", role))


def _merge(container: dict[str, Any], key: str, mode: SystemPromptMode, text: str, part_type: str) -> None:
    """``text`` combined with ``container[key]`` (a string, or a list of content parts)."""
    existing = container.get(key)
    if mode == "replace" or existing is None or existing == "":
        container[key] = text
    elif isinstance(existing, str):
        container[key] = text + _SEPARATOR + existing if mode == "prepend" else existing + _SEPARATOR + text
    elif isinstance(existing, list):
        part = {"type": part_type, "text": text}
        if mode == "prepend":
            existing.insert(0, part)
        else:
            existing.append(part)
    else:
        container[key] = text  # an odd shape the provider would refuse: the administrator's prompt wins
