"""``guardrails.yaml``: the architecture's format, loaded strictly with file, line, key and fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gomodel_proxy.guardrails.config_file import load_guardrails_file
from gomodel_proxy.guardrails.pii import ALL_KINDS

ARCHITECTURE = """\
guardrails:
  - name: pii-redactor
    enabled: true
    priority: 10
    config:
      detect: [email, phone, ssn, credit_card]
      action: redact          # redact | block | log
  - name: token-limiter
    enabled: true
    priority: 20
    config: {max_input_tokens: 8000, max_output_tokens: 4000}
  - name: system-prompt
    enabled: true
    priority: 5
    config: {prepend: "You are a helpful assistant."}   # prepend | append | replace
  - name: content-filter
    enabled: true
    priority: 30
    config: {block_categories: [hate, violence, self_harm]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guardrails.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_architecture_s_example_loads_sorted_by_priority(tmp_path: Path) -> None:
    specs, problems = load_guardrails_file(write(tmp_path, ARCHITECTURE), required=True)
    assert problems == []
    assert [(s.name, s.priority) for s in specs] == [
        ("system-prompt", 5),
        ("pii-redactor", 10),
        ("token-limiter", 20),
        ("content-filter", 30),
    ]
    by_name = {s.name: s for s in specs}
    assert by_name["pii-redactor"].config == {"detect": ("email", "phone", "ssn", "credit_card"), "action": "redact",
                                              "restore": False, "scan_output": False}
    assert by_name["token-limiter"].config == {"max_input_tokens": 8000, "max_output_tokens": 4000}
    assert by_name["system-prompt"].config == {"prepend": "You are a helpful assistant."}
    assert by_name["content-filter"].config == {
        "block_categories": ("hate", "violence", "self_harm"), "backend": "lexicon", "provider": "",
        "model": "omni-moderation-latest", "thresholds": {}, "scan_output": True}
    assert all(s.kind == s.name and s.enabled and s.keys is None and s.teams is None for s in specs)
    with pytest.raises(TypeError):
        by_name["pii-redactor"].config["action"] = "log"  # type: ignore[index]


def test_regex_instances_with_type_scopes_and_defaults(tmp_path: Path) -> None:
    text = """\
guardrails:
  - name: regex-no-secrets
    type: regex
    priority: 15
    keys: [sk-a]
    teams: [research, ops]
    config:
      patterns:
        - {name: aws-key, pattern: "AKIA[0-9A-Z]{16}", action: block}
  - name: regex-internal
    type: regex
    enabled: false
    priority: 15
    config: {patterns: [{name: codename, pattern: "(?i)project x", action: redact}]}
  - name: pii-redactor
    priority: 1
"""
    specs, problems = load_guardrails_file(write(tmp_path, text), required=False)
    assert problems == []
    assert [s.name for s in specs] == ["pii-redactor", "regex-no-secrets", "regex-internal"]  # stable on ties
    pii, secrets, internal = specs
    assert pii.config == {"detect": ALL_KINDS, "action": "redact", "restore": False, "scan_output": False}
    assert secrets.kind == "regex" and secrets.keys == ("sk-a",) and secrets.teams == ("research", "ops")
    (pattern,) = secrets.config["patterns"]
    assert isinstance(pattern["pattern"], re.Pattern) and pattern["pattern"].search("key AKIAABCDEFGHIJKLMNOP")
    assert pattern["name"] == "aws-key" and pattern["action"] == "block"
    assert internal.enabled is False and internal.config["patterns"][0]["action"] == "redact"


@pytest.mark.parametrize(
    ("text", "where", "fragments"),
    [
        pytest.param(
            "guardrails:\n  - name: pii-redacter\n    priority: 1\n",
            "2:5",
            ["guardrails[0].name", "unknown guardrail 'pii-redacter'", "did you mean 'pii-redactor'", "known:"],
            id="unknown-name",
        ),
        pytest.param(
            "guardrails:\n  - name: regex-no-secrets\n    priority: 1\n    config: {patterns: []}\n",
            "2:5",
            ["guardrails[0].name", "add 'type: regex'"],
            id="suffixed-name-without-type",
        ),
        pytest.param(
            "guardrails:\n  - name: x\n    type: regexp\n    priority: 1\n",
            "3:5",
            ["guardrails[0].type", "did you mean 'regex'", "known: pii-redactor, token-limiter"],
            id="unknown-type",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n    config: {detct: [email]}\n",
            "4:14",
            ["guardrails[0].config.detct", "unknown key (did you mean 'detect'?)", "accepted here: detect, action"],
            id="unknown-config-key",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n    config: {detect: [email, emial]}\n",
            "4:30",
            ["guardrails[0].config.detect[1]", "unknown 'emial'", "did you mean 'email'", "known: email, phone"],
            id="unknown-pii-kind",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n    config: {action: mask}\n",
            "4:14",
            ["guardrails[0].config.action", "unknown action 'mask'", "give one of: redact, block, log"],
            id="bad-pii-action",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: high\n",
            "3:5",
            ["guardrails[0].priority", "expected an integer", "got 'high'"],
            id="priority-not-int",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n",
            "2:5",
            ["guardrails[0].priority", "missing; give an integer"],
            id="priority-missing",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n  - name: pii-redactor\n    priority: 2\n",
            "4:5",
            ["guardrails[1].name", "'pii-redactor' is already guardrails[0]", "type: pii-redactor"],
            id="duplicate-name",
        ),
        pytest.param(
            "guardrails:\n  - name: regex\n    priority: 1\n    config:\n      patterns:\n"
            "        - {name: broken, pattern: '[a-', action: block}\n",
            "6:26",
            ["guardrails[0].config.patterns[0].pattern", "pattern 'broken' does not compile"],
            id="bad-regex",
        ),
        pytest.param(
            "guardrails:\n  - name: regex\n    priority: 1\n    config:\n      patterns:\n"
            "        - {name: p, pattern: 'a'}\n",
            "6:11",
            ["guardrails[0].config.patterns[0].action", "missing; give one of: block, redact, log"],
            id="regex-action-missing",
        ),
        pytest.param(
            "guardrails:\n  - name: token-limiter\n    priority: 1\n    config: {max_input_tokens: -5}\n",
            "4:14",
            ["guardrails[0].config.max_input_tokens", "expected a positive integer", "got -5"],
            id="negative-token-limit",
        ),
        pytest.param(
            "guardrails:\n  - name: token-limiter\n    priority: 1\n    config: {}\n",
            "4:5",
            ["guardrails[0].config", "give max_input_tokens and/or max_output_tokens"],
            id="token-limiter-empty",
        ),
        pytest.param(
            "guardrails:\n  - name: system-prompt\n    priority: 1\n    config: {prepend: a, append: b}\n",
            "4:5",
            ["guardrails[0].config", "exactly one of prepend, append, replace; got prepend, append"],
            id="system-prompt-two-modes",
        ),
        pytest.param(
            "guardrails:\n  - name: content-filter\n    priority: 1\n    config: {block_categories: [hat]}\n",
            "4:33",
            ["guardrails[0].config.block_categories[0]", "did you mean 'hate'", "known: hate"],
            id="unknown-category",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n    teams: research\n",
            "4:5",
            ["guardrails[0].teams", "non-empty list of team names", "remove 'teams' to apply to everyone"],
            id="teams-not-a-list",
        ),
        pytest.param(
            "guardrails:\n  - name: pii-redactor\n    priority: 1\n    enabeld: true\n",
            "4:5",
            ["guardrails[0].enabeld", "did you mean 'enabled'"],
            id="unknown-entry-key",
        ),
        pytest.param(
            "guardrail:\n  - name: pii-redactor\n",
            "1:1",
            ["guardrail: unknown key (did you mean 'guardrails'?)"],
            id="unknown-top-key",
        ),
    ],
)
def test_each_mistake_gives_one_located_problem_and_no_specs(
    tmp_path: Path, text: str, where: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    specs, problems = load_guardrails_file(path, required=False)
    assert specs == []
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{where}: "), problems[0]
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])


