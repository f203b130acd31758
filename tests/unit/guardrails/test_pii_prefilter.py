"""The PII detector's pre-filter: a pattern runs only on text holding what it cannot match without (``@`` for an
email; for every kind but an IPv6 address, as many decimal digits as its shortest match has; ``-`` for an SSN,
``.`` for IPv4).
Findings must be exactly those of the detectors run on every text; prose without them must cost no pattern."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails import pii
from gomodel_proxy.guardrails.interface import GuardedRequest
from gomodel_proxy.guardrails.pii import ALL_KINDS, Finding, PIIDetector, PIIKind, Redactor, count_digits
from gomodel_proxy.guardrails.pii_redactor import PIIRedactor

DETECTOR = PIIDetector()
SAMPLES: list[tuple[PIIKind, str]] = [
    ("email", "jane.doe@example.com"),
    ("phone", "+1 415-555-2671"),
    ("phone", "+44 20 7946 0958"),
    ("ssn", "123-45-6789"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "5555555555554444"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000"),
    ("ip", "192.168.1.20"),
    ("ip", "2001:db8::8a2e:370:7334"),
    ("ip", "fe80::1"),
    ("ip", "ab::cd"),  # IPv6 without a decimal digit: the digit pre-filter must not hide it
    ("ip", "::ffff:192.0.2.1"),
]


def unfiltered(detector: PIIDetector, text: str) -> list[Finding]:
    """What ``find`` gave before the pre-filter: every detector on every text (their own ``@``/``.``/``:`` checks
    aside, which are older than it), in the same order."""
    kinds = detector._kinds
    found: list[Finding] = []
    if "email" in kinds and "@" in text:
        found.extend(detector._emails(text))
    if "ssn" in kinds:
        found.extend(Finding("ssn", m.start(), m.end()) for m in pii._SSN_RE.finditer(text)
                     if pii._ssn_ok(m.group()[:3], m.group(1), m.group(2)))
    if "credit_card" in kinds:
        found.extend(detector._cards(text))
    if "iban" in kinds:
        found.extend(detector._ibans(text))
    if "ip" in kinds:
        if "." in text:
            found.extend(detector._ipv4s(text))
        if ":" in text:
            found.extend(detector._ipv6s(text))
    if "phone" in kinds:
        found.extend(detector._phones(text, found))
    return pii._resolve_overlaps(found)


def spans(text: str, detector: PIIDetector = DETECTOR) -> list[tuple[PIIKind, str]]:
    return [(f.kind, text[f.start:f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0), ("no digits here", 0), ("0", 1), ("9 at the start", 1), ("at the end 9", 1), ("0123456789", 10),
        ("café, naïve, 日本語", 0), ("café 7, 8", 2),
        ("Arabic-Indic \u0663\u0664", 2), ("fullwidth \uff17 and 7", 2), ("Devanagari \u096b", 1),
        ("superscript \u00b2 is no decimal digit", 0), ("roman \u216b neither", 0),
    ],
)
def test_count_digits_counts_what_regex_d_matches(text: str, expected: int) -> None:
    assert count_digits(text) == expected == len(pii._DIGIT_RE.findall(text))


def test_count_digits_is_exact_up_to_what_a_pattern_needs() -> None:
    most = pii._MOST_DIGITS_NEEDED
    assert count_digits("1" * 40) == 40
    assert count_digits("café " + "1" * 40) >= most  # enough ASCII digits: the Unicode ones are not looked for
    assert count_digits("café " + "1" * (most - 1) + "\u0663") == most
    assert count_digits("lone \ud800 surrogate 12") == 2  # no UnicodeEncodeError
    assert spans("lone \ud800 surrogate, card 4111 1111 1111 1111") == [("credit_card", "4111 1111 1111 1111")]


@pytest.mark.parametrize(("kind", "value"), SAMPLES)
@pytest.mark.parametrize(("before", "after"), [("", ""), ("", " is mine"), ("write to ", ""), ("Grüße: ", " ✓"),
                                               ("日本語 ", " 日本語"), ("\n", "\n")])
def test_each_kind_is_found_anywhere(kind: PIIKind, value: str, before: str, after: str) -> None:
    """At the very start, at the very end, as the whole text, next to non-ASCII text."""
    text = before + value + after
    assert spans(text) == [(kind, value)]
    assert spans(text, PIIDetector([kind])) == [(kind, value)]
    assert DETECTOR.find(text) == unfiltered(DETECTOR, text)


def test_unicode_digits_still_reach_the_patterns() -> None:
    """``\\d`` matches Unicode digits: a text whose only digits are not ASCII is scanned as before."""
    ssn = "\u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669"  # Arabic-Indic 123-45-6789
    iban = "GB\u0668\u0662 WEST 1234 5698 7654 32"
    assert spans(f"SSN {ssn}.") == [("ssn", ssn)]
    assert spans(f"pay {iban}") == [("iban", iban)]
    for text in ("card \u0664" + "\u0661" * 15 + " here",
                 "\u0661\u0669\u0662.\u0661\u0666\u0668.\u0661.\u0662\u0660",
                 "\uff14\uff11\uff11\uff11 1111 1111 1111",
                 "\u0967\u0968\u0969 \u0966\u0966\u0966 \u096a\u096a\u096a\u096a"):
        assert DETECTOR.find(text) == unfiltered(DETECTOR, text)


@pytest.mark.parametrize("text", ["You are a helpful assistant. Answer briefly.",
                                  "Say hello and offer help in one short sentence.", "", "Ünïcödé prose, ok; a - b."])
def test_prose_without_digits_runs_no_pattern(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"a pattern ran on {text!r}")

    for name in ("_EMAIL_RE", "_SSN_RE", "_CARD_RE", "_IBAN_RE", "_IPV4_RE", "_IPV6_RE", "_PHONE_WINDOW_RE"):
        monkeypatch.setattr(pii, name, Untouchable())
    monkeypatch.setattr(pii.phonenumbers, "PhoneNumberMatcher", Untouchable())
    assert DETECTOR.find(text) == []


@pytest.mark.parametrize(
    ("kind", "shortest"),
    [("ssn", "123-45-6789"), ("credit_card", "4222222222222"), ("ip", "1.2.3.4"), ("phone", "+1 415-555-2671"),
     ("phone", "+49 30 901820"), ("iban", "NO9386011117947")],
)
def test_the_shortest_of_each_kind_passes_the_digit_gate(kind: PIIKind, shortest: str) -> None:
    """Each needs as many digits as its shortest match: exactly that many is enough."""
    assert spans(f"x {shortest} y", PIIDetector([kind])) == [(kind, shortest)]


def test_too_few_digits_runs_only_what_could_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five digits ("3 sentences", "2024"): the IBAN and IPv4 patterns run, not the card, SSN or phone ones."""
    ran: list[str] = []

    class Spy:
        def __init__(self, name: str, pattern: Any) -> None:
            self.name, self.pattern = name, pattern

        def finditer(self, *args: Any) -> Any:
            ran.append(self.name)
            return self.pattern.finditer(*args)

    for name in ("_SSN_RE", "_CARD_RE", "_IBAN_RE", "_IPV4_RE", "_PHONE_WINDOW_RE"):
        monkeypatch.setattr(pii, name, Spy(name, getattr(pii, name)))
    assert DETECTOR.find("Answer in 3 short sentences, in the style of 2024.") == []
    assert ran == ["_IBAN_RE", "_IPV4_RE"]
    ran.clear()
    assert DETECTOR.find("Three sentences.") == [] and ran == []


