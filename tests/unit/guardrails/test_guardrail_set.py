"""GuardrailSet: the enabled guardrails in priority order, scoped to keys and teams by id or by name; and
build_guardrail for every kind that needs no network."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from gomodel_proxy.core.types import Principal
from gomodel_proxy.guardrails.config_file import load_guardrails_file
from gomodel_proxy.guardrails.content_filter import ContentFilter, LexiconBackend
from gomodel_proxy.guardrails.guardrail_set import GuardrailSet, build_guardrail
from gomodel_proxy.guardrails.interface import BaseGuardrail, Guardrail, GuardrailSpec
from gomodel_proxy.guardrails.pii_redactor import PIIRedactor
from gomodel_proxy.guardrails.regex_filter import RegexFilter
from gomodel_proxy.guardrails.system_prompt import SystemPrompt
from gomodel_proxy.guardrails.token_limiter import TokenLimiter


def spec(name: str, priority: int, *, enabled: bool = True, keys: tuple[str, ...] | None = None,
         teams: tuple[str, ...] | None = None) -> GuardrailSpec:
    return GuardrailSpec(name=name, kind="regex", enabled=enabled, priority=priority,
                         config=MappingProxyType({}), keys=keys, teams=teams)


def entry(name: str, priority: int, **scope: Any) -> tuple[GuardrailSpec, Guardrail]:
    return spec(name, priority, **scope), BaseGuardrail(name, priority)


def names(found: tuple[Guardrail, ...]) -> list[str]:
    return [g.name for g in found]


ALICE = Principal(kind="key", key_id="key-1", team_id="team-9")  # key "alice-laptop", team "research"
BOB = Principal(kind="key", key_id="key-2")  # key "bob-ci", no team
ANON = Principal()


class Directory:
    """The names of keys and teams, as the key table would give them; counts the lookups."""

    def __init__(self) -> None:
        self.keys = {"key-1": "alice-laptop", "key-2": "bob-ci"}
        self.teams = {"team-9": "research"}
        self.calls = 0

    def __call__(self, p: Principal) -> tuple[str | None, str | None]:
        self.calls += 1
        return (self.keys.get(p.key_id or ""), self.teams.get(p.team_id or ""))


def test_enabled_guardrails_in_priority_order() -> None:
    s = GuardrailSet([entry("c", 30), entry("a", 5), entry("off", 1, enabled=False), entry("b", 10)])
    assert names(s.guardrails) == ["a", "b", "c"]
    assert [sp.name for sp, _ in s.entries] == ["a", "b", "c"]
    assert bool(s)
    assert s.unscoped
    assert s.applicable(ALICE) is s.guardrails
    assert s.applicable(ANON) is s.guardrails


def test_equal_priorities_keep_the_file_order() -> None:
    s = GuardrailSet([entry("first", 10), entry("second", 10), entry("third", 10)])
    assert names(s.guardrails) == ["first", "second", "third"]


def test_empty_and_all_disabled_sets_are_false() -> None:
    assert not GuardrailSet([])
    only_off = GuardrailSet([entry("off", 1, enabled=False, keys=("key-1",))])
    assert not only_off
    assert only_off.unscoped  # the disabled entry's scope does not count
    assert only_off.applicable(ALICE) == ()


def test_scoping_by_id_without_a_name_lookup() -> None:
    s = GuardrailSet([entry("everyone", 1), entry("key1", 2, keys=("key-1",)), entry("team9", 3, teams=("team-9",)),
                      entry("by-name", 4, keys=("alice-laptop",))])
    assert not s.unscoped
    assert names(s.applicable(ALICE)) == ["everyone", "key1", "team9"]
    assert names(s.applicable(BOB)) == ["everyone"]
    assert names(s.applicable(ANON)) == ["everyone"]


def test_scoping_by_name_through_the_lookup() -> None:
    directory = Directory()
    s = GuardrailSet([entry("everyone", 1), entry("laptop", 2, keys=("alice-laptop",)),
                      entry("research", 3, teams=("research",)), entry("ci", 4, keys=("bob-ci",)),
                      entry("either", 5, keys=("nobody",), teams=("research",))], names=directory)
    assert names(s.applicable(ALICE)) == ["everyone", "laptop", "research", "either"]
    assert names(s.applicable(BOB)) == ["everyone", "ci"]
    assert names(s.applicable(ANON)) == ["everyone"]


def test_the_result_is_kept_per_key_and_team_until_forget() -> None:
    directory = Directory()
    s = GuardrailSet([entry("laptop", 2, keys=("alice-laptop",))], names=directory)
    first = s.applicable(ALICE)
    assert names(first) == ["laptop"]
    assert s.applicable(Principal(kind="key", key_id="key-1", team_id="team-9", user_id="u")) is first
    assert directory.calls == 1
    directory.keys["key-1"] = "alice-desktop"  # renamed: the kept answer stands until forget()
    assert names(s.applicable(ALICE)) == ["laptop"]
    s.forget()
    assert names(s.applicable(ALICE)) == []
    assert directory.calls == 2


def test_the_per_caller_memory_is_bounded() -> None:
    s = GuardrailSet([entry("key1", 2, keys=("key-1",))])
    s._by_caller.update({(f"k{i}", None): () for i in range(100_001)})
    assert names(s.applicable(ALICE)) == ["key1"]
    assert s._by_caller == {("key-1", "team-9"): s.applicable(ALICE)}


# -- build_guardrail ----------------------------------------------------------------------------------------------
GUARDRAILS_YAML = """\
guardrails:
  - name: pii-redactor
    priority: 10
    config: {detect: [email, phone], action: redact, restore: true}
  - name: regex-secrets
    type: regex
    priority: 15
    keys: [alice-laptop]
    config:
      patterns:
        - {name: aws-key, pattern: "AKIA[0-9A-Z]{16}", action: block}
  - name: system-prompt
    priority: 5
    config: {append: "Answer briefly."}
  - name: token-limiter
    priority: 20
    config: {max_input_tokens: 8000, max_output_tokens: 4000}
  - name: content-filter
    priority: 30
    enabled: false
    config: {block_categories: [hate, violence]}
