"""The command line: check-config masks every secret, bad configs exit 2, --version, serve's arguments."""

from __future__ import annotations

import hashlib
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from gomodel_proxy import __version__, cli
from gomodel_proxy.config import load_config
from gomodel_proxy.server import runner

SECRETS = {
    "master": "gm-master-Secret-0001",
    "api_key": "sk-proj-ApiKeySecret0002",
    "key_a": "sk-KeyListSecretA0003",
    "key_b": "gsk_KeyListSecretB0004",
    "header": "Bearer hdr-Secret-0005",
    "env_key": "xai-EnvProviderSecret0006",
}

CONFIG = f"""\
server:
  host: 127.0.0.1
  port: 8123
  master_key: {SECRETS["master"]}
providers:
  up:
    type: openai_compatible
    base_url: http://127.0.0.1:9/v1
    api_key: {SECRETS["api_key"]}
    api_keys: [{SECRETS["key_a"]}, {SECRETS["key_b"]}]
    headers:
      X-Upstream-Auth: "{SECRETS["header"]}"
      X-Team: ops
    models: [m1]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No provider keys, overrides or config paths from the machine; the working directory is empty."""
    for name in list(os.environ):
        if name.startswith("GOMODEL") or name.endswith(("_API_KEY", "_BASE_URL")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def masked(value: str) -> str:
    return f"***(sha256:{hashlib.sha256(value.encode()).hexdigest()[:8]})"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_prints_the_resolved_config_with_every_secret_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("XAI_API_KEY", SECRETS["env_key"])
    code, out, err = run_cli(["check-config", "--config", str(path)], capsys)
    assert code == 0
    assert err == ""
    for secret in SECRETS.values():
        assert secret not in out
        assert secret.split()[-1] not in out
    resolved = orjson.loads(out)
    assert resolved["source"] == str(path)
    assert resolved["server"]["host"] == "127.0.0.1"
    assert resolved["server"]["port"] == 8123
    assert resolved["server"]["master_key"] == masked(SECRETS["master"])
    up = resolved["providers"]["up"]
    assert up["api_key"] == masked(SECRETS["api_key"])
    assert up["api_keys"] == [masked(SECRETS["key_a"]), masked(SECRETS["key_b"])]
    assert up["headers"] == {"X-Upstream-Auth": masked(SECRETS["header"]), "X-Team": masked("ops")}
    assert up["base_url"] == "http://127.0.0.1:9/v1"
    assert up["models"] == ["m1"]
    assert up["mock"] is None
    xai = resolved["providers"]["xai"]
    assert xai["api_key"] == masked(SECRETS["env_key"])
    assert xai["base_url"] == "https://api.x.ai/v1"
    assert resolved["cache"]["dir"] == ".cache/gomodel-proxy"
    assert out.endswith("}\n")


def test_unset_secrets_print_as_empty_or_null(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("providers:\n  m:\n    type: mock\n    mock:\n      latency_ms: 3\n")
    code, out, _ = run_cli(["check-config", "--config", str(path)], capsys)
    assert code == 0
    resolved = orjson.loads(out)
    assert resolved["server"]["master_key"] is None
    m = resolved["providers"]["m"]
    assert (m["api_key"], m["api_keys"], m["headers"]) == ("", [], {})
    assert m["mock"]["latency_ms"] == 3.0


def test_mask_secrets_covers_every_secret_field_of_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    data = cli.mask_secrets(load_config(path, env={}))
    assert SECRETS["api_key"] not in str(data) and SECRETS["master"] not in str(data)
    assert data["server"]["workers"] == 1


def test_bad_config_exits_2_with_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(f"server:\n  prot: 1\n  master_key: [{SECRETS['master']}]\n")
    code, out, err = run_cli(["check-config", "--config", str(path)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("gomodel-proxy: invalid configuration:\n")
    assert f"{path}:2:3: server.prot: unknown key (did you mean 'port'?)" in err
    assert f"{path}:3:3: server.master_key: expected a string, got a list" in err
    assert SECRETS["master"] not in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check-config", "--config", str(tmp_path / "absent.yaml")], capsys)
    assert code == 2
    assert out == ""
    assert "absent.yaml: file not found; pass --config PATH, set GOMODEL_CONFIG, or create it" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"gomodel-proxy {__version__}\n"
    assert __version__ == "0.1.0"


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["launch"])
    assert info.value.code == 2
    assert "invalid choice: 'launch'" in capsys.readouterr().err


def test_config_path_from_environment_then_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing given and no conf/config.yaml here: the defaults.
    code, out, _ = run_cli(["check-config"], capsys)
    assert code == 0
    assert orjson.loads(out)["source"] == "<defaults>"
    # conf/config.yaml in the working directory is the default file.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("server:\n  port: 8001\n")
    code, out, _ = run_cli(["check-config"], capsys)
    assert (code, orjson.loads(out)["server"]["port"], orjson.loads(out)["source"]) == (0, 8001, cli.DEFAULT_CONFIG)
    # GOMODEL_CONFIG wins over the default file, --config over both.
    (tmp_path / "env.yaml").write_text("server:\n  port: 8002\n")
    monkeypatch.setenv("GOMODEL_CONFIG", str(tmp_path / "env.yaml"))
    code, out, _ = run_cli(["check-config"], capsys)
    assert orjson.loads(out)["server"]["port"] == 8002
    (tmp_path / "arg.yaml").write_text("server:\n  port: 8003\n")
    code, out, _ = run_cli(["check-config", "--config", str(tmp_path / "arg.yaml")], capsys)
    assert orjson.loads(out)["server"]["port"] == 8003


def test_serve_passes_the_command_line_over_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(config: Any, **kwargs: Any) -> None:
        calls.append({"config": config, **kwargs})

    monkeypatch.setattr(runner, "run", fake_run)
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  host: 127.0.0.2\n  port: 8200\n  workers: 2\n")
    assert cli.main(["--config", str(path)]) == 0
    assert cli.main(["serve", "--config", str(path), "--host", "0.0.0.0", "--port", "9300", "--workers", "3"]) == 0
    first, second = calls
    assert (first["host"], first["port"], first["workers"]) == ("127.0.0.2", 8200, 2)
    assert (second["host"], second["port"], second["workers"]) == ("0.0.0.0", 9300, 3)
    assert isinstance(first["started"], float)
    assert first["config"].server.port == 8200


def test_python_dash_m_entry_point(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["gomodel-proxy", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("gomodel_proxy", run_name="__main__")
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"gomodel-proxy {__version__}"


def test_check_config_shows_service_urls_without_their_passwords() -> None:
    config = load_config(None, env={"GOMODEL__REDIS__URL": "redis://:s3cret-pw@cache:6379/0",
                                    "GOMODEL__RATE_LIMITS__GLOBAL__RPM": "50"})
    masked = cli.mask_secrets(config)
    assert masked["redis"]["url"] == "redis://:***@cache:6379/0"
    assert masked["rate_limits"]["global"]["rpm"] == 50 and "global_" not in masked["rate_limits"]
    assert "s3cret-pw" not in str(masked)


def test_check_config_shows_the_guardrails_file_as_loaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "guardrails.yaml").write_text("""\
guardrails:
  - name: secrets
    type: regex
    priority: 3
    config: {patterns: [{name: aws-key, pattern: "AKIA[0-9A-Z]{16}", action: block}]}
""", encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text("server: {port: 8080}\n", encoding="utf-8")
    code, out, _ = run_cli(["check-config", "--config", str(path)], capsys)
    assert code == 0
    spec = orjson.loads(out)["guardrails"]["specs"][0]
    assert spec["name"] == "secrets" and spec["kind"] == "regex" and spec["priority"] == 3
    assert spec["config"]["patterns"] == [{"name": "aws-key", "pattern": "AKIA[0-9A-Z]{16}", "action": "block"}]
