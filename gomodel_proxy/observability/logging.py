"""structlog set-up: a pipeline of small processors, one of which removes secrets from every line."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

#: Field names whose values are secrets wherever they appear in a log event.
SECRET_FIELDS = frozenset(
    {"authorization", "api_key", "api_keys", "master_key", "x-api-key", "x_api_key", "password", "secret",
     "token", "key"}
)
#: Secret-looking substrings inside free text: bearer tokens and the providers' key formats.
_SECRET_TEXT = re.compile(
    r"(?i)(bearer\s+)[^\s\"',]+"
    r"|\b(sk|rk|pk|gsk|xai|sk-ant|sk-or)-[A-Za-z0-9_\-]{8,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|([?&]key=)[^&\s\"']+"
)
REDACTED = "[REDACTED]"


def _scrub(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        prefix = m.group(1) or m.group(3) or ""
        return prefix + REDACTED

    return _SECRET_TEXT.sub(repl, text)


def _redact(value: Any) -> Any:
    """``value`` with secret fields blanked and secret-looking text scrubbed, at any depth."""
    if isinstance(value, str):
        return _scrub(value) if len(value) > 8 else value
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS and v else _redact(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: blank secret fields and scrub secret-looking text in every string value.

    Nested values (a dict of headers, a list of keys) are redacted too: the renderers print them whole.
    """
    for name, value in event.items():
        if name.lower() in SECRET_FIELDS and value:
            event[name] = REDACTED
        elif isinstance(value, (str, Mapping, list, tuple, set, frozenset)):
            event[name] = _redact(value)
    return event


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    stream: TextIO | None = None,
) -> None:
    """JSON lines when not on a TTY (or when asked), readable console lines otherwise."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # After format_exc_info, so that secrets in exception messages and tracebacks are scrubbed too.
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
