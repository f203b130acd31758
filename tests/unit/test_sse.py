"""SSEFramer and parse_event: event boundaries under any split, and the fields of one event."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gomodel_proxy.wire.sse import SSEEvent, SSEFramer, parse_event

from ._support import CHAT_STREAM_DIRS, SSE_SEPARATORS, fixture_params, reference_events, split_at

SSE_FIXTURES = fixture_params(CHAT_STREAM_DIRS, "*.response.sse")
HYPOTHESIS = settings(max_examples=60, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow])
#: Streams up to this size are also re-fed whole for every two-piece split (quadratic cost).
WHOLE_RUN_LIMIT = 2_500


def frame(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    framer = SSEFramer()
    events: list[bytes] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events, framer.flush()


# -- framing -----------------------------------------------------------------------------------------


def test_lf_events_are_returned_whole_with_their_terminator() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: a\n\ndata: b\n\nda") == [b"data: a\n\n", b"data: b\n\n"]
    assert framer.pending == 2
    assert framer.feed(b"ta: c\n") == []
    assert framer.pending == len(b"data: c\n")
    assert framer.feed(b"\n") == [b"data: c\n\n"]
    assert framer.pending == 0
    assert framer.flush() == b""


def test_crlf_framed_events() -> None:
    framer = SSEFramer()
    data = b"data: {\"a\":1}\r\n\r\ndata: {\"b\":2}\r\n\r\n"
    assert framer.feed(data[:-1]) == [b"data: {\"a\":1}\r\n\r\n"]
    assert framer.feed(data[-1:]) == [b"data: {\"b\":2}\r\n\r\n"]


def test_cr_only_framed_events() -> None:
    assert frame([b"data: x\r\rdata: y\r\r"]) == ([b"data: x\r\r", b"data: y\r\r"], b"")


def test_a_crlf_terminator_split_between_its_bytes_still_ends_one_event() -> None:
    data = b"data: x\r\n\r\ndata: y\r\n\r\n"
    for cut in range(1, len(data)):
        assert frame([data[:cut], data[cut:]]) == ([b"data: x\r\n\r\n", b"data: y\r\n\r\n"], b"")


def test_earliest_ending_terminator_wins_when_several_kinds_appear() -> None:
    # "\r\r" ends before the later "\n\n"; the later "\r\n\r\n" ends after the "\n\n" of the second event.
    data = b"a\r\rb\n\nc\r\n\r\n"
    assert frame([data]) == ([b"a\r\r", b"b\n\n", b"c\r\n\r\n"], b"")


def test_flush_returns_the_partial_event_once() -> None:
    framer = SSEFramer()
    assert framer.feed(b"data: [DONE]\n") == []
    assert framer.flush() == b"data: [DONE]\n"
    assert framer.flush() == b""
    assert framer.pending == 0


def test_empty_feed_changes_nothing() -> None:
    framer = SSEFramer()
    assert framer.feed(b"") == []
    assert framer.feed(b"data") == []
    assert framer.feed(b"") == []
    assert framer.pending == 4


def test_many_events_in_one_large_read_are_framed_in_linear_time() -> None:
    # 20 000 events in one read: a framer that rescans the rest of the buffer per event needs seconds.
    for sep in SSE_SEPARATORS:
        data = (b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}" + sep) * 20_000
        started = time.perf_counter()
        events = SSEFramer().feed(data)
        elapsed = time.perf_counter() - started
        assert len(events) == 20_000
        assert elapsed < 0.5, f"framing {len(data)} bytes ({sep!r}) took {elapsed:.2f}s"


@HYPOTHESIS
@given(
    data=st.binary(max_size=300).map(
        lambda b: bytes(b"ab:\r\n "[x % 6] for x in b)  # mostly separators, colons and a little text
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=20),
)
def test_framer_matches_a_naive_reference_under_any_split(data: bytes, cuts: list[int]) -> None:
    expected = reference_events(data)
    chunks = split_at(data, cuts)
    events, rest = frame(chunks)
    assert (events, rest) == expected
    assert b"".join(events) + rest == data


# -- the recorded streams ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_fixture_framing_is_the_same_at_every_split(path: Path) -> None:
    """A split at any byte yields the same events; each event checked at every position inside it.

    A split inside event k cannot change the events before it (they were complete) nor after it (the
    framer holds nothing once event k is complete), so each position is checked by framing event k
    fed in two pieces at that position, from an empty framer: linear, where re-feeding the whole
    stream for each position is quadratic. Smaller streams are also re-fed whole at every split.
    """
    data = path.read_bytes()
    events, rest = frame([data])
    assert (events, rest) == reference_events(data)
    assert b"".join(events) + rest == data
    assert len(events) >= 5
    offset = 0
    for event in [*events, rest]:
        complete = event is not rest
        for cut in range(1, len(event)):
            framer = SSEFramer()
            assert framer.feed(event[:cut]) == [], (offset, cut)
            assert framer.pending == cut
            got = framer.feed(event[cut:])
            assert (got, framer.flush()) == (([event], b"") if complete else ([], event)), (offset, cut)
        offset += len(event)
    if len(data) <= WHOLE_RUN_LIMIT:
        for cut in range(1, len(data)):
            assert frame([data[:cut], data[cut:]]) == (events, rest), cut


@pytest.mark.parametrize("path", SSE_FIXTURES)
def test_fixture_fed_one_byte_at_a_time(path: Path) -> None:
    data = path.read_bytes()
    assert frame([data[i : i + 1] for i in range(len(data))]) == frame([data])


# -- parse_event ---------------------------------------------------------------------------------------


def test_parse_data_only_event() -> None:
    assert parse_event(b"data: {\"a\":1}\n\n") == SSEEvent(event="", data=b"{\"a\":1}")


def test_parse_event_name_and_data() -> None:
    event = parse_event(b"event: error\ndata: {\"error\":{}}\n\n")
    assert event.event == "error"
    assert event.data == b"{\"error\":{}}"
    assert not event.is_comment_only


def test_parse_joins_data_lines_with_newlines_and_keeps_extra_spaces() -> None:
    event = parse_event(b"data: one\ndata:two\ndata:  three\n\n")
    assert event.data == b"one\ntwo\n three"


def test_parse_crlf_and_cr_line_endings() -> None:
    assert parse_event(b"event: x\r\ndata: 1\r\n\r\n") == SSEEvent("x", b"1")
    assert parse_event(b"event: x\rdata: 1\r\r") == SSEEvent("x", b"1")


def test_parse_comment_only_event() -> None:
    event = parse_event(b": OPENROUTER PROCESSING\n\n")
    assert event == SSEEvent("", b"")
    assert event.is_comment_only


def test_parse_ignores_comments_unknown_fields_and_keeps_empty_data() -> None:
    event = parse_event(b": keep-alive\nid: 7\nretry: 10\ndata\n\n")
    assert event.data == b""
    assert event.event == ""
    assert parse_event(b"data\ndata: x\n\n").data == b"\nx"


def test_parse_undecodable_event_name_is_replaced_not_raised() -> None:
    assert parse_event(b"event: \xff\n\n").event == "\ufffd"
