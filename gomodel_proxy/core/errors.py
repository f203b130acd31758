"""The gateway's error type and its rendering in OpenAI's error shape.

Every failure a client can see is a ``GatewayError``: it carries the HTTP status and the fields of
OpenAI's ``{"error": {...}}`` body, so the server renders one shape for every route and never a
traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    """An error answered to the client with ``status`` and an OpenAI-shaped body."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        if code is not None:
            self.code = code
        self.param = param
        self.headers: dict[str, str] = dict(headers or {})

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def to_anthropic(self) -> dict[str, object]:
        """The same error in Anthropic's shape, for clients of ``/v1/messages``."""
        return {"type": "error", "error": {"type": anthropic_error_type(self.status), "message": self.message}}

    def to_anthropic_json(self) -> bytes:
        return orjson.dumps(self.to_anthropic())


class InvalidRequestError(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    error_type = "permission_error"


class NotFoundError(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(GatewayError):
    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class UpstreamConnectionError(GatewayError):
    """The provider could not be reached (refused, reset, DNS, TLS)."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeoutError(GatewayError):
    """The provider did not answer within the configured timeout."""

    status = 504
    error_type = "timeout_error"
    code = "upstream_timeout"


class RateLimitError(GatewayError):
    """A gateway rate limit (RPM/TPM of a key, user, team or the whole gateway) refused the request.

    ``scope`` (key, user, team, global) and ``dimension`` (rpm, tpm) say which limit, for metrics."""

    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    scope: str = "other"
    dimension: str = "other"


class BudgetExceededError(GatewayError):
    """A budget (of a key, user, team or the gateway) has no room left for the request this period."""

    status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"


class GuardrailBlockedError(InvalidRequestError):
    """A guardrail refused the request or the answer. The message names the guardrail and what kind of
    thing it found (``email``, ``hate``, a pattern's name), never the matched text itself."""

    code = "guardrail_blocked"

    def __init__(self, guardrail: str, reason: str, *, stage: str = "input") -> None:
        where = "request" if stage == "input" else "answer"
        super().__init__(f"The {where} was blocked by guardrail '{guardrail}': {reason}.")
        self.guardrail = guardrail
        self.stage = stage


class ServiceUnavailableError(GatewayError):
    status = 503
    error_type = "server_error"
    code = "unavailable"


def error_type_for_status(status: int) -> str:
    """The OpenAI error ``type`` conventionally paired with an HTTP status."""
    return _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")


def anthropic_error_type(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (their documented set)."""
    return _ANTHROPIC_TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


_ANTHROPIC_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    504: "timeout_error",
    529: "overloaded_error",
}
