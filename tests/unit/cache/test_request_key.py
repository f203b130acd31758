"""Cache keys: one request written any way shares a key; anything that changes the answer, or the tenant, does not."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from gomodel_proxy.cache.request_key import cache_key, cacheable, uncacheable_reason


def chat_body(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini-2024-07-18",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "temperature": 0,
    }
    body.update(extra)
    return body


def key(body: dict[str, Any], *, api: Any = "chat", namespace: str = "global") -> str | None:
    return cache_key(api, body, namespace=namespace)


def test_key_is_api_prefixed_sha256_hex() -> None:
    assert re.fullmatch(r"chat:[0-9a-f]{64}", key(chat_body()) or "")
    assert re.fullmatch(r"messages:[0-9a-f]{64}", key(chat_body(max_tokens=10), api="messages") or "")


def test_key_is_stable_across_calls() -> None:
    assert key(chat_body()) == key(chat_body())


def test_streamed_and_non_streamed_forms_share_a_key() -> None:
    plain = key(chat_body())
    assert key(chat_body(stream=True, stream_options={"include_usage": True})) == plain
    assert key(chat_body(stream=False)) == plain


def test_key_order_and_whitespace_are_irrelevant() -> None:
    body = chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True}})
    text = orjson.dumps(body).decode()
    reordered = orjson.loads(orjson.dumps(dict(reversed(list(orjson.loads(text).items())))))
    reordered["response_format"] = {"json_schema": {"strict": True, "name": "x"}, "type": "json_schema"}
    spaced = orjson.loads(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    assert list(reordered) != list(body)
    assert key(reordered) == key(body) == key(spaced)


@pytest.mark.parametrize(
    "field",
    [
        "user",
        "metadata",
        "service_tier",
        "store",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "cache",
    ],
)
def test_fields_that_do_not_change_the_answer_are_ignored(field: str) -> None:
    assert key(chat_body(**{field: {"any": "value"}})) == key(chat_body())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "gpt-4o-2024-08-06"),
        ("messages", [{"role": "user", "content": "Hello"}]),
        ("temperature", 0.7),
        ("top_p", 0.9),
        ("max_tokens", 64),
        ("max_completion_tokens", 64),
        ("seed", 42),
        ("stop", ["\n"]),
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ("tool_choice", "required"),
        ("parallel_tool_calls", False),
        ("response_format", {"type": "json_object"}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
        ("logprobs", True),
        ("reasoning_effort", "high"),
        ("some_future_field", 1),
    ],
)
def test_answer_changing_parameters_change_the_key(field: str, value: Any) -> None:
    assert key(chat_body(**{field: value})) != key(chat_body())


def test_numbers_are_hashed_as_given() -> None:
    assert key(chat_body(temperature=1)) != key(chat_body(temperature=1.0))


def test_namespaces_never_share() -> None:
    keys = {key(chat_body(), namespace=ns) for ns in ("global", "key:1", "key:2", "team:1")}
    assert len(keys) == 4


def test_apis_never_share() -> None:
    body = chat_body(max_tokens=10)
    keys = {key(body, api=api) for api in ("chat", "responses", "messages")}
    assert len(keys) == 3


def test_store_changes_the_key_only_for_responses() -> None:
    body = {"model": "gpt-4o", "input": "Hi"}
    assert key({**body, "store": False}, api="responses") != key({**body, "store": True}, api="responses")
    assert key({**body, "store": False}, api="messages") == key({**body, "store": True}, api="messages")


@pytest.mark.parametrize(
    ("api", "body", "reason"),
    [
        ("chat", {"messages": []}, "no resolved model"),
        ("chat", {"model": None, "messages": []}, "no resolved model"),
        ("responses", {"model": "gpt-4o", "input": "Hi", "background": True}, "background"),
        ("responses", {"model": "gpt-4o", "input": "Hi", "conversation": "conv_1"}, "conversation"),
    ],
)
def test_uncacheable_requests_have_no_key(api: Any, body: dict[str, Any], reason: str) -> None:
    assert key(body, api=api) is None
    assert not cacheable(api, body)
    assert reason in (uncacheable_reason(api, body) or "")


def test_background_false_is_cacheable() -> None:
    body = {"model": "gpt-4o", "input": "Hi", "background": False}
    assert cacheable("responses", body)
    assert key(body, api="responses") is not None


def test_unserialisable_body_has_no_key() -> None:
    assert key(chat_body(logit_bias={50256: -100})) is None
    assert key(chat_body(seed=2**70)) is None
