"""Where a pass-through request goes on the provider's host: the one place that decides it.

The rule: the path after ``/{provider}`` is the path on the provider's host, exactly as the provider's own
SDK would send it to the provider's origin, and it must lie under the path of the provider's configured
base URL. With ``base_url: https://api.openai.com/v1``, ``/openai/v1/files`` reaches
``https://api.openai.com/v1/files`` and ``/openai/files`` is refused (400); with ``https://api.anthropic.com/v1``,
``/anthropic/v1/messages`` reaches ``/v1/messages``; a base URL without a path (Azure's resource) admits any path.

The host is never taken from the request: the request goes out in origin form on the provider's own
connection. What could still make a path mean something else to the provider or to a proxy on the way is
refused: ``.`` and ``..`` segments (also percent-encoded), empty segments (``//host``), encoded slashes and
backslashes, raw backslashes, control characters and double-encoded dots, slashes and backslashes. The
query string is kept as sent, minus the ``key`` parameter (Gemini's way of carrying a key in the URL).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from gomodel_proxy.core.errors import InvalidRequestError

#: Query parameters that carry a credential; the client's never reach the provider.
CREDENTIAL_PARAMS = frozenset({"key"})
#: After one decoding, a segment must not still hold an encoded dot, slash or backslash (double encoding).
_STILL_ENCODED = re.compile(r"%(?:2e|2f|5c)", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What a request line cannot carry raw (the parser in front of us refuses it too; checked here anyway).
_UNSENDABLE = re.compile(r"[\x00-\x20\x7f]")


def base_path(base_url: str) -> str:
    """The base URL's path without its trailing slash, as the HTTP client prefixes it ("" for none)."""
    return urlsplit(base_url).path.rstrip("/")


def refuse(reason: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"The pass-through path was refused: {reason}.", param="path", code="invalid_passthrough_path"
    )


def upstream_path(base: str, raw_tail: str, raw_query: str = "") -> bytes:
    """The request target relative to the base URL (what the provider's client appends to its base path).

    ``base``: the base URL's path (``"/v1"``, ``""``); ``raw_tail``: the request's path after
    ``/{provider}``, still percent-encoded (``"/v1/files"``); ``raw_query``: the raw query string.
    Raises ``InvalidRequestError`` (400) for a path that could leave the base path.
    """
    if not raw_tail.startswith("/"):
        raise refuse(f"it must name a path on the provider, e.g. /{{provider}}{base}/...")
    segments = raw_tail[1:].split("/")
    for i, segment in enumerate(segments):
        _check_segment(segment, last=i == len(segments) - 1)
    base_segments = [unquote(s) for s in base.split("/")[1:]] if base else []
    decoded = [unquote(s) for s in segments[: len(base_segments)]]
    if decoded != base_segments:
        raise refuse(f"it must start with the provider's base path {base or '/'}: "
                     f"the path after /{{provider}} is the path on the provider's host")
    rest = segments[len(base_segments):]
    path = "/" + "/".join(rest) if rest else ""
    if not base and not path:
        path = "/"
    query = strip_credentials(raw_query)
    target = path + ("?" + query if query else "")
    if _UNSENDABLE.search(target):
        raise refuse("it holds a space or a control character")
    try:
        return target.encode("ascii")
    except UnicodeEncodeError:
        raise refuse("it holds characters that are not percent-encoded") from None


def _check_segment(segment: str, *, last: bool) -> None:
    if "\\" in segment:
        raise refuse("it holds a backslash")
    if segment == "":
        if last:
            return  # a trailing slash
        raise refuse("it holds an empty segment ('//')")
    decoded = unquote(segment)
    if decoded in (".", ".."):
        raise refuse("it holds a '.' or '..' segment")
    if "/" in decoded or "\\" in decoded:
        raise refuse("it holds an encoded slash or backslash")
    if _CONTROL.search(decoded):
        raise refuse("it holds a control character")
    if _STILL_ENCODED.search(decoded):
        raise refuse("it holds a double-encoded dot, slash or backslash")


def strip_credentials(raw_query: str) -> str:
    """The raw query string without its credential parameters (``key``), the rest byte for byte."""
    if not raw_query:
        return ""
    kept = [p for p in raw_query.split("&") if unquote(p.partition("=")[0]).strip().lower() not in CREDENTIAL_PARAMS]
    return "&".join(kept)