def test_character_gates_of_single_kinds() -> None:
    assert spans("SSN 123 45 6789") == [] == unfiltered(DETECTOR, "SSN 123 45 6789")  # no "-": no SSN shape
    assert spans("host 10 0 0 1") == []
    assert spans("bound to 0.0.0.0:8080") == [("ip", "0.0.0.0")]


_PIECES = ["a", "Z", "GB", "DE", " ", "-", ".", ":", "@", "/", "(", ")", "+", "\n", "é", "_", "x.y", "ab", "ffff", "::",
           "0", "1", "4", "9", "12", "123", "4111", "2001", "fe80", "\u0663", "\uff17",
           "jane.doe@example.com", "+1 415-555-2671", "4111 1111 1111 1111", "123-45-6789",
           "GB82 WEST 1234 5698 7654 32", "10.0.0.1", "2001:db8::1", "ab::cd", "020 7946 0958"]
_KIND_SETS: list[tuple[PIIKind, ...]] = [ALL_KINDS, ("ip",), ("phone",), ("email", "ip"), ("ssn", "credit_card"),
                                         ("iban",)]


@given(st.lists(st.sampled_from(_PIECES), max_size=14), st.sampled_from(_KIND_SETS))
@settings(max_examples=600, deadline=None)
def test_findings_are_those_without_the_prefilter(pieces: list[str], kinds: tuple[PIIKind, ...]) -> None:
    text = "".join(pieces)
    detector = PIIDetector(kinds)
    assert detector.find(text) == unfiltered(detector, text)


def test_replace_is_redact_with_given_findings() -> None:
    text = "mail jane.doe@example.com, card 4111 1111 1111 1111, again jane.doe@example.com"
    a, b = Redactor(DETECTOR), Redactor(DETECTOR)
    redacted, findings = a.redact(text)
    assert b.replace(text, findings) == redacted
    assert redacted == "mail [EMAIL_1], card [CREDIT_CARD_1], again [EMAIL_1]"
    assert a.mapping == b.mapping


def _messages(body: dict[str, Any]) -> Iterable[Any]:
    return [m["content"] for m in body["messages"]]


async def test_a_prompt_without_pii_is_left_as_it_was() -> None:
    guard = PIIRedactor("pii", 10, {"detect": ALL_KINDS, "action": "redact", "restore": True}, hold_back=64)
    texts = ["You are a helpful assistant. Answer briefly.", "Say hello in 3 short sentences."]
    body = {"model": "m", "messages": [{"role": "system", "content": texts[0]}, {"role": "user", "content": texts[1]}]}
    req = GuardedRequest("chat", body, Principal(kind="key", key_id="k1"))
    await guard.process_input(req)
    assert all(a is b for a, b in zip(_messages(body), texts, strict=True))
    assert req.decisions == [] and req.state == {}
    assert guard.process_output(req) is None


async def test_only_the_slots_with_pii_are_rewritten() -> None:
    guard = PIIRedactor("pii", 10, {"detect": ALL_KINDS, "action": "redact", "restore": True}, hold_back=64)
    clean = "Nothing personal here, 42 times."
    body = {"model": "m", "messages": [{"role": "system", "content": clean},
                                       {"role": "user", "content": "reach me at ab::cd or jane.doe@example.com"},
                                       {"role": "user", "content": clean}]}
    req = GuardedRequest("chat", body, Principal(kind="key", key_id="k1"))
    await guard.process_input(req)
    assert list(_messages(body)) == [clean, "reach me at [IP_1] or [EMAIL_1]", clean]
    assert body["messages"][0]["content"] is clean
    assert [(d.action, d.detail) for d in req.decisions] == [("redact", "email=1,ip=1")]
    assert isinstance(req.state["pii"], Redactor)