"""


class Logger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, msg: str, **kw: Any) -> None:
        self.calls.append(("warning", msg, kw))

    def error(self, msg: str, **kw: Any) -> None:
        self.calls.append(("error", msg, kw))


def load(tmp_path: Path, text: str) -> list[GuardrailSpec]:
    path = tmp_path / "guardrails.yaml"
    path.write_text(text, encoding="utf-8")
    specs, problems = load_guardrails_file(path, required=True)
    assert problems == []
    return specs


def test_build_every_offline_kind_from_a_file(tmp_path: Path) -> None:
    specs = load(tmp_path, GUARDRAILS_YAML)
    built = {s.name: build_guardrail(s, providers={}, hold_back=48, logger=Logger()) for s in specs}
    pii = built["pii-redactor"]
    assert isinstance(pii, PIIRedactor)
    assert (pii.name, pii.priority, pii.action, pii.restore, pii.scan_output, pii.hold_back) == (
        "pii-redactor", 10, "redact", True, False, 48)
    rx = built["regex-secrets"]
    assert isinstance(rx, RegexFilter)
    assert (rx.name, rx.priority, rx.actions, rx.hold_back) == ("regex-secrets", 15, {"aws-key": "block"}, 48)
    sp = built["system-prompt"]
    assert isinstance(sp, SystemPrompt)
    assert (sp.mode, sp.text) == ("append", "Answer briefly.")
    tl = built["token-limiter"]
    assert isinstance(tl, TokenLimiter)
    assert (tl.max_input_tokens, tl.max_output_tokens) == (8000, 4000)
    cf = built["content-filter"]
    assert isinstance(cf, ContentFilter)
    assert isinstance(cf.backend, LexiconBackend)
    assert (cf.categories, cf.hold_back) == (("hate", "violence"), 48)

    s = GuardrailSet([(sp_, built[sp_.name]) for sp_ in specs], names=Directory())
    assert names(s.guardrails) == ["system-prompt", "pii-redactor", "regex-secrets", "token-limiter"]
    assert names(s.applicable(ALICE)) == ["system-prompt", "pii-redactor", "regex-secrets", "token-limiter"]
    assert names(s.applicable(BOB)) == ["system-prompt", "pii-redactor", "token-limiter"]


def test_a_moderation_filter_without_its_provider_is_refused(tmp_path: Path) -> None:
    (moderation,) = load(tmp_path, """\
guardrails:
  - name: content-filter
    priority: 30
    config: {block_categories: [hate], backend: moderation, provider: openai}
""")
    with pytest.raises(ValueError, match="provider 'openai' is not configured"):
        build_guardrail(moderation, providers={}, hold_back=64, logger=Logger())
