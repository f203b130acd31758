"""``content-filter``: refuse prompts (and answers) in blocked categories: hate, harassment, violence, self-harm,
sexual content, illicit activity.

Two backends score text per category (0..1, the highest score found):

- ``lexicon`` (the default): a shipped list of explicit English phrases, ``data/content_lexicon.yaml``. Offline,
  deterministic, microseconds per message; it catches explicit requests and statements and nothing subtler
  (its header lists its limits). It also runs on streamed answers, through a hold-back window.
- ``moderation``: a provider's ``/v1/moderations`` endpoint (OpenAI's shape), called with that provider's own
  credentials through its pass-through client. A real classifier; one network round trip per request, so it
  reviews whole answers only (``review_output``), never streams. A moderation endpoint that fails (an error
  status, a timeout, an answer of another shape) fails the request closed with 503 ``guardrail_unavailable``:
  a filter that lets everything through whenever its classifier is down is no filter.

Decisions and errors name the category and score, never the text that was flagged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
from ruamel.yaml import YAML

from gomodel_proxy.core.errors import GatewayError, GuardrailBlockedError, ServiceUnavailableError
from gomodel_proxy.core.interfaces import PassthroughProvider
from gomodel_proxy.guardrails.interface import BaseGuardrail, GuardedRequest, GuardrailSpec, Stage, TextFilter
from gomodel_proxy.guardrails.request_text import input_slots
from gomodel_proxy.guardrails.window import Match, WindowedFilter

CATEGORIES: Final = ("hate", "harassment", "violence", "self_harm", "sexual", "illicit")
LEXICON_PATH: Final = Path(__file__).parent / "data" / "content_lexicon.yaml"
DEFAULT_THRESHOLD: Final = 0.5
DEFAULT_MODEL: Final = "omni-moderation-latest"
#: How long a moderation call may take before the request fails closed.
DEFAULT_TIMEOUT_S: Final = 10.0
#: Texts longer than this (in all) are scanned by the lexicon in a worker thread, off the event loop.
_INLINE_CHARS: Final = 64 * 1024

#: OpenAI's moderation categories -> this filter's.
OPENAI_CATEGORIES: Final[Mapping[str, str]] = {
    "hate": "hate", "hate/threatening": "hate",
    "harassment": "harassment", "harassment/threatening": "harassment",
    "violence": "violence", "violence/graphic": "violence",
    "self-harm": "self_harm", "self-harm/intent": "self_harm", "self-harm/instructions": "self_harm",
    "sexual": "sexual", "sexual/minors": "sexual",
    "illicit": "illicit", "illicit/violent": "illicit",
}


class ScoreBackend(Protocol):
    """Scores texts: category -> the highest score any text got (categories not seen may be absent)."""

    async def score(self, texts: list[str]) -> dict[str, float]: ...


# -- lexicon --------------------------------------------------------------------------------------------------
class LexiconError(ValueError):
    """The lexicon file is malformed (a shipped file: a bug, caught by the tests)."""


_Entry = tuple[str, str, float]  # category, regex source (expanded, lower case), weight
_ASCII_LOWER: Final = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


@lru_cache(maxsize=4)
def load_lexicon(path: Path = LEXICON_PATH) -> tuple[_Entry, ...]:
    """The entries of a lexicon file, patterns expanded (macros, spaces, apostrophes) and checked."""
    raw: Any = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("categories"), dict):
        raise LexiconError(f"{path}: expected a mapping with 'categories'")
    macros = raw.get("macros") or {}
    entries: list[_Entry] = []
    for category, items in raw["categories"].items():
        if category not in CATEGORIES or not isinstance(items, list):
            raise LexiconError(f"{path}: unknown category {category!r} or not a list")
        for item in items:
            pattern, weight = item.get("pattern"), item.get("weight")
            if (not isinstance(pattern, str) or "\\" in pattern or isinstance(weight, bool)
                    or not isinstance(weight, (int, float)) or not 0 < weight <= 1):
                raise LexiconError(f"{path}: {category}: bad entry {item!r}")
            source = _expand(pattern, macros)
            try:
                groups = re.compile(source).groups
            except re.error as exc:
                raise LexiconError(f"{path}: {category}: {pattern!r} does not compile: {exc}") from None
            if groups:
                raise LexiconError(f"{path}: {category}: {pattern!r} has a capturing group; use (?:...)")
            entries.append((category, source, float(weight)))
    return tuple(entries)


def _expand(pattern: str, macros: Mapping[str, str]) -> str:
    for name, value in macros.items():
        pattern = pattern.replace(f"%{name}%", value)
    return pattern.lower().replace(" ", r"\s+").replace("'", "['\u2019]")


def _lower(text: str) -> str:
    """``text`` in lower case with every offset kept (``str.lower`` may lengthen a few non-ASCII letters)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


