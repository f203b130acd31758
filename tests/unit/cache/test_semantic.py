"""The semantic index (cosine nearest within a scope, LRU) and what scopes and embeds a request."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from gomodel_proxy.cache.semantic import SemanticIndex, semantic_scope, semantic_text

# -- SemanticIndex -------------------------------------------------------------------------------------------


def test_nearest_finds_the_most_similar_above_threshold() -> None:
    index = SemanticIndex(10)
    index.add("s", [1.0, 0.0, 0.0], "x")
    index.add("s", [0.0, 1.0, 0.0], "y")
    index.add("s", [0.7, 0.7, 0.0], "xy")
    found = index.nearest("s", [2.0, 0.1, 0.0], 0.9)  # scale does not matter
    assert found is not None and found[0] == "x" and found[1] == pytest.approx(0.99875, abs=1e-4)
    assert index.nearest("s", [0.0, 0.0, 1.0], 0.5) is None  # orthogonal to all
    assert index.nearest("s", [1.0, 0.0, 0.0], 1.0) == ("x", 1.0)  # identical: exactly 1, threshold inclusive
    assert len(index) == 3


def test_scopes_never_mix() -> None:
    index = SemanticIndex(10)
    index.add("a", [1.0, 0.0], "k")
    assert index.nearest("b", [1.0, 0.0], 0.5) is None
    assert index.nearest("a", [1.0, 0.0], 0.5) == ("k", 1.0)


def test_add_replaces_and_lru_evicts_least_recently_used() -> None:
    index = SemanticIndex(2)
    index.add("s", [1.0, 0.0], "a")
    index.add("s", [0.0, 1.0], "b")
    index.add("s", [0.0, -1.0], "a")  # replaced, and now the most recent
    assert index.nearest("s", [1.0, 0.0], 0.5) is None
    assert index.nearest("s", [0.0, 1.0], 0.9) == ("b", 1.0)  # b is used: a is now the oldest
    index.add("t", [1.0, 1.0], "c")
    assert len(index) == 2
    assert index.nearest("s", [0.0, -1.0], 0.9) is None  # a evicted
    assert index.nearest("s", [0.0, 1.0], 0.9) is not None
    assert index.nearest("t", [1.0, 1.0], 0.9) is not None


def test_discard_and_empty_scopes_go() -> None:
    index = SemanticIndex(5)
    index.add("s", [1.0], "a")
    index.discard("s", "a")
    index.discard("s", "a")  # twice is harmless
    index.discard("nowhere", "a")
    assert len(index) == 0
    assert index.nearest("s", [1.0], 0.0) is None


def test_degenerate_vectors_and_dimensions() -> None:
    index = SemanticIndex(5)
    index.add("s", [0.0, 0.0], "zero")
    index.add("s", [math.nan, 1.0], "nan")
    assert len(index) == 0
    index.add("s", [1.0, 0.0], "two-d")
    assert index.nearest("s", [0.0, 0.0], -1.0) is None
    assert index.nearest("s", [1.0, 0.0, 0.0], -1.0) is None  # another embedding model: never a match
    with pytest.raises(ValueError):
        SemanticIndex(0)


def test_nearest_among_a_thousand_entries_of_1536_dims() -> None:
    """The right neighbour among many (its cost is measured by the benchmark, not here)."""
    rng = random.Random(7)
    index = SemanticIndex(1000)
    vectors = [[rng.gauss(0, 1) for _ in range(1536)] for _ in range(1000)]
    for n, vector in enumerate(vectors):
        index.add("s", vector, f"k{n}")
    found = index.nearest("s", [v + 0.01 for v in vectors[500]], 0.95)
    assert found is not None and found[0] == "k500"


# -- scope and text ------------------------------------------------------------------------------------------

CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "temperature": 0,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is the capital"},
                                     {"type": "text", "text": "of France?"}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Paris"},
    ],
}


def test_scope_ignores_only_the_conversation() -> None:
    scope = semantic_scope("chat", CHAT, "team-a")
    assert scope is not None and scope.startswith("semantic:chat:")
    other_words = {**CHAT, "messages": [{"role": "user", "content": "Capital of France?"}]}
    assert semantic_scope("chat", other_words, "team-a") == scope
    # the exact key's rules: stream/user do not matter; parameters, model and tenant do
    assert semantic_scope("chat", {**CHAT, "stream": True, "user": "u"}, "team-a") == scope
    assert semantic_scope("chat", {**CHAT, "temperature": 0.5}, "team-a") != scope
    assert semantic_scope("chat", {**CHAT, "model": "gpt-4o"}, "team-a") != scope
    assert semantic_scope("chat", CHAT, "team-b") != scope
    assert semantic_scope("chat", {**CHAT, "model": None}, "team-a") is None  # not cacheable


def test_scope_per_api_conversation_fields() -> None:
    messages = {"model": "claude", "max_tokens": 10, "system": "A", "messages": [{"role": "user", "content": "x"}]}
    assert semantic_scope("messages", messages, "n") == semantic_scope(
        "messages", {**messages, "system": "B", "messages": []}, "n")
    responses = {"model": "gpt-5", "instructions": "A", "input": "x"}
    assert semantic_scope("responses", responses, "n") == semantic_scope(
        "responses", {**responses, "instructions": None, "input": [{"role": "user", "content": "y"}]}, "n")
    assert semantic_scope("responses", {**responses, "background": True}, "n") is None
    assert semantic_scope("responses", responses, "n") != semantic_scope("chat", {"model": "gpt-5"}, "n")


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("chat", {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": "data:x"}}]}]}),
        ("messages", {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "document", "source": {}}]}]}),
        ("responses", {"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "t"}, {"type": "input_file", "file_id": "f"}]}]}),
    ],
)
def test_non_text_conversations_have_no_scope(api: Any, body: dict[str, Any]) -> None:
    assert semantic_scope(api, body, "n") is None
    assert "[" in semantic_text(api, body)  # the text still says something is there


def test_chat_text_has_roles_in_order_with_tool_calls() -> None:
    assert semantic_text("chat", CHAT) == (
        "system: Be brief.\n"
        "user: What is the capital\nof France?\n"
        'assistant: [call look({"q":1})]\n'
        "tool: Paris"
    )


def test_messages_text_has_system_tool_use_and_results_not_thinking() -> None:
    body = {
        "model": "claude",
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "secret", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "cold"}]}]},
        ],
    }
    assert semantic_text("messages", body) == (
        "system: You are terse.\n"
        "user: Weather?\n"
        'assistant: Checking.\n[call weather({"city":"Oslo"})]\n'
        "user: [result cold]"
    )


def test_responses_text_items_and_string_input() -> None:
    body = {
        "model": "gpt-5",
        "instructions": "Answer directly.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Sum 2+2"}]},
            {"type": "reasoning", "id": "rs", "summary": []},
            {"type": "function_call", "call_id": "c", "name": "add", "arguments": "[2,2]"},
            {"type": "function_call_output", "call_id": "c", "output": "4"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "4"}, {"type": "refusal", "refusal": "no more"}]},
            "stray",
        ],
    }
    assert semantic_text("responses", body) == (
        "system: Answer directly.\n"
        "user: Sum 2+2\n"
        "assistant: [call add([2,2])]\n"
        "tool: 4\n"
        "assistant: 4\nno more"
    )
    assert semantic_text("responses", {"model": "m", "input": "hi"}) == "user: hi"
    assert semantic_text("responses", {"model": "m"}) == ""
    # odd values: parts that are strings or junk, a non-string non-list content
    odd = {"model": "m", "messages": [{"role": "user", "content": ["plain", 3, {"type": "text"}]},
                                      {"role": "user", "content": {"k": 1}}, "junk",
                                      {"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]}]}
    assert semantic_text("chat", odd) == 'user: plain\nuser: {"k":1}'
