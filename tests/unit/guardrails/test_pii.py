"""PII detector, redactor and stream restorer: realistic positives, look-alike negatives, and round trips."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gomodel_proxy.guardrails import pii
from gomodel_proxy.guardrails.pii import (
    ALL_KINDS,
    Finding,
    PIIDetector,
    PIIKind,
    Redactor,
    StreamRestorer,
    iban_ok,
    luhn_ok,
)

DETECTOR = PIIDetector()


def spans(text: str, detector: PIIDetector = DETECTOR) -> list[tuple[PIIKind, str]]:
    return [(f.kind, text[f.start : f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("Reach me at john.doe+billing@example.co.uk, thanks", "email", "john.doe+billing@example.co.uk"),
        ("<a.b_c@mail-server.io>", "email", "a.b_c@mail-server.io"),
        ("Call +44 20 7946 0958 after 5pm", "phone", "+44 20 7946 0958"),
        ("Cell: +1 (415) 555-2671.", "phone", "+1 (415) 555-2671"),
        ("SSN on file: 123-45-6789.", "ssn", "123-45-6789"),
        ("Visa 4111 1111 1111 1111 exp 12/27", "credit_card", "4111 1111 1111 1111"),
        ("card=4111-1111-1111-1111;", "credit_card", "4111-1111-1111-1111"),
        ("Amex 3782 822463 10005 on file", "credit_card", "3782 822463 10005"),
        ("Mastercard 5555555555554444", "credit_card", "5555555555554444"),
        ("Pay to GB82 WEST 1234 5698 7654 32 by Friday", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN DE89370400440532013000.", "iban", "DE89370400440532013000"),
        ("client 192.168.1.20 connected", "ip", "192.168.1.20"),
        ("bound to 0.0.0.0:8080", "ip", "0.0.0.0"),
        ("peer 2001:db8::8a2e:370:7334 dropped", "ip", "2001:db8::8a2e:370:7334"),
        ("link-local fe80::1, done", "ip", "fe80::1"),
        ("mapped ::ffff:192.0.2.1 here", "ip", "::ffff:192.0.2.1"),
    ],
)
def test_positive(text: str, kind: PIIKind, value: str) -> None:
    assert spans(text) == [(kind, value)]


def test_phone_national_format_uses_default_region() -> None:
    text = "Office: 020 7946 0958"
    assert spans(text, PIIDetector(default_region="GB")) == [("phone", "020 7946 0958")]
    assert spans(text, PIIDetector(default_region="US")) == []


@pytest.mark.parametrize(
    "text",
    [
        "Order #100234 shipped on 2024-01-15 at 12:30:45",
        "timestamp 2024-01-15T12:30:45.123Z and 20240115123045",
        "Upgrade from v1.2.3 to 1.2.3.4.5 today",
        "python 3.11.4, kernel 6.5.0-1023-aws",
        "ISBN 978-0-306-40615-7 and ISBN 9780306406157",
        "SKU 4111-2222-3333-4444 is back in stock",  # card-shaped, fails Luhn
        "tracking 1234 5678 9012 3456 7",  # fails Luhn
        "test data 000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
        "GB82 WEST 1234 5698 7654 33",  # IBAN shape, wrong check digits
        "XX82 WEST 1234 5698 7654 32",  # unknown country
        "quota 256.1.1.1 and 1.2.3.999",
        "MAC 00:1A:2B:3C:4D:5E, std::vector, a :: b, at 12:30",
        "user@localhost has no TLD; neither does @handle",
        "total 1,234,567.89 USD, 42 items, room 101",
        "",
    ],
)
def test_negative(text: str) -> None:
    assert spans(text) == []


def test_luhn_and_iban_checksums() -> None:
    assert luhn_ok("4111111111111111")
    assert not luhn_ok("4111222233334444")
    assert iban_ok("GB82WEST12345698765432")
    assert not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82WEST1234569876543")  # right checksum scheme, wrong length for GB


def test_findings_sorted_and_non_overlapping_longest_wins() -> None:
    text = "ip ::ffff:192.0.2.1, mail a@b.io, card 4111 1111 1111 1111, ssn 123-45-6789"
    found = DETECTOR.find(text)
    assert [f.kind for f in found] == ["ip", "email", "credit_card", "ssn"]
    # The embedded IPv4 also matched on its own; the longer IPv6 span wins.
    assert text[found[0].start : found[0].end] == "::ffff:192.0.2.1"
    assert all(a.end <= b.start for a, b in itertools.pairwise(found))


def test_kinds_filter_and_unknown_kind() -> None:
    text = "a@b.io +44 20 7946 0958"
    assert spans(text, PIIDetector(["email"])) == [("email", "a@b.io")]
    assert spans(text, PIIDetector(["phone"])) == [("phone", "+44 20 7946 0958")]
    with pytest.raises(ValueError, match="unknown PII kinds"):
        PIIDetector(["passport"])  # type: ignore[list-item]


def test_finding_holds_offsets_only() -> None:
    finding = DETECTOR.find("x a@b.io")[0]
    assert finding == Finding("email", 2, 8)
    assert "a@b.io" not in repr(finding)


def test_redact_numbers_per_kind_and_reuses_same_value() -> None:
    redactor = Redactor(DETECTOR)
    text = "From a@x.io to b@y.io (cc a@x.io), call +1 (415) 555-2671, ssn 123-45-6789"
    redacted, findings = redactor.redact(text)
    assert redacted == "From [EMAIL_1] to [EMAIL_2] (cc [EMAIL_1]), call [PHONE_1], ssn [SSN_1]"
    assert len(findings) == 5
    # Numbering continues across calls of the same Redactor (one request, several messages).
    again, _ = redactor.redact("reply to b@y.io or c@z.io")
    assert again == "reply to [EMAIL_2] or [EMAIL_3]"
    assert redactor.mapping == {
        "[EMAIL_1]": "a@x.io",
        "[EMAIL_2]": "b@y.io",
        "[PHONE_1]": "+1 (415) 555-2671",
        "[SSN_1]": "123-45-6789",
        "[EMAIL_3]": "c@z.io",
    }
    # A fresh Redactor (next request) starts again at 1.
    assert Redactor(DETECTOR).redact("c@z.io")[0] == "[EMAIL_1]"


def test_mapping_is_a_copy() -> None:
    redactor = Redactor(DETECTOR)
    redactor.redact("a@x.io")
    redactor.mapping.clear()
    assert redactor.restore("[EMAIL_1]") == "a@x.io"


def test_restore_round_trip() -> None:
    redactor = Redactor(DETECTOR)
    text = (
        "Wire from GB82 WEST 1234 5698 7654 32 to DE89370400440532013000; card 4111 1111 1111 1111; "
        "host 10.0.0.12 / fe80::1; mail jane@example.com; phone +44 20 7946 0958; ssn 123-45-6789."
    )
    redacted, findings = redactor.redact(text)
    assert {f.kind for f in findings} == set(ALL_KINDS)
    for value in ("GB82", "4111", "10.0.0.12", "jane@", "7946", "6789"):
        assert value not in redacted
    assert redactor.restore(redacted) == text


def test_restore_leaves_unknown_placeholders() -> None:
    redactor = Redactor(DETECTOR)
    redactor.redact("a@x.io")
    assert redactor.restore("[EMAIL_1] [EMAIL_9] [FOO_1] [EMAIL_1") == "a@x.io [EMAIL_9] [FOO_1] [EMAIL_1"


def test_no_pii_text_is_returned_unchanged() -> None:
    redactor = Redactor(DETECTOR)
    text = "Order #100234 shipped on 2024-01-15 (v1.2.3)."
    redacted, findings = redactor.redact(text)
    assert redacted is text
    assert findings == []
    assert redactor.restore(text) is text


def _answer_redactor() -> tuple[Redactor, str, str]:
    redactor = Redactor(DETECTOR)
    original = "Dear a@x.io and b@y.io, your card 4111 1111 1111 1111 and IBAN DE89370400440532013000 [sic] [x"
    redacted, _ = redactor.redact(original)
    for n in range(2, 12):  # make a two-digit placeholder exist so prefixes like "[EMAIL_1" are ambiguous
        redactor.redact(f"u{n}@example.org")
    answer = f"Sure [EMAIL_1]! Noted [CREDIT_CARD_1], [IBAN_1] and [EMAIL_11].[EMAIL_2]{redacted}["
    return redactor, answer, redactor.restore(answer)


def _stream(redactor: Redactor, chunks: list[str]) -> str:
    restorer = StreamRestorer(redactor)
    out = [restorer.feed(c) for c in chunks]
    out.append(restorer.finish())
    return "".join(out)


def test_stream_split_at_every_position() -> None:
    redactor, answer, expected = _answer_redactor()
    assert "a@x.io" in expected and "u10@example.org" in expected
    for i in range(len(answer) + 1):
        assert _stream(redactor, [answer[:i], answer[i:]]) == expected, i


def test_stream_char_by_char_and_random_chunks() -> None:
    redactor, answer, expected = _answer_redactor()
    assert _stream(redactor, list(answer)) == expected
    rng = random.Random(1234)
    for _ in range(200):
        chunks: list[str] = []
        pos = 0
        while pos < len(answer):
            step = rng.randint(1, 12)
            chunks.append(answer[pos : pos + step])
            pos += step
        assert _stream(redactor, chunks) == expected


def test_stream_holds_back_only_a_placeholder_prefix() -> None:
    redactor = Redactor(DETECTOR)
    redactor.redact("a@x.io")
    restorer = StreamRestorer(redactor)
    assert restorer.feed("hi [EMA") == "hi "
    assert restorer.feed("IL_1] and [notes") == "a@x.io and [notes"
    assert restorer.feed("[EMAIL_") == ""
    assert restorer.finish() == "[EMAIL_"  # an unfinished placeholder is flushed verbatim


def test_stream_without_mapping_passes_through() -> None:
    restorer = StreamRestorer(Redactor(DETECTOR))
    assert restorer.feed("[EMAIL_") == "[EMAIL_"
    assert restorer.finish() == ""


def test_detection_of_100kb_finds_every_item() -> None:
    chunk = (
        "Hi team, order #100234 shipped on 2024-01-15 at 12:30:45 (v1.2.3, ISBN 978-0-306-40615-7). "
        "Contact jane.doe@example.com or +1 (415) 555-2671; server 10.0.0.12 logged it. "
        "Card 4111 1111 1111 1111 was charged. "
    )
    prose = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. "
    copies = 100_000 // len(chunk + prose * 3)
    text = (chunk + prose * 3) * copies
    kinds = [f.kind for f in DETECTOR.find(text)]
    assert kinds == ["email", "phone", "ip", "credit_card"] * copies  # its cost is in the benchmark


@given(st.lists(st.sampled_from(["a", "b.c", "@", "x@y.io", " ", "-", ".", "_", "é", "jane.doe", "@example.com",
                                 "q" * 70, "ex-ample.org", "+tag", "\n", "9", ".co", "m"]), max_size=40))
@settings(max_examples=400, deadline=None)
def test_emails_found_around_each_at_sign_equal_the_whole_text_scan(parts: list[str]) -> None:
    text = "".join(parts)
    whole = [(m.start(), m.end()) for m in pii._EMAIL_RE.finditer(text)]
    assert [(f.start, f.end) for f in PIIDetector._emails(text)] == whole


@pytest.mark.parametrize("text", ["t=2516279484789 n=1996;", "order 176429760012345 shipped", "ts 1764297600123"])
def test_long_bare_digit_runs_are_ids_not_phone_numbers(text: str) -> None:
    assert DETECTOR.find(text) == []


@pytest.mark.parametrize("phone", ["14155552671", "+442079460958", "+44 20 7946 0958", "(415) 555-2671"])
def test_phone_numbers_written_as_people_write_them_are_still_found(phone: str) -> None:
    assert [f.kind for f in DETECTOR.find(f"call {phone} today")] == ["phone"]


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "5555 5555 5555 4444", "3782 822463 10005",
                                  "6011 1111 1111 1117", "3530 1113 3330 0000", "2223 0031 2200 3222",
                                  "4222222222222", "3056 9309 0259 04"])
def test_every_networks_test_card_is_found(card: str) -> None:
    assert [f.kind for f in DETECTOR.find(f"card {card} ok")] == ["credit_card"]


@pytest.mark.parametrize("number", ["2516279484789", "3000000000004", "5105105105105", "37828224631000"])
def test_luhn_valid_numbers_of_a_length_no_network_issues_are_not_cards(number: str) -> None:
    assert "credit_card" not in [f.kind for f in DETECTOR.find(f"id {number} ok")]
