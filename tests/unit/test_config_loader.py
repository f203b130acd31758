"""The strict configuration loader: every problem with its place, its key and its fix; env handling.

Every call passes ``env=`` explicitly so that the machine's environment cannot leak in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml.comments import CommentedMap

from gomodel_proxy.config import ConfigError, load_config
from gomodel_proxy.config.loader import _Builder
from gomodel_proxy.config.schema import RESERVED_NAMES, Config, MockConfig, ProviderConfig

FULL = """\
# every section, every kind of value
server:
  host: 0.0.0.0
  port: 9090
  master_key: gm-master-0001
  workers: 4
  body_limit_mb: 1.5
  shutdown_grace_s: 0
  log_level: debug
  log_format: json
features:
  middleware: false
  guardrails: false
  audit_logging: false
  admin_api: false
  failover: true
providers:
  openai:
    type: openai
    api_key: sk-file-openai-key
    models: [gpt-4o-mini, gpt-4.1-nano]
    timeout_s: 120
    connect_timeout_s: 2.5
  local:
    type: openai_compatible
    base_url: http://127.0.0.1:11434/v1
    api_keys: [k1, k2]
    headers:
      X-Org: team-a
    max_connections: 64
    stream_usage: false
  demo:
    type: mock
    models: [mock-chat]
    mock:
      latency_ms: 5
      chunk_delay_ms: 1.5
      tokens_per_chunk: 2
      completion_tokens: 24
      embedding_dimensions: 16
credentials:
  source: env
cache:
  backend: local
  dir: /tmp/gomodel-cache
  model_refresh_s: 60
  model_fetch_timeout_s: 0.5
audit:
  backend: noop
"""


@dataclass
class _Section:
    """A schema-like section with a required key that is not ``type``."""

    name: str
    size: int = 1


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    assert str(info.value).startswith("invalid configuration:\n")
    for problem in info.value.problems:
        assert f"  - {problem}" in str(info.value)
    return info.value.problems


def only_problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    problems = problems_of(tmp_path, text, env)
    assert len(problems) == 1, problems
    return problems[0]


# -- valid configurations ---------------------------------------------------------------------------------


def test_full_config(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path, env={})
    assert config.source == str(path)
    s = config.server
    assert (s.host, s.port, s.master_key, s.workers) == ("0.0.0.0", 9090, "gm-master-0001", 4)
    assert (s.body_limit_mb, s.shutdown_grace_s, s.log_level, s.log_format) == (1.5, 0.0, "debug", "json")
    assert isinstance(s.body_limit_mb, float) and isinstance(s.shutdown_grace_s, float)
    assert config.features.middleware is False and config.features.failover is True
    assert list(config.providers) == ["openai", "local", "demo"]  # configuration order is kept
    openai = config.providers["openai"]
    assert openai == ProviderConfig(
        type="openai", base_url="https://api.openai.com/v1", api_key="sk-file-openai-key",
        models=["gpt-4o-mini", "gpt-4.1-nano"], timeout_s=120.0, connect_timeout_s=2.5,
    )
    local = config.providers["local"]
    assert local.base_url == "http://127.0.0.1:11434/v1"
    assert (local.api_keys, local.headers, local.max_connections, local.stream_usage) == (
        ["k1", "k2"], {"X-Org": "team-a"}, 64, False)
    demo = config.providers["demo"]
    assert demo.base_url == ""
    assert demo.mock == MockConfig(latency_ms=5.0, chunk_delay_ms=1.5, tokens_per_chunk=2, completion_tokens=24,
                                   embedding_dimensions=16)
    assert (config.cache.dir, config.cache.model_refresh_s, config.cache.model_fetch_timeout_s) == (
        "/tmp/gomodel-cache", 60.0, 0.5)
    assert config.credentials.source == "env" and config.audit.backend == "noop"


def test_no_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(None, env={})
    assert config == Config(source="<defaults>")
    assert config.server.port == 8080 and config.providers == {}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_the_defaults(tmp_path: Path, text: str) -> None:
    config = load_config(write(tmp_path, text), env={})
    assert config.server == Config().server
    assert config.providers == {}


def test_repository_configs_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "conf" / "config.yaml", env={})
    assert config.server.host == "127.0.0.1"  # ${GOMODEL_HOST:-127.0.0.1}
    demo = load_config(root / "conf" / "demo.yaml", env={})
    assert demo.providers["demo"].type == "mock"
    assert demo.providers["demo"].mock is not None and demo.providers["demo"].mock.completion_tokens == 24


def test_string_forms_of_scalars_are_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """\
server:
  port: "8081"
  body_limit_mb: "2.5"
  workers: 3
  host: 127
  master_key: sk-test-master
