"""Sans-I/O PII detection and reversible redaction.

Pure functions and classes (no network, no event loop) so the guardrail can run inline on the request path and be
tested exhaustively. Findings carry offsets only: the matched values must never reach logs or error messages.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

import phonenumbers

PIIKind = Literal["email", "phone", "ssn", "credit_card", "iban", "ip"]
ALL_KINDS: Final[tuple[PIIKind, ...]] = ("email", "phone", "ssn", "credit_card", "iban", "ip")

# Tie-break on equal-length overlaps: the more specific, checksummed kinds win.
_PRIORITY: Final[dict[PIIKind, int]] = {"credit_card": 0, "iban": 1, "ssn": 2, "email": 3, "ip": 4, "phone": 5}
_LABELS: Final[dict[PIIKind, str]] = {k: k.upper() for k in ALL_KINDS}

# Every candidate regex is anchored by a look-behind so a failed attempt inside a long token costs O(1): this keeps
# scanning linear on adversarial inputs (long runs of letters or digits). Where possible the look-behind follows a
# first character class, which lets the regex engine skip ahead to plausible starts (~3x faster on prose).
_EMAIL_RE: Final = re.compile(
    r"[A-Za-z0-9_%+-](?<![\w.%+-][A-Za-z0-9_%+-])(?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![\w-])"
)
_SSN_RE: Final = re.compile(r"\d(?<![\w-]\d)\d\d-(\d\d)-(\d{4})(?![\w-])")
_CARD_RE: Final = re.compile(r"\d(?<![\w-]\d)(?:[ -]?\d){12,18}(?!\w)(?!-\d)")
_IBAN_RE: Final = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)
_IPV4_RE: Final = re.compile(r"\d(?<![\w.]\d)\d{0,2}(?:\.\d{1,3}){3}(?!\w|\.\d)")
_IPV6_RE: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\w)"
)
# Cheap pre-filter for phone numbers: PhoneNumberMatcher costs ~100 us per candidate, so it only sees digit runs
# that could be a phone number (7+ digits), never dates, versions or small numbers.
_PHONE_WINDOW_RE: Final = re.compile(r"[+\d(](?<![\w+][+\d(])[\d \t().\-/]{5,}\d")
_DATE_RE: Final = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}")
_NON_DIGIT_RE: Final = re.compile(r"\D")
_DIGIT_RE: Final = re.compile(r"\d")
_ASCII_DIGITS: Final = b"0123456789"
#: Fewer digits than this in a window: not a phone number (nor worth libphonenumber's time).
_PHONE_MIN_DIGITS: Final = 7
#: The most digits a pattern needs (a card number's 13): counting further is of no use.
_MOST_DIGITS_NEEDED: Final = 13

# ISO 13616 IBAN lengths per country: a length check on top of mod-97 makes random matches ~100x rarer.
_IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finding:
    """One PII span; offsets only, so a Finding is safe to log."""

    kind: PIIKind
    start: int
    end: int


def luhn_ok(digits: str) -> bool:
    """Luhn checksum: separates card numbers from SKUs and order numbers of the same shape."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def count_digits(text: str) -> int:
    """The decimal digits in ``text`` as the patterns' ``\\d`` sees them (Unicode digits too), exact up to
    ``_MOST_DIGITS_NEEDED`` (at least that many above it). The ASCII ones are counted by deleting them from the
    UTF-8 bytes (no other character encodes to those bytes): a regex would step through the text char by char,
    and is run only on non-ASCII text with too few ASCII digits to settle every gate."""
    raw = text.encode("utf-8", "surrogatepass")  # ASCII text: a plain copy; a lone surrogate: no crash
    digits = len(raw) - len(raw.translate(None, _ASCII_DIGITS))
    if digits >= _MOST_DIGITS_NEEDED or text.isascii():
        return digits
    return len(_DIGIT_RE.findall(text))


