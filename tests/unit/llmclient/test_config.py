"""The keyring, retry and breaker settings in the strict config: typed, validated, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.schema import CircuitBreakerConfig, KeyConfig, RetryConfig


def load(tmp_path: Path, provider: str) -> object:
    path = tmp_path / "config.yaml"
    path.write_text("providers:\n  up:\n    type: openai\n" + provider, encoding="utf-8")
    return load_config(path, env={"K2": "sk-from-env-2"})


def test_api_keys_take_strings_and_mappings(tmp_path: Path) -> None:
    config = load(tmp_path, """\
    key_strategy: weighted
    api_keys:
      - sk-plain-1
      - {key: "${K2}", weight: 3, rpm: 100}
      - key: sk-mapped-3
        tpm: 50000
""")
    up = config.providers["up"]  # type: ignore[attr-defined]
    assert up.key_strategy == "weighted"
    assert up.api_keys == [
        "sk-plain-1", KeyConfig(key="sk-from-env-2", weight=3.0, rpm=100), KeyConfig(key="sk-mapped-3", tpm=50000),
    ]
    assert up.retry == RetryConfig() and up.circuit_breaker == CircuitBreakerConfig()


def test_retry_and_breaker_settings(tmp_path: Path) -> None:
    config = load(tmp_path, """\
    api_key: sk-one
    retry: {max_attempts: 4, backoff_base_ms: 50, backoff_max_ms: 1000, jitter: false, on_status: [503],
            on_connection_error: false, on_timeout: true}
    circuit_breaker: {failure_threshold: 2, window_s: 5, cooldown_s: 7.5, half_open_requests: 3}
""")
    up = config.providers["up"]  # type: ignore[attr-defined]
    assert up.retry == RetryConfig(max_attempts=4, backoff_base_ms=50, backoff_max_ms=1000, jitter=False,
                                   on_status=[503], on_connection_error=False, on_timeout=True)
    assert up.circuit_breaker == CircuitBreakerConfig(failure_threshold=2, window_s=5, cooldown_s=7.5,
                                                      half_open_requests=3)


def problems(tmp_path: Path, provider: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, provider)
    return "\n".join(caught.value.problems)


def test_bad_values_are_reported_with_place_key_and_fix(tmp_path: Path) -> None:
    text = problems(tmp_path, """\
    key_strategy: random
    api_keys:
      - {key: sk-secret-value-1, weight: 0, rpm: -1}
      - {weight: 2}
      - {key: sk-secret-value-1}
    retry: {max_attempts: 0, on_status: [200, 503], retries: 3}
    circuit_breaker: {failure_threshold: 0}
""")
    assert "config.yaml:4:5: providers.up.key_strategy: 'random' is not accepted; expected one of " \
           "'round_robin', 'weighted'" in text
    assert "providers.up.api_keys[0].weight: must be at least 0.001" in text
    assert "providers.up.api_keys[0].rpm: must be at least 0" in text
    assert "providers.up.api_keys[1]: missing required key 'key'" in text
    assert "providers.up.api_keys[2]: the same key as api_keys[0] (not shown: it is a secret)" in text
    assert "providers.up.retry.max_attempts: must be at least 1" in text
    assert "providers.up.retry.on_status: [200] are not HTTP error statuses" in text
    assert "providers.up.retry.retries: unknown key" in text
    assert "providers.up.circuit_breaker.failure_threshold: must be at least 1" in text
    assert "sk-secret" not in text


def test_a_wrongly_typed_key_entry_is_not_shown(tmp_path: Path) -> None:
    text = problems(tmp_path, """\
    api_keys:
      - {key: [sk-secret-in-a-list]}
      - [sk-other-secret]
""")
    assert "providers.up.api_keys[0].key: expected a string" in text
    assert "providers.up.api_keys[1]: expected a string" in text
    assert "secret" not in text.replace("not shown: the key holds a secret", "")