features:
  middleware: "no"
  guardrails: "YES"
  failover: "0"
  admin_api: "1"
providers:
  up:
    type: openai_compatible
    base_url: https://example.test/v1
    timeout_s: 5
    api_key: 12345
"""), env={})
    assert config.server.port == 8081 and config.server.body_limit_mb == 2.5 and config.server.host == "127"
    assert (config.features.middleware, config.features.guardrails, config.features.failover,
            config.features.admin_api) == (False, True, False, True)
    assert config.providers["up"].timeout_s == 5.0 and isinstance(config.providers["up"].timeout_s, float)
    assert config.providers["up"].api_key == "12345"


def test_null_sections_take_their_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\nproviders:\n  m:\n    type: mock\n    mock:\n"), env={})
    assert config.server == Config().server
    assert config.providers["m"].mock is None


# -- every problem: where, which key, how to fix ----------------------------------------------------------


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  host: x\n  prot: 8080\n")
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:3:3: server.prot: unknown key (did you mean 'port'?)")
    assert "accepted here: host, port, master_key" in problem


def test_unknown_top_level_and_nested_keys(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "sever:\n  port: 1\nproviders:\n  up:\n    type: mock\n    modles: []\n")
    assert len(problems) == 2
    assert re.search(r"config\.yaml:1:1: sever: unknown key \(did you mean 'server'\?\)", problems[0])
    assert re.search(r"config\.yaml:6:5: providers\.up\.modles: unknown key \(did you mean 'models'\?\)",
                     problems[1])


def test_unknown_key_without_a_close_match(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "cache:\n  zzzzzz: 1\n")
    assert ":2:3: cache.zzzzzz: unknown key; accepted here: backend, dir, model_refresh_s" in problem
    assert "did you mean" not in problem


def test_internal_fields_are_not_keys(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "source: elsewhere\n")
    assert ":1:1: source: unknown key" in problem
    assert "source" not in problem.split("accepted here: ")[1]


@pytest.mark.parametrize(
    ("text", "where", "key", "message"),
    [
        ("features:\n  failover: maybe\n", "2:3", "features.failover", "expected true or false, got 'maybe'"),
        ("features:\n  failover: 1.5\n", "2:3", "features.failover", "expected true or false, got 1.5"),
        ("server:\n  port: many\n", "2:3", "server.port", "expected a whole number, got 'many'"),
        ("server:\n  port: 80.5\n", "2:3", "server.port", "expected a whole number, got 80.5"),
        ("server:\n  port: true\n", "2:3", "server.port", "expected a whole number, got True"),
        ("server:\n  body_limit_mb: big\n", "2:3", "server.body_limit_mb", "expected a number, got 'big'"),
        ("server:\n  body_limit_mb: false\n", "2:3", "server.body_limit_mb", "expected a number, got False"),
        ("server:\n  host: [a, b]\n", "2:3", "server.host", "expected a string, got a list"),
        ("server:\n  host: {a: 1}\n", "2:3", "server.host", "expected a string, got a mapping"),
        ("server:\n  host: true\n", "2:3", "server.host", "expected a string, got bool True"),
        ("server:\n  host:\n    - a\n", "2:3", "server.host", "expected a string, got a list"),
        ("providers:\n  up:\n    type: mock\n    models: gpt\n", "4:5", "providers.up.models",
         "expected a list, got str 'gpt'"),
        ("providers:\n  up:\n    type: mock\n    models: [a, [b]]\n", "4:17", "providers.up.models[1]",
         "expected a string, got a list"),
        ("providers: [a]\n", "1:1", "providers", "expected a mapping, got a list"),
        ("server: 5\n", "1:1", "server", "expected a mapping of settings, got int 5"),
        ("providers:\n  up: oops\n", "2:3", "providers.up", "expected a mapping of settings, got str 'oops'"),
    ],
)
def test_wrong_type_for_each_kind(tmp_path: Path, text: str, where: str, key: str, message: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem == f"{tmp_path / 'config.yaml'}:{where}: {key}: {message}"


def test_null_where_a_value_is_required(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  port: null\n")
    assert problem.endswith(":2:3: server.port: expected a whole number, got None")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("server:\n  log_level: verbose\n", "server.log_level",
         "'verbose' is not accepted; expected one of 'debug', 'info', 'warning', 'error'"),
        ("server:\n  log_format: jsonl\n", "server.log_format",
         "'jsonl' is not accepted; expected one of 'auto', 'json', 'console' (did you mean 'json'?)"),
        ("providers:\n  up:\n    type: opnai\n", "providers.up.type",
         "'opnai' is not accepted; expected one of 'openai', 'groq', 'xai', 'openrouter', 'openai_compatible', "
         "'anthropic', 'gemini', 'azure', 'mock' (did you mean 'openai'?)"),
        ("cache:\n  backend: memcached\n", "cache.backend",
         "'memcached' is not accepted; expected one of 'local', 'redis'"),
        ("credentials:\n  source: keychain\n", "credentials.source",
         "'keychain' is not accepted; expected one of 'env', 'file', 'postgres', 'vault'"),
    ],
)
def test_bad_literal_values(tmp_path: Path, text: str, key: str, message: str) -> None:
    problem = only_problem(tmp_path, text)
    assert re.match(r".*config\.yaml:\d+:\d+: ", problem)
    assert problem.endswith(f": {key}: {message}")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("server:\n  port: 0\n", "server.port", "must be at least 1, got 0"),
        ("server:\n  port: 65536\n", "server.port", "must be at most 65535, got 65536"),
        ("server:\n  workers: 257\n", "server.workers", "must be at most 256, got 257"),
        ("server:\n  body_limit_mb: 0\n", "server.body_limit_mb", "must be at least 0.001, got 0.0"),
        ("server:\n  shutdown_grace_s: -1\n", "server.shutdown_grace_s", "must be at least 0, got -1.0"),
        ("cache:\n  model_refresh_s: 0.5\n", "cache.model_refresh_s", "must be at least 1, got 0.5"),
        ("providers:\n  m:\n    type: mock\n    mock:\n      embedding_dimensions: 9000\n",
         "providers.m.mock.embedding_dimensions", "must be at most 8192, got 9000"),
        ("providers:\n  m:\n    type: mock\n    mock:\n      tokens_per_chunk: 0\n",
         "providers.m.mock.tokens_per_chunk", "must be at least 1, got 0"),
    ],
)
def test_out_of_range_numbers(tmp_path: Path, text: str, key: str, message: str) -> None:
    problem = only_problem(tmp_path, text)
    assert re.match(r".*config\.yaml:\d+:\d+: ", problem)
    assert problem.endswith(f": {key}: {message}")


def test_a_value_of_the_wrong_type_is_not_also_out_of_range(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  workers: many\n")
    assert problem.endswith("server.workers: expected a whole number, got 'many'")


def test_missing_type(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  local:\n    base_url: http://127.0.0.1:8000/v1\n")
    assert problem == (
        f"{tmp_path / 'config.yaml'}:2:3: providers.local: missing required key 'type' "
        "(one of openai, groq, xai, openrouter, openai_compatible, anthropic, gemini, azure, mock)"
    )


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_reserved_provider_names(tmp_path: Path, name: str) -> None:
    problem = only_problem(tmp_path, f"providers:\n  ok:\n    type: mock\n  {name}:\n    type: mock\n")
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:4:3: providers.{name}: '{name}' is reserved")
    assert problem.endswith("rename the provider")
    assert "admin, health, healthz, live, metrics, ready, v1, v2" in problem


def test_reserved_names_are_exactly_the_gateway_routes() -> None:
    assert frozenset({"v1", "v2", "admin", "health", "healthz", "ready", "live", "metrics"}) == RESERVED_NAMES


@pytest.mark.parametrize("name", ["Upper", "-dash-first", "_under", "has space", "dot.ted", "x" * 64, "ünï"])
def test_bad_provider_names(tmp_path: Path, name: str) -> None:
    problem = only_problem(tmp_path, f'providers:\n  "{name}":\n    type: mock\n')
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:2:3: providers.{name}: provider names are lower-case")
    assert problem.endswith("rename it")


@pytest.mark.parametrize("name", ["a", "0", "my-provider_2", "x" * 63])
def test_good_provider_names(tmp_path: Path, name: str) -> None:
    config = load_config(write(tmp_path, f'providers:\n  "{name}":\n    type: mock\n'), env={})
    assert list(config.providers) == [name]


def test_openai_compatible_needs_a_base_url(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  local:\n    type: openai_compatible\n    api_key: k\n")
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:2:3: providers.local.base_url: required for type "
                              "'openai_compatible'")
    assert "e.g. http://127.0.0.1:8000/v1" in problem


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://host/v1", "http://", "https:// spaced", "localhost"])
def test_invalid_base_url(tmp_path: Path, url: str) -> None:
    problem = only_problem(tmp_path, f'providers:\n  local:\n    type: openai_compatible\n    base_url: "{url}"\n')
    assert problem == (f"{tmp_path / 'config.yaml'}:4:5: providers.local.base_url: '{url}' is not an http(s) URL; "
                       "write it as https://host[:port]/path")


def test_a_base_url_of_the_wrong_type_is_reported_once(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  local:\n    type: openai_compatible\n    base_url: [x]\n")
    assert problem.endswith(":4:5: providers.local.base_url: expected a string, got a list")


@pytest.mark.parametrize("kind", ["openai", "groq", "xai", "openrouter"])
def test_known_types_get_their_default_base_url(tmp_path: Path, kind: str) -> None:
    config = load_config(write(tmp_path, f"providers:\n  p:\n    type: {kind}\n"), env={})
    assert config.providers["p"].base_url.startswith("https://")
    overridden = load_config(write(tmp_path, f"providers:\n  p:\n    type: {kind}\n    base_url: http://proxy:1/v1\n"),
                             env={})
    assert overridden.providers["p"].base_url == "http://proxy:1/v1"


def test_mock_section_on_a_non_mock_provider(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  up:\n    type: openai\n    mock:\n      latency_ms: 5\n")
    assert problem == (f"{tmp_path / 'config.yaml'}:4:5: providers.up.mock: only a provider of type 'mock' "
                       "takes mock settings; remove it")


def test_base_url_on_a_mock_provider(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  m:\n    type: mock\n    base_url: http://x/v1\n")
    assert problem == (f"{tmp_path / 'config.yaml'}:4:5: providers.m.base_url: a mock provider has no upstream; "
                       "remove base_url")


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        ("server:\n  port: [1\n", "3:1", "not valid YAML: "),
        ("server:\n\thost: x\n", "2:1", "not valid YAML: found character '\\t' that cannot start any token"),
        ("server:\n  port: 1\n  port: 2\n", "3:3", 'not valid YAML: found duplicate key "port"'),
        ("a: b: c\n", "1:5", "not valid YAML: mapping values are not allowed here"),
        ('server:\n  host: "a\x01b"\n', "2:11", "not valid YAML: special characters are not allowed"),
    ],
)
def test_invalid_yaml(tmp_path: Path, text: str, where: str, fragment: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:{where}: {fragment}")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"server:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [f"{path}:2:12: not UTF-8 text; save the file as UTF-8"]


@pytest.mark.parametrize("text", ["- server\n- providers\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    problem = only_problem(tmp_path, text)
    assert problem == (f"{tmp_path / 'config.yaml'}: the top level must be a mapping of sections "
                       "(server, providers, ...)")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", env={})
    assert info.value.problems == [
        f"{tmp_path / 'nope.yaml'}: file not found; pass --config PATH, set GOMODEL_CONFIG, or create it"
    ]


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path, env={})


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """\
server:
  prot: 8080
  port: 99999
  log_level: verbose