class LexiconBackend:
    """Scores with the shipped lexicon (see ``data/content_lexicon.yaml`` for what it does and does not catch).

    All phrases of the blocked categories form one pattern, matched once over the lower-cased text (no
    ``IGNORECASE``: its per-character folding is ~5x slower). Each (category, weight) pair is one group, the
    heaviest first, so ``lastindex`` names what matched and, at one position, the heaviest phrase wins (a
    lighter phrase of another category overlapping it is not seen: a known approximation).
    """

    def __init__(self, categories: Iterable[str] = CATEGORIES, *, path: Path = LEXICON_PATH) -> None:
        wanted = frozenset(categories)
        groups: dict[tuple[str, float], list[str]] = {}
        for category, source, weight in load_lexicon(path):
            if category in wanted:
                groups.setdefault((category, weight), []).append(source)
        order = sorted(groups, key=lambda g: -g[1])
        #: Group number - 1 -> (category, weight).
        self._groups: list[tuple[str, float]] = order
        self._pattern: re.Pattern[str] | None = None
        if order:
            body = "|".join("(" + "|".join(f"(?:{s})" for s in groups[g]) + ")" for g in order)
            self._pattern = re.compile(rf"(?<![\w-])(?:{body})(?![\w-]|['\u2019]\w)")

    def scan_weighted(self, text: str) -> list[tuple[Match, float]]:
        """Every phrase in ``text``, sorted and not overlapping, with its weight; the label is the category."""
        if self._pattern is None:
            return []
        out = []
        for m in self._pattern.finditer(_lower(text)):
            category, weight = self._groups[(m.lastindex or 1) - 1]
            out.append((Match(m.start(), m.end(), category), weight))
        return out

    def scan(self, text: str) -> list[Match]:
        """:meth:`scan_weighted` without weights: a scanner for :class:`WindowedFilter`."""
        return [m for m, _ in self.scan_weighted(text)]

    def score_sync(self, texts: Iterable[str]) -> dict[str, float]:
        """Category -> the highest weight matched in any of ``texts`` (blocking)."""
        scores: dict[str, float] = {}
        for text in texts:
            for m, weight in self.scan_weighted(text):
                if weight > scores.get(m.label, 0.0):
                    scores[m.label] = weight
        return scores

    async def score(self, texts: list[str]) -> dict[str, float]:
        if sum(len(t) for t in texts) > _INLINE_CHARS:
            return await asyncio.to_thread(self.score_sync, texts)
        return self.score_sync(texts)


# -- moderation endpoint --------------------------------------------------------------------------------------
_JSON_HEADERS: Final = b"Content-Type: application/json\r\nAccept: application/json\r\n"
#: Relative to the provider's base URL (``https://api.openai.com/v1`` + this), as pass-through paths are.
_MODERATIONS_PATH: Final = b"/moderations"


class ModerationBackend:
    """Scores with ``POST <provider base_url>/moderations`` (OpenAI's API), the provider's credentials, and fails
    closed: any failure raises ``ServiceUnavailableError`` (503, ``guardrail_unavailable``)."""

    def __init__(self, provider: PassthroughProvider, *, model: str = DEFAULT_MODEL,
                 timeout_s: float = DEFAULT_TIMEOUT_S, guardrail: str = "content-filter") -> None:
        self.provider = provider
        self.model = model
        self.timeout_s = timeout_s
        self.guardrail = guardrail
        self.provider_name = str(getattr(provider, "name", "") or "?")

    def _unavailable(self, why: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"Guardrail '{self.guardrail}' could not check the text: the moderation endpoint of provider "
            f"'{self.provider_name}' {why}.", code="guardrail_unavailable",
        )

    async def score(self, texts: list[str]) -> dict[str, float]:
        texts = [t for t in texts if t]
        if not texts:
            return {}
        payload = orjson.dumps({"model": self.model, "input": texts})
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self.provider.passthrough(b"POST", _MODERATIONS_PATH, _JSON_HEADERS, payload)
                try:
                    raw = await response.read()
                finally:
                    response.release()
        except TimeoutError:
            raise self._unavailable(f"did not answer within {self.timeout_s:g} s") from None
        except GatewayError as exc:
            raise self._unavailable(f"could not be reached ({exc.code or exc.status})") from None
        if response.status != 200:
            raise self._unavailable(f"answered HTTP {response.status}")
        try:
            return parse_moderation(orjson.loads(raw), len(texts))
        except (orjson.JSONDecodeError, ValueError):
            raise self._unavailable("answered in an unknown shape") from None


