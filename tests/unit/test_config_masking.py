"""``GET /admin/config``'s masking: a configuration full of distinct secrets, none of which may come out, while
what is no secret (hosts, limits, names, key fingerprints) stays readable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gomodel_proxy.admin.state_routes import _mask_text, _safe_url, mask_config
from gomodel_proxy.config import load_config
from gomodel_proxy.config.schema import Config
from gomodel_proxy.llmclient.keyring import fingerprint

#: Every secret below is distinct, so that a leak names its field.
SECRETS = {
    "master": "sk-master-MASTERSECRET-0001",
    "key_a": "sk-provider-KEYA-0002",
    "key_b": "plainkeyB0003",
    "key_c": "dict-entry-KEYC-0004",
    "anthropic": "sk-ant-ANTHROPIC-0005",
    "header_auth": "Bearer HEADERAUTH0006",
    "header_custom": "customheadervalue0007",
    "base_url_pw": "baseurlpassword0008",
    "base_url_query": "querykey0009",
    "cred_master": "credmastersecret0010",
    "vault_token": "hvs.VAULTTOKEN0011",
    "vault_secret_id": "vaultsecretid0012",
    "db_pw": "dbpassword0013",
    "redis_pw": "redispassword0014",
    "audit_pw": "auditpassword0015",
    "audit_api_key": "auditapikey0016",
    "jwt_key": "-----BEGIN PUBLIC KEY-----JWTPUBLICKEY0017-----END PUBLIC KEY-----",
    "trace_header": "tracingheader0018",
    "trace_query": "tracingtoken0019",
    "sso_secret": "ssoclientsecret0020",
    "url_user": "urlusertoken0021",
}


def _document() -> dict[str, Any]:
    s = SECRETS
    doc: dict[str, Any] = {
        "server": {"master_key": s["master"], "port": 8081},
        "providers": {
            "up": {
                "type": "openai_compatible",
                "base_url": f"https://gw:{s['base_url_pw']}@llm.example.com/v1?api-key={s['base_url_query']}",
                "api_keys": [s["key_a"], s["key_b"], {"key": s["key_c"], "weight": 2, "rpm": 60}],
                "headers": {"Authorization": s["header_auth"], "X-Org": s["header_custom"]},
                "models": ["m"],
            },
            "claude": {"type": "anthropic", "api_key": s["anthropic"], "default_max_tokens": 2048},
        },
        "features": {"admin_api": True},
        "credentials": {"master_secret": s["cred_master"],
                        "vault": {"token": s["vault_token"], "role_id": "role-1", "secret_id": s["vault_secret_id"],
                                  "url": f"https://{s['url_user']}@vault.internal:8200"}},
        "database": {"url": f"postgresql+asyncpg://gomodel:{s['db_pw']}@db.internal:5432/gomodel"},
        "redis": {"url": f"redis://:{s['redis_pw']}@redis.internal:6379/0", "key_prefix": "gomodel:"},
        "audit": {"url": f"mongodb://audit:{s['audit_pw']}@mongo.internal/audit", "api_key": s["audit_api_key"]},
        "auth": {"jwt": {"issuer": "https://idp.example.com", "public_key": s["jwt_key"]}},
        "observability": {"tracing": {
            "headers": {"Authorization": s["trace_header"]},
            "endpoint": f"https://otlp.example.com/v1/traces?token={s['trace_query']}",
        }},
    }
    if "dashboard" in {f.name for f in dataclasses.fields(Config)}:
        doc["dashboard"] = {"sso": {"issuer": "https://idp.example.com", "client_id": "gomodel-dashboard",
                                    "client_secret": s["sso_secret"], "admin_groups": ["ops"]}}
    return doc


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(_document()), encoding="utf-8")
    return load_config(path, env={})


def test_no_secret_comes_out(config: Config) -> None:
    text = orjson.dumps(mask_config(config)).decode()
    leaked = {name: value for name, value in SECRETS.items() if value in text}
    assert not leaked, leaked
    # Nor a recognisable piece of one.
    for value in SECRETS.values():
        core = value.removeprefix("Bearer ").split("-")[-1] if "BEGIN" not in value else "JWTPUBLICKEY0017"
        assert core not in text, core


def test_what_is_no_secret_stays_readable(config: Config) -> None:
    masked = mask_config(config)
    assert masked["server"]["port"] == 8081 and masked["server"]["master_key"] == "***"
    up = masked["providers"]["up"]
    assert up["api_keys"][:2] == [f"fp:{fingerprint(SECRETS['key_a'])}", f"fp:{fingerprint(SECRETS['key_b'])}"]
    assert up["api_keys"][2] == {"key": f"fp:{fingerprint(SECRETS['key_c'])}", "weight": 2.0, "rpm": 60, "tpm": 0}
    assert up["headers"] == {"Authorization": "***", "X-Org": "***"}  # header names stay, values never
    assert up["base_url"].startswith("https://gw:***@llm.example.com/v1?api-key=***")
    assert up["models"] == ["m"] and up["retry"]["max_attempts"] == 2
    assert masked["providers"]["claude"]["api_key"] == f"fp:{fingerprint(SECRETS['anthropic'])}"
    assert masked["providers"]["claude"]["default_max_tokens"] == 2048  # a *token* name, but a number
    assert masked["credentials"]["source"] == "env" and masked["credentials"]["master_secret"] == "***"
    assert masked["credentials"]["vault"]["role_id"] == "role-1" and masked["credentials"]["vault"]["token"] == "***"
    assert masked["database"]["url"] == "postgresql+asyncpg://gomodel:***@db.internal:5432/gomodel"
    assert masked["redis"]["url"] == "redis://:***@redis.internal:6379/0"
    assert masked["redis"]["key_prefix"] == "gomodel:"
    assert masked["audit"]["url"] == "mongodb://audit:***@mongo.internal/audit" and masked["audit"]["api_key"] == "***"
    assert masked["auth"]["jwt"]["issuer"] == "https://idp.example.com" and masked["auth"]["jwt"]["public_key"] == "***"
    assert masked["credentials"]["vault"]["url"] == "https://***@vault.internal:8200"
    assert masked["observability"]["tracing"]["endpoint"] == "https://otlp.example.com/v1/traces?token=***"
    assert masked["audit"]["api_key"] == "***" and masked["server"]["log_level"] == "info"
    assert "source" not in masked  # the route gives it beside the configuration
    if "dashboard" in masked:
        assert masked["dashboard"]["sso"]["client_secret"] == "***"
        assert masked["dashboard"]["sso"]["client_id"] == "gomodel-dashboard"


def test_an_unset_secret_shows_as_unset(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"providers": {"local": {"type": "openai_compatible",
                                                        "base_url": "http://127.0.0.1:11434/v1"}}}))
    masked = mask_config(load_config(path, env={}))
    assert masked["server"]["master_key"] is None and masked["providers"]["local"]["api_key"] == ""
    assert masked["database"]["url"] == ""


@dataclasses.dataclass
class _FutureSection:
    """A section added later whose author forgot ``metadata={"secret": True}``: the name rule still holds."""

    client_id: str = "dashboard"
    client_secret: str = "forgotten-secret-0100"
    refresh_token: str = "forgotten-token-0101"
    db_password: str = "forgotten-password-0102"
    signing_key: str = "forgotten-key-0103"
    extra_headers: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"X-Api-Key": "forgotten-header-0104", "Accept": "application/json"})
    max_tokens: int = 4096
    callback: str = "https://user:forgotten-pw-0105@example.com/cb"


def test_the_name_rule_covers_fields_without_secret_metadata() -> None:
    config = Config()
    config.guardrails.specs = [_FutureSection()]
    text = orjson.dumps(mask_config(config)).decode()
    assert "forgotten" not in text, text
    [spec] = mask_config(config)["guardrails"]["specs"]
    assert spec["client_id"] == "dashboard" and spec["max_tokens"] == 4096
    assert spec["extra_headers"] == {"X-Api-Key": "***", "Accept": "application/json"}


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("https://tok@h/x", "https://***@h/x"),
    ("https://h/x?a=1&access_token=zz&b=2", "https://h/x?a=1&access_token=***&b=2"),
    ("https://h/x?key=zz", "https://h/x?key=***"),
    ("use Bearer abcdefghij please", "use Bearer *** please"),
    ("sk-abcdefghijklmnop", "***"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("plain words, no secret", "plain words, no secret"),
])
def test_free_text_is_cleaned(text: str, expected: str) -> None:
    assert _mask_text(text) == expected


def test_a_providers_base_url_loses_user_and_query() -> None:
    assert _safe_url("https://u:p@llm.example.com:8443/v1?key=abc") == "https://llm.example.com:8443/v1"
    assert _safe_url("http://127.0.0.1:11434/v1") == "http://127.0.0.1:11434/v1"
