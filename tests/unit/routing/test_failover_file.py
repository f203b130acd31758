"""``failover.yaml``: the architecture's format, loaded strictly with file, line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.failover_file import load_failover_file

PROVIDERS = ["openai", "openrouter", "anthropic", "azure"]
GOOD = """\
failover:
  openai/gpt-5: [openai/gpt-5-mini, openrouter/gpt-5, anthropic/claude-3-opus]
  openai/*: [openrouter/*, azure/*]      # provider-level, wildcard keeps the model name
triggers:
  status_codes: [429, 500, 502, 503, 504]
  timeout_ms: 30000
"""


def write(tmp_path: Path, text: str, name: str = "failover.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_architecture_s_example_loads(tmp_path: Path) -> None:
    settings, problems = load_failover_file(write(tmp_path, GOOD), PROVIDERS, required=False)
    assert problems == []
    assert settings.chains == {
        "openai/gpt-5": ["openai/gpt-5-mini", "openrouter/gpt-5", "anthropic/claude-3-opus"],
        "openai/*": ["openrouter/*", "azure/*"],
    }
    assert settings.triggers.status_codes == [429, 500, 502, 503, 504]
    assert settings.triggers.timeout_ms == 30000


def test_a_missing_default_file_means_no_chains_but_a_named_one_is_an_error(tmp_path: Path) -> None:
    settings, problems = load_failover_file(tmp_path / "failover.yaml", PROVIDERS, required=False)
    assert problems == [] and settings.chains == {}
    _, problems = load_failover_file(tmp_path / "nope.yaml", PROVIDERS, required=True)
    assert len(problems) == 1 and "nope.yaml" in problems[0] and "not found" in problems[0]


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("failover:\n  openai/gpt-5: [opnai/gpt-5]\n", 2, "no provider named 'opnai' (did you mean 'openai'?)"),
    ("failover:\n  gpt-5: [openai/x]\n", 2, "failover.gpt-5: 'gpt-5' is not 'provider/model'"),
    ("failover:\n  openai/*: [openrouter/gpt-5]\n", 2, "write 'openrouter/*'"),
    ("failover:\n  openai/x: []\n", 2, "non-empty list"),
    ("failover:\n  openai/x: [openai/x]\n", 2, "cannot fall back to itself"),
    ("failover:\n  openai/gpt-*: [azure/*]\n", 2, "only a whole '*'"),
    ("triggers:\n  status_codes: [200]\n", 2, "triggers.status_codes"),
    ("triggers:\n  timeout_ms: -1\n", 2, "triggers.timeout_ms"),
    ("triggers:\n  timeout: 10\n", 2, "triggers.timeout: unknown key (did you mean 'timeout_ms'?)"),
    ("\nfailovers: {}\n", 2, "failovers: unknown key (did you mean 'failover'?)"),
])
def test_bad_entries_are_named_with_file_line_and_fix(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path, text)
    _, problems = load_failover_file(path, PROVIDERS, required=False)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}:"), problems[0]
    assert needle in problems[0]


def main_config(tmp_path: Path, extra: str = "") -> Path:
    return write(tmp_path, "providers:\n  openai: {type: openai, api_key: k}\n"
                 "  groq: {type: groq, api_key: k}\n" + extra, "config.yaml")


def test_the_main_config_loads_failover_yaml_next_to_it(tmp_path: Path) -> None:
    write(tmp_path, "failover:\n  openai/*: [groq/*]\ntriggers:\n  timeout_ms: 500\n")
    config = load_config(main_config(tmp_path), env={})
    assert config.failover is not None and config.failover.chains == {"openai/*": ["groq/*"]}
    assert config.failover.triggers.timeout_ms == 500


def test_failover_file_names_another_file_and_features_failover_turns_it_off(tmp_path: Path) -> None:
    write(tmp_path, "failover:\n  openai/*: [groq/*]\n", "chains.yaml")
    write(tmp_path, "failover:\n  openai/*: [nobody/*]\n")  # the default file, bad, but not read
    config = load_config(main_config(tmp_path, "failover_file: chains.yaml\n"), env={})
    assert config.failover is not None and config.failover.chains == {"openai/*": ["groq/*"]}
    config = load_config(main_config(tmp_path, "features: {failover: false}\nfailover_file: chains.yaml\n"), env={})
    assert config.failover is None


def test_a_bad_failover_file_stops_start_up(tmp_path: Path) -> None:
    write(tmp_path, "failover:\n  openai/*: [nobody/*]\n")
    with pytest.raises(ConfigError) as info:
        load_config(main_config(tmp_path), env={})
    assert f"{tmp_path / 'failover.yaml'}:2:" in str(info.value) and "nobody" in str(info.value)
