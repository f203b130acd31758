"""The price table and the cost of a call (``billing.pricing``): matching, arithmetic, overrides."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from gomodel_proxy.billing import pricing
from gomodel_proxy.billing.pricing import PRICE_FIELDS, ModelPrice, PriceTable, cost_of
from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.schema import ModelPriceConfig, PricingConfig
from gomodel_proxy.core.types import Usage
from gomodel_proxy.translators.anthropic_chat import usage_to_openai

ENV: dict[str, str] = {}


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.shipped()


def price(value: str) -> Decimal:
    return Decimal(value)


# -- the shipped file ------------------------------------------------------------------------------------


def test_shipped_file_is_package_data_and_every_entry_is_complete() -> None:
    text = resources.files("gomodel_proxy.billing").joinpath("prices.yaml").read_text(encoding="utf-8")
    raw = YAML(typ="safe").load(text)
    assert raw["source"] and raw["as_of"] and raw["currency"] == "USD"
    count = 0
    for kind, models in raw["prices"].items():
        for model, entry in models.items():
            count += 1
            assert {"input", "output"} <= set(entry), f"{kind}/{model}"
            assert set(entry) <= set(PRICE_FIELDS), f"{kind}/{model}"
            assert all(isinstance(v, (int, float)) and v >= 0 for v in entry.values()), f"{kind}/{model}"
    assert count == sum(1 for _ in PriceTable.shipped().entries())


def test_shipped_file_covers_the_common_models(table: PriceTable) -> None:
    wanted = {
        "openai": ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5",
                   "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large"],
        "anthropic": ["claude-sonnet-4-0", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku-latest",
                      "claude-opus-4-0", "claude-opus-4-1"],
        "gemini": ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash"],
        "groq": ["llama-3.3-70b-versatile", "llama-3.1-8b-instant"],
        "xai": ["grok-3", "grok-3-mini", "grok-4"],
    }
    missing = [f"{kind}/{m}" for kind, models in wanted.items() for m in models if table.price_of(kind, m) is None]
    # claude-*-4-0 are Anthropic's aliases of claude-sonnet-4 / claude-opus-4, not matched (no rule for them)
    assert missing == ["anthropic/claude-sonnet-4-0", "anthropic/claude-opus-4-0"]
    assert table.price_of("anthropic", "claude-sonnet-4") is not None
    assert table.price_of("anthropic", "claude-opus-4") is not None


# -- matching --------------------------------------------------------------------------------------------


def test_exact_id(table: PriceTable) -> None:
    p = table.price_of("openai", "gpt-4o-mini")
    assert p == ModelPrice(price("0.15"), price("0.60"), price("0.075"), price("0.15"), price("0.60"))


@pytest.mark.parametrize(("kind", "model", "base"), [
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("openai", "gpt-4.1-2025-04-14", "gpt-4.1"),
    ("openai", "o3-mini-2025-01-31", "o3-mini"),
    ("openai", "gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
    ("openai", "gpt-5-chat-latest", "gpt-5-chat"),
    ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("anthropic", "claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini", "models/gemini-2.5-pro", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
    ("xai", "grok-4-0709", "grok-4"),
    ("xai", "grok-3-mini-latest", "grok-3-mini"),
])
def test_dated_snapshots_match_their_base_model(table: PriceTable, kind: str, model: str, base: str) -> None:
    assert table.price_of(kind, model) is table.price_of(kind, base) is not None


def test_an_exact_snapshot_entry_wins_over_its_base(table: PriceTable) -> None:
    old = table.price_of("openai", "gpt-4o-2024-05-13")
    assert old is not None and old.input == 5 and old.output == 15


@pytest.mark.parametrize(("model", "kind", "base"), [
    ("openai/gpt-4o", "openai", "gpt-4o"),
    ("openai/gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini"),
    ("anthropic/claude-sonnet-4.5", "anthropic", "claude-sonnet-4-5"),
    ("anthropic/claude-3.5-haiku", "anthropic", "claude-3-5-haiku"),
    ("google/gemini-2.5-pro", "gemini", "gemini-2.5-pro"),
    ("x-ai/grok-4", "xai", "grok-4"),
    ("anthropic/claude-3.7-sonnet:thinking", "anthropic", "claude-3-7-sonnet"),
])
def test_openrouter_prefixed_ids_use_the_vendors_price(table: PriceTable, model: str, kind: str, base: str) -> None:
    assert table.price_of("openrouter", model) is table.price_of(kind, base) is not None


def test_openrouter_free_variants_cost_nothing(table: PriceTable) -> None:
    assert table.cost_of("openrouter", "meta-llama/llama-3.3-70b-instruct:free",
                         Usage(input_tokens=10**6, output_tokens=10**6)) == Decimal(0)


def test_a_providers_own_prefixed_id_is_its_own_price(table: PriceTable) -> None:
    groq = table.price_of("groq", "openai/gpt-oss-120b")
    assert groq is not None and groq.input == price("0.15")


def test_azure_bills_as_openai(table: PriceTable) -> None:
    assert table.price_of("azure", "gpt-4.1-mini") is table.price_of("openai", "gpt-4.1-mini")


@pytest.mark.parametrize(("kind", "model"), [
    ("openai", "gpt-99"), ("openai", ""), ("openai", "gpt-4o-audio-preview"), ("openai_compatible", "llama3"),
    ("mock", "echo"), ("openrouter", "unknownvendor/some-model"), ("nosuchtype", "gpt-4o"),
    ("anthropic", "claude-99-20250101"),
])
def test_unknown_models_cost_none(table: PriceTable, kind: str, model: str) -> None:
    assert table.price_of(kind, model) is None
    assert table.cost_of(kind, model, Usage(input_tokens=5, output_tokens=5)) is None


def test_lookups_are_cached() -> None:
    table = PriceTable.shipped()
    first = table.price_of("openai", "gpt-4o-mini-2024-07-18")
    assert table._cache[("openai", "gpt-4o-mini-2024-07-18")] is first
    table._prices.clear()  # a second lookup does not resolve again
    assert table.price_of("openai", "gpt-4o-mini-2024-07-18") is first
    assert table.price_of("openai", "unknown") is None and ("openai", "unknown") in table._cache


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricing, "_CACHE_LIMIT", 3)
    table = PriceTable.shipped()
    for i in range(10):
        table.price_of("openai", f"client-made-up-{i}")
    assert len(table._cache) <= 3


# -- arithmetic ------------------------------------------------------------------------------------------


def test_openai_usage_cached_prompt_tokens_are_billed_at_the_cached_price(table: PriceTable) -> None:
    usage = Usage.from_openai({
        "prompt_tokens": 10_000, "completion_tokens": 2_000,
        "prompt_tokens_details": {"cached_tokens": 4_000},
        "completion_tokens_details": {"reasoning_tokens": 500},
    })
    assert usage is not None
    # gpt-4o-mini: 6000 fresh * 0.15 + 4000 cached * 0.075 + 2000 output (reasoning included) * 0.60
    #            = 900 + 300 + 1200 = 2400 micro-USD
    assert table.cost_of("openai", "gpt-4o-mini-2024-07-18", usage) == Decimal("0.002400000")


def test_anthropic_usage_cache_reads_and_writes(table: PriceTable) -> None:
    raw = {"input_tokens": 1_000, "cache_read_input_tokens": 20_000, "cache_creation_input_tokens": 3_000,
           "output_tokens": 500}
    usage = Usage.from_openai(usage_to_openai(raw))
    assert usage is not None
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (24_000, 20_000, 3_000)
    # claude-sonnet-4-5: 1000 * 3 + 20000 * 0.30 + 3000 * 3.75 + 500 * 15 = 3000 + 6000 + 11250 + 7500 = 27750
    assert table.cost_of("anthropic", "claude-sonnet-4-5-20250929", usage) == Decimal("0.027750000")


def test_cache_write_tokens_read_from_either_place() -> None:
    nested = Usage.from_openai({"prompt_tokens": 10, "prompt_tokens_details": {"cache_write_tokens": 4}})
    flat = Usage.from_openai({"prompt_tokens": 10, "cache_write_tokens": 3})
    assert nested is not None and nested.cache_write_tokens == 4
    assert flat is not None and flat.cache_write_tokens == 3


def test_cache_writes_without_a_write_price_cost_the_input_price(table: PriceTable) -> None:
    usage = Usage(input_tokens=1_000, cache_write_tokens=1_000)
    assert table.cost_of("openai", "gpt-4o", usage) == Decimal("0.002500000")


def test_reasoning_at_its_own_price_when_given() -> None:
    p = ModelPrice.of(Decimal(1), Decimal(2), reasoning=Decimal(4))
    # 100 input * 1 + 60 visible output * 2 + 40 reasoning * 4 = 100 + 120 + 160 = 380
    assert p.cost(Usage(input_tokens=100, output_tokens=100, reasoning_tokens=40)) == Decimal("0.000380000")


def test_embeddings_cost_only_input(table: PriceTable) -> None:
    assert table.cost_of("openai", "text-embedding-3-small", Usage(input_tokens=50_000)) == Decimal("0.001000000")


def test_rounded_to_a_nano_dollar_half_up() -> None:
    p = ModelPrice.of(Decimal("0.0015"), Decimal(0))
    assert p.cost(Usage(input_tokens=1)) == Decimal("0.000000002")  # 1.5e-9 -> 2e-9
    assert p.cost(Usage(input_tokens=1)).as_tuple().exponent == -9


def test_inconsistent_figures_never_go_negative(table: PriceTable) -> None:
    # more cached than input (a provider bug), reasoning above output: clamped, not negative
    usage = Usage(input_tokens=100, output_tokens=10, cached_tokens=500, cache_write_tokens=50,
                  reasoning_tokens=99)
    cost = table.cost_of("openai", "gpt-4o", usage)
    assert cost == Decimal("0.000225000")  # 100 cached * 1.25 + 10 reasoning * 10 = 225


def test_module_level_cost_of_uses_the_installed_table() -> None:
    usage = Usage(input_tokens=1_000_000)
    assert cost_of("openai", "gpt-4o", usage) == Decimal("2.500000000")
    custom = PriceTable({"openai": {"gpt-4o": ModelPrice.of(Decimal(1), Decimal(1))}})
    pricing.install(custom)
    try:
        assert cost_of("openai", "gpt-4o", usage) == Decimal("1.000000000")
    finally:
        pricing.install(None)
    assert cost_of("openai", "gpt-4o", usage) == Decimal("2.500000000")


# -- overrides -------------------------------------------------------------------------------------------

OVERRIDE_FILE = """\
source: our contract
prices:
  openai:
    gpt-4o: {input: 9, output: 9}
    gpt-4o-mini: {input: 8, output: 8, cached_input: 0}
  openai_compatible:
    llama-3.1-8b: {input: 0.01, output: 0.02}
