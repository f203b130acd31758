"""core.errors and core.types: the error shape, the status table, usage parsing and call timings."""

from __future__ import annotations

import time

import orjson
import pytest

from gomodel_proxy.core import errors
from gomodel_proxy.core.errors import GatewayError, error_type_for_status
from gomodel_proxy.core.types import CallRecord, ModelInfo, Usage

# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "status", "error_type", "code"),
    [
        (errors.GatewayError, 500, "server_error", None),
        (errors.InvalidRequestError, 400, "invalid_request_error", None),
        (errors.AuthenticationError, 401, "authentication_error", "invalid_api_key"),
        (errors.PermissionDeniedError, 403, "permission_error", None),
        (errors.NotFoundError, 404, "invalid_request_error", "not_found"),
        (errors.ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
        (errors.MethodNotAllowedError, 405, "invalid_request_error", "method_not_allowed"),
        (errors.PayloadTooLargeError, 413, "invalid_request_error", "request_too_large"),
        (errors.UpstreamConnectionError, 502, "upstream_error", "upstream_unreachable"),
        (errors.UpstreamTimeoutError, 504, "timeout_error", "upstream_timeout"),
        (errors.ServiceUnavailableError, 503, "server_error", "unavailable"),
    ],
)
def test_error_classes_carry_their_status_type_and_code(
    cls: type[GatewayError], status: int, error_type: str, code: str | None
) -> None:
    exc = cls("went wrong")
    assert isinstance(exc, GatewayError)
    assert (exc.status, exc.error_type, exc.code, exc.param, exc.headers) == (status, error_type, code, None, {})
    assert str(exc) == exc.message == "went wrong"
    assert orjson.loads(exc.to_json()) == {
        "error": {"message": "went wrong", "type": error_type, "param": None, "code": code}
    }


def test_overrides_apply_to_one_instance_only() -> None:
    exc = errors.InvalidRequestError(
        "bad", status=422, error_type="validation_error", code="bad_value", param="messages[0]",
        headers={"Retry-After": "1"},
    )
    assert exc.to_dict() == {
        "error": {"message": "bad", "type": "validation_error", "param": "messages[0]", "code": "bad_value"}
    }
    assert exc.status == 422
    assert exc.headers == {"Retry-After": "1"}
    fresh = errors.InvalidRequestError("again")
    assert (fresh.status, fresh.error_type, fresh.code) == (400, "invalid_request_error", None)
    assert errors.InvalidRequestError.status == 400


def test_headers_are_copied() -> None:
    given = {"Allow": "GET"}
    exc = errors.MethodNotAllowedError("no", headers=given)
    given["Allow"] = "POST"
    assert exc.headers == {"Allow": "GET"}


def test_to_json_escapes_the_message() -> None:
    exc = GatewayError('quote " and \n newline')
    assert orjson.loads(exc.to_json())["error"]["message"] == 'quote " and \n newline'


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
        (404, "invalid_request_error"), (408, "timeout_error"), (409, "invalid_request_error"),
        (413, "invalid_request_error"), (422, "invalid_request_error"), (429, "rate_limit_error"),
        (502, "upstream_error"), (504, "timeout_error"), (529, "overloaded_error"),
        (418, "invalid_request_error"), (499, "invalid_request_error"),
        (500, "server_error"), (503, "server_error"), (599, "server_error"),
    ],
)
def test_error_type_for_status(status: int, expected: str) -> None:
    assert error_type_for_status(status) == expected


# -- Usage ------------------------------------------------------------------------------------------------


def test_usage_from_chat_completions() -> None:
    usage = Usage.from_openai({
        "prompt_tokens": 364, "completion_tokens": 40, "total_tokens": 404,
        "prompt_tokens_details": {"cached_tokens": 128, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12},
    })
    assert usage == Usage(input_tokens=364, output_tokens=40, cached_tokens=128, reasoning_tokens=12)
    assert usage is not None and usage.total_tokens == 404
    assert usage.estimated is False


def test_usage_from_responses_api() -> None:
    usage = Usage.from_openai({
        "input_tokens": 17, "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 276, "output_tokens_details": {"reasoning_tokens": 272}, "total_tokens": 293,
    })
    assert usage == Usage(input_tokens=17, output_tokens=276, cached_tokens=3, reasoning_tokens=272)


