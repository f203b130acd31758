"""``credentials`` in the configuration: what each source needs, each problem naming the key and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gomodel_proxy.config.loader import ConfigError, load_config


def write(tmp_path: Path, credentials: dict[str, Any], **extra: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"credentials": credentials, "features": {"failover": False}, **extra}))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return info.value.problems


def test_env_is_the_default_and_needs_nothing(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, {}), env={})
    assert config.credentials.source == "env"


def test_file_needs_a_file_resolved_next_to_the_config(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, {"source": "file"}))
    assert "credentials.file: required for credentials.source: file" in problem and "gateway.yaml:" in problem
    (problem,) = problems(write(tmp_path, {"source": "file", "file": "keys.yaml"}))
    assert f"credentials.file: {tmp_path / 'keys.yaml'} not found; create it or fix the path" in problem
    (tmp_path / "keys.yaml").write_text("providers: {}\n")
    config = load_config(write(tmp_path, {"source": "file", "file": "keys.yaml"}), env={})
    assert config.credentials.file == str(tmp_path / "keys.yaml")


def test_postgres_needs_a_master_secret_and_a_postgresql_database(tmp_path: Path) -> None:
    found = problems(write(tmp_path, {"source": "postgres"}))
    assert len(found) == 2
    assert "credentials.master_secret: required for credentials.source: postgres" in found[0]
    assert "credentials.source: postgres keeps the keys in the database: set database.url" in found[1]
    config = load_config(write(tmp_path, {"source": "postgres", "master_secret": "${SECRET}"},
                               database={"url": "postgresql+asyncpg://u@127.0.0.1:5432/db"}), env={"SECRET": "s3"})
    assert config.credentials.master_secret == "s3"


def test_vault_needs_a_token_or_an_approle_and_an_http_url(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, {"source": "vault"}))
    assert "credentials.vault.token: credentials.source: vault needs vault.token, or vault.role_id" in problem
    (problem,) = problems(write(tmp_path, {"source": "vault", "vault": {"role_id": "r"}}))
    assert "credentials.vault.secret_id:" in problem
    (problem,) = problems(write(tmp_path, {"source": "vault", "vault": {"token": "t", "url": "vault:8200"}}))
    assert "credentials.vault.url: 'vault:8200' is not an http(s) URL" in problem
    found = problems(write(tmp_path, {"source": "vault", "vault": {"secret_id": "s"}}))
    assert "credentials.vault.role_id:" in found[0]
    config = load_config(write(tmp_path, {"source": "vault", "vault": {"role_id": "r", "secret_id": "s"}}), env={})
    assert config.credentials.vault.role_id == "r"
