"""The reload's pieces: what changed, what applies live, the merged configuration, the pid file, the CLI's
``reload`` command, the log level; and the deployment files (Kubernetes YAML, nginx)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog
from ruamel.yaml import YAML

from gomodel_proxy.cli import main
from gomodel_proxy.config import load_config
from gomodel_proxy.config.schema import Config
from gomodel_proxy.server.pidfile import default_pid_file, read_pid_file, remove_pid_file, write_pid_file
from gomodel_proxy.server.reload import ReloadResult, changed_keys, classify, merged_config, set_log_level

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def config(tmp_path: Path, text: str, **files: str) -> Config:
    for name, body in files.items():
        (tmp_path / f"{name}.yaml").write_text(body, encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env={})


BASE = """
server: {port: 8080, log_level: info, master_key: sk-one}
providers:
  a: {type: mock}
  b: {type: openai_compatible, base_url: "http://127.0.0.1:1/v1", api_key: sk-a}
models: {fast: a/m}
"""


def test_changed_keys_name_each_setting_never_a_value(tmp_path: Path) -> None:
    old = config(tmp_path, BASE)
    new = config(tmp_path, BASE.replace("8080", "9090").replace("sk-a", "sk-secret-new").replace("a/m", "a/n")
                 + "rate_limits: {global: {rpm: 5}}\n")
    keys = changed_keys(old, new)
    assert sorted(keys) == ["models.fast", "providers.b.api_key", "rate_limits.global.rpm", "server.port"]
    assert not any("sk-secret-new" in k for k in keys)


def test_a_provider_added_or_removed_is_one_key(tmp_path: Path) -> None:
    old = config(tmp_path, BASE)
    assert changed_keys(old, config(tmp_path, BASE)) == []
    added = config(tmp_path, BASE.replace("providers:\n", "providers:\n  c: {type: mock}\n"))
    assert changed_keys(old, added) == ["providers.c"]
    assert changed_keys(added, old) == ["providers.c"]


def test_loaded_files_are_compared_too(tmp_path: Path) -> None:
    old = config(tmp_path, BASE, failover="failover:\n  a/*: [b/*]\n")
    new = config(tmp_path, BASE, failover="failover:\n  a/*: [b/*]\ntriggers: {timeout_ms: 5}\n",
                 guardrails="guardrails:\n  - {name: words, type: regex, priority: 1,\n"
                 "     config: {patterns: [{name: x, pattern: x, action: block}]}}\n")
    keys = changed_keys(old, new)
    assert "failover.triggers.timeout_ms" in keys and "guardrails.specs" in keys


def test_classify_live_parts_and_restarts() -> None:
    changed = ["models.fast", "failover.chains", "guardrails.specs", "rate_limits.default_key.rpm",
               "cache.responses.ttl_s", "cache.responses.max_mb", "server.log_level", "server.port",
               "providers.b.api_key", "providers.b.base_url", "database.url", "redis.url", "features.budgets"]
    parts, restart = classify(changed)
    assert parts == {
        "aliases": ["models.fast"], "failover": ["failover.chains"], "guardrails": ["guardrails.specs"],
        "rate_limits": ["rate_limits.default_key.rpm"], "cache_ttl": ["cache.responses.ttl_s"],
        "log_level": ["server.log_level"],
    }
    assert restart == ["cache.responses.max_mb", "server.port", "providers.b.api_key", "providers.b.base_url",
                       "database.url", "redis.url", "features.budgets"]
    # With a credentials manager, the providers' keys are its to reload.
    parts, restart = classify(["providers.b.api_key", "providers.b.api_keys"], credentials=True)
    assert parts == {"credentials": ["providers.b.api_key", "providers.b.api_keys"]} and restart == []


def test_a_changed_feature_switch_holds_back_its_part() -> None:
    parts, restart = classify(["features.guardrails", "guardrails.specs", "models.fast"])
    assert parts == {"aliases": ["models.fast"]}
    assert restart == ["features.guardrails", "guardrails.specs"]
    parts, restart = classify(["features.failover", "failover_file", "failover.chains"])
    assert parts == {} and set(restart) == {"features.failover", "failover_file", "failover.chains"}


def test_merged_config_takes_only_the_live_parts(tmp_path: Path) -> None:
    old = config(tmp_path, BASE)
    new = config(tmp_path, BASE.replace("8080", "9090").replace("a/m", "a/n").replace("info", "debug")
                 + "cache: {responses: {ttl_s: 7, max_mb: 3}}\nrate_limits: {global: {rpm: 5}}\n")
    parts, restart = classify(changed_keys(old, new))
    merged = merged_config(old, new, parts)
    assert merged.models == {"fast": "a/n"} and merged.server.log_level == "debug"
    assert merged.rate_limits.global_.rpm == 5
    assert merged.cache.responses.ttl_s == 7 and merged.cache.responses.max_mb == old.cache.responses.max_mb
    assert merged.server.port == 8080 and merged.source == old.source
    assert old.models == {"fast": "a/m"} and old.server.log_level == "info"  # the old one is untouched
    assert set(restart) == {"server.port", "cache.responses.max_mb"}
    assert set(changed_keys(merged, new)) == set(restart)


def test_merged_config_takes_provider_keys_for_the_credentials_manager(tmp_path: Path) -> None:
    old = config(tmp_path, BASE)
    new = config(tmp_path, BASE.replace("sk-a", "sk-b"))
    parts, _ = classify(changed_keys(old, new), credentials=True)
    merged = merged_config(old, new, parts)
    assert merged.providers["b"].api_key == "sk-b" and old.providers["b"].api_key == "sk-a"
    assert merged.providers["b"].base_url == old.providers["b"].base_url


def test_result_as_json() -> None:
    result = ReloadResult("applied", "SIGHUP", changed=["models.fast"], needs_restart=["server.port"])
    assert result.as_json() == {"status": "applied", "trigger": "SIGHUP", "changed": ["models.fast"],
                                "needs_restart": ["server.port"], "problems": []}
    result.credentials = "reloaded"
    assert result.as_json()["credentials"] == "reloaded"


def test_set_log_level_applies_to_cached_loggers() -> None:
    saved = structlog.get_config()
    out = io.StringIO()
    try:
        structlog.configure(processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
                            logger_factory=structlog.PrintLoggerFactory(out), cache_logger_on_first_use=True,
                            wrapper_class=structlog.make_filtering_bound_logger(20))
        logger = structlog.get_logger("t")
        logger.debug("hidden")
        logger.info("shown")
        set_log_level("debug", [logger])
        logger.debug("now shown")
        set_log_level("warning", [logger])
        logger.info("hidden again")
        logger.warning("warned")
    finally:
        structlog.configure(**saved)
    lines = out.getvalue().splitlines()
    assert lines == ["event='shown'", "event='now shown'", "event='warned'"]


# -- pid file and the reload command --------------------------------------------------------------------
def test_pid_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "gomodel.pid"
    write_pid_file(path)
    assert read_pid_file(path) == os.getpid()
    remove_pid_file(path, pid=os.getpid() + 1)  # another process's: left alone
    assert path.exists()
    remove_pid_file(path)
    assert not path.exists()
    remove_pid_file(path)  # gone already: fine
    path.write_text("garbage", encoding="ascii")
    with pytest.raises(ValueError, match="not a pid file"):
        read_pid_file(path)


def test_default_pid_file_is_in_the_cache_dir(tmp_path: Path) -> None:
    cfg = config(tmp_path, f"cache: {{dir: {tmp_path / 'c'}}}\n")
    assert default_pid_file(cfg) == tmp_path / "c" / "gomodel.pid"


def test_reload_command_sends_sighup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    pid_file = tmp_path / "gomodel.pid"
    write_pid_file(pid_file, 4242)
    assert main(["reload", "--pid-file", str(pid_file)]) == 0
    assert main(["reload", "--pid", "777"]) == 0
    path = tmp_path / "config.yaml"
    path.write_text(f"cache: {{dir: {tmp_path}}}\n", encoding="utf-8")
    assert main(["reload", "--config", str(path)]) == 0
    assert sent == [(4242, signal.SIGHUP), (777, signal.SIGHUP), (4242, signal.SIGHUP)]
    assert "sent SIGHUP to 4242" in capsys.readouterr().out


def test_reload_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reload", "--pid-file", str(tmp_path / "none.pid")]) == 1
    assert "no pid file" in capsys.readouterr().err
    # A process that is gone (a stale pid file).
    proc = subprocess.Popen(["true"])
    proc.wait()
    write_pid_file(tmp_path / "stale.pid", proc.pid)
    assert main(["reload", "--pid-file", str(tmp_path / "stale.pid")]) == 1
    assert "not running" in capsys.readouterr().err


# -- deployment files ------------------------------------------------------------------------------------
def manifests() -> list[dict[str, Any]]:
    yaml = YAML(typ="safe")
    return [d for d in yaml.load_all((DEPLOY / "kubernetes" / "gomodel-proxy.yaml").read_text()) if d]


def test_kubernetes_manifest_parses_and_is_coherent() -> None:
    docs = manifests()
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret"} <= set(kinds)
    assert all("namespace" not in d["metadata"] for d in docs)
    deployment = kinds["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert deployment["spec"]["replicas"] == 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    secret_refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert "GOMODEL_MASTER_KEY" in secret_refs
    assert any(m["mountPath"] == "/etc/gomodel" for m in container["volumeMounts"])
    # The config in the ConfigMap is valid YAML, points at Redis and PostgreSQL, and gives a grace period
    # shorter than Kubernetes' before it kills the pod.
    gateway = YAML(typ="safe").load(kinds["ConfigMap"]["data"]["config.yaml"])
    assert gateway["redis"]["url"].startswith("redis://") and "postgresql" in gateway["database"]["url"]
    assert spec["terminationGracePeriodSeconds"] > gateway["server"]["shutdown_grace_s"]
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert kinds["Service"]["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_kubernetes_config_is_a_valid_gateway_config(tmp_path: Path) -> None:
    kinds = {d["kind"]: d for d in manifests()}
    data = kinds["ConfigMap"]["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    env = {"GOMODEL_MASTER_KEY": "sk-master", "OPENAI_API_KEY": "sk-openai", "POSTGRES_PASSWORD": "pw",
           "REDIS_PASSWORD": "pw"}
    loaded = load_config(tmp_path / "config.yaml", env=env)
    assert loaded.server.host == "0.0.0.0" and loaded.redis.url and loaded.database.url


def test_nginx_config_mentions_what_streaming_needs() -> None:
    text = (DEPLOY / "nginx" / "gomodel-proxy.conf").read_text()
    for directive in ("proxy_buffering off", "proxy_request_buffering off", "proxy_http_version 1.1",
                      'proxy_set_header Connection ""', "keepalive", "proxy_read_timeout", "X-Request-ID"):
        assert directive in text, directive


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed here (apt-get install nginx to run this check)")
    # A minimal main file around the site config, with every path in tmp_path (no root needed).
    main_conf = tmp_path / "nginx.conf"
    main_conf.write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {DEPLOY / "nginx" / "gomodel-proxy.conf"};
}}
""")
    done = subprocess.run([nginx, "-t", "-c", str(main_conf), "-p", str(tmp_path)], check=False,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