"""


def _write_config(tmp_path: Path, pricing_yaml: str, prices_file: str | None = OVERRIDE_FILE) -> Path:
    if prices_file is not None:
        (tmp_path / "prices.yaml").write_text(prices_file, encoding="utf-8")
    config = tmp_path / "gomodel.yaml"
    config.write_text("features:\n  failover: false\n" + pricing_yaml, encoding="utf-8")
    return config


def test_override_precedence_inline_over_file_over_shipped(tmp_path: Path) -> None:
    path = _write_config(tmp_path, """\
pricing:
  file: prices.yaml
  models:
    openai/gpt-4o: {input: 7, output: 7}
    openrouter/openai/gpt-4.1: {input: 0.5, output: 0.5}
""")
    config = load_config(path, env=ENV)
    assert config.pricing.file == str(tmp_path / "prices.yaml")  # resolved next to the config
    table = PriceTable.from_config(config.pricing)
    assert table.price_of("openai", "gpt-4o-2024-08-06").input == 7  # type: ignore[union-attr]  # inline
    assert table.price_of("openai", "gpt-4o-mini").input == 8  # type: ignore[union-attr]  # file
    assert table.price_of("openai", "gpt-4o-mini").cached_input == 0  # type: ignore[union-attr]
    assert table.price_of("openai", "gpt-4.1").input == 2  # type: ignore[union-attr]  # shipped
    assert table.price_of("openai_compatible", "llama-3.1-8b").output == price("0.02")  # type: ignore[union-attr]
    assert table.price_of("openrouter", "openai/gpt-4.1").input == price("0.5")  # type: ignore[union-attr]
    assert table.price_of("openrouter", "openai/gpt-4o").input == 7  # type: ignore[union-attr]  # via the vendor
    # an inline entry replaces the whole entry: figures left out default to its own input/output price
    assert table.price_of("openai", "gpt-4o").cached_input == 7  # type: ignore[union-attr]
    # the shipped table itself is untouched
    assert PriceTable.shipped().price_of("openai", "gpt-4o").input == price("2.5")  # type: ignore[union-attr]


def test_from_config_without_the_loader(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(OVERRIDE_FILE, encoding="utf-8")
    cfg = PricingConfig(file="p.yaml", models={"anthropic/claude-x": ModelPriceConfig(input=1, output=2)})
    table = PriceTable.from_config(cfg, base_dir=tmp_path)
    assert table.price_of("openai", "gpt-4o").input == 9  # type: ignore[union-attr]
    assert table.price_of("anthropic", "claude-x-20250101").output == 2  # type: ignore[union-attr]


def test_no_pricing_section_is_the_shipped_table(tmp_path: Path) -> None:
    config = load_config(_write_config(tmp_path, "", prices_file=None), env=ENV)
    assert config.pricing == PricingConfig()
    table = PriceTable.from_config(config.pricing)
    assert table.price_of("openai", "gpt-4o") == PriceTable.shipped().price_of("openai", "gpt-4o")


def test_a_bad_override_file_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write_config(tmp_path, "pricing:\n  file: prices.yaml\n", prices_file="""\
prices:
  openai:
    gpt-4o: {input: -1, outptu: 3}
    gpt-4o-mini: cheap
  opneai:
    gpt-4.1: {input: 1, output: 1}
