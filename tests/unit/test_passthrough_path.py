"""The pass-through's path rule: the path after /{provider} is the path on the provider's host, under its base path."""

from __future__ import annotations

import pytest

from gomodel_proxy.core.errors import InvalidRequestError
from gomodel_proxy.server.passthrough_path import base_path, strip_credentials, upstream_path
from gomodel_proxy.server.routes_passthrough import request_headers


@pytest.mark.parametrize(("base_url", "expected"), [
    ("https://api.openai.com/v1", "/v1"),
    ("https://api.openai.com/v1/", "/v1"),
    ("https://api.groq.com/openai/v1", "/openai/v1"),
    ("https://generativelanguage.googleapis.com/v1beta", "/v1beta"),
    ("https://res.openai.azure.com", ""),
    ("http://127.0.0.1:8000", ""),
])
def test_base_path(base_url: str, expected: str) -> None:
    assert base_path(base_url) == expected


@pytest.mark.parametrize(("base", "tail", "query", "expected"), [
    # The base path's segments are the tail's first ones; what follows goes after the base URL.
    ("/v1", "/v1/files", "", b"/files"),
    ("/v1", "/v1/chat/completions", "", b"/chat/completions"),
    ("/v1", "/v1/messages", "beta=true", b"/messages?beta=true"),
    ("/v1", "/v1", "", b""),
    ("/v1", "/v1/", "", b"/"),
    ("/v1", "/v1/files/", "", b"/files/"),
    ("/v1beta", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", "alt=sse",
     b"/models/gemini-2.5-flash:streamGenerateContent?alt=sse"),
    ("/openai/v1", "/openai/v1/models", "", b"/models"),
    ("", "/openai/deployments/gpt/chat/completions", "api-version=2024-10-21",
     b"/openai/deployments/gpt/chat/completions?api-version=2024-10-21"),
    ("", "/", "", b"/"),
    # Percent-encoding is kept as sent; segments compare decoded.
    ("/v1", "/v1/files/caf%C3%A9", "", b"/files/caf%C3%A9"),
    ("/v1", "/%761/files", "", b"/files"),
    ("/v1", "/v1/files/a%20b", "", b"/files/a%20b"),
    # '@' and ':' are path characters (Vertex model versions, Gemini methods): the host stays the configured one.
    ("/v1", "/v1/models/claude@20240620:rawPredict", "", b"/models/claude@20240620:rawPredict"),
    ("/v1", "/v1/@evil.com/x", "", b"/@evil.com/x"),
    ("/v1", "/v1/files/file.txt", "", b"/files/file.txt"),
    ("/v1", "/v1/files/..x", "", b"/files/..x"),
    # Credentials leave the query; the rest stays byte for byte.
    ("/v1beta", "/v1beta/models", "key=client-secret&pageSize=5", b"/models?pageSize=5"),
    ("/v1beta", "/v1beta/models", "pageSize=5&KEY=x&%6Bey=y&key", b"/models?pageSize=5"),
    ("/v1beta", "/v1beta/models", "key=only", b"/models"),
    ("/v1beta", "/v1beta/models", "a=%2F%2E%2E&b=1+2", b"/models?a=%2F%2E%2E&b=1+2"),
])
def test_accepted(base: str, tail: str, query: str, expected: bytes) -> None:
    assert upstream_path(base, tail, query) == expected