def test_problems_in_several_entries_are_all_reported(tmp_path: Path) -> None:
    text = "guardrails:\n  - name: pii-redacter\n    priority: 1\n  - name: pii-redactor\n    priority: x\n"
    _, problems = load_guardrails_file(write(tmp_path, text), required=False)
    assert [p.split(": ")[1] for p in problems] == ["guardrails[0].name", "guardrails[1].priority"]


def test_missing_optional_file_is_fine(tmp_path: Path) -> None:
    assert load_guardrails_file(tmp_path / "absent.yaml", required=False) == ([], [])


def test_missing_required_file_is_a_problem(tmp_path: Path) -> None:
    specs, problems = load_guardrails_file(tmp_path / "absent.yaml", required=True)
    assert specs == []
    assert len(problems) == 1 and "absent.yaml: guardrails file not found" in problems[0]


def test_invalid_yaml_and_empty_file(tmp_path: Path) -> None:
    _, problems = load_guardrails_file(write(tmp_path, "guardrails: [\n"), required=False)
    assert len(problems) == 1 and "not valid YAML" in problems[0]
    assert load_guardrails_file(write(tmp_path, ""), required=False) == ([], [])


def test_output_side_and_moderation_options(tmp_path: Path) -> None:
    specs, problems = load_guardrails_file(write(tmp_path, """\
guardrails:
  - name: pii-redactor
    priority: 1
    config: {detect: [email], action: redact, restore: true, scan_output: true}
  - name: content-filter
    priority: 2
    config:
      block_categories: [hate, violence]
      backend: moderation
      provider: openai
      thresholds: {hate: 0.4}
      scan_output: false
"""), required=True)
    assert problems == []
    pii, content = specs
    assert pii.config["restore"] is True and pii.config["scan_output"] is True
    assert content.config["backend"] == "moderation" and content.config["provider"] == "openai"
    assert content.config["thresholds"] == {"hate": 0.4} and content.config["scan_output"] is False