def _ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA never issues area 000, 666 or 9xx, group 00 or serial 0000: such shapes are test data or IDs."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _card_prefix_ok(digits: str) -> bool:
    """Issuer prefixes in use with their lengths (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
    Maestro): rejects timestamps, ids and ISBNs that happen to pass Luhn (1 in 10 do) -- a 13-digit
    millisecond timestamp led by 2 or 3 is not a card."""
    n = len(digits)
    first = digits[0]
    if first == "4":  # Visa
        return n in (13, 16, 19)
    if first == "2":  # Mastercard's 2-series
        return n == 16 and 2221 <= int(digits[:4]) <= 2720
    if first == "3":  # Amex 34/37 (15), Diners 30/36/38/39 (14-19), JCB 35 (16-19)
        two = digits[:2]
        if two in ("34", "37"):
            return n == 15
        return (two in ("30", "36", "38", "39") and 14 <= n <= 19) or (two == "35" and 16 <= n <= 19)
    if first == "5":  # Mastercard 51-55 (16), Maestro 50/56-59 (12-19)
        return n == 16 if "51" <= digits[:2] <= "55" else 12 <= n <= 19
    if first == "6":  # Discover, UnionPay, Maestro
        return 12 <= n <= 19
    return False


def iban_ok(compact: str) -> bool:
    """Country length plus ISO 7064 mod-97 check of a space-free, upper-case IBAN."""
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