@pytest.mark.parametrize("tail", [
    # Outside the base path.
    "/files", "/v2/files", "/v1beta/models", "/v10/files", "/v", "/V1/files",
    # Dot segments, raw or encoded (any case), anywhere.
    "/v1/../admin", "/v1/..", "/v1/.", "/v1/./files", "/../v1/files", "/v1/files/../../x",
    "/v1/%2e%2e/x", "/v1/%2E%2E/x", "/v1/.%2e/x", "/v1/%2e./x", "/v1/%2e", "/%2e%2e/v1/files",
    # Empty segments: a network-path reference (//host) or a doubled slash.
    "//evil.com/v1/files", "/v1//evil.com/x", "/v1//files",
    # Encoded slashes and backslashes, raw backslashes.
    "/v1/files%2F..%2F..%2Fadmin", "/v1%2Ffiles", "/v1/a%2fb", "/v1/a%5cb", "/v1/a%5Cb", "/v1/a\\b",
    "/v1\\..\\admin", "\\\\evil.com/v1",
    # Double encoding that a second decoding would turn into one of the above.
    "/v1/%252e%252e/x", "/v1/a%252Fb", "/v1/a%255Cb",
    # Absolute URLs and schemes.
    "/http://evil.com/v1/files", "/v1/http://evil.com/x", "/https:%2F%2Fevil.com/v1", "http://evil.com/v1/files",
    # Control characters, also encoded.
    "/v1/a%00b", "/v1/a%0d%0aHost:%20evil.com", "/v1/a%0Ab", "/v1/a%7Fb",
    # No leading slash.
    "v1/files", "@evil.com/v1/files",
])
def test_refused(tail: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        upstream_path("/v1", tail, "")
    assert info.value.status == 400
    assert info.value.code == "invalid_passthrough_path"


def test_refused_with_empty_base_too() -> None:
    for tail in ("/..", "/a/../..", "//evil.com", "/%2e%2e/x", "/a%2Fb", "/a\\b"):
        with pytest.raises(InvalidRequestError):
            upstream_path("", tail, "")


def test_refused_query_that_cannot_be_sent() -> None:
    with pytest.raises(InvalidRequestError):
        upstream_path("/v1", "/v1/files", "a=b c")
    with pytest.raises(InvalidRequestError):
        upstream_path("/v1", "/v1/files", "a=\r\nHost: evil")
    with pytest.raises(InvalidRequestError):
        upstream_path("/v1", "/v1/files/caf\u00e9", "")


def test_result_always_lies_under_the_base() -> None:
    """Whatever was accepted, the base URL's prefix + the result is a path below the base, with no dot segment."""
    for tail in ("/v1/a/b", "/v1/a/./b", "/v1/a/%2e/b", "/v1/x/..", "/v1/", "/v1/a%2E%2Eb"):
        try:
            out = upstream_path("/v1", tail, "").decode()
        except InvalidRequestError:
            continue
        full = "/v1" + out
        assert full.startswith("/v1")
        assert all(seg not in (".", "..") for seg in full.split("/"))


def test_strip_credentials() -> None:
    assert strip_credentials("") == ""
    assert strip_credentials("key=1") == ""
    assert strip_credentials("alt=sse&key=abc") == "alt=sse"
    assert strip_credentials("keys=1&monkey=2") == "keys=1&monkey=2"


def test_request_headers_drop_credentials_hop_by_hop_and_framing() -> None:
    raw = (
        (b"Host", b"gateway:8080"), (b"Authorization", b"Bearer client"), (b"x-api-key", b"client"),
        (b"X-Goog-Api-Key", b"client"), (b"api-key", b"client"), (b"Cookie", b"session=1"),
        (b"Connection", b"keep-alive, X-Custom-Hop"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"),
        (b"Trailer", b"X-T"), (b"Transfer-Encoding", b"chunked"), (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"Basic x"), (b"Proxy-Connection", b"keep-alive"), (b"X-Custom-Hop", b"1"),
        (b"Content-Length", b"10"), (b"Accept-Encoding", b"gzip"), (b"Expect", b"100-continue"),
        (b"anthropic-version", b"2023-06-01"), (b"anthropic-beta", b"files-api-2025-04-14"),
        (b"OpenAI-Beta", b"assistants=v2"), (b"Content-Type", b"application/json"), (b"User-Agent", b"sdk/1"),
    )
    assert request_headers(raw) == (
        b"anthropic-version: 2023-06-01\r\nanthropic-beta: files-api-2025-04-14\r\nOpenAI-Beta: assistants=v2\r\n"
        b"Content-Type: application/json\r\nUser-Agent: sdk/1\r\n"
    )