def test_usage_from_embeddings_has_no_output() -> None:
    usage = Usage.from_openai({"prompt_tokens": 4, "total_tokens": 4})
    assert usage == Usage(input_tokens=4)
    assert usage is not None and usage.total_tokens == 4


def test_chat_names_win_over_responses_names() -> None:
    assert Usage.from_openai({"prompt_tokens": 1, "input_tokens": 9, "completion_tokens": 2,
                              "output_tokens": 9}) == Usage(1, 2)


@pytest.mark.parametrize("value", [None, [], "12", 5, True])
def test_usage_absent_or_not_an_object(value: object) -> None:
    assert Usage.from_openai(value) is None


def test_usage_with_odd_field_types_reads_zeros() -> None:
    usage = Usage.from_openai({
        "prompt_tokens": "12", "completion_tokens": True, "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": 1.5},
    })
    assert usage == Usage()
    details_not_objects = Usage.from_openai({"prompt_tokens": 2, "prompt_tokens_details": [1],
                                             "completion_tokens_details": "x"})
    assert details_not_objects == Usage(input_tokens=2)


def test_usage_empty_object_is_zero_not_none() -> None:
    assert Usage.from_openai({}) == Usage(0, 0, 0, 0)


# -- ModelInfo --------------------------------------------------------------------------------------------


def test_model_info_openai_form() -> None:
    info = ModelInfo(id="gpt-4o-mini", provider="openai", owned_by="system", created=1_700_000_000)
    assert info.qualified_id == "openai/gpt-4o-mini"
    assert info.to_openai() == {"id": "openai/gpt-4o-mini", "object": "model", "created": 1_700_000_000,
                                "owned_by": "system"}
    assert ModelInfo(id="m", provider="local").to_openai()["owned_by"] == "local"


# -- CallRecord timings -----------------------------------------------------------------------------------


def test_finished_call_timings() -> None:
    call = CallRecord(request_id="r", endpoint="chat.completions", started=100.0, upstream_started=100.002,
                      upstream_answered_at=100.502, first_byte_at=100.503, finished=101.0)
    assert call.latency_s == pytest.approx(1.0)
    assert call.ttfb_s == pytest.approx(0.503)
    assert call.overhead_s == pytest.approx(0.003)  # 2 ms before the upstream call, 1 ms after it answered


def test_no_first_byte_means_no_ttfb() -> None:
    call = CallRecord(request_id="r", endpoint="e", started=10.0, finished=10.5)
    assert call.ttfb_s is None
    assert call.latency_s == pytest.approx(0.5)
    assert call.overhead_s == pytest.approx(0.5)  # no upstream call: all of it is the gateway's


def test_answered_without_upstream_uses_first_byte() -> None:
    call = CallRecord(request_id="r", endpoint="models", started=5.0, first_byte_at=5.001, finished=5.2)
    assert call.overhead_s == pytest.approx(0.001)


def test_upstream_that_never_answered_is_not_gateway_overhead() -> None:
    # Refused or timed out: the gateway waited on the provider from upstream_started until it answered.
    call = CallRecord(request_id="r", endpoint="chat.completions", started=0.0, upstream_started=0.004,
                      first_byte_at=600.004, finished=600.005)
    assert call.overhead_s == pytest.approx(0.004)
    no_first_byte = CallRecord(request_id="r", endpoint="e", started=0.0, upstream_started=0.001, finished=30.0)
    assert no_first_byte.overhead_s == pytest.approx(0.001)


def test_in_flight_call_measures_up_to_now() -> None:
    now = time.perf_counter()
    call = CallRecord(request_id="r", endpoint="e", started=now - 2.0)
    assert 2.0 <= call.latency_s < 60.0
    assert 2.0 <= call.overhead_s < 60.0
    waiting = CallRecord(request_id="r", endpoint="e", started=now - 2.0, upstream_started=now - 1.0,
                         upstream_answered_at=now - 0.5)
    assert 1.5 <= waiting.overhead_s < 60.0


def test_overhead_is_never_negative() -> None:
    odd = CallRecord(request_id="r", endpoint="e", started=1.0, upstream_started=1.0,
                     upstream_answered_at=3.0, first_byte_at=2.0)
    assert odd.overhead_s == 0.0


def test_defaults_of_a_new_record() -> None:
    before = time.perf_counter()
    call = CallRecord(request_id="abc", endpoint="other")
    assert before <= call.started <= time.perf_counter()
    assert (call.stream, call.status, call.outcome, call.usage) == (False, 0, "ok", None)