currency: EUR
""")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    problems = info.value.problems
    file = str(tmp_path / "prices.yaml")
    assert any(p.startswith(f"{file}:3:") and "prices.openai.gpt-4o.input" in p and "non-negative" in p
               for p in problems), problems
    assert any(f"{file}:3:" in p and "prices.openai.gpt-4o.outptu: unknown key (did you mean 'output'?)" in p
               for p in problems), problems
    assert any("prices.openai.gpt-4o: missing required key 'output'" in p for p in problems), problems
    assert any(f"{file}:4:" in p and "prices.openai.gpt-4o-mini: expected a mapping" in p for p in problems)
    assert any(f"{file}:5:" in p and "prices.opneai: not a provider type (did you mean 'openai'?)" in p
               for p in problems), problems
    assert any(f"{file}:7:" in p and "currency" in p for p in problems), problems
    # PriceTable.from_config refuses it the same way
    with pytest.raises(ConfigError, match=r"prices\.openai\.gpt-4o\.input"):
        PriceTable.from_config(PricingConfig(file=file))


def test_a_missing_or_broken_override_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: pricing\.file not found"):
        load_config(_write_config(tmp_path, "pricing:\n  file: nope.yaml\n", prices_file=None), env=ENV)
    with pytest.raises(ConfigError, match=r"prices\.yaml:\d+:\d+: not valid YAML"):
        load_config(_write_config(tmp_path, "pricing:\n  file: prices.yaml\n", prices_file="prices: {a: [\n"),
                    env=ENV)
    with pytest.raises(ConfigError, match=r"prices\.yaml: prices: expected a mapping"):
        load_config(_write_config(tmp_path, "pricing:\n  file: prices.yaml\n", prices_file="source: x\n"), env=ENV)


def test_bad_inline_prices_are_config_errors_with_their_place(tmp_path: Path) -> None:
    path = _write_config(tmp_path, """\
