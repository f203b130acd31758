"""Prices of models and the cost of a call, in USD.

The table ships with the package (``prices.yaml``, USD per million tokens by provider type and model)
and is overridden by the configuration's ``pricing`` section, entry by entry: ``pricing.models`` (inline)
over ``pricing.file`` over the shipped file.

How a model id finds its price (``PriceTable.price_of``), first match wins:

1. the exact id in the provider type's table (``azure`` falls back to ``openai``'s table);
2. the id without its snapshot suffix, stripped one suffix at a time (``gpt-4o-mini-2024-07-18`` ->
   ``gpt-4o-mini``, ``claude-3-5-haiku-20241022`` -> ``claude-3-5-haiku``, ``grok-4-0709``,
   ``gemini-2.0-flash-001``, ``...-latest``, ``...-preview-05-20``); Gemini's ``models/`` prefix is dropped,
   and Anthropic ids written with dots (OpenRouter's ``claude-3.5-haiku``) are read with dashes;
3. a vendor-prefixed id (OpenRouter's ``openai/gpt-4o``, ``anthropic/claude-sonnet-4.5``,
   ``google/gemini-2.5-pro``, ``x-ai/grok-4``) through the vendor's table, by steps 1 and 2; on OpenRouter
   a ``:free`` variant costs nothing and other ``:tags`` (``:thinking``) are priced as the base model.

No match: ``None`` (the cost is unknown, never an error). Results are cached per (provider type, model).

What a call costs (``PriceTable.cost``): the gateway's ``Usage`` counts all input in ``input_tokens``, cache
reads (``cached_tokens``) and cache writes (``cache_write_tokens``) included, as OpenAI's ``prompt_tokens``
does (the Anthropic translations add Anthropic's separate figures up the same way). So::

    fresh input * input + cache reads * cached_input + cache writes * cache_write
    + (output - reasoning) * output + reasoning * reasoning        (per million tokens)

with ``reasoning`` at the output price unless the entry gives its own; rounded to 1e-9 USD.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, get_args

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gomodel_proxy.config.schema import ModelPriceConfig, PricingConfig, ProviderType
from gomodel_proxy.core.types import Usage

#: Provider types a price may be given for (the configuration's ``type`` values).
PROVIDER_TYPES: tuple[str, ...] = get_args(ProviderType)
PRICE_FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning")
_REQUIRED = ("input", "output")
#: The price table shipped with the package.
_SHIPPED = Path(__file__).with_name("prices.yaml")
_FILE_KEYS = ("source", "as_of", "currency", "unit", "prices")

_MILLION = Decimal(1_000_000)
_NANO = Decimal("0.000000001")
_ZERO = Decimal(0)
#: One snapshot suffix: a date (2024-07-18, 20241022, 05-20, 0709), a version (001), or a channel tag.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{2}-\d{2}|\d{3,4}|latest|preview|exp|beta)$")
#: Vendor prefixes of aggregator ids (OpenRouter's) -> the provider type whose prices they are.
VENDOR_PREFIXES: dict[str, str] = {
    "openai": "openai", "anthropic": "anthropic", "google": "gemini", "gemini": "gemini",
    "x-ai": "xai", "xai": "xai", "groq": "groq", "azure": "openai",
}
#: Provider types without a table of their own that bill as another's.
_SAME_PRICES_AS = {"azure": "openai"}
#: The lookup cache is cleared when it holds this many ids (model ids come from clients).
_CACHE_LIMIT = 4096


@dataclass(slots=True, frozen=True)
class ModelPrice:
    """USD per million tokens, every figure resolved (no ``None``)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    reasoning: Decimal
    #: The same prices in whole pico-USD per token (fresh input, cached, cache write, output,
    #: reasoning), or ``None`` when one is not whole; derived, for ``cost_nano``.
    pico: tuple[int, int, int, int, int] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        values = [p * _MILLION for p in (self.input, self.cached_input, self.cache_write, self.output, self.reasoning)]
        if all(v == v.to_integral_value() for v in values):
            object.__setattr__(self, "pico", (int(values[0]), int(values[1]), int(values[2]), int(values[3]),
                                              int(values[4])))

    @classmethod
    def of(
        cls, input: Decimal, output: Decimal, cached_input: Decimal | None = None,
        cache_write: Decimal | None = None, reasoning: Decimal | None = None,
    ) -> ModelPrice:
        return cls(
            input=input, output=output,
            cached_input=input if cached_input is None else cached_input,
            cache_write=input if cache_write is None else cache_write,
            reasoning=output if reasoning is None else reasoning,
        )

    @classmethod
    def from_config(cls, entry: ModelPriceConfig) -> ModelPrice:
        def opt(value: float | None) -> Decimal | None:
            return None if value is None else _decimal(value)

        return cls.of(_decimal(entry.input), _decimal(entry.output), opt(entry.cached_input),
                      opt(entry.cache_write), opt(entry.reasoning))

    def cost_nano(self, usage: Usage) -> int:
        """``cost(usage)`` in nano-USD, in integer arithmetic when every price has at most six decimals
        (per million tokens: whole pico-dollars per token), as nearly all do; else through ``cost``."""
        pico = self.pico
        if pico is None:
            return int(self.cost(usage).scaleb(9))
        total_in = max(0, usage.input_tokens)
        cached = min(max(0, usage.cached_tokens), total_in)
        written = min(max(0, usage.cache_write_tokens), total_in - cached)
        output = max(0, usage.output_tokens)
        reasoning = min(max(0, usage.reasoning_tokens), output)
        total = ((total_in - cached - written) * pico[0] + cached * pico[1] + written * pico[2]
                 + (output - reasoning) * pico[3] + reasoning * pico[4])
        return (total + 500) // 1000  # half up, as ``cost`` rounds

    def cost(self, usage: Usage) -> Decimal:
        """The cost of ``usage`` in USD, rounded to 1e-9 (half up)."""
        total_in = max(0, usage.input_tokens)
        cached = min(max(0, usage.cached_tokens), total_in)
        written = min(max(0, usage.cache_write_tokens), total_in - cached)
        fresh = total_in - cached - written
        output = max(0, usage.output_tokens)
        reasoning = min(max(0, usage.reasoning_tokens), output)
        micro = (
            fresh * self.input + cached * self.cached_input + written * self.cache_write
            + (output - reasoning) * self.output + reasoning * self.reasoning
        )
        return (micro / _MILLION).quantize(_NANO, rounding=ROUND_HALF_UP)


