"""Strict loading of ``guardrails.yaml`` (the architecture's format) into ``GuardrailSpec`` objects.

Why strict: a guardrail that silently does nothing (a typo in ``detect``, an unknown key) is worse than a
gateway that refuses to start. As for the main configuration, every problem names the file, the line, the
key and the fix, all problems are reported at once, and a file with any problem yields no specs::

    guardrails:
      - name: pii-redactor
        enabled: true
        priority: 10            # lower runs first; required
        config: {detect: [email, phone, ssn, credit_card], action: redact}   # redact | block | log
      - name: token-limiter
        priority: 20
        config: {max_input_tokens: 8000, max_output_tokens: 4000}
      - name: system-prompt
        priority: 5
        config: {prepend: "You are a helpful assistant."}   # exactly one of prepend | append | replace
      - name: content-filter
        priority: 30
        config: {block_categories: [hate, violence, self_harm]}
      - name: regex-no-secrets  # a free name needs ``type:``; without it the name must be the kind
        type: regex
        priority: 15
        keys: [sk-team-a]       # optional: only requests by these API keys ...
        teams: [research]       # ... or these teams; absent: everyone
        config:
          patterns:
            - {name: aws-key, pattern: "AKIA[0-9A-Z]{16}", action: block}   # block | redact | log

Naming: without ``type`` the ``name`` is the kind, so each kind appears once; ``type`` lets one kind appear
several times under distinct names (lowercase letters, digits, ``-``, ``_``). ``enabled`` defaults to true;
disabled entries are still validated and returned (with ``enabled=False``) so that a typo does not wait for
the day someone enables them. ``keys`` and ``teams`` both given: the guardrail applies if either matches.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gomodel_proxy.guardrails.interface import KNOWN_KINDS, GuardrailKind, GuardrailSpec
from gomodel_proxy.guardrails.pii import ALL_KINDS

#: Categories ``content-filter`` understands (the OpenAI moderation top-level categories).
CONTENT_CATEGORIES: Final = ("hate", "harassment", "violence", "self_harm", "sexual", "illicit")
PII_ACTIONS: Final = ("redact", "block", "log")
REGEX_ACTIONS: Final = ("block", "redact", "log")

_TOP: Final = ("guardrails",)
_ENTRY: Final = ("name", "type", "enabled", "priority", "config", "keys", "teams")
_CONFIG_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "pii-redactor": ("detect", "action", "restore", "scan_output"),
    "token-limiter": ("max_input_tokens", "max_output_tokens"),
    "system-prompt": ("prepend", "append", "replace"),
    "content-filter": ("block_categories", "backend", "provider", "model", "thresholds", "scan_output"),
    "regex": ("patterns", "scan_output"),
}
CONTENT_BACKENDS: Final = ("lexicon", "moderation")
_PATTERN_KEYS: Final = ("name", "pattern", "action")
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")


def load_guardrails_file(path: Path, *, required: bool) -> tuple[list[GuardrailSpec], list[str]]:
    """The specs in ``path`` sorted by priority (stable), and the problems (each ``file:line:col: key: what; fix``).

    A missing file is no problem unless ``required`` (named explicitly in the main config). Any problem
    means no specs at all: half of a file's guardrails must never run as if they were all of them.
    """
    source = str(path)
    if not path.is_file():
        if required:
            return [], [f"{source}: guardrails file not found; create it or fix its path in the main config"]
        return [], []
    try:
        raw: Any = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError) as exc:
        return [], [f"{source}: not valid YAML (or not UTF-8): {exc}".replace("\n", " ")]
    loader = _Loader(source)
    specs = loader.load(raw)
    if loader.problems:
        return [], loader.problems
    return sorted(specs, key=lambda s: s.priority), []


class _Loader:
    """Holds the file name and the problems found so the per-kind checks stay short."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def where(self, parent: Any, key: Any) -> str:
        lc = getattr(parent, "lc", None)
        try:
            line, col = lc.key(key) if isinstance(key, str) else lc.item(key)  # type: ignore[union-attr]
            return f"{self.source}:{line + 1}:{col + 1}"
        except (AttributeError, KeyError, IndexError, TypeError):
            return self.source

    def add(self, at: str, path: str, message: str) -> None:
        self.problems.append(f"{at}: {path}: {message}")

    def unknown_keys(self, node: Mapping[Any, Any], path: str, accepted: Collection[str]) -> bool:
        """Report keys outside ``accepted``; True when there were none."""
        ok = True
        for key in node:
            if key not in accepted:
                self.add(
                    self.where(node, key),
                    f"{path}.{key}" if path else str(key),
                    f"unknown key{_suggest(str(key), accepted)}; accepted here: {', '.join(accepted)}",
                )
        return ok

    def load(self, raw: Any) -> list[GuardrailSpec]:
        if raw is None:
            return []
        if not isinstance(raw, Mapping):
            self.problems.append(f"{self.source}: the top level must be a mapping with a 'guardrails' list")
            return []
        self.unknown_keys(raw, "", _TOP)
        items = raw.get("guardrails")
        if items is None:
            return []
        if not isinstance(items, list):
            self.add(
                self.where(raw, "guardrails"),
                "guardrails",
                "expected a list of guardrails, each a mapping with name, priority and config",
            )
            return []
        specs: list[GuardrailSpec] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            spec = self.entry(item, items, i)
            if spec is None:
                continue
            if spec.name in seen:
                self.add(
                    self.where(item, "name"),
                    f"guardrails[{i}].name",
                    f"'{spec.name}' is already guardrails[{seen[spec.name]}]; merge them, or give each "
                    f"'type: {spec.kind}' and a distinct name",
                )
                continue
            seen[spec.name] = i
            specs.append(spec)
        return specs

    def entry(self, item: Any, items: list[Any], i: int) -> GuardrailSpec | None:
        path = f"guardrails[{i}]"
        if not isinstance(item, Mapping):
            self.add(self.where(items, i), path, "expected a mapping with name, priority and config")
            return None
        before = len(self.problems)
        self.unknown_keys(item, path, _ENTRY)
        kind = self.kind(item, items, i)
        if kind is None:
            return None
        name = str(item["name"])
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            self.add(self.where(item, "enabled"), f"{path}.enabled", f"expected true or false; got {enabled!r}")
        priority = item.get("priority")
        if "priority" not in item:
            self.add(
                self.where(items, i),
                f"{path}.priority",
                "missing; give an integer (lower runs first), e.g. priority: 10",
            )
        elif isinstance(priority, bool) or not isinstance(priority, int):
            self.add(
                self.where(item, "priority"),
                f"{path}.priority",
                f"expected an integer (lower runs first), e.g. 10; got {priority!r}",
            )
        raw_config = item.get("config")
        config: dict[str, Any] | None = None
        if raw_config is not None and not isinstance(raw_config, Mapping):
            self.add(self.where(item, "config"), f"{path}.config", f"expected a mapping of {kind} settings")
        else:
            config = self.config(kind, raw_config or {}, item, f"{path}.config")
        keys = self.names(item, "keys", path)
        teams = self.names(item, "teams", path)
        if config is None or len(self.problems) != before:
            return None
        return GuardrailSpec(
            name=name,
            kind=kind,
            enabled=cast(bool, enabled),
            priority=cast(int, priority),
            config=MappingProxyType(config),
            keys=keys,
            teams=teams,
        )

    def kind(self, item: Mapping[Any, Any], items: list[Any], i: int) -> GuardrailKind | None:
        """The entry's kind: ``type`` when given (the name is then free), else the name itself."""
        path = f"guardrails[{i}]"
        name = item.get("name")
        if not isinstance(name, str) or not name:
            at = self.where(item, "name") if "name" in item else self.where(items, i)
            self.add(at, f"{path}.name", f"missing or not a string; give one of: {', '.join(KNOWN_KINDS)}")
            return None
        if "type" in item:
            kind = item["type"]
            if kind not in KNOWN_KINDS:
                self.add(
                    self.where(item, "type"),
                    f"{path}.type",
                    f"unknown guardrail type {kind!r}{_suggest(str(kind), KNOWN_KINDS)}; "
                    f"known: {', '.join(KNOWN_KINDS)}",
                )
                return None
            if not _NAME_RE.match(name):
                self.add(
                    self.where(item, "name"),
                    f"{path}.name",
                    f"'{name}' is not a valid name; use lowercase letters, digits, '-' and '_'",
                )
                return None
            return cast(GuardrailKind, kind)
        if name in KNOWN_KINDS:
            return name
        prefixed = [k for k in KNOWN_KINDS if name.startswith(k + "-")]
        fix = (
            f"to name a {prefixed[0]} guardrail '{name}', add 'type: {prefixed[0]}'"
            if prefixed
            else f"known: {', '.join(KNOWN_KINDS)} (or give 'type:' and name it freely)"
        )
        self.add(
            self.where(item, "name"),
            f"{path}.name",
            f"unknown guardrail '{name}'{'' if prefixed else _suggest(name, KNOWN_KINDS)}; {fix}",
        )
        return None

    def names(self, item: Mapping[Any, Any], key: str, path: str) -> tuple[str, ...] | None:
        """``keys``/``teams``: a tuple, None when absent (or invalid: reported)."""
        if key not in item:
            return None
        value = item[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.add(
                self.where(item, key),
                f"{path}.{key}",
                f"expected a non-empty list of {key[:-1]} names; remove '{key}' to apply to everyone",
            )
            return None
        return tuple(value)

    def config(self, kind: GuardrailKind, cfg: Mapping[Any, Any], item: Any, path: str) -> dict[str, Any] | None:
        at = self.where(item, "config") if "config" in item else self.where(item, "name")
        before = len(self.problems)
        self.unknown_keys(cfg, path, _CONFIG_KEYS[kind])
        checks: dict[str, Callable[[Mapping[Any, Any], str, str], dict[str, Any] | None]] = {
            "pii-redactor": self.pii,
            "token-limiter": self.tokens,
            "system-prompt": self.system_prompt,
            "content-filter": self.content,
            "regex": self.regex,
        }
        out = checks[kind](cfg, path, at)
        return out if len(self.problems) == before else None

    def choices(self, cfg: Mapping[Any, Any], key: str, path: str, options: Collection[str]) -> tuple[str, ...]:
        """A non-empty list drawn from ``options``; each bad item reported at its own position."""
        value = cfg[key]
        if not isinstance(value, list) or not value:
            self.add(
                self.where(cfg, key), f"{path}.{key}", f"expected a non-empty list drawn from: {', '.join(options)}"
            )
            return ()
        out: list[str] = []
        for j, v in enumerate(value):
            if v not in options:
                self.add(
                    self.where(value, j),
                    f"{path}.{key}[{j}]",
                    f"unknown {v!r}{_suggest(str(v), options)}; known: {', '.join(options)}",
                )
            elif v not in out:
                out.append(v)
        return tuple(out)

    def action(self, cfg: Mapping[Any, Any], path: str, options: Collection[str], default: str | None, at: str) -> str:
        """``action`` from ``options``; ``at`` locates the problem when the key is absent."""
        value = cfg.get("action", default)
        if value not in options:
            at = self.where(cfg, "action") if "action" in cfg else at
            self.add(
                at,
                f"{path}.action",
                f"{'missing' if value is None else f'unknown action {value!r}'}"
                f"{_suggest(str(value), options) if value is not None else ''}; give one of: {', '.join(options)}",
            )
        return str(value)

    def pii(self, cfg: Mapping[Any, Any], path: str, at: str) -> dict[str, Any]:
        detect = self.choices(cfg, "detect", path, ALL_KINDS) if "detect" in cfg else ALL_KINDS
        action = self.action(cfg, path, PII_ACTIONS, "redact", at)
        restore = self.flag(cfg, "restore", path, default=False)
        if restore and action != "redact":
            self.add(self.where(cfg, "restore"), f"{path}.restore",
                     f"restore puts redacted values back into the answer; it needs action: redact (got {action})")
        return {"detect": detect, "action": action, "restore": restore,
                "scan_output": self.flag(cfg, "scan_output", path, default=False)}

    def flag(self, cfg: Mapping[Any, Any], key: str, path: str, *, default: bool) -> bool:
        value = cfg.get(key, default)
        if not isinstance(value, bool):
            self.add(self.where(cfg, key), f"{path}.{key}", f"expected true or false; got {value!r}")
            return default
        return value

    def tokens(self, cfg: Mapping[Any, Any], path: str, at: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _CONFIG_KEYS["token-limiter"]:
            if key not in cfg:
                continue
            value = cfg[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                self.add(
                    self.where(cfg, key), f"{path}.{key}", f"expected a positive integer, e.g. 8000; got {value!r}"
                )
            out[key] = value
        if not out and not any(k not in _CONFIG_KEYS["token-limiter"] for k in cfg):
            self.add(at, path, "give max_input_tokens and/or max_output_tokens, e.g. {max_input_tokens: 8000}")
        return out

    def system_prompt(self, cfg: Mapping[Any, Any], path: str, at: str) -> dict[str, Any]:
        given = [k for k in _CONFIG_KEYS["system-prompt"] if k in cfg]
        if len(given) != 1:
            if given or not any(k not in _CONFIG_KEYS["system-prompt"] for k in cfg):
                self.add(at, path, f"give exactly one of prepend, append, replace; got {', '.join(given) or 'none'}")
            return {}
        key = given[0]
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            self.add(self.where(cfg, key), f"{path}.{key}", "expected the (non-empty) text of the system prompt")
        return {key: cfg[key]}

    def content(self, cfg: Mapping[Any, Any], path: str, at: str) -> dict[str, Any]:
        if "block_categories" not in cfg:
            if not cfg or not any(k not in _CONFIG_KEYS["content-filter"] for k in cfg):
                self.add(
                    at, f"{path}.block_categories", f"missing; give a list drawn from: {', '.join(CONTENT_CATEGORIES)}"
                )
            return {}
        categories = self.choices(cfg, "block_categories", path, CONTENT_CATEGORIES)
        backend = cfg.get("backend", "lexicon")
        if backend not in CONTENT_BACKENDS:
            self.add(self.where(cfg, "backend"), f"{path}.backend",
                     f"unknown backend {backend!r}{_suggest(str(backend), CONTENT_BACKENDS)}; "
                     f"give lexicon (shipped, offline) or moderation (a provider's /v1/moderations)")
        provider = cfg.get("provider", "")
        model = cfg.get("model", "omni-moderation-latest")
        if backend == "moderation" and (not isinstance(provider, str) or not provider):
            self.add(self.where(cfg, "provider") if "provider" in cfg else at, f"{path}.provider",
                     "the moderation backend needs the name of a configured provider, e.g. provider: openai")
        elif backend != "moderation" and "provider" in cfg:
            self.add(self.where(cfg, "provider"), f"{path}.provider",
                     "provider is for backend: moderation; remove it or set backend: moderation")
        if not isinstance(model, str) or not model:
            self.add(self.where(cfg, "model"), f"{path}.model", "expected a moderation model name")
        thresholds: dict[str, float] = {}
        raw = cfg.get("thresholds", {})
        if not isinstance(raw, Mapping):
            self.add(self.where(cfg, "thresholds"), f"{path}.thresholds",
                     "expected a mapping of category to a score between 0 and 1, e.g. {hate: 0.5}")
        else:
            for name, value in raw.items():
                if name not in categories:
                    self.add(self.where(raw, name), f"{path}.thresholds.{name}",
                             f"not one of block_categories ({', '.join(categories)}); add it there or remove it")
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                    self.add(self.where(raw, name), f"{path}.thresholds.{name}",
                             f"expected a score in (0, 1], e.g. 0.5; got {value!r}")
                else:
                    thresholds[str(name)] = float(value)
        return {"block_categories": categories, "backend": backend, "provider": provider, "model": model,
                "thresholds": MappingProxyType(thresholds),
                "scan_output": self.flag(cfg, "scan_output", path, default=True)}

    def regex(self, cfg: Mapping[Any, Any], path: str, at: str) -> dict[str, Any]:
        patterns = cfg.get("patterns")
        if not isinstance(patterns, list) or not patterns:
            if "patterns" in cfg or not cfg:
                self.add(
                    self.where(cfg, "patterns") if "patterns" in cfg else at,
                    f"{path}.patterns",
                    "expected a non-empty list of {name, pattern, action}",
                )
            return {}
        out: list[Mapping[str, Any]] = []
        names: set[str] = set()
        for j, p in enumerate(patterns):
            p_path = f"{path}.patterns[{j}]"
            if not isinstance(p, Mapping):
                self.add(self.where(patterns, j), p_path, "expected a mapping {name, pattern, action}")
                continue
            self.unknown_keys(p, p_path, _PATTERN_KEYS)
            name = p.get("name")
            if not isinstance(name, str) or not name:
                self.add(
                    self.where(patterns, j), f"{p_path}.name", "missing; give the pattern a name for logs and errors"
                )
                continue
            if name in names:
                self.add(
                    self.where(p, "name"), f"{p_path}.name", f"'{name}' is used twice; give each pattern its own name"
                )
            names.add(name)
            source = p.get("pattern")
            compiled: re.Pattern[str] | None = None
            if not isinstance(source, str) or not source:
                self.add(
                    self.where(p, "pattern") if "pattern" in p else self.where(patterns, j),
                    f"{p_path}.pattern",
                    f"pattern '{name}': missing or not a string; give a Python regular expression",
                )
            else:
                try:
                    compiled = re.compile(source)
                except re.error as exc:
                    self.add(
                        self.where(p, "pattern"),
                        f"{p_path}.pattern",
                        f"pattern '{name}' does not compile: {exc}; fix it (quote it, escape special characters)",
                    )
            action = self.action(p, p_path, REGEX_ACTIONS, None, self.where(patterns, j))
            out.append(MappingProxyType({"name": name, "pattern": compiled, "action": action}))
        return {"patterns": tuple(out), "scan_output": self.flag(cfg, "scan_output", path, default=True)}


def _suggest(word: str, options: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