@pytest.mark.parametrize(("config", "expected"), [
    ("{detect: [email], action: block, restore: true}", "it needs action: redact"),
    ("{detect: [email], scan_output: yes please}", "expected true or false"),
])
def test_pii_output_option_mistakes(tmp_path: Path, config: str, expected: str) -> None:
    specs, problems = load_guardrails_file(write(tmp_path, f"""\
guardrails:
  - name: pii-redactor
    priority: 1
    config: {config}
"""), required=True)
    assert specs == [] and len(problems) == 1 and expected in problems[0] and ":4:" in problems[0]


@pytest.mark.parametrize(("config", "expected"), [
    ("{block_categories: [hate], backend: cloud}", "unknown backend 'cloud'"),
    ("{block_categories: [hate], backend: moderation}", "needs the name of a configured provider"),
    ("{block_categories: [hate], provider: openai}", "provider is for backend: moderation"),
    ("{block_categories: [hate], thresholds: {violence: 0.5}}", "not one of block_categories"),
    ("{block_categories: [hate], thresholds: {hate: 2}}", "expected a score in (0, 1]"),
    ("{block_categories: [hate], thresholds: [hate]}", "expected a mapping of category"),
    ("{block_categories: [hate], model: ''}", "expected a moderation model name"),
    ("{backend: lexicon}", "block_categories: missing"),
])
def test_content_filter_option_mistakes(tmp_path: Path, config: str, expected: str) -> None:
    specs, problems = load_guardrails_file(write(tmp_path, f"""\
guardrails:
  - name: content-filter
    priority: 1
    config: {config}
"""), required=True)
    assert specs == [] and problems and expected in problems[0], problems
