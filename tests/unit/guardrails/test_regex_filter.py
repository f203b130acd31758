"""regex: an operator's patterns blocked, redacted or logged in the prompt and the answer; decisions and errors
name the pattern, never the text it matched."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails.interface import Decision, GuardedApi, GuardedRequest
from gomodel_proxy.guardrails.regex_filter import RegexFilter
from gomodel_proxy.guardrails.window import Match

AWS = "AKIAIOSFODNN7EXAMPLE"
TICKET = "PROJ-4821"
CODENAME = "Project Bluebird"


def pattern(name: str, source: str, action: str) -> dict[str, Any]:
    return {"name": name, "pattern": re.compile(source), "action": action}


def regex(*patterns: dict[str, Any], scan_output: bool | None = None, hold_back: int = 64,
          name: str = "regex-secrets") -> RegexFilter:
    config: dict[str, Any] = {"patterns": tuple(patterns)}
    if scan_output is not None:
        config["scan_output"] = scan_output
    return RegexFilter(name, 15, config, hold_back=hold_back)


STANDARD = (
    pattern("aws-key", r"AKIA[0-9A-Z]{16}", "block"),
    pattern("ticket", r"PROJ-\d+", "redact"),
    pattern("codename", r"Project Bluebird", "log"),
)


def request(api: GuardedApi, body: dict[str, Any]) -> GuardedRequest:
    return GuardedRequest(api=api, body=body, principal=Principal())


def chat(*texts: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": t} for t in texts]}


async def test_block_refuses_the_prompt_naming_the_pattern_only() -> None:
    body = chat(f"Use key {AWS} for {TICKET}")
    before = copy.deepcopy(body)
    req = request("chat", body)
    with pytest.raises(GuardrailBlockedError) as info:
        await regex(*STANDARD).process_input(req)
    assert str(info.value) == ("The request was blocked by guardrail 'regex-secrets': "
                               "the prompt matches pattern 'aws-key'.")
    assert AWS not in str(info.value)
    assert info.value.stage == "input"
    assert body == before
    assert req.decisions == [Decision("regex-secrets", "input", "block", "pattern=aws-key")]


async def test_redact_and_log_in_every_api() -> None:
    text = f"{CODENAME} is tracked in {TICKET} and {TICKET.replace('4821', '77')}."
    want = f"{CODENAME} is tracked in [REDACTED:ticket] and [REDACTED:ticket]."
    bodies: dict[GuardedApi, dict[str, Any]] = {
        "chat": chat(text),
        "responses": {"input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}]},
        "messages": {"messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]},
    }
    for api, body in bodies.items():
        req = request(api, body)
        await regex(*STANDARD).process_input(req)
        assert want in repr(body), api
        assert TICKET not in repr(body)
        assert req.decisions == [Decision("regex-secrets", "input", "log", "pattern=codename"),
                                 Decision("regex-secrets", "input", "redact", "pattern=ticket"),
                                 Decision("regex-secrets", "input", "redact", "pattern=ticket")]
        assert all("PROJ" not in d.detail and "Bluebird" not in d.detail for d in req.decisions)


async def test_log_only_leaves_the_text_unchanged() -> None:
    body = chat(f"status of {CODENAME}?", "nothing here")
    req = request("chat", body)
    await regex(*STANDARD).process_input(req)
    assert body == chat(f"status of {CODENAME}?", "nothing here")
    assert req.decisions == [Decision("regex-secrets", "input", "log", "pattern=codename")]


async def test_no_match_no_decision() -> None:
    req = request("chat", chat("What is the weather like?"))
    await regex(*STANDARD).process_input(req)
    assert req.decisions == []


def test_overlaps_go_to_the_earlier_then_the_longer_match() -> None:
    f = regex(pattern("short", r"secret", "redact"), pattern("long", r"secret-[a-z]+", "redact"),
              pattern("late", r"cret-token", "redact"), pattern("word", r"token\b", "log"))
    text = "a secret-token and a secret"
    assert f.scan(text) == [Match(2, 14, "long", "[REDACTED:long]"), Match(21, 27, "short", "[REDACTED:short]")]


def test_a_single_match_is_returned_as_found() -> None:
    f = regex(pattern("ticket", r"PROJ-\d+", "log"))
    assert f.scan(f"see {TICKET}") == [Match(4, 13, "ticket", None)]


async def test_patterns_that_can_match_empty_text_are_ignored_where_they_do() -> None:
    f = regex(pattern("maybe", r"x*", "redact"), pattern("ticket", r"PROJ-\d+", "redact"))
    assert f.scan("abc") == []
    assert f.scan("a xx b") == [Match(2, 4, "maybe", "[REDACTED:maybe]")]
    req = request("chat", chat(f"plain {TICKET}"))
    await f.process_input(req)
    assert req.body["messages"][0]["content"] == "plain [REDACTED:ticket]"


async def test_output_filter_catches_a_key_split_across_chunks() -> None:
    g = regex(*STANDARD, hold_back=24)
    req = request("chat", chat("hi"))
    f = g.process_output(req)
    assert f is not None
    assert f.feed("Here is the key: AKIAIOSF") == "H"
    with pytest.raises(GuardrailBlockedError) as info:
        f.feed("ODNN7EXAMPLE, keep it safe and do not share it with anyone.")
    assert str(info.value) == ("The answer was blocked by guardrail 'regex-secrets': "
                               "the answer matches pattern 'aws-key'.")
    assert info.value.stage == "output"
    assert req.decisions == [Decision("regex-secrets", "output", "block", "pattern=aws-key")]


async def test_output_filter_redacts_and_logs_across_chunks() -> None:
    g = regex(*STANDARD, hold_back=24)
    req = request("chat", chat("hi"))
    f = g.process_output(req)
    assert f is not None
    pieces = ["The fix for PR", "OJ-48", f"21 ships with {CODENAME[:9]}", f"{CODENAME[9:]} next week."]
    returned = [f.feed(p) for p in pieces] + [f.finish()]
    assert "".join(returned) == f"The fix for [REDACTED:ticket] ships with {CODENAME} next week."
    assert not any("PROJ" in r or "4821" in r for r in returned)
    assert req.decisions == [Decision("regex-secrets", "output", "redact", "pattern=ticket"),
                             Decision("regex-secrets", "output", "log", "pattern=codename")]


def test_scan_output_false_gives_no_output_filter() -> None:
    assert regex(*STANDARD, scan_output=False).process_output(request("chat", {})) is None
    assert regex(*STANDARD).scan_output is True
