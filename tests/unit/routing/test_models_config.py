"""Aliases and virtual models in the main configuration (``models:``), checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.schema import VirtualModelConfig

BASE = "providers:\n  openai: {type: openai, api_key: k}\n  groq: {type: groq, api_key: k}\n"


def load(tmp_path: Path, models: str) -> object:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "models:\n" + models, encoding="utf-8")
    return load_config(path, env={})


def test_aliases_and_virtual_models_load(tmp_path: Path) -> None:
    config = load(tmp_path, """\
  fast: groq/llama-3.3-70b-versatile
  smart:
    strategy: lowest_latency
    targets:
      - {model: openai/gpt-4o, weight: 3}
      - {model: groq/llama-3.3-70b-versatile}
""")
    models = getattr(config, "models")  # noqa: B009
    assert models["fast"] == "groq/llama-3.3-70b-versatile"
    smart = models["smart"]
    assert isinstance(smart, VirtualModelConfig) and smart.strategy == "lowest_latency"
    assert [(t.model, t.weight) for t in smart.targets] == [
        ("openai/gpt-4o", 3.0), ("groq/llama-3.3-70b-versatile", 1.0)]


@pytest.mark.parametrize(("models", "line", "needle"), [
    ("  openai: groq/x\n", 5, "clashes with the provider 'openai'"),
    ("  groq/fast: openai/x\n", 5, "clashes with the provider 'groq'"),
    ("  fast: nobody/x\n", 5, "must be 'provider/model' with a configured provider"),
    ("  smart: {strategy: fastest, targets: [{model: openai/x}]}\n", 5, "'fastest' is not accepted"),
    ("  smart: {targets: [{model: openai/x, weight: 0}]}\n", 5, "must be at least 0.001"),
    ("  smart: {targets: []}\n", 5, "list at least one target"),
])
def test_bad_models_stop_start_up_with_line_and_fix(tmp_path: Path, models: str, line: int, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, models)
    message = str(info.value)
    assert needle in message, message
    assert f"config.yaml:{line}:" in message