features:
  failover: maybe
providers:
  v1:
    type: mock
  Bad:
    type: mock
  local:
    type: openai_compatible
  remote:
    type: openai
    mock: {}
  notype:
    base_url: http://x/v1
  badtype:
    type: opnai
cache:
  model_refresh_s: 0
""")
    expected = [
        ":2:3: server.prot: unknown key",
        ":3:3: server.port: must be at most 65535",
        ":4:3: server.log_level: 'verbose' is not accepted",
        ":6:3: features.failover: expected true or false",
        ":17:3: providers.notype: missing required key 'type'",
        ":20:5: providers.badtype.type: 'opnai' is not accepted",
        ":22:3: cache.model_refresh_s: must be at least 1",
        ":8:3: providers.v1: 'v1' is reserved",
        ":10:3: providers.Bad: provider names are lower-case",
        ":12:3: providers.local.base_url: required for type 'openai_compatible'",
        ":16:5: providers.remote.mock: only a provider of type 'mock' takes mock settings",
    ]
    assert len(problems) == len(expected), problems
    for fragment, problem in zip(expected, problems, strict=True):
        assert fragment in problem
        assert problem.startswith(str(tmp_path / "config.yaml") + ":")


# -- ${VAR} expansion -------------------------------------------------------------------------------------


def test_variable_expansion(tmp_path: Path) -> None:
    text = """\