pricing:
  models:
    gpt-4o: {input: 1, output: 1}
    opneai/gpt-4o: {input: 1, output: 1}
    openai/gpt-4.1: {input: -2, output: 1}
    openai/o3: {output: 1}
    openai/o1: {input: 1}
    openai/o4-mini: {input: 1, output: 1, cache_read: 1}
  flie: x.yaml
""", prices_file=None)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    problems = info.value.problems
    source = str(path)
    assert any(p.startswith(f"{source}:5:5: pricing.models.gpt-4o: expected 'provider_type/model'")
               for p in problems), problems
    assert any(p.startswith(f"{source}:6:5: pricing.models.opneai/gpt-4o:") and "did you mean 'openai'" in p
               for p in problems), problems
    assert any("pricing.models.openai/gpt-4.1.input: must be at least 0" in p for p in problems), problems
    assert any("pricing.models.openai/o3: missing required key 'input'" in p for p in problems), problems
    assert any("pricing.models.openai/o1: missing required key 'output'" in p for p in problems), problems
    assert any("pricing.models.openai/o4-mini.cache_read: unknown key" in p for p in problems), problems
    assert any("pricing.flie: unknown key (did you mean 'file'?)" in p for p in problems), problems


# -- the integer path the budgets use ---------------------------------------------------------------
_TOKENS = st.integers(min_value=-5, max_value=5_000_000)


@given(st.sampled_from([p for _, _, p in PriceTable.shipped().entries()]),
       _TOKENS, _TOKENS, _TOKENS, _TOKENS, _TOKENS)
def test_cost_nano_equals_the_decimal_cost_for_every_shipped_price(
    price: ModelPrice, fresh: int, output: int, cached: int, written: int, reasoning: int
) -> None:
    usage = Usage(input_tokens=fresh, output_tokens=output, cached_tokens=cached, cache_write_tokens=written,
                  reasoning_tokens=reasoning)
    assert price.pico is not None  # every shipped price is whole in pico-USD per token
    assert price.cost_nano(usage) == int(price.cost(usage).scaleb(9))


def test_a_price_finer_than_a_pico_dollar_a_token_takes_the_decimal_path() -> None:
    fine = ModelPrice.of(Decimal("0.0000001"), Decimal("0.3333333"))
    assert fine.pico is None
    usage = Usage(input_tokens=1_000_000, output_tokens=3)
    # (1e6 x 1e-7 + 3 x 0.3333333) / 1e6 USD = 1,099.9999 nano-USD, rounded half up
    assert fine.cost_nano(usage) == int(fine.cost(usage).scaleb(9)) == 1100
