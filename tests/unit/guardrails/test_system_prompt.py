"""system-prompt: the company's instructions before, after or instead of the client's, in each API's own form."""

from __future__ import annotations

from typing import Any

import pytest

from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails.interface import Decision, GuardedApi, GuardedRequest
from gomodel_proxy.guardrails.system_prompt import SystemPrompt

COMPANY = "You are Acme's assistant. Never discuss pricing."
CLIENT = "Answer in French."


def guard(mode: str, text: str = COMPANY) -> SystemPrompt:
    return SystemPrompt("system-prompt", 5, {mode: text})


async def run(mode: str, api: GuardedApi, body: dict[str, Any]) -> GuardedRequest:
    req = GuardedRequest(api=api, body=body, principal=Principal())
    await guard(mode).process_input(req)
    assert req.decisions == [Decision("system-prompt", "input", "rewrite", mode)]
    return req


def test_the_mode_and_text_come_from_the_config() -> None:
    g = guard("append")
    assert (g.name, g.priority, g.mode, g.text) == ("system-prompt", 5, "append", COMPANY)


def chat_body() -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": CLIENT},
                                       {"role": "user", "content": "Bonjour"},
                                       {"role": "developer", "content": "Be terse."}]}


@pytest.mark.parametrize(("mode", "messages"), [
    ("prepend", [{"role": "system", "content": f"{COMPANY}\n\n{CLIENT}"}, {"role": "user", "content": "Bonjour"},
                 {"role": "developer", "content": "Be terse."}]),
    ("append", [{"role": "system", "content": f"{CLIENT}\n\n{COMPANY}"}, {"role": "user", "content": "Bonjour"},
                {"role": "developer", "content": "Be terse."}]),
    ("replace", [{"role": "system", "content": COMPANY}, {"role": "user", "content": "Bonjour"}]),
])
async def test_chat(mode: str, messages: list[dict[str, Any]]) -> None:
    req = await run(mode, "chat", chat_body())
    assert req.body["messages"] == messages


@pytest.mark.parametrize("mode", ["prepend", "append", "replace"])
async def test_chat_without_a_system_message_gets_one_first(mode: str) -> None:
    req = await run(mode, "chat", {"messages": [{"role": "user", "content": "hi"}]})
    assert req.body["messages"] == [{"role": "system", "content": COMPANY}, {"role": "user", "content": "hi"}]


async def test_chat_system_content_parts_get_a_part() -> None:
    body = {"messages": [{"role": "system", "content": [{"type": "text", "text": CLIENT}]}]}
    req = await run("prepend", "chat", body)
    assert req.body["messages"][0]["content"] == [{"type": "text", "text": COMPANY}, {"type": "text", "text": CLIENT}]


def responses_body() -> dict[str, Any]:
    return {"instructions": CLIENT,
            "input": [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Bonjour"}]}


@pytest.mark.parametrize(("mode", "instructions", "kept"), [
    ("prepend", f"{COMPANY}\n\n{CLIENT}", 2),
    ("append", f"{CLIENT}\n\n{COMPANY}", 2),
    ("replace", COMPANY, 1),
])
async def test_responses(mode: str, instructions: str, kept: int) -> None:
    req = await run(mode, "responses", responses_body())
    assert req.body["instructions"] == instructions
    assert len(req.body["input"]) == kept
    assert req.body["input"][-1] == {"role": "user", "content": "Bonjour"}


@pytest.mark.parametrize("mode", ["prepend", "append", "replace"])
async def test_responses_without_instructions(mode: str) -> None:
    req = await run(mode, "responses", {"input": "Bonjour"})
    assert req.body == {"instructions": COMPANY, "input": "Bonjour"}


@pytest.mark.parametrize(("mode", "system"), [
    ("prepend", f"{COMPANY}\n\n{CLIENT}"),
    ("append", f"{CLIENT}\n\n{COMPANY}"),
    ("replace", COMPANY),
])
async def test_messages_string_system(mode: str, system: str) -> None:
    req = await run(mode, "messages", {"system": CLIENT, "messages": [{"role": "user", "content": "Bonjour"}]})
    assert req.body["system"] == system
    assert req.body["messages"] == [{"role": "user", "content": "Bonjour"}]


@pytest.mark.parametrize(("mode", "system"), [
    ("prepend", [{"type": "text", "text": COMPANY}, {"type": "text", "text": CLIENT}]),
    ("append", [{"type": "text", "text": CLIENT}, {"type": "text", "text": COMPANY}]),
    ("replace", COMPANY),
])
async def test_messages_block_system(mode: str, system: Any) -> None:
    req = await run(mode, "messages", {"system": [{"type": "text", "text": CLIENT}], "messages": []})
    assert req.body["system"] == system


async def test_messages_without_system() -> None:
    req = await run("append", "messages", {"messages": [{"role": "user", "content": "hi"}]})
    assert req.body["system"] == COMPANY