server:
  host: ${HOST}
  port: ${PORT:-8181}
  master_key: "${MASTER}"
features:
  failover: ${FAILOVER:-false}
providers:
  up:
    type: openai_compatible
    base_url: http://${UP_HOST:-127.0.0.1}:${UP_PORT:-8000}/v1
    api_key: ${UP_KEY}
    api_keys: ["${K1}", "${K2:-}"]
    headers:
      X-Team: ${TEAM:-core}
"""
    env = {"HOST": "10.0.0.1", "MASTER": "m-secret", "UP_PORT": "9999", "UP_KEY": "key-1", "K1": "a"}
    config = load_config(write(tmp_path, text), env=env)
    assert config.server.host == "10.0.0.1"
    assert config.server.port == 8181
    assert config.server.master_key == "m-secret"
    assert config.features.failover is False
    up = config.providers["up"]
    assert up.base_url == "http://127.0.0.1:9999/v1"
    assert (up.api_key, up.api_keys, up.headers) == ("key-1", ["a", ""], {"X-Team": "core"})


def test_set_variable_wins_over_default_even_when_empty(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\n  host: ${H:-fallback}\n"), env={"H": ""})
    assert config.server.host == ""


def test_unset_variable_without_default_is_empty(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server:\n  host: ${NOT_SET_ANYWHERE}x\n"), env={})
    assert config.server.host == "x"


def test_expanded_value_is_validated_like_a_written_one(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "server:\n  port: ${PORT}\n", env={"PORT": "eighty"})
    assert problem.endswith(":2:3: server.port: expected a whole number, got 'eighty'")


def test_text_that_only_looks_like_a_variable_is_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'server:\n  host: "$HOST ${1BAD} ${"\n'), env={"HOST": "x"})
    assert config.server.host == "$HOST ${1BAD} ${"


# -- GOMODEL__ overrides ----------------------------------------------------------------------------------


def test_override_sets_a_key_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 8080\n  host: a\n")
    config = load_config(path, env={"GOMODEL__SERVER__PORT": "9000", "GOMODEL__SERVER__LOG_LEVEL": "debug"})
    assert config.server.port == 9000
    assert config.server.log_level == "debug"
    assert config.server.host == "a"


def test_overrides_without_a_file_can_build_a_provider() -> None:
    env = {
        "GOMODEL__PROVIDERS__LOCAL__TYPE": "openai_compatible",
        "GOMODEL__PROVIDERS__LOCAL__BASE_URL": "http://127.0.0.1:8000/v1",
        "GOMODEL__PROVIDERS__LOCAL__MODELS": "[a, b]",
        "GOMODEL__PROVIDERS__LOCAL__STREAM_USAGE": "false",
        "GOMODEL__FEATURES__ADMIN_API": "true",
        "GOMODEL_MASTER_KEY": "sk-test-master",
    }
    config = load_config(None, env=env)
    local = config.providers["local"]
    assert (local.type, local.base_url, local.models, local.stream_usage) == (
        "openai_compatible", "http://127.0.0.1:8000/v1", ["a", "b"], False)
    assert config.features.admin_api is True


def test_override_problem_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 8080\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"GOMODEL__SERVER__PORT": "0", "GOMODEL__SERVER__WORKERS": "lots"})
    assert info.value.problems == [
        "environment GOMODEL__SERVER__PORT: server.port: must be at least 1, got 0",
        "environment GOMODEL__SERVER__WORKERS: server.workers: expected a whole number, got 'lots'",
    ]


def test_override_values_that_are_not_yaml_are_taken_as_text() -> None:
    config = load_config(None, env={"GOMODEL__SERVER__MASTER_KEY": "a: b: [c", "GOMODEL__SERVER__HOST": "["})
    assert config.server.master_key == "a: b: [c"
    assert config.server.host == "["


def test_override_edge_cases(tmp_path: Path) -> None:
    path = write(tmp_path, "server: 8080\n")  # a scalar where the override needs a mapping: replaced
    env = {"GOMODEL__SERVER__HOST": "", "GOMODEL__": "x", "GOMODEL____": "y", "GOMODEL__SERVER____PORT": "81",
           "gomodel__server__port": "1", "OTHER__SERVER__PORT": "2"}
    config = load_config(path, env=env)
    assert config.server.host == ""
    assert config.server.port == 81


def test_override_of_an_unknown_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"GOMODEL__SERVER__PROT": "1"})
    assert info.value.problems == [
        "environment GOMODEL__SERVER__PROT: server.prot: unknown key (did you mean 'port'?); accepted here: "
        "host, port, master_key, workers, body_limit_mb, shutdown_grace_s, log_level, log_format"
    ]


# -- providers registered from the environment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "base_url"),
    [("openai", "https://api.openai.com/v1"), ("groq", "https://api.groq.com/openai/v1"),
     ("xai", "https://api.x.ai/v1"), ("openrouter", "https://openrouter.ai/api/v1")],
)
def test_api_key_in_the_environment_registers_the_provider(kind: str, base_url: str) -> None:
    config = load_config(None, env={f"{kind.upper()}_API_KEY": f" {kind}-key "})
    assert config.providers == {kind: ProviderConfig(type=kind, base_url=base_url, api_key=f"{kind}-key")}  # type: ignore[arg-type]
    moved = load_config(None, env={f"{kind.upper()}_API_KEY": "k", f"{kind.upper()}_BASE_URL": "http://proxy:8/v1"})
    assert moved.providers[kind].base_url == "http://proxy:8/v1"


def test_all_four_from_the_environment_after_the_file_providers(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  demo:\n    type: mock\n")
    env = {"OPENAI_API_KEY": "a", "GROQ_API_KEY": "b", "XAI_API_KEY": "c", "OPENROUTER_API_KEY": "d",
           "MISTRAL_API_KEY": "e", "OPENAI_COMPATIBLE_API_KEY": "f", "MOCK_API_KEY": "g"}
    config = load_config(path, env=env)
    assert list(config.providers) == ["demo", "openai", "groq", "xai", "openrouter"]


def test_environment_does_not_replace_a_file_provider_of_that_name(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  openai:\n    type: openai_compatible\n    base_url: http://mine:1/v1\n"
                           "    api_key: file-key\n")
    config = load_config(path, env={"OPENAI_API_KEY": "env-key", "OPENAI_BASE_URL": "http://env:2/v1"})
    assert config.providers == {
        "openai": ProviderConfig(type="openai_compatible", base_url="http://mine:1/v1", api_key="file-key")
    }


def test_blank_api_key_registers_nothing() -> None:
    assert load_config(None, env={"OPENAI_API_KEY": "  ", "GROQ_BASE_URL": "http://x/v1"}).providers == {}


def test_bad_base_url_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"GROQ_API_KEY": "k", "GROQ_BASE_URL": "groq.internal"})
    assert info.value.problems == [
        "environment GROQ_BASE_URL: providers.groq.base_url: 'groq.internal' is not an http(s) URL; "
        "write it as https://host[:port]/path"
    ]


def test_master_key_from_the_environment(tmp_path: Path) -> None:
    assert load_config(None, env={"GOMODEL_MASTER_KEY": "gm-env"}).server.master_key == "gm-env"
    assert load_config(None, env={"GOMODEL_MASTER_KEY": ""}).server.master_key is None
    path = write(tmp_path, "server:\n  master_key: gm-file\n")
    assert load_config(path, env={"GOMODEL_MASTER_KEY": "gm-env"}).server.master_key == "gm-file"


def test_process_environment_is_used_when_env_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMODEL__SERVER__PORT", "9321")
    assert load_config(None).server.port == 9321
    assert load_config(None, env={}).server.port == 8080


# -- secrets stay out of messages -------------------------------------------------------------------------


def test_secret_values_never_appear_in_problems(tmp_path: Path) -> None:
    text = """\
