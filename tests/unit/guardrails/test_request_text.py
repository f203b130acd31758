"""Text slots, system prompts and output caps over the three client APIs' request bodies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gomodel_proxy.guardrails.request_text import (
    SystemPromptMode,
    apply_system_prompt,
    clamp_output_tokens,
    input_slots,
)


def texts(api: Any, body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s.role, s.get()) for s in input_slots(api, body)]


# -- input_slots -----------------------------------------------------------------------------------------------
def test_chat_strings_and_parts() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"secret\": 1}"}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "42 degrees"},
            {"role": "developer", "content": "Answer in French."},
            {"role": "function", "name": "f", "content": "legacy result"},
            {"role": "robot", "content": "unknown role"},
        ],
    }
    assert texts("chat", body) == [
        ("system", "Be brief."),
        ("user", "What is in this image?"),
        ("tool", "42 degrees"),
        ("developer", "Answer in French."),
        ("tool", "legacy result"),
        ("user", "unknown role"),
    ]


def test_slot_set_writes_into_the_body() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"type": "text", "text": "my mail is a@b.io"}]},
                         {"role": "user", "content": "call 555"}]}
    slots = input_slots("chat", body)
    slots[0].set("my mail is [EMAIL]")
    slots[1].set("call [PHONE]")
    assert body["messages"][0]["content"][0]["text"] == "my mail is [EMAIL]"
    assert body["messages"][1]["content"] == "call [PHONE]"
    assert "role='user'" in repr(slots[0])


def test_responses_shapes() -> None:
    body = {
        "instructions": "You are terse.",
        "input": [
            {"role": "user", "content": "plain string"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "earlier answer"},
                {"type": "refusal", "refusal": "no"},
            ]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look at this"},
                {"type": "input_image", "image_url": "https://x/y.png"},
                {"type": "input_file", "file_id": "file-1"},
            ]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "tool says hi"},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "parts"}]},
            {"type": "reasoning", "summary": []},
        ],
    }
    assert texts("responses", body) == [
        ("system", "You are terse."),
        ("user", "plain string"),
        ("assistant", "earlier answer"),
        ("user", "look at this"),
        ("tool", "tool says hi"),
        ("tool", "parts"),
    ]


def test_responses_string_input_slot_replaces_input() -> None:
    body: dict[str, Any] = {"input": "hello there"}
    (slot,) = input_slots("responses", body)
    assert (slot.role, slot.get()) == ("user", "hello there")
    slot.set("bye")
    assert body == {"input": "bye"}


def test_messages_shapes() -> None:
    body = {
        "system": [{"type": "text", "text": "Sys one"}, {"type": "text", "text": "Sys two", "cache_control": {}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": "secret"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "result string"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [
                    {"type": "text", "text": "result block"}, {"type": "image", "source": {}},
                ]},
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                {"type": "text", "text": "and now?"},
            ]},
        ],
    }
    assert texts("messages", body) == [
        ("system", "Sys one"), ("system", "Sys two"), ("user", "hi"), ("assistant", "calling"),
        ("tool", "result string"), ("tool", "result block"), ("user", "and now?"),
    ]
    assert texts("messages", {"system": "plain", "messages": []}) == [("system", "plain")]


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
@pytest.mark.parametrize("body", [
    {}, {"messages": "nope"}, {"messages": [1, None, "x", {"role": 3, "content": 5}]},
    {"messages": [{"role": "user", "content": [1, {"type": "text", "text": 7}, {"type": "text"}]}]},
    {"input": 42, "instructions": ["x"]}, {"input": [None, {"type": "message", "content": {"a": 1}}]},
    {"system": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": 3}]}]},
])
def test_odd_shapes_are_skipped(api: Any, body: dict[str, Any]) -> None:
    assert texts(api, body) == []


def test_not_a_dict() -> None:
    assert input_slots("chat", [])  == []  # type: ignore[arg-type]


def test_slot_get_after_foreign_change_is_empty() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}]}
    (slot,) = input_slots("chat", body)
    body["messages"][0]["content"] = None
    assert slot.get() == ""


# -- apply_system_prompt ---------------------------------------------------------------------------------------
def chat(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages)}


def test_chat_without_system_inserts_one() -> None:
    modes: tuple[SystemPromptMode, ...] = ("prepend", "append", "replace")
    for mode in modes:
        body = chat({"role": "user", "content": "hi"})
        apply_system_prompt("chat", body, mode, "Policy.")
        assert body["messages"] == [{"role": "system", "content": "Policy."}, {"role": "user", "content": "hi"}]


def test_chat_prepend_append_replace_string() -> None:
    base = chat({"role": "user", "content": "hi"}, {"role": "system", "content": "Client."},
                {"role": "developer", "content": "Dev."})
    body = copy.deepcopy(base)
    apply_system_prompt("chat", body, "prepend", "Policy.")
    assert body["messages"][1] == {"role": "system", "content": "Policy.\n\nClient."}
    assert body["messages"][2]["content"] == "Dev."
    body = copy.deepcopy(base)
    apply_system_prompt("chat", body, "append", "Policy.")
    assert body["messages"][1]["content"] == "Client.\n\nPolicy."
    body = copy.deepcopy(base)
    apply_system_prompt("chat", body, "replace", "Policy.")
    assert body["messages"] == [{"role": "user", "content": "hi"}, {"role": "system", "content": "Policy."}]


def test_chat_developer_first_and_parts() -> None:
    body = chat({"role": "developer", "content": [{"type": "text", "text": "Dev."}]}, {"role": "user", "content": "q"})
    apply_system_prompt("chat", body, "prepend", "Policy.")
    assert body["messages"][0]["content"] == [{"type": "text", "text": "Policy."}, {"type": "text", "text": "Dev."}]
    apply_system_prompt("chat", body, "append", "Tail.")
    assert body["messages"][0]["content"][-1] == {"type": "text", "text": "Tail."}
    apply_system_prompt("chat", body, "replace", "Only.")
    assert body["messages"][0] == {"role": "developer", "content": "Only."}


def test_chat_empty_or_odd_existing_content() -> None:
    body = chat({"role": "system", "content": ""})
    apply_system_prompt("chat", body, "append", "Policy.")
    assert body["messages"][0]["content"] == "Policy."
    body = chat({"role": "system", "content": 12})
    apply_system_prompt("chat", body, "prepend", "Policy.")
    assert body["messages"][0]["content"] == "Policy."
    body = {"messages": "nope"}
    apply_system_prompt("chat", body, "prepend", "Policy.")
    assert body == {"messages": "nope"}


def test_responses_instructions() -> None:
    body: dict[str, Any] = {"input": "hi"}
    apply_system_prompt("responses", body, "prepend", "Policy.")
    assert body["instructions"] == "Policy."
    apply_system_prompt("responses", body, "append", "More.")
    assert body["instructions"] == "Policy.\n\nMore."
    body = {"instructions": "Client.", "input": [
        {"role": "system", "content": "in-input system"}, {"role": "developer", "content": "dev"},
        {"role": "user", "content": "hi"}, {"type": "function_call_output", "output": "x"},
    ]}
    apply_system_prompt("responses", body, "replace", "Policy.")
    assert body["instructions"] == "Policy."
    assert body["input"] == [{"role": "user", "content": "hi"}, {"type": "function_call_output", "output": "x"}]


def test_messages_system() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    apply_system_prompt("messages", body, "append", "Policy.")
    assert body["system"] == "Policy."
    apply_system_prompt("messages", body, "prepend", "First.")
    assert body["system"] == "First.\n\nPolicy."
    body["system"] = [{"type": "text", "text": "Client.", "cache_control": {"type": "ephemeral"}}]
    apply_system_prompt("messages", body, "prepend", "Policy.")
    assert body["system"][0] == {"type": "text", "text": "Policy."}
    assert body["system"][1]["text"] == "Client."
    apply_system_prompt("messages", body, "replace", "Only.")
    assert body["system"] == "Only."


# -- clamp_output_tokens ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("api", "body", "limit", "changed", "expected"),
    [
        ("chat", {}, 100, True, {"max_completion_tokens": 100}),
        ("chat", {"max_tokens": None}, 100, True, {"max_tokens": None, "max_completion_tokens": 100}),
        ("chat", {"max_tokens": 500}, 100, True, {"max_tokens": 100}),
        ("chat", {"max_tokens": 50}, 100, False, {"max_tokens": 50}),
        ("chat", {"max_completion_tokens": 100}, 100, False, {"max_completion_tokens": 100}),
        ("chat", {"max_completion_tokens": 90, "max_tokens": 4000}, 100, True,
         {"max_completion_tokens": 90, "max_tokens": 100}),
        ("chat", {"max_tokens": "9999"}, 100, True, {"max_tokens": 100}),
        ("chat", {"max_tokens": True}, 100, True, {"max_tokens": 100}),
        ("responses", {}, 64, True, {"max_output_tokens": 64}),
        ("responses", {"max_output_tokens": 1e6}, 64, True, {"max_output_tokens": 64}),
        ("responses", {"max_output_tokens": 10}, 64, False, {"max_output_tokens": 10}),
        ("messages", {"max_tokens": 8192}, 1024, True, {"max_tokens": 1024}),
        ("messages", {"max_tokens": 512}, 1024, False, {"max_tokens": 512}),
        ("messages", {}, 1024, True, {"max_tokens": 1024}),
    ],
)
def test_clamp(api: Any, body: dict[str, Any], limit: int, changed: bool, expected: dict[str, Any]) -> None:
    assert clamp_output_tokens(api, body, limit) is changed
    assert body == expected


def test_unknown_api_is_left_alone() -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "system": "s"}
    assert input_slots("embeddings", body) == []  # type: ignore[arg-type]
    apply_system_prompt("embeddings", body, "replace", "Policy.")  # type: ignore[arg-type]
    assert body == {"messages": [{"role": "user", "content": "hi"}], "system": "s"}
