"""The hold-back window: a match split across stream chunks is found whole, and the stream's output is the
output of the same scanner applied to the whole text, wherever the chunks were cut."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gomodel_proxy.core.errors import GuardrailBlockedError
from gomodel_proxy.guardrails.interface import TextFilter
from gomodel_proxy.guardrails.window import Match, WindowedFilter, chain_filters, flatten, merge_windows

AWS_KEY = re.compile(r"AKIA[0-9A-Z]{16}")  # 20 characters
OPENAI_KEY = re.compile(r"sk-[a-z0-9]{20}")  # 23 characters
LONGEST = 23


def regex_scanner(patterns: dict[str, re.Pattern[str]], *, redact: bool = True,
                  calls: list[str] | None = None) -> Callable[[str], list[Match]]:
    """A scanner over named patterns: ``[label]`` replaces each match when ``redact``."""

    def scan(text: str) -> list[Match]:
        if calls is not None:
            calls.append(text)
        found = [Match(m.start(), m.end(), label, f"[{label}]" if redact else None)
                 for label, pattern in patterns.items() for m in pattern.finditer(text)]
        return sorted(found, key=lambda m: m.start)

    return scan


SCAN = regex_scanner({"aws": AWS_KEY, "openai": OPENAI_KEY})


def whole(text: str, scan: Callable[[str], list[Match]] = SCAN) -> tuple[str, list[str]]:
    """What the scanner makes of the whole text: the output and the labels found, in order."""
    labels: list[str] = []
    f = WindowedFilter(scan, lambda m: labels.append(m.label), hold_back=0)
    return f.feed(text) + f.finish(), labels


def streamed(pieces: list[str], *, hold_back: int,
             scan: Callable[[str], list[Match]] = SCAN) -> tuple[str, list[str], list[str]]:
    """The output of feeding ``pieces`` one by one, the labels passed to ``on_match`` and what each call returned."""
    labels: list[str] = []
    f = WindowedFilter(scan, lambda m: labels.append(m.label), hold_back=hold_back)
    returned = [f.feed(p) for p in pieces]
    returned.append(f.finish())
    return "".join(returned), labels, returned


def split_at(text: str, points: list[int]) -> list[str]:
    cuts = [0, *sorted(set(points)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(cuts)]


KEY = "AKIAIOSFODNN7EXAMPLE"
TEXT = f"Your deployment uses the access key {KEY} in region eu-west-1; rotate it soon, please."
EXPECTED = "Your deployment uses the access key [aws] in region eu-west-1; rotate it soon, please."


def test_the_whole_text_in_one_feed() -> None:
    assert streamed([TEXT], hold_back=32) == (EXPECTED, ["aws"], [EXPECTED[: len(EXPECTED) - 32],
                                                                   EXPECTED[len(EXPECTED) - 32:]])


def test_a_key_split_across_two_feeds_is_found_whole() -> None:
    at = TEXT.index(KEY) + 7
    assert streamed([TEXT[:at], TEXT[at:]], hold_back=32)[:2] == (EXPECTED, ["aws"])


def test_a_key_split_across_three_feeds_is_found_whole() -> None:
    start = TEXT.index(KEY)
    pieces = [TEXT[: start + 4], TEXT[start + 4: start + 12], TEXT[start + 12:]]
    assert streamed(pieces, hold_back=20)[:2] == (EXPECTED, ["aws"])


def test_a_key_fed_one_character_at_a_time_is_found_whole() -> None:
    out, labels, returned = streamed(list(TEXT), hold_back=20)
    assert (out, labels) == (EXPECTED, ["aws"])
    assert all(KEY[:4] not in r for r in returned)
    assert "".join(returned[:20]) == ""  # nothing leaves before hold_back characters are held


def test_held_back_text_is_released_by_finish_only() -> None:
    labels: list[str] = []
    f = WindowedFilter(SCAN, lambda m: labels.append(m.label), hold_back=64)
    assert f.feed("short answer with AKIA") == ""
    assert f.feed("IOSFODNN7EXAMPLE.") == ""
    assert labels == []
    assert f.finish() == "short answer with [aws]."
    assert labels == ["aws"]
    assert f.finish() == ""  # nothing is left


def test_finish_with_nothing_held_does_not_scan() -> None:
    calls: list[str] = []
    f = WindowedFilter(regex_scanner({"aws": AWS_KEY}, calls=calls), lambda m: None, hold_back=0)
    assert f.feed("plain text") == "plain text"
    assert f.finish() == ""
    assert calls == ["plain text"]


def test_a_match_straddling_the_cut_is_held_back_until_complete() -> None:
    f = WindowedFilter(SCAN, lambda m: None, hold_back=10)
    # The key is complete in the buffer but reaches into the last 10 characters: the cut moves to its start.
    assert f.feed(f"key: {KEY} ok") == "key: "
    assert f.feed(" and more text afterwards") == "[aws] ok and more text "
    assert f.finish() == "afterwards"


def test_matches_without_a_replacement_are_reported_and_left_in_place() -> None:
    seen: list[tuple[int, int, str]] = []
    scan = regex_scanner({"aws": AWS_KEY}, redact=False)
    f = WindowedFilter(scan, lambda m: seen.append((m.start, m.end, m.label)), hold_back=24)
    out = f.feed(TEXT[:50]) + f.feed(TEXT[50:]) + f.finish()
    assert out == TEXT
    assert [label for _, _, label in seen] == ["aws"]


def test_several_matches_each_reported_once_in_order() -> None:
    k2 = "sk-abcdefghij0123456789"
    text = f"first {KEY}, then {k2}, then {KEY} again and {k2} last"
    out, labels, _ = streamed(split_at(text, list(range(3, len(text), 7))), hold_back=LONGEST)
    assert labels == ["aws", "openai", "aws", "openai"]
    assert out == "first [aws], then [openai], then [aws] again and [openai] last"


def test_hold_back_zero_passes_text_through_at_once_and_only_sees_matches_within_a_feed() -> None:
    at = TEXT.index(KEY) + 7
    out, labels, returned = streamed([TEXT[:at], TEXT[at:]], hold_back=0)
    assert returned == [TEXT[:at], TEXT[at:], ""]
    assert (out, labels) == (TEXT, [])  # the split key is not seen: no window to see it in
    assert streamed([TEXT], hold_back=0)[:2] == (EXPECTED, ["aws"])


def test_a_negative_hold_back_is_treated_as_zero() -> None:
    f = WindowedFilter(SCAN, lambda m: None, hold_back=-5)
    assert f.feed("abc") == "abc"


def test_a_match_longer_than_hold_back_may_be_missed_when_split() -> None:
    at = TEXT.index(KEY) + 2
    out, labels, _ = streamed([TEXT[:at], TEXT[at:at + 10], TEXT[at + 10:]], hold_back=4)
    assert labels == [] and out == TEXT  # the documented price of a short window


def test_on_match_raising_refuses_the_rest() -> None:
    def block(m: Match) -> None:
        raise GuardrailBlockedError("regex", f"the answer matches pattern '{m.label}'", stage="output")

    f = WindowedFilter(SCAN, block, hold_back=LONGEST)
    assert f.feed("Sure, the key is ") == ""
    with pytest.raises(GuardrailBlockedError, match="pattern 'aws'"):
        f.feed(f"{KEY} and that is all you need to know, really.")


# -- property: streamed == whole, wherever the chunks are cut -------------------------------------------------
FILLER = st.text(alphabet="abcdefghij .,;\n", max_size=40)
SECRET = st.one_of(
    st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=16, max_size=16).map(lambda s: "AKIA" + s),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=20, max_size=20).map(lambda s: "sk-" + s),
)


@st.composite
def texts_and_cuts(draw: st.DrawFn) -> tuple[str, list[int]]:
    parts = [draw(FILLER)]
    for _ in range(draw(st.integers(0, 5))):
        parts += [draw(SECRET), draw(FILLER)]
    text = "".join(parts)
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=30))
    return text, cuts


@settings(max_examples=300, deadline=None)
@given(texts_and_cuts(), st.integers(LONGEST, 80))
def test_streamed_output_equals_the_whole_text_s_for_any_split(case: tuple[str, list[int]], hold_back: int) -> None:
    text, cuts = case
    out, labels, returned = streamed(split_at(text, cuts), hold_back=hold_back)
    assert (out, labels) == whole(text)
    assert not any(AWS_KEY.search(r) or OPENAI_KEY.search(r) for r in returned)


def test_look_behind_context_survives_the_cut() -> None:
    scan = regex_scanner({"pw": re.compile(r"(?<=password=)\S+")})
    text = "the password=hunter2 ok and more text"
    assert whole(text, scan)[0] == "the password=[pw] ok and more text"
    # hold_back 16 >= the 7-character match; the first feed's cut lands inside "password".
    out, _, _ = streamed(["the password=hunter2 ok", " and more text"], hold_back=16, scan=scan)
    assert "hunter2" not in out


# -- chain_filters ---------------------------------------------------------------------------------------------
class Recorder:
    """A filter that records its calls and tags what it lets through."""

    def __init__(self, tag: str, log: list[str], *, hold: bool = False) -> None:
        self.tag = tag
        self.log = log
        self.hold = hold
        self.held = ""

    def feed(self, text: str) -> str:
        self.log.append(f"{self.tag}.feed({text})")
        if self.hold:
            self.held += text
            return ""
        return f"{self.tag}({text})"

    def finish(self) -> str:
        self.log.append(f"{self.tag}.finish")
        held, self.held = self.held, ""
        return f"{self.tag}<{held}>" if self.hold else ""


def test_chain_of_none_is_none() -> None:
    assert chain_filters([]) is None


def test_chain_of_one_is_that_filter() -> None:
    f = WindowedFilter(SCAN, lambda m: None, hold_back=0)
    assert chain_filters([f]) is f


def test_chain_feeds_each_filter_the_previous_one_s_output() -> None:
    log: list[str] = []
    chained = chain_filters([Recorder("a", log), Recorder("b", log), Recorder("c", log)])
    assert chained is not None
    assert chained.feed("x") == "c(b(a(x)))"
    assert chained.finish() == ""
    assert log == ["a.feed(x)", "b.feed(a(x))", "c.feed(b(a(x)))", "a.finish", "b.finish", "c.finish"]


def test_chain_stops_when_a_filter_holds_everything_back() -> None:
    log: list[str] = []
    chained = chain_filters([Recorder("a", log, hold=True), Recorder("b", log)])
    assert chained is not None
    assert chained.feed("x") == ""
    assert log == ["a.feed(x)"]  # b is not fed an empty string


def test_chained_finish_passes_the_first_filter_s_rest_through_the_second() -> None:
    log: list[str] = []
    chained = chain_filters([Recorder("a", log, hold=True), Recorder("b", log)])
    assert chained is not None
    chained.feed("x")
    assert chained.finish() == "b(a<x>)"
    assert log == ["a.feed(x)", "a.finish", "b.feed(a<x>)", "b.finish"]


def test_two_windows_chained_redact_a_key_split_across_feeds() -> None:
    first = WindowedFilter(regex_scanner({"aws": AWS_KEY}), lambda m: None, hold_back=32)
    second = WindowedFilter(regex_scanner({"tag": re.compile(r"\[aws\]")}), lambda m: None, hold_back=8)
    chained: TextFilter | None = chain_filters([first, second])
    assert chained is not None
    at = TEXT.index(KEY) + 5
    out = chained.feed(TEXT[:at]) + chained.feed(TEXT[at:]) + chained.finish()
    assert out == EXPECTED.replace("[aws]", "[tag]")


def test_merged_windows_hold_back_once_and_each_filter_handles_its_own_matches() -> None:
    seen: list[tuple[str, str]] = []

    def window(name: str, pattern: str, hold_back: int, numbered: bool) -> WindowedFilter:
        compiled = re.compile(pattern)
        counter = itertools.count(1)

        def scan(text: str) -> list[Match]:
            return [Match(m.start(), m.end(), name, None if numbered else f"[{name}]") for m in compiled.finditer(text)]

        def replace(m: Match, value: str) -> str:
            return f"[{name}_{next(counter)}]"

        return WindowedFilter(scan, lambda m: seen.append((name, m.label)), hold_back=hold_back,
                              replace=replace if numbered else None)

    def both() -> WindowedFilter:
        return merge_windows([window("key", r"AKIA[0-9A-Z]{16}", 24, False), window("ticket", r"T-\d{4,}", 8, True)])

    text = "see T-12345 and AKIAIOSFODNN7EXAMPLE, then T-99999 twice T-99999; done."
    expected = "see [ticket_1] and [key], then [ticket_2] twice [ticket_3]; done."
    merged = both()
    assert merged.feed(text) + merged.finish() == expected
    for cut in range(1, len(text)):  # any split: the same text, one window of the larger hold-back
        f = both()
        assert f.feed(text[:cut]) + f.feed(text[cut:]) + f.finish() == expected
    f = both()
    assert f.feed("x" * 30) == "x" * 6  # held back: 24 (the larger), not 24 + 8
    assert seen.count(("key", "key")) == len(text)
    single = window("key", "K", 4, False)
    assert merge_windows([single]) is single


def test_overlapping_matches_of_merged_windows_go_to_the_earlier_then_longer() -> None:
    def fixed(name: str, pattern: str) -> WindowedFilter:
        compiled = re.compile(pattern)
        return WindowedFilter(lambda t: [Match(m.start(), m.end(), name, f"<{name}>") for m in compiled.finditer(t)],
                              lambda m: None, hold_back=0)

    merged = merge_windows([fixed("short", "abc"), fixed("long", "abcdef"), fixed("later", "def")])
    assert merged.feed("xabcdefx") + merged.finish() == "x<long>x"


def test_flatten_opens_chains() -> None:
    log: list[str] = []
    a, b, c = Recorder("a", log), Recorder("b", log), Recorder("c", log)
    chained = chain_filters([a, b])
    assert chained is not None
    assert flatten([chained, c]) == [a, b, c]
