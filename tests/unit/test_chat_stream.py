"""ChatStreamTap on recorded chat-completions streams, split every way; strip mode; edge events."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gomodel_proxy.core.types import Usage
from gomodel_proxy.wire.openai_chat_stream import ChatStreamTap

from ._support import (
    CHAT_STREAM_DIRS,
    data_of,
    fixture_file,
    fixture_params,
    reference_events,
    request_of,
    split_at,
)

SSE_FIXTURES = fixture_params(CHAT_STREAM_DIRS, "*.response.sse")
#: Streams up to this size are also re-fed whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 2_000
USAGE_NULL = b',"usage":null'

State = tuple[Usage | None, dict[str, Any] | None, bool, bool, int]


def state(tap: ChatStreamTap) -> State:
    return (tap.usage, tap.error, tap.saw_done, tap.saw_finish, tap.content_events)


def clone_at_boundary(tap: ChatStreamTap) -> ChatStreamTap:
    """A tap in the same state as ``tap``, which has just consumed a whole event (its framer is empty)."""
    twin = ChatStreamTap(strip_usage=tap.strip_usage)
    twin.usage, twin.error, twin.saw_done, twin.saw_finish, twin.content_events = state(tap)
    return twin


def run(chunks: list[bytes], *, strip: bool) -> tuple[bytes, State]:
    tap = ChatStreamTap(strip_usage=strip)
    out = []
    for chunk in chunks:
        forwarded = tap.feed(chunk)
        if not strip:
            assert forwarded is chunk or forwarded == chunk  # pass-through forwards each read at once
        out.append(forwarded)
    out.append(tap.finish())
    return b"".join(out), state(tap)


@dataclass
class Expected:
    """What a stream holds, read independently of the package (naive framing, full JSON parses)."""

    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    saw_done: bool
    saw_finish: bool
    content_events: int
    stripped: bytes
    dropped: int


def expected_of(data: bytes) -> Expected:
    events, rest = reference_events(data)
    usage = error = None
    done = finish = False
    content = dropped = 0
    kept: list[bytes] = []
    for raw in [*events, rest] if rest else events:
        payload_bytes = data_of(raw)
        payload = orjson.loads(payload_bytes) if payload_bytes not in (None, b"[DONE]") else None
        if payload_bytes == b"[DONE]":
            done = True
        if isinstance(payload, dict):
            choices = payload.get("choices")
            if choices:
                content += 1
                finish = finish or any(isinstance(c.get("finish_reason"), str) for c in choices)
            if isinstance(payload.get("error"), dict):
                error = payload["error"]
            found = payload.get("usage")
            if not isinstance(found, dict) and isinstance(payload.get("x_groq"), dict):
                found = payload["x_groq"].get("usage")
            if isinstance(found, dict):
                usage = found
            if choices == [] and isinstance(payload.get("usage"), dict) and "error" not in payload:
                dropped += 1
                continue
        kept.append(raw.replace(USAGE_NULL, b""))
    return Expected(usage, error, done, finish, content, b"".join(kept), dropped)


def assert_usage_matches(got: Usage | None, usage: dict[str, Any] | None) -> None:
    if usage is None:
        assert got is None
        return
    assert got is not None
    assert got.input_tokens == usage["prompt_tokens"]
    assert got.output_tokens == usage["completion_tokens"]
    assert got.cached_tokens == (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    assert got.reasoning_tokens == (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    assert got.estimated is False


def assert_state_matches(got: State, expected: Expected) -> None:
    usage, error, saw_done, saw_finish, content_events = got
    assert_usage_matches(usage, expected.usage)
    assert error == expected.error
    assert saw_done == expected.saw_done
    assert saw_finish == expected.saw_finish
    assert content_events == expected.content_events


def include_usage_requested(path: Path) -> bool:
    request = request_of(path)
    options = (request or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


#: The streams whose request asked for ``stream_options.include_usage``: what strip mode is for.
INCLUDE_USAGE_FIXTURES = [p for p in SSE_FIXTURES if p.values[0] is None or include_usage_requested(p.values[0])]


# -- whole streams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_pass_through_forwards_the_exact_bytes_and_reads_the_facts(path: Path) -> None:
    data = path.read_bytes()
    expected = expected_of(data)
    out, got = run([data], strip=False)
    assert out == data
    assert_state_matches(got, expected)
    tap = ChatStreamTap(strip_usage=False)
    tap.feed(data)
    tap.finish()
    assert tap.complete


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_strip_mode_removes_only_what_include_usage_added(path: Path) -> None:
    data = path.read_bytes()
    expected = expected_of(data)
    out, got = run([data], strip=True)
    assert out == expected.stripped
    assert USAGE_NULL not in out
    assert_state_matches(got, expected)  # usage is still recorded, though not forwarded
    # Everything kept is the original event, in order, less only ',"usage":null'.
    kept_events, kept_rest = reference_events(out)
    originals = [e for e in [*reference_events(data)[0], reference_events(data)[1]] if e]
    kept = [e for e in [*kept_events, kept_rest] if e]
    assert len(kept) == len(originals) - expected.dropped
    it = iter(originals)
    for event in kept:
        original = next(o for o in it if o.replace(USAGE_NULL, b"") == event)
        before, after = data_of(original), data_of(event)
        if before is not None and before != b"[DONE]":
            parsed_before, parsed_after = orjson.loads(before), orjson.loads(after or b"")
            if parsed_before.get("usage", 0) is None:
                del parsed_before["usage"]
            assert parsed_after == parsed_before


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_include_usage_streams_lose_exactly_their_usage_only_chunk(path: Path) -> None:
    data = path.read_bytes()
    expected = expected_of(data)
    usage_only = [
        e for e in reference_events(data)[0]
        if (d := data_of(e)) not in (None, b"[DONE]") and orjson.loads(d).get("choices") == []
    ]
    if not include_usage_requested(path):
        assert expected.dropped == 0
        assert run([data], strip=True)[0] == data.replace(USAGE_NULL, b"")
        return
    assert expected.usage is not None
    assert expected.dropped == len(usage_only)
    out, got = run([data], strip=True)
    for chunk in usage_only:
        assert chunk not in out
        assert chunk in data
    assert_usage_matches(got[0], expected.usage)


# -- splits -----------------------------------------------------------------------------------------------


def check_every_split(data: bytes, *, strip: bool) -> None:
    """Every position inside every event, as a split point, gives the same output and the same facts.

    A split inside event k cannot change what happened before it, and once event k is complete the
    tap's framer holds nothing, so each position is checked from the tap's state before event k:
    event k fed in two pieces must give the output and state of event k fed whole. The chain of
    those states must reproduce the unsplit run (linear, where re-feeding everything is quadratic).
    """
    whole_out, whole_state = run([data], strip=strip)
    events, rest = reference_events(data)
    base = ChatStreamTap(strip_usage=strip)
    outputs: list[bytes] = []
    for event in events:
        reference = clone_at_boundary(base)
        ref_out = reference.feed(event)
        for cut in range(1, len(event)):
            tap = clone_at_boundary(base)
            first, second = tap.feed(event[:cut]), tap.feed(event[cut:])
            if strip:
                assert (first, second) == (b"", ref_out), cut
            else:
                assert (first, second) == (event[:cut], event[cut:]), cut
            assert state(tap) == state(reference), cut
        outputs.append(ref_out)
        base = reference
    for cut in range(1, len(rest)):
        tap = clone_at_boundary(base)
        pieces = tap.feed(rest[:cut]) + tap.feed(rest[cut:]) + tap.finish()
        reference = clone_at_boundary(base)
        assert pieces == reference.feed(rest) + reference.finish()
        assert state(tap) == state(reference)
    outputs.append(base.feed(rest) + base.finish())
    assert b"".join(outputs) == whole_out
    assert state(base) == whole_state


def every_split(data: bytes, *, strip: bool) -> None:
    check_every_split(data, strip=strip)
    if len(data) <= WHOLE_RUN_LIMIT:
        whole = run([data], strip=strip)
        for cut in range(1, len(data)):
            assert run([data[:cut], data[cut:]], strip=strip) == whole, cut


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_every_split_position_pass_through(path: Path) -> None:
    every_split(path.read_bytes(), strip=False)


@pytest.mark.parametrize("path", INCLUDE_USAGE_FIXTURES)
def test_every_split_position_strip_mode(path: Path) -> None:
    every_split(path.read_bytes(), strip=True)


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_one_byte_reads(path: Path) -> None:
    data = path.read_bytes()
    one_byte = [data[i : i + 1] for i in range(len(data))]
    assert run(one_byte, strip=False) == run([data], strip=False)
    if path.stat().st_size <= 10_000 or include_usage_requested(path):
        assert run(one_byte, strip=True) == run([data], strip=True)


@pytest.mark.parametrize("path", SSE_FIXTURES)
@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draw=st.data())
def test_random_multi_way_splits(path: Path, draw: st.DataObject) -> None:
    data = path.read_bytes()
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=40), label="cuts")
    chunks = split_at(data, cuts)
    for strip in (False, True):
        assert run(chunks, strip=strip) == run([data], strip=strip)


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_crlf_and_cr_framed_streams_give_the_same_facts(path: Path, newline: bytes) -> None:
    lf = path.read_bytes()
    assert b"\r" not in lf
    data = lf.replace(b"\n", newline)
    expected = expected_of(lf)
    out, got = run([data], strip=False)
    assert out == data
    assert_state_matches(got, expected)
    out, got = run([data], strip=True)
    assert out == expected.stripped.replace(b"\n", newline)
    assert_state_matches(got, expected)
    mid = len(data) // 2
    assert run([data[:mid], data[mid:]], strip=True) == (out, got)


# -- provider specifics -----------------------------------------------------------------------------------


def test_groq_error_event_is_recorded_and_completes_the_stream() -> None:
    data = fixture_file(
        "groq/chat-completions/stream-reasoning-then-midstream-error-event-tool-use-failed.response.sse"
    ).read_bytes()
    tap = ChatStreamTap(strip_usage=False)
    tap.feed(data)
    assert tap.finish() == b""
    assert tap.error is not None
    assert tap.error["code"] == "tool_use_failed"
    assert tap.error["type"] == "invalid_request_error"
    assert tap.saw_done is False
    assert tap.usage is None
    assert tap.complete  # an error event is a proper end, even without [DONE]
    # Cut just before the error event: the stream is then truncated, not complete.
    cut = data.rindex(b"event: error")
    partial = ChatStreamTap(strip_usage=False)
    partial.feed(data[:cut])
    partial.finish()
    assert partial.error is None
    assert not partial.complete


def test_groq_usage_is_read_from_x_groq_when_it_is_the_only_place() -> None:
    data = fixture_file("groq/chat-completions/stream-text-x-groq-usage-llama3.3-70b.response.sse").read_bytes()
    events, rest = reference_events(data)
    rebuilt = []
    x_groq_usage = None
    for event in events:
        payload = orjson.loads(data_of(event) or b"")
        if "usage" not in payload:
            rebuilt.append(event)
            continue
        x_groq_usage = payload["x_groq"]["usage"]
        assert payload.pop("usage") == x_groq_usage  # the fixture carries it in both places
        rebuilt.append(b"data: " + orjson.dumps(payload) + b"\n\n")
    data = b"".join(rebuilt) + rest
    assert x_groq_usage is not None
    assert all("usage" not in orjson.loads(data_of(e) or b"") for e in reference_events(data)[0])
    for strip in (False, True):
        out, got = run([data], strip=strip)
        assert out == data
        assert_usage_matches(got[0], x_groq_usage)
        assert got[0] == Usage(input_tokens=38, output_tokens=4)


def test_openrouter_comments_are_forwarded_and_not_counted_as_content() -> None:
    data = fixture_file(
        "openrouter/chat-completions/stream-processing-comments-usage-cost-claude.response.sse"
    ).read_bytes()
    assert data.startswith(b": OPENROUTER PROCESSING\n\n")
    tap = ChatStreamTap(strip_usage=True)
    out = tap.feed(data) + tap.finish()
    assert out.count(b": OPENROUTER PROCESSING\n\n") == data.count(b": OPENROUTER PROCESSING\n\n") == 3
    assert tap.content_events == 2  # "Hello!" and the finish chunk; never the three comments
    assert tap.usage == Usage(input_tokens=254, output_tokens=5)
    assert b'"choices":[]' not in out
    assert tap.saw_done and tap.saw_finish


def test_openrouter_in_stream_error_chunk_is_kept_in_strip_mode() -> None:
    data = fixture_file(
        "openrouter/chat-completions/stream-processing-comments-midstream-error-chunk.response.sse"
    ).read_bytes()
    tap = ChatStreamTap(strip_usage=True)
    out = tap.feed(data) + tap.finish()
    assert out == data
    assert tap.error == {"code": 400, "message": "Token limit reached"}
    assert tap.usage == Usage(input_tokens=43, output_tokens=10, reasoning_tokens=11)
    assert tap.content_events == 4
    assert tap.complete


# -- synthetic edge cases ---------------------------------------------------------------------------------


def chunk(payload: dict[str, Any], *, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


CONTENT = chunk({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]})
CONTENT_UN = chunk({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None})
FINISH = chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
USAGE_ONLY = chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
DONE = b"data: [DONE]\n\n"


def test_complete_semantics() -> None:
    tap = ChatStreamTap(strip_usage=False)
    assert not tap.complete
    tap.feed(CONTENT)
    assert not tap.complete
    tap.feed(FINISH)
    assert tap.complete and tap.saw_finish and not tap.saw_done
    only_done = ChatStreamTap(strip_usage=False)
    only_done.feed(DONE)
    assert only_done.complete and only_done.saw_done and not only_done.saw_finish
    only_error = ChatStreamTap(strip_usage=False)
    only_error.feed(chunk({"error": {"message": "boom", "type": "server_error"}}))
    assert only_error.complete and only_error.error == {"message": "boom", "type": "server_error"}


def test_done_inside_content_text_is_content_not_the_end() -> None:
    tap = ChatStreamTap(strip_usage=False)
    tap.feed(chunk({"choices": [{"index": 0, "delta": {"content": "[DONE]"}, "finish_reason": None}]}))
    assert not tap.saw_done
    assert tap.content_events == 1
    assert not tap.complete


def test_partial_trailing_event_in_pass_through_mode() -> None:
    cut_mid_json = CONTENT + FINISH[:20]
    tap = ChatStreamTap(strip_usage=False)
    assert tap.feed(cut_mid_json) == cut_mid_json
    assert tap.finish() == b""  # already forwarded
    assert tap.content_events == 2  # the truncated chunk is counted as content
    assert not tap.saw_finish
    assert not tap.complete


def test_partial_trailing_event_in_strip_mode_is_forwarded_like_a_whole_one() -> None:
    tap = ChatStreamTap(strip_usage=True)
    assert tap.feed(CONTENT_UN + DONE[:-1]) == CONTENT_UN.replace(USAGE_NULL, b"")
    assert tap.finish() == b"data: [DONE]\n"
    assert tap.saw_done and tap.complete
    # A trailing chunk with the member the gateway added loses it too ...
    tap = ChatStreamTap(strip_usage=True)
    assert tap.feed(CONTENT_UN[:-2]) == b""
    assert tap.finish() == CONTENT_UN[:-2].replace(USAGE_NULL, b"")
    # ... and a trailing usage-only chunk the client did not ask for is dropped, its usage kept.
    tap = ChatStreamTap(strip_usage=True)
    assert tap.feed(FINISH + USAGE_ONLY[:-1]) == FINISH
    assert tap.finish() == b""
    assert tap.usage == Usage(input_tokens=3, output_tokens=2)
    # Nothing left over: nothing to forward.
    tap = ChatStreamTap(strip_usage=True)
    tap.feed(DONE)
    assert tap.finish() == b""


def test_strip_mode_drops_a_usage_only_chunk_that_follows_an_error() -> None:
    error = chunk({"error": {"message": "upstream failed", "code": 502}, "choices": []})
    tap = ChatStreamTap(strip_usage=True)
    out = tap.feed(CONTENT_UN + error + USAGE_ONLY + DONE)
    assert out == CONTENT_UN.replace(USAGE_NULL, b"") + error + DONE
    assert tap.error == {"message": "upstream failed", "code": 502}
    assert tap.usage == Usage(input_tokens=3, output_tokens=2)


def test_strip_mode_keeps_an_error_chunk_even_with_usage_and_no_choices() -> None:
    error = chunk({"error": {"message": "x"}, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}})
    tap = ChatStreamTap(strip_usage=True)
    assert tap.feed(error) == error
    assert tap.usage == Usage(input_tokens=1, output_tokens=0)


def test_pass_through_keeps_the_usage_only_chunk() -> None:
    data = CONTENT_UN + FINISH + USAGE_ONLY + DONE
    tap = ChatStreamTap(strip_usage=False)
    assert tap.feed(data) == data
    assert tap.usage == Usage(input_tokens=3, output_tokens=2)
    assert tap.content_events == 2


def test_error_event_with_a_non_object_error_is_still_an_error() -> None:
    tap = ChatStreamTap(strip_usage=False)
    tap.feed(chunk({"error": "overloaded", "usage": None}, event="error"))
    assert tap.error is not None
    assert "overloaded" in tap.error["message"]
    assert tap.complete


@pytest.mark.parametrize(
    "raw",
    [
        b': a comment that mentions "usage"\n\n',  # keyword in a comment: no data to parse
        b'data: {"usage": broken\n\n',  # not JSON
        b'data: ["usage", "error"]\n\n',  # JSON, not an object
        b'data: {"usage": {"prompt_tokens": "many"}, "choices": []}\n\n',  # odd types read as 0
    ],
    ids=["comment", "bad-json", "not-object", "odd-types"],
)
def test_unusual_events_that_mention_usage_are_forwarded_untouched(raw: bytes) -> None:
    for strip in (False, True):
        tap = ChatStreamTap(strip_usage=strip)
        out = tap.feed(raw)
        assert tap.error is None
        assert tap.content_events == 0
        if raw.startswith(b'data: {"usage": {'):
            assert tap.usage == Usage()
            assert out == (b"" if strip else raw)  # a usage-only chunk, however odd its figures
        else:
            assert tap.usage is None
            assert out == raw


def test_comment_only_and_event_only_events_are_not_content() -> None:
    tap = ChatStreamTap(strip_usage=False)
    tap.feed(b": keep-alive\n\n: OPENROUTER PROCESSING\r\n\r\nevent: ping\n\n")
    assert tap.content_events == 0
    tap.feed(b": note\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n")
    assert tap.content_events == 1
