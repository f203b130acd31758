"""extract_usage and normalize_error_body on recorded bodies and on the awkward ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gomodel_proxy.core.errors import error_type_for_status
from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.openai_json import extract_usage, normalize_error_body

from ._support import USAGE_BODY_DIRS, fixture_file, fixture_params, meta_of

USAGE_BODIES = fixture_params(USAGE_BODY_DIRS, "*.response.json", exclude_prefix="error-")
ERROR_BODIES = fixture_params(("",), "error-*.response.json")


# -- extract_usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", USAGE_BODIES)
def test_extract_usage_equals_the_full_parse(path: Path) -> None:
    body = path.read_bytes()
    slow = orjson.loads(body)["usage"]
    assert isinstance(slow, dict)
    got = extract_usage(body)
    assert got == Usage.from_openai(slow)
    assert got is not None
    assert got.input_tokens == slow.get("prompt_tokens", slow.get("input_tokens"))
    assert got.input_tokens > 0


@pytest.mark.parametrize("path", ERROR_BODIES)
def test_error_bodies_have_no_usage(path: Path) -> None:
    assert extract_usage(path.read_bytes()) is None


def test_escaped_usage_in_message_content_does_not_fool_it() -> None:
    body = orjson.dumps({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": 'Reply with {"usage": {"prompt_tokens": 999}} and "usage":'},
            "finish_reason": "stop",
        }],
    })
    assert body.rfind(b"usage") > body.index(b'"usage":{"prompt_tokens":5')  # the text comes last
    assert extract_usage(body) == Usage(input_tokens=5, output_tokens=7)


def test_escaped_usage_in_content_of_a_body_without_usage() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": 'the "usage": {"prompt_tokens": 3} field'}}]})
    assert extract_usage(body) is None


def test_escaped_usage_injected_into_a_recorded_body() -> None:
    path = fixture_file("openai/chat-completions/nonstream-text-gpt4o-mini.response.json")
    parsed = orjson.loads(path.read_bytes())
    parsed["choices"][0]["message"]["content"] = '"usage": {"prompt_tokens": 123456, "completion_tokens": 1}'
    usage = parsed.pop("usage")
    body = orjson.dumps({**parsed, "usage": usage, "system_fingerprint": '"usage":{"prompt_tokens":1}'})
    assert extract_usage(body) == Usage.from_openai(usage)
    assert extract_usage(body) != Usage(input_tokens=123456, output_tokens=1)


def test_pretty_printed_usage_with_spaces() -> None:
    body = b'{\n  "usage" :  {\n    "prompt_tokens": 4,\n    "completion_tokens": 1\n  }\n}\n'
    assert extract_usage(body) == Usage(input_tokens=4, output_tokens=1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b'{"object":"list","data":[]}',
        b'{"usage":null}',
        b'{"usage":[1,2]}',
        b'{"usage": {"prompt_tokens": 3',  # cut short
        b'{"object":"usage"}',  # the word as a value, not a key
        b'{"usage"',
        b'{"usage": @}',
    ],
)
def test_bodies_without_a_readable_usage(body: bytes) -> None:
    assert extract_usage(body) is None


def test_usage_with_undecodable_bytes_after_it_is_still_read() -> None:
    assert extract_usage(b'{"usage":{"prompt_tokens":2,"completion_tokens":3}}\xff') == Usage(2, 3)


def test_responses_style_usage() -> None:
    body = b'{"usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":4},"output_tokens":6,' \
           b'"output_tokens_details":{"reasoning_tokens":2},"total_tokens":15}}'
    assert extract_usage(body) == Usage(input_tokens=9, output_tokens=6, cached_tokens=4, reasoning_tokens=2)


# -- normalize_error_body ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ERROR_BODIES)
def test_error_fixtures_in_openai_shape_are_returned_byte_identical(path: Path) -> None:
    body = path.read_bytes()
    parsed = orjson.loads(body)
    error = parsed["error"]
    assert isinstance(error["message"], str)  # every recorded error body carries a message
    status = meta_of(path).get("status") or 400
    out = normalize_error_body(body, status, "up")
    if isinstance(error.get("type"), str):
        assert out == body
        return
    # Gemini and OpenRouter bodies lack OpenAI's ``type``: added from the status, everything else kept.
    assert orjson.loads(out) == {
        **parsed,
        "error": {"param": None, "code": None, **error, "type": error_type_for_status(status)},
    }


def wrapped(body: bytes, status: int, provider: str = "acme") -> dict[str, object]:
    out = normalize_error_body(body, status, provider)
    parsed = orjson.loads(out)
    assert set(parsed) == {"error"}
    error = parsed["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None and error["code"] is None
    result: dict[str, object] = error
    return result


def test_error_as_a_plain_string() -> None:
    error = wrapped(b'{"error": "model overloaded, retry later"}', 503)
    assert error == {"message": "model overloaded, retry later", "type": "server_error", "param": None,
                     "code": None}


def test_top_level_message() -> None:
    error = wrapped(b'{"message": "Invalid API key", "status": 401}', 401)
    assert error["message"] == "Invalid API key"
    assert error["type"] == "authentication_error"


def test_error_object_without_a_string_message_is_wrapped_whole() -> None:
    body = b'{"error": {"code": 500, "details": []}}'
    error = wrapped(body, 500)
    assert error["message"] == body.decode()
    assert error["type"] == "server_error"


def test_html_error_page() -> None:
    body = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    error = wrapped(body, 502)
    assert error["message"] == body.decode().strip()
    assert error["type"] == "upstream_error"


def test_json_that_is_not_an_object() -> None:
    assert wrapped(b'["rate limited"]', 429)["message"] == '["rate limited"]'
    assert wrapped(b'["rate limited"]', 429)["type"] == "rate_limit_error"


@pytest.mark.parametrize("body", [b"", b"   \n", b'{"error": ""}'])
def test_empty_bodies_get_a_message_naming_provider_and_status(body: bytes) -> None:
    error = wrapped(body, 504, provider="groq")
    assert error["message"] == "provider 'groq' answered HTTP 504 with an empty body"
    assert error["type"] == "timeout_error"


def test_non_utf8_body_is_wrapped_with_replacement_characters() -> None:
    body = b"Service unavailable \xff\xfe\x80 now"
    error = wrapped(body, 503)
    assert error["message"] == "Service unavailable \ufffd\ufffd\ufffd now"
    assert error["type"] == "server_error"


def test_long_messages_are_cut_to_2000_characters() -> None:
    error = wrapped(b"x" * 5000, 500)
    assert error["message"] == "x" * 2000


@pytest.mark.parametrize(
    ("status", "expected"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
     (418, "invalid_request_error"), (429, "rate_limit_error"), (500, "server_error"),
     (529, "overloaded_error"), (599, "server_error")],
)
def test_wrapped_type_follows_the_status(status: int, expected: str) -> None:
    assert wrapped(b"oops", status)["type"] == expected


def test_openai_shaped_error_bodies_stay_byte_identical_whatever_their_layout() -> None:
    for body in (
        b'{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}',
        b'{\n    "error": {\n        "message": "m",\n        "type": "x",\n        "code": "c"\n    }\n}\n',
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"r"}',
    ):
        assert normalize_error_body(body, 400, "up") == body