class PIIDetector:
    """Finds PII spans with precompiled regexes plus checksums; phone numbers are delegated to libphonenumber."""

    __slots__ = ("_kinds", "_region")

    def __init__(self, kinds: Iterable[PIIKind] = ALL_KINDS, *, default_region: str | None = None) -> None:
        self._kinds: frozenset[PIIKind] = frozenset(kinds)
        unknown = self._kinds - set(ALL_KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {sorted(unknown)}")
        self._region = (default_region or "US").upper()

    def find(self, text: str) -> list[Finding]:
        """Non-overlapping findings sorted by start; on overlap the longest span wins.

        A pattern runs only on text holding what no match of it can do without: most prompts have no ``@``
        (email) and too few digits for anything else but an IPv6 address (which may be all hex letters). The
        order is kept: phone numbers last, after the kinds whose spans they defer to."""
        found: list[Finding] = []
        kinds = self._kinds
        if "email" in kinds and "@" in text:
            found.extend(self._emails(text))
        digits = count_digits(text)
        if "ssn" in kinds and digits >= 9 and "-" in text:
            found.extend(
                Finding("ssn", m.start(), m.end())
                for m in _SSN_RE.finditer(text)
                if _ssn_ok(m.group()[:3], m.group(1), m.group(2))
            )
        if "credit_card" in kinds and digits >= _MOST_DIGITS_NEEDED:
            found.extend(self._cards(text))
        if "iban" in kinds and digits >= 2:  # the check digits; the rest may be letters
            found.extend(self._ibans(text))
        if "ip" in kinds:
            if digits >= 4 and "." in text:
                found.extend(self._ipv4s(text))
            if ":" in text:
                found.extend(self._ipv6s(text))
        if "phone" in kinds and digits >= _PHONE_MIN_DIGITS:
            found.extend(self._phones(text, found))
        return _resolve_overlaps(found)

    @staticmethod
    def _emails(text: str) -> Iterable[Finding]:
        """The regex run only around each ``@`` (a local part is at most 64 characters, a domain 253): on
        prose it would otherwise try every word as the start of an address (~45 us per 1.4 KB)."""
        ranges: list[list[int]] = []
        at = text.find("@")
        while at != -1:
            lo, hi = max(0, at - 65), min(len(text), at + 256)
            if ranges and lo <= ranges[-1][1]:
                ranges[-1][1] = hi
            else:
                ranges.append([lo, hi])
            at = text.find("@", at + 1)
        for lo, hi in ranges:
            # ``pos`` keeps the look-behind's view of the text before it; ``endpos`` the end checks' after it
            # only at the true end of the text, so a window is widened to a character that ends the domain.
            end = hi
            while end < len(text) and (text[end].isalnum() or text[end] in "-."):
                end += 1
            for m in _EMAIL_RE.finditer(text, lo, min(len(text), end + 1)):
                yield Finding("email", m.start(), m.end())

    @staticmethod
    def _cards(text: str) -> Iterable[Finding]:
        for m in _CARD_RE.finditer(text):
            digits = m.group().replace(" ", "").replace("-", "")
            if _card_prefix_ok(digits) and luhn_ok(digits):
                yield Finding("credit_card", m.start(), m.end())

    @staticmethod
    def _ibans(text: str) -> Iterable[Finding]:
        for m in _IBAN_RE.finditer(text):
            raw = m.group()
            # The greedy match may have swallowed a following upper-case word: retry shorter prefixes at spaces.
            end = len(raw)
            while end > 0:
                if iban_ok(raw[:end].replace(" ", "")):
                    yield Finding("iban", m.start(), m.start() + end)
                    break
                end = raw.rfind(" ", 0, end)

    @staticmethod
    def _ipv4s(text: str) -> Iterable[Finding]:
        for m in _IPV4_RE.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            yield Finding("ip", m.start(), m.end())

    @staticmethod
    def _ipv6s(text: str) -> Iterable[Finding]:
        for m in _IPV6_RE.finditer(text):
            token = m.group()
            if not any(ch not in ":." for ch in token):  # bare "::" is syntax, not an address
                continue
            try:
                ipaddress.IPv6Address(token)
            except ValueError:
                continue
            yield Finding("ip", m.start(), m.end())

    def _phones(self, text: str, taken: list[Finding]) -> Iterable[Finding]:
        """``taken``: what the checksummed kinds found; a digit run inside one of them (a card number) is not
        handed to libphonenumber, whose search inside a long digit run costs ~150 us and would lose anyway."""
        seen: dict[str, list[tuple[int, int]]] = {}  # per call only: no PII cached across requests
        for m in _PHONE_WINDOW_RE.finditer(text):
            span = m.group()
            digits = len(_NON_DIGIT_RE.sub("", span))
            if digits < _PHONE_MIN_DIGITS or _DATE_RE.fullmatch(span):
                continue
            if digits > 11 and span.isdigit():  # a bare run of 12+ digits: an id, a timestamp, not a phone
                continue
            if taken and any(f.start <= m.start() and m.end() <= f.end for f in taken):
                continue
            # One character of context each side lets libphonenumber apply its own "not glued to a word" checks.
            lo, hi = max(0, m.start() - 1), min(len(text), m.end() + 1)
            window = text[lo:hi]
            hits = seen.get(window)
            if hits is None:
                matcher = phonenumbers.PhoneNumberMatcher(window, self._region, leniency=phonenumbers.Leniency.VALID)
                hits = [(pm.start, pm.end) for pm in matcher]
                seen[window] = hits
            for start, end in hits:
                yield Finding("phone", lo + start, lo + end)


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    """Greedy longest-first selection, then sorted by start."""
    if len(found) < 2:
        return found
    found.sort(key=lambda f: (f.start - f.end, _PRIORITY[f.kind], f.start))
    kept: list[Finding] = []  # non-overlapping and sorted by start, hence also by end: bisect is enough
    starts: list[int] = []
    for f in found:
        i = bisect.bisect_right(starts, f.start)
        if (i > 0 and kept[i - 1].end > f.start) or (i < len(kept) and kept[i].start < f.end):
            continue
        kept.insert(i, f)
        starts.insert(i, f.start)
    return kept


_PLACEHOLDER_RE: Final = re.compile(r"\[(?:EMAIL|PHONE|SSN|CREDIT_CARD|IBAN|IP)_\d+\]")


class Redactor:
    """Replaces findings by typed placeholders [EMAIL_1], [PHONE_2], ... numbered per kind; the same value gets the
    same placeholder within one Redactor (one request), so the provider can still tell two people apart."""

    __slots__ = ("_by_value", "_counters", "_detector", "_mapping")

    def __init__(self, detector: PIIDetector, *, after: Redactor | None = None) -> None:
        """``after``: the prompt's redactor, when this one redacts the answer: a value the prompt had keeps
        its placeholder (so restoring gives the user their own value back), a new one is numbered after
        the prompt's and never restored (it is not in the prompt's mapping)."""
        self._detector = detector
        self._mapping: dict[str, str] = {}
        self._by_value: dict[tuple[PIIKind, str], str] = dict(after._by_value) if after is not None else {}
        self._counters: dict[PIIKind, int] = dict(after._counters) if after is not None else {}

    def redact(self, text: str) -> tuple[str, list[Finding]]:
        """Text with PII replaced, plus the findings (offsets into the original text)."""
        findings = self._detector.find(text)
        return (self.replace(text, findings) if findings else text), findings

    def replace(self, text: str, findings: list[Finding]) -> str:
        """Text with ``findings`` (this text's, as ``PIIDetector.find`` gives them) replaced by placeholders."""
        parts: list[str] = []
        pos = 0
        for f in findings:
            parts.append(text[pos : f.start])
            parts.append(self._placeholder(f.kind, text[f.start : f.end]))
            pos = f.end
        parts.append(text[pos:])
        return "".join(parts)

    def placeholder(self, kind: PIIKind, value: str) -> str:
        """The placeholder standing for ``value`` (issued now if it is new)."""
        return self._placeholder(kind, value)

    def _placeholder(self, kind: PIIKind, value: str) -> str:
        key = (kind, value)
        placeholder = self._by_value.get(key)
        if placeholder is None:
            n = self._counters.get(kind, 0) + 1
            self._counters[kind] = n
            placeholder = f"[{_LABELS[kind]}_{n}]"
            self._by_value[key] = placeholder
            self._mapping[placeholder] = value
        return placeholder

    def restore(self, text: str) -> str:
        """Placeholders back to the original values (the answer side); unknown placeholders are left as is."""
        if not self._mapping or "[" not in text:
            return text
        mapping = self._mapping
        return _PLACEHOLDER_RE.sub(lambda m: mapping.get(m.group(), m.group()), text)

    @property
    def mapping(self) -> dict[str, str]:
        """Copy of placeholder -> original; kept in memory only, never persisted or logged."""
        return dict(self._mapping)

    @property
    def max_placeholder_len(self) -> int:
        """Length of the longest issued placeholder: bounds what a stream must hold back."""
        return max((len(p) for p in self._mapping), default=0)

    def is_placeholder_prefix(self, fragment: str) -> bool:
        """Whether fragment is a proper prefix of an issued placeholder (so more deltas may complete it)."""
        return any(len(p) > len(fragment) and p.startswith(fragment) for p in self._mapping)


class StreamRestorer:
    """Restores placeholders in a stream of text deltas whose placeholder may be split across deltas: holds back
    at most the length of the longest possible placeholder prefix at the end of each delta."""

    __slots__ = ("_pending", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, delta: str) -> str:
        """Restored text that is safe to emit now; a trailing partial placeholder is kept for the next delta."""
        buf = self._pending + delta
        limit = self._redactor.max_placeholder_len
        if limit == 0:
            self._pending = ""
            return buf
        cut = len(buf)
        # A placeholder contains a single "[", so only the last "[" in the tail can open an incomplete one.
        bracket = buf.rfind("[", max(0, len(buf) - limit + 1))
        if bracket != -1 and self._redactor.is_placeholder_prefix(buf[bracket:]):
            cut = bracket
        self._pending = buf[cut:]
        return self._redactor.restore(buf[:cut])

    def finish(self) -> str:
        """Flush what was held back (an unfinished placeholder is emitted verbatim)."""
        rest, self._pending = self._pending, ""
        return self._redactor.restore(rest)