def parse_moderation(answer: Any, expected: int) -> dict[str, float]:
    """Category -> highest score from OpenAI's moderation answer; ``ValueError`` when it is not that shape."""
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise ValueError("results")
    scores: dict[str, float] = {}
    for result in results:
        category_scores = result.get("category_scores") if isinstance(result, dict) else None
        if not isinstance(category_scores, dict):
            raise ValueError("category_scores")
        for name, value in category_scores.items():
            category = OPENAI_CATEGORIES.get(name)
            if category is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            scores[category] = max(scores.get(category, 0.0), float(value))
    return scores


# -- the guardrail --------------------------------------------------------------------------------------------
class ContentFilter(BaseGuardrail):
    """See the module docstring. ``provider``: the configured provider named by ``config.provider`` (moderation
    backend only); ``backend`` replaces the one the config describes (tests, other classifiers)."""

    def __init__(self, spec: GuardrailSpec, *, provider: object = None, hold_back: int = 64,
                 backend: ScoreBackend | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(spec.name, spec.priority)
        config = spec.config
        self.categories: tuple[str, ...] = tuple(config.get("block_categories") or ())
        thresholds: Mapping[str, float] = config.get("thresholds") or {}
        self.thresholds = {c: float(thresholds.get(c, DEFAULT_THRESHOLD)) for c in self.categories}
        self.scan_output = bool(config.get("scan_output", True))
        self.hold_back = hold_back
        self.kind = str(config.get("backend", "lexicon"))
        if backend is not None:
            self.backend: ScoreBackend = backend
        elif self.kind == "moderation":
            name = config.get("provider")
            if not isinstance(provider, PassthroughProvider):
                raise ValueError(f"guardrail '{spec.name}': provider '{name}' is not configured or has no HTTP API "
                                 "to call /moderations on")
            self.backend = ModerationBackend(provider, model=str(config.get("model") or DEFAULT_MODEL),
                                             timeout_s=timeout_s, guardrail=spec.name)
        else:
            self.backend = LexiconBackend(self.categories)

    def _flagged(self, scores: Mapping[str, float]) -> list[tuple[str, float]]:
        return [(c, scores[c]) for c in self.categories if scores.get(c, 0.0) >= self.thresholds[c]]

    def _block(self, req: GuardedRequest, scores: Mapping[str, float], stage: Stage) -> None:
        flagged = self._flagged(scores)
        if not flagged:
            return
        req.decide(self.name, stage, "block", " ".join(f"category={c} score={s:.2f}" for c, s in flagged))
        what = "prompt" if stage == "input" else "answer"
        raise GuardrailBlockedError(
            self.name, f"the {what} was flagged as {', '.join(c for c, _ in flagged)}", stage=stage
        )

    async def process_input(self, req: GuardedRequest) -> None:
        texts = [t for t in (slot.get() for slot in input_slots(req.api, req.body)) if t]
        if texts:
            self._block(req, await self.backend.score(texts), "input")

    def process_output(self, req: GuardedRequest) -> TextFilter | None:
        if not self.scan_output or not isinstance(self.backend, LexiconBackend):
            return None
        lexicon = self.backend
        weights: dict[Match, float] = {}

        def scan(text: str) -> list[Match]:
            weights.clear()
            found = []
            for m, weight in lexicon.scan_weighted(text):
                if weight >= self.thresholds.get(m.label, 1.1):
                    weights[m] = weight
                    found.append(m)
            return found

        def on_match(m: Match) -> None:
            self._block(req, {m.label: weights.get(m, 1.0)}, "output")

        return WindowedFilter(scan, on_match, hold_back=self.hold_back)

    async def review_output(self, req: GuardedRequest, text: str) -> None:
        if self.scan_output and text and not isinstance(self.backend, LexiconBackend):
            self._block(req, await self.backend.score([text]), "output")