server:
  master_key: [sk-master-secret-000]
providers:
  up:
    type: openai
    api_keys: sk-list-secret-111
    headers: "Bearer sk-header-secret-222"
    api_key: {nested: sk-nested-secret-333}
"""
    problems = problems_of(tmp_path, text)
    assert len(problems) == 4
    joined = "\n".join(problems)
    for secret in ("sk-master-secret-000", "sk-list-secret-111", "sk-header-secret-222", "sk-nested-secret-333"):
        assert secret not in joined
    assert "providers.up.api_keys: expected a list, got str (not shown: the key holds a secret)" in joined
    assert "providers.up.headers: expected a mapping, got str (not shown: the key holds a secret)" in joined


def test_non_secret_values_are_still_shown(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "providers:\n  up:\n    type: mock\n    models: chat-model\n")
    assert "got str 'chat-model'" in problem


def test_override_that_creates_a_provider_is_named_in_its_problems() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"GOMODEL__PROVIDERS__EDGE__TYPE": "openai_compatible"})
    assert info.value.problems == [
        "environment GOMODEL__PROVIDERS__EDGE__TYPE: providers.edge.base_url: required for type "
        "'openai_compatible'; set it to the server's OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1"
    ]


def test_keys_merged_from_an_anchor_are_placed_at_their_mapping(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "providers:\n  a: &p\n    type: mock\n    base_url: http://x/v1\n"
                                     "  b:\n    <<: *p\n    models: [m]\n")
    assert [p.split(": ", 2)[:2] for p in problems] == [
        [f"{tmp_path / 'config.yaml'}:4:5", "providers.a.base_url"],
        [f"{tmp_path / 'config.yaml'}:6:5", "providers.b.base_url"],
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  host: null\n", "server.host: expected a string, got nothing (null)"),
        ("providers:\n  m:\n    type: mock\n    models: ~\n",
         "providers.m.models: expected a list, got nothing (null)"),
        ("providers:\n  m:\n    type: mock\n    headers:\n",
         "providers.m.headers: expected a mapping, got nothing (null)"),
    ],
)
def test_null_where_a_string_list_or_mapping_is_required(tmp_path: Path, text: str, message: str) -> None:
    assert only_problem(tmp_path, text).endswith(message)


def test_builder_reports_any_missing_required_key() -> None:
    """The builder is generic over the schema's dataclasses; a required key other than ``type`` has no hint."""
    builder = _Builder("<test>", {})
    assert builder.build(_Section, {"size": 2}, "section", {}, "section") is None
    assert builder.problems == ["<test>: section: missing required key 'name'"]
    assert builder.build(_Section, {"name": "n"}, "section", {}, "section") == _Section("n", 1)


def test_builder_positions_fall_back_to_the_source() -> None:
    builder = _Builder("conf.yaml", {})
    assert builder.where(CommentedMap({"a": 1}), "a", "x.a") == "conf.yaml"  # built in code: no position
    assert builder.where({"a": 1}, "a", "x.a") == "conf.yaml"
    assert builder.where(None, "a") == "conf.yaml"


@pytest.mark.parametrize(("url", "says"), [
    ("http://:s3cret-pw@cache:6379/0", "not a Redis URL"),
    ("redis://:s3cret-pw@cache:63x9/0", "Port could not be cast"),
])
def test_a_bad_redis_url_stops_start_up_without_showing_its_password(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"redis:\n  url: \"{url}\"\n"), env={})
    message = str(caught.value)
    assert "redis.url" in message and says in message and "s3cret-pw" not in message