_FREE = ModelPrice.of(_ZERO, _ZERO)

Prices = dict[str, dict[str, ModelPrice]]


class PriceTable:
    """Prices by provider type and model id, with the matching rules of this module's docstring."""

    def __init__(self, prices: Mapping[str, Mapping[str, ModelPrice]], source: str = "") -> None:
        self._prices: Prices = {kind: dict(models) for kind, models in prices.items()}
        self.source = source
        self._cache: dict[tuple[str, str], ModelPrice | None] = {}

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def shipped(cls) -> PriceTable:
        """The table shipped with the package (a new object each call; the file is parsed once)."""
        return cls(_shipped_prices(), source="shipped prices.yaml")

    @classmethod
    def from_config(cls, pricing: PricingConfig, base_dir: Path | None = None) -> PriceTable:
        """The shipped table with ``pricing.file`` merged over it, then ``pricing.models``.

        ``pricing.file`` relative to ``base_dir`` (the loader stores it resolved already). Raises
        ``ConfigError`` for a bad file or an inline id whose provider type is unknown.
        """
        from gomodel_proxy.config.loader import ConfigError  # noqa: PLC0415 - config.loader imports this module

        prices = _shipped_prices()
        problems: list[str] = []
        if pricing.file:
            path = Path(pricing.file)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            from_file, problems = load_price_file(path)
            _merge(prices, from_file)
        inline, inline_problems = inline_prices(pricing.models)
        problems += inline_problems
        if problems:
            raise ConfigError(problems)
        _merge(prices, inline)
        return cls(prices, source="shipped prices.yaml" + (f" + {pricing.file}" if pricing.file else "")
                   + (" + pricing.models" if pricing.models else ""))

    # -- lookups ----------------------------------------------------------------------------------
    def price_of(self, provider_type: str, model: str) -> ModelPrice | None:
        """The price of ``model`` served by a provider of ``provider_type``; ``None`` when unknown."""
        key = (provider_type, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        price = self._resolve(provider_type, model)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = price
        return price

    def cost_nano_of(self, provider_type: str, model: str, usage: Usage) -> int | None:
        """``cost_of`` in nano-USD (integer arithmetic), ``None`` when the model's price is unknown."""
        price = self.price_of(provider_type, model)
        return None if price is None else price.cost_nano(usage)

    def cost_of(self, provider_type: str, model: str, usage: Usage) -> Decimal | None:
        """The cost of ``usage`` in USD (1e-9 precision), ``None`` when the model's price is unknown."""
        price = self.price_of(provider_type, model)
        return None if price is None else price.cost(usage)

    def entries(self) -> Iterable[tuple[str, str, ModelPrice]]:
        for kind, models in self._prices.items():
            for model, price in models.items():
                yield kind, model, price

    def _resolve(self, provider_type: str, model: str) -> ModelPrice | None:
        model = model.strip()
        if not model:
            return None
        price = self._match(provider_type, model)
        if price is not None:
            return price
        if provider_type == "openrouter" and ":" in model:
            base, _, tag = model.rpartition(":")
            if tag == "free":
                return _FREE
            return self._resolve(provider_type, base)
        vendor, sep, rest = model.partition("/")
        if sep and rest:
            kind = VENDOR_PREFIXES.get(vendor.lower())
            if kind is not None and kind != provider_type:
                return self._match(kind, rest)
        return None

    def _match(self, provider_type: str, model: str) -> ModelPrice | None:
        """Steps 1 and 2: the exact id, then without snapshot suffixes, in one provider type's table."""
        table = self._prices.get(provider_type)
        fallback = _SAME_PRICES_AS.get(provider_type)
        if fallback is not None:
            return self._match_in(table or {}, provider_type, model) or self._match(fallback, model)
        if table is None:
            return None
        return self._match_in(table, provider_type, model)

    @staticmethod
    def _match_in(table: Mapping[str, ModelPrice], provider_type: str, model: str) -> ModelPrice | None:
        if provider_type == "gemini" and model.startswith("models/"):
            model = model[len("models/"):]
        names = [model]
        if provider_type == "anthropic" and "." in model:
            names.append(model.replace(".", "-"))
        for name in names:
            candidate = name
            while True:
                price = table.get(candidate)
                if price is not None:
                    return price
                shorter = _SNAPSHOT.sub("", candidate)
                if shorter == candidate or not shorter:
                    break
                candidate = shorter
        return None


# -- the shipped table and price files -------------------------------------------------------------------


@functools.cache
def _shipped_parsed() -> tuple[tuple[tuple[str, tuple[tuple[str, ModelPrice], ...]], ...], str]:
    """The shipped file, parsed once (immutable; ``_shipped_prices`` hands out copies)."""
    # Beside this module (package data), read as a plain file: importlib.resources costs ~15 ms of start-up.
    prices, problems = parse_prices(_SHIPPED.read_text(encoding="utf-8"), "gomodel_proxy/billing/prices.yaml",
                                    shipped=True)
    if problems:  # pragma: no cover - the unit tests load the shipped file
        raise RuntimeError("the shipped price table is invalid:\n" + "\n".join(problems))
    frozen = tuple((kind, tuple(models.items())) for kind, models in prices.items())
    return frozen, "gomodel_proxy/billing/prices.yaml"


def _shipped_prices() -> Prices:
    return {kind: dict(models) for kind, models in _shipped_parsed()[0]}


def _merge(into: Prices, over: Mapping[str, Mapping[str, ModelPrice]]) -> None:
    for kind, models in over.items():
        into.setdefault(kind, {}).update(models)


def inline_prices(models: Mapping[str, ModelPriceConfig]) -> tuple[Prices, list[str]]:
    """``pricing.models`` (``provider_type/model`` -> price) as a table, and the ids that name no type."""
    out: Prices = {}
    problems: list[str] = []
    for key, entry in models.items():
        kind, problem = split_inline_id(key)
        if problem:
            problems.append(f"pricing.models.{key}: {problem}")
            continue
        out.setdefault(kind, {})[key.partition("/")[2]] = ModelPrice.from_config(entry)
    return out, problems


def split_inline_id(key: str) -> tuple[str, str]:
    """The provider type of an inline id, and a problem ("" when fine)."""
    kind, sep, model = key.partition("/")
    if not sep or not kind or not model:
        return "", "expected 'provider_type/model', e.g. 'openai/gpt-4o'; write the key that way"
    if kind not in PROVIDER_TYPES:
        return "", (f"'{kind}' is not a provider type{_suggest(kind, PROVIDER_TYPES)}; prices are given by type: "
                    f"{', '.join(PROVIDER_TYPES)}")
    return kind, ""


def load_price_file(path: Path) -> tuple[Prices, list[str]]:
    """The prices in a price file (the shipped file's format) and its problems, each naming file:line and key."""
    source = str(path)
    if not path.is_file():
        return {}, [f"{source}: pricing.file not found; create it or fix pricing.file in the main config"]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return {}, [f"{source}: not UTF-8 text; save the file as UTF-8"]
    return parse_prices(text, source, shipped=False)


def parse_prices(text: str, source: str, *, shipped: bool) -> tuple[Prices, list[str]]:
    """Strict parse of a price file; the shipped one must also carry ``source`` and ``as_of``."""
    try:
        raw: Any = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        return {}, [f"{at}: not valid YAML: {getattr(exc, 'problem', None) or exc}".replace("\n", " ")]
    if not isinstance(raw, Mapping):
        return {}, [f"{source}: the top level must be a mapping with 'prices: {{provider_type: {{model: "
                    "{input, output, ...}}}}'"]
    problems: list[str] = []

    def where(parent: Any, key: Any) -> str:
        lc = getattr(parent, "lc", None)
        try:
            line, col = lc.key(key)  # type: ignore[union-attr]
            return f"{source}:{line + 1}:{col + 1}"
        except (AttributeError, KeyError, IndexError, TypeError):
            return source

    for key in raw:
        if key not in _FILE_KEYS:
            problems.append(f"{where(raw, key)}: {key}: unknown key{_suggest(str(key), _FILE_KEYS)}; "
                            f"accepted here: {', '.join(_FILE_KEYS)}")
    if shipped:
        problems += [f"{source}: {key}: required in the shipped table; add it" for key in ("source", "as_of")
                     if not raw.get(key)]
    currency = raw.get("currency", "USD")
    if currency != "USD":
        problems.append(f"{where(raw, 'currency')}: currency: prices are in USD, got {currency!r}; convert them")
    tables = raw.get("prices")
    if not isinstance(tables, Mapping):
        problems.append(f"{where(raw, 'prices') if 'prices' in raw else source}: prices: expected a mapping of "
                        "provider type to {model: {input, output, ...}}")
        return {}, problems
    out: Prices = {}
    for kind, models in tables.items():
        at = where(tables, kind)
        if kind not in PROVIDER_TYPES:
            problems.append(f"{at}: prices.{kind}: not a provider type{_suggest(str(kind), PROVIDER_TYPES)}; "
                            f"one of {', '.join(PROVIDER_TYPES)}")
            continue
        if not isinstance(models, Mapping):
            problems.append(f"{at}: prices.{kind}: expected a mapping of model id to its prices")
            continue
        for model, entry in models.items():
            price = _entry(entry, f"prices.{kind}.{model}", where(models, model), where, problems)
            if price is not None:
                out.setdefault(str(kind), {})[str(model)] = price
    return out, problems


def _entry(entry: Any, path: str, at: str, where: Any, problems: list[str]) -> ModelPrice | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{at}: {path}: expected a mapping such as {{input: 2.5, output: 10}} (USD per 1M tokens)")
        return None
    before = len(problems)
    values: dict[str, Decimal] = {}
    for name, value in entry.items():
        sub = f"{path}.{name}"
        if name not in PRICE_FIELDS:
            problems.append(f"{where(entry, name)}: {sub}: unknown key{_suggest(str(name), PRICE_FIELDS)}; "
                            f"accepted here: {', '.join(PRICE_FIELDS)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            problems.append(f"{where(entry, name)}: {sub}: expected a non-negative number of USD per million "
                            f"tokens, got {value!r}")
        else:
            values[str(name)] = _decimal(value)
    problems += [f"{at}: {path}: missing required key '{name}'" for name in _REQUIRED if name not in entry]
    if len(problems) != before:
        return None
    return ModelPrice.of(**values)


def _decimal(value: float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# -- the process-wide table ------------------------------------------------------------------------------

_table: PriceTable | None = None


def install(table: PriceTable | None) -> None:
    """Make ``table`` the one ``cost_of`` uses (``None``: the shipped table again)."""
    global _table  # noqa: PLW0603
    _table = table


def price_table() -> PriceTable:
    global _table  # noqa: PLW0603
    if _table is None:
        _table = PriceTable.shipped()
    return _table


def cost_of(provider_type: str, model: str, usage: Usage) -> Decimal | None:
    """The cost of ``usage`` in USD with the installed table (the shipped one by default); ``None``: unknown."""
    return price_table().cost_of(provider_type, model, usage)
