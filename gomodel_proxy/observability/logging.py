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
    r"(?i)(bearer(?:\s|\\[tnr])+)[^\s\"',\\]+"
    r"|\b(sk|rk|pk|gsk|xai|sk-ant|sk-or)-[A-Za-z0-9_\-]{8,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"
    r"|([?&]key=)[^&\s\"']+"
)
REDACTED = "[REDACTED]"


#: Substrings (lower-cased) without which no secret pattern can match: a line holding none of them
#: skips the regex, which is what nearly every line does.
_TRIGGERS = ("bearer", "sk-", "rk-", "pk-", "gsk", "xai-", "aiza", "key=")


def _scrub(text: str) -> str:
    lowered = text.lower()
    if not any(t in lowered for t in _TRIGGERS):
        return text

    def repl(m: re.Match[str]) -> str:
        prefix = m.group(1) or m.group(3) or ""
        return prefix + REDACTED

    return _SECRET_TEXT.sub(repl, text)


def _redact_fields(value: Any) -> Any:
    """``value`` with the values of secret-named keys blanked, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: REDACTED if isinstance(k, str) and k.lower() in SECRET_FIELDS and v else _redact_fields(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_fields(v) for v in value]
    return value


_CONTAINERS = (Mapping, list, tuple, set, frozenset)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Processor: blank the values of secret-named fields, nested ones included.

    Secret-looking text inside values is scrubbed later, once, on the rendered line
    (:func:`scrub_rendered`): one pass over one string costs far less than one per field.
    """
    for name, value in event.items():
        if name.lower() in SECRET_FIELDS:
            if value:
                event[name] = REDACTED
        elif type(value) not in _SCALARS and isinstance(value, _CONTAINERS):
            event[name] = _redact_fields(value)
    return event


def scrub_rendered(_: Any, __: str, line: Any) -> str:
    """Processor after the renderer: scrub bearer tokens, provider keys and ``?key=`` from the line."""
    return _scrub(str(line))


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
            scrub_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
