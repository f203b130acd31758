"""token-limiter: prompts over the limit refused (naming counts, never text), answers capped in the request."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails import token_limiter
from gomodel_proxy.guardrails.interface import Decision, GuardedRequest, GuardrailSpec
from gomodel_proxy.guardrails.token_limiter import TokenLimiter, shared_counter
from gomodel_proxy.guardrails.tokens import TokenCounter


def limiter(**config: Any) -> TokenLimiter:
    spec = GuardrailSpec(name="token-limiter", kind="token-limiter", enabled=True, priority=20,
                         config=MappingProxyType(config))
    return TokenLimiter(spec, counter=TokenCounter())


def request(api: Any, body: dict[str, Any]) -> GuardedRequest:
    return GuardedRequest(api=api, body=body, principal=Principal())


async def test_under_the_limit_passes_untouched() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}
    req = request("chat", body)
    await limiter(max_input_tokens=2).process_input(req)
    assert req.decisions == []
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}


async def test_over_the_limit_is_blocked_without_the_text() -> None:
    secret = "my password is hunter2 and my card is 4111 1111 1111 1111"
    req = request("messages", {"system": "Be brief.", "messages": [{"role": "user", "content": secret}]})
    with pytest.raises(GuardrailBlockedError) as info:
        await limiter(max_input_tokens=5).process_input(req)
    n = await TokenCounter().count("Be brief.\n" + secret)
    err = info.value
    assert err.status == 400 and err.code == "guardrail_blocked" and err.guardrail == "token-limiter"
    assert err.message == (
        f"The request was blocked by guardrail 'token-limiter': the prompt has {n} tokens, more than the 5 allowed."
    )
    assert "hunter2" not in err.message
    assert req.decisions == [Decision("token-limiter", "input", "block", f"{n} input tokens > 5")]


async def test_tools_count_towards_the_limit() -> None:
    body: dict[str, Any] = {"input": "hi", "tools": [
        {"type": "function", "name": "lookup_customer_record", "description": "Looks up a customer by id",
         "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}},
    ]}
    await limiter(max_input_tokens=5).process_input(request("responses", {"input": "hi"}))
    with pytest.raises(GuardrailBlockedError):
        await limiter(max_input_tokens=5).process_input(request("responses", body))


async def test_output_cap_clamps_and_records() -> None:
    req = request("chat", {"messages": [{"role": "user", "content": "write an essay"}], "max_tokens": 9000})
    await limiter(max_output_tokens=1000).process_input(req)
    assert req.body["max_tokens"] == 1000
    assert req.decisions == [Decision("token-limiter", "input", "clamp", "max output tokens set to 1000")]

    req = request("messages", {"messages": [], "max_tokens": 200})
    await limiter(max_output_tokens=1000).process_input(req)
    assert req.body["max_tokens"] == 200 and req.decisions == []

    req = request("responses", {"input": "x"})
    await limiter(max_input_tokens=100, max_output_tokens=50).process_input(req)
    assert req.body["max_output_tokens"] == 50
    assert [d.action for d in req.decisions] == ["clamp"]


async def test_blocked_request_is_not_clamped() -> None:
    req = request("chat", {"messages": [{"role": "user", "content": "one two three four five six"}]})
    with pytest.raises(GuardrailBlockedError):
        await limiter(max_input_tokens=3, max_output_tokens=10).process_input(req)
    assert "max_completion_tokens" not in req.body


async def test_output_hooks_do_nothing() -> None:
    g = limiter(max_output_tokens=10)
    req = request("chat", {"messages": []})
    assert g.process_output(req) is None
    await g.review_output(req, "text")
    assert (g.name, g.priority, g.max_input_tokens, g.max_output_tokens) == ("token-limiter", 20, None, 10)


def test_shared_counter_is_one_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_limiter, "_SHARED", None)
    first = shared_counter()
    assert shared_counter() is first
    spec = GuardrailSpec(name="t", kind="token-limiter", enabled=True, priority=1,
                         config=MappingProxyType({"max_input_tokens": 10}))
    assert TokenLimiter(spec).counter is first
