"""Secrets never reach a log line: the redaction processor, and the configured JSON / console output."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from gomodel_proxy.observability.logging import (
    REDACTED,
    SECRET_FIELDS,
    configure_logging,
    get_logger,
    redact_secrets,
    scrub_rendered,
)


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def redact(**event: Any) -> dict[str, Any]:
    """The pipeline's two redaction steps: secret fields blanked, then secret text scrubbed (the real
    pipeline scrubs the rendered line once; here each string value stands for its rendered text)."""
    out = redact_secrets(None, "info", dict(event))
    line = orjson.dumps(dict(out), default=list, option=orjson.OPT_NON_STR_KEYS).decode()
    rendered = scrub_rendered(None, "info", line)
    parsed: dict[str, Any] = orjson.loads(rendered)
    return parsed


# -- redact_secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*sorted(SECRET_FIELDS), "Authorization", "API_KEY", "X-Api-Key"])
def test_secret_field_names_are_blanked(name: str) -> None:
    assert redact(**{name: "anything-at-all", "event": "e"})[name] == REDACTED


def test_secret_fields_of_any_type_are_blanked_but_empty_ones_kept() -> None:
    out = redact(api_keys=["k1", "k2"], token=12345, password="", secret=None, key="k")
    assert out == {"api_keys": REDACTED, "token": REDACTED, "password": "", "secret": None, "key": REDACTED}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auth failed for Bearer abc.def-ghi_jkl", f"auth failed for Bearer {REDACTED}"),
        ("header authorization: bearer\tTOKEN123, retry", f"header authorization: bearer\t{REDACTED}, retry"),
        ("key sk-proj-AbCdEf1234567890xyz rejected", f"key {REDACTED} rejected"),
        ("key sk-ant-api03-AbCdEf1234567890 rejected", f"key {REDACTED} rejected"),
        ("gsk_ is groq, gsk-abcdefgh12345 too", f"gsk_ is groq, {REDACTED} too"),
        ("xai-ABCDEFGH1234 and sk-or-v1-abcdef123456", f"{REDACTED} and {REDACTED}"),
        ("gemini AIzaSyA1234567890abcdefghijklmnop ok", f"gemini {REDACTED} ok"),
        ("GET https://x.test/v1/models?key=AIzaSecret123&alt=sse",
         f"GET https://x.test/v1/models?key={REDACTED}&alt=sse"),
        ("GET /v1beta/models?alt=sse&key=abc123 HTTP/1.1", f"GET /v1beta/models?alt=sse&key={REDACTED} HTTP/1.1"),
    ],
)
def test_secret_looking_text_is_scrubbed(text: str, expected: str) -> None:
    assert scrub_rendered(None, "info", text) == expected


def test_secrets_after_json_escapes_are_scrubbed_on_the_rendered_line() -> None:
    line = orjson.dumps({"detail": "header was bearer\tTOKEN-123 and\nBearer\nTOKEN-456"}).decode()
    assert "\\t" in line and "\\n" in line  # the renderer escaped the whitespace
    scrubbed = scrub_rendered(None, "info", line)
    assert "TOKEN-123" not in scrubbed and "TOKEN-456" not in scrubbed
    assert orjson.loads(scrubbed)["detail"] == f"header was bearer\t{REDACTED} and\nBearer\n{REDACTED}"


@pytest.mark.parametrize(
    "text",
    ["sk-short", "task-manager started", "the skeleton key", "monkey=1 and keys", "input_tokens=12 output=3"],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub_rendered(None, "info", text) == text
    assert redact(event=text, note=text)["note"] == text


def test_non_secret_fields_keep_their_values() -> None:
    out = redact(event="request", status=200, latency_ms=1.5, provider="openai", input_tokens=5)
    assert out == {"event": "request", "status": 200, "latency_ms": 1.5, "provider": "openai", "input_tokens": 5}


def test_nested_secret_fields_are_blanked() -> None:
    out = redact(
        headers={"Authorization": "Bearer sk-proj-abcdefgh12345", "Accept": "application/json"},
        keys=[{"api_key": "k1"}, "plain"],
        pair=("x", {"api_key": "k", "nested": {"TOKEN": "t", "n": 1}}),
        empty={"password": ""},
    )
    assert out["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert out["keys"] == [{"api_key": REDACTED}, "plain"]
    assert out["pair"] == ["x", {"api_key": REDACTED, "nested": {"TOKEN": REDACTED, "n": 1}}]
    assert out["empty"] == {"password": ""}


# -- configured output ------------------------------------------------------------------------------------

SECRET = "sk-proj-TopSecretValue123456"


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_level_timestamp_and_no_secret() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = get_logger("test")
    log.info("calling upstream", provider="openai", api_key=SECRET, url=f"https://x.test/v1?key={SECRET}",
             headers={"authorization": f"Bearer {SECRET}"}, note=f"with Bearer {SECRET}")
    log.warning("positional %s", SECRET)
    try:
        raise RuntimeError(f"upstream rejected key {SECRET}")
    except RuntimeError:
        log.exception("call failed")
    text = stream.getvalue()
    assert SECRET not in text
    first, second, third = lines_of(stream)
    assert first["event"] == "calling upstream"
    assert first["level"] == "info"
    assert first["provider"] == "openai"
    assert first["api_key"] == REDACTED
    assert first["url"] == f"https://x.test/v1?key={REDACTED}"
    assert first["headers"] == {"authorization": REDACTED}
    assert first["timestamp"].endswith("Z")
    assert second["event"] == f"positional {REDACTED}"
    assert third["level"] == "error"
    assert "RuntimeError: upstream rejected key" in third["exception"]


def test_level_filtering() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    log = get_logger("test")
    log.info("hidden")
    log.debug("hidden too")
    log.error("shown", code=7)
    assert [line["event"] for line in lines_of(stream)] == ["shown"]


def test_context_variables_are_merged_and_redacted() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    structlog.contextvars.bind_contextvars(request_id="req-1", authorization=f"Bearer {SECRET}")
    get_logger("test").debug("with context")
    (line,) = lines_of(stream)
    assert line["request_id"] == "req-1"
    assert line["authorization"] == REDACTED
    assert SECRET not in stream.getvalue()


def test_non_json_values_are_rendered_as_text() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    get_logger("test").info("odd", value=type("Thing", (), {})(), when={1, 2})
    line = lines_of(stream)[0]
    assert isinstance(line["value"], str) and "Thing object" in line["value"]
    assert sorted(line["when"]) == [1, 2]


def test_auto_format_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    get_logger("test").info("hello", master_key=SECRET)
    assert lines_of(stream)[0]["master_key"] == REDACTED


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_format_on_a_terminal_and_no_secret() -> None:
    stream = _Terminal()
    configure_logging("info", "auto", stream=stream)
    get_logger("test").info("hello console", api_key=SECRET, detail=f"Bearer {SECRET}")
    text = stream.getvalue()
    assert "hello console" in text
    assert SECRET not in text
    assert REDACTED in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text.splitlines()[0])


def test_console_format_when_asked() -> None:
    stream = io.StringIO()
    configure_logging("info", "console", stream=stream)
    get_logger("test").info("plain text", token=SECRET)
    assert "plain text" in stream.getvalue()
    assert SECRET not in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_stderr_is_the_default_stream(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    get_logger("test").info("to stderr", api_key=SECRET)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert orjson.loads(captured.err.splitlines()[-1])["event"] == "to stderr"
    assert SECRET not in captured.err
