"""The gateway errors the client raises, worded once: they name the provider, never a key or a URL.

The client raises the gateway's own 502/504 errors rather than exceptions of its own, so that no layer
above has to wrap every await (and every streamed chunk) to translate them.
"""

from __future__ import annotations

from gomodel_proxy.core.errors import InvalidRequestError, UpstreamConnectionError, UpstreamTimeoutError


class StaleConnectionError(Exception):
    """A reused keep-alive connection closed before any byte of the answer: the request may be retried."""


def unreachable(label: str, exc: BaseException) -> UpstreamConnectionError:
    return UpstreamConnectionError(f"provider '{label}' could not be reached: {type(exc).__name__}")


def connect_timeout(label: str) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(f"provider '{label}' did not accept a connection in time")


def read_timeout(label: str) -> UpstreamTimeoutError:
    return UpstreamTimeoutError(f"provider '{label}' did not answer in time")


def closed_before_answer(label: str) -> UpstreamConnectionError:
    return UpstreamConnectionError(f"provider '{label}' closed the connection without answering")


def closed_mid_body(label: str) -> UpstreamConnectionError:
    return UpstreamConnectionError(f"provider '{label}' closed the connection before the response ended")


def invalid_response(label: str) -> UpstreamConnectionError:
    return UpstreamConnectionError(f"provider '{label}' sent an invalid HTTP response")


def undecodable_body(label: str) -> UpstreamConnectionError:
    return UpstreamConnectionError(f"provider '{label}' sent a compressed body that does not decode")


def body_length_mismatch(length: int) -> InvalidRequestError:
    return InvalidRequestError(f"The request body's length does not match its Content-Length ({length} bytes).")
