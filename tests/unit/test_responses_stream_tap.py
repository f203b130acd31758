"""ResponsesStreamTap on recorded native Responses streams: bytes untouched, id/usage/error read, split every way."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gomodel_proxy.wire.openai_responses_stream import ResponsesStreamTap
from gomodel_proxy.wire.sse import SSEFramer
from tests.support.responses_check import reframe_chunks, responses_events, validate_events

from ._support import data_of, fixture_params, reference_events, split_at

STREAMS = fixture_params(("openai/responses", "xai/responses"), "stream-*.response.sse") + fixture_params(
    ("openai/responses",), "stream-*.response.chunks.jsonl"
)

Facts = tuple[str | None, dict[str, Any] | None, dict[str, Any] | None, bool]


def body_of(path: Path) -> bytes:
    raw = path.read_bytes()
    return reframe_chunks(raw) if path.name.endswith(".chunks.jsonl") else raw


def expected_of(data: bytes) -> Facts:
    """(response id, usage, error, complete), read with full parses of every event."""
    rid = usage = error = None
    complete = False
    events, rest = reference_events(data)
    for event in [*events, rest]:
        raw = data_of(event)
        if raw is None or raw == b"[DONE]":
            continue
        payload = json.loads(raw)
        kind = payload.get("type")
        if kind == "response.created" and rid is None:
            rid = payload["response"]["id"]
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            complete = True
            usage = payload["response"].get("usage") or usage
            if kind == "response.failed" and error is None:
                error = payload["response"]["error"]
        elif kind == "error":
            complete = True
            error = payload["error"]
    return rid, usage, error, complete


def facts(tap: ResponsesStreamTap) -> tuple[Any, ...]:
    usage = tap.usage
    numbers = None if usage is None else (usage.input_tokens, usage.output_tokens, usage.cached_tokens,
                                          usage.reasoning_tokens)
    return tap.response_id, numbers, tap.error, tap.complete


def expected_facts(data: bytes) -> tuple[Any, ...]:
    rid, usage, error, complete = expected_of(data)
    numbers = None if usage is None else (
        usage["input_tokens"], usage["output_tokens"], usage["input_tokens_details"]["cached_tokens"],
        usage["output_tokens_details"]["reasoning_tokens"],
    )
    return rid, numbers, error, complete


def clone_at_boundary(tap: ResponsesStreamTap) -> ResponsesStreamTap:
    """A tap in ``tap``'s state, which has just consumed a whole event: its attributes are only ever
    replaced, never changed in place, so a shallow copy with a fresh (empty) framer is a true copy."""
    assert tap._framer.pending == 0
    twin = copy.copy(tap)
    twin._framer = SSEFramer()
    return twin


def run(chunks: list[bytes]) -> tuple[bytes, tuple[Any, ...]]:
    tap = ResponsesStreamTap()
    out = []
    for chunk in chunks:
        forwarded = tap.feed(chunk)
        assert forwarded is chunk  # forwarded at once, untouched
        out.append(forwarded)
    out.append(tap.finish())
    return b"".join(out), facts(tap)


@pytest.mark.parametrize("path", STREAMS)
def test_recorded_streams_pass_untouched_and_their_facts_are_read(path: Path) -> None:
    data = body_of(path)
    out, got = run([data])
    assert out == data
    assert got == expected_facts(data)
    assert got[0] is not None and got[3] is True
    if "error" in path.name:
        assert got[2] == {"type": "insufficient_quota", "code": "insufficient_quota", "param": None,
                          "message": got[2]["message"]}
    else:
        assert got[1] is not None and got[2] is None


@pytest.mark.parametrize("path", STREAMS)
def test_every_split_position(path: Path) -> None:
    """Every position inside every event, checked from the tap's state before that event (a copy):
    the two pieces pass as they came and leave the same facts as the event fed whole."""
    data = body_of(path)
    whole = run([data])
    events, rest = reference_events(data)
    tap = ResponsesStreamTap()
    for event in events:
        reference = clone_at_boundary(tap)
        reference.feed(event)
        for cut in range(1, len(event)):
            twin = clone_at_boundary(tap)
            first, second = event[:cut], event[cut:]
            assert (twin.feed(first), twin.feed(second)) == (first, second)
            assert facts(twin) == facts(reference), cut
        tap = reference
    assert tap.feed(rest) == rest
    tap.finish()
    assert facts(tap) == whole[1]
    assert run([data[i : i + 1] for i in range(len(data))]) == whole


@pytest.mark.parametrize("path", STREAMS)
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=20_000), max_size=25))
def test_random_multi_way_splits(path: Path, cuts: list[int]) -> None:
    data = body_of(path)
    assert run(split_at(data, [c % len(data) for c in cuts])) == run([data])


@pytest.mark.parametrize("path", STREAMS)
def test_truncated_streams_end_with_a_responses_failure(path: Path) -> None:
    data = body_of(path)
    events, _ = reference_events(data)
    for keep in (2, len(events) - 2):
        prefix = b"".join(events[:keep])
        if expected_of(prefix)[3]:
            continue
        tap = ResponsesStreamTap()
        assert tap.feed(prefix) == prefix
        tail = tap.finish()
        assert tap.error is not None and tap.error["code"] == "stream_truncated"
        added = responses_events(tail) if b"sequence_number" not in prefix else None
        payloads = [json.loads(data_of(e) or b"{}") for e in reference_events(tail)[0]]
        assert [p["type"] for p in payloads] == ["error", "response.failed"]
        assert payloads[1]["response"]["id"] == expected_of(data)[0]
        assert payloads[1]["response"]["status"] == "failed"
        if added is None:  # numbered streams: ours continue the provider's numbering
            last = max(json.loads(data_of(e) or b"{}").get("sequence_number", -1) for e in events[:keep])
            assert [p["sequence_number"] for p in payloads] == [last + 1, last + 2]
        validate_events(payloads)


def test_relay_failure_event() -> None:
    tap = ResponsesStreamTap()
    tap.feed(b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
             b'"response":{"id":"resp_1","status":"in_progress"}}\n\n')
    out = tap.fail("provider 'x' closed the connection", code="upstream_unreachable", error_type="upstream_error")
    payloads = [json.loads(data_of(e) or b"{}") for e in reference_events(out)[0]]
    assert [(p["type"], p["sequence_number"]) for p in payloads] == [("error", 1), ("response.failed", 2)]
    assert payloads[0]["error"]["code"] == "upstream_unreachable"
    assert tap.complete and tap.error is not None and tap.finish() == b""
